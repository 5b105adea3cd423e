//! The friend module: friend lists with requests, blocks and online status, in Nakama's four
//! states (`FRIEND`, `REQUEST_SENT`, `REQUEST_RECEIVED`, `BLOCKED`).
//!
//! - `friend.request`, `friend.accept`, `friend.reject`, `friend.remove`, `friend.block`,
//!   `friend.unblock` `{userId}` → `{}`, and `friend.list {}` → `{friends}`, for a logged-in
//!   player;
//! - internal `friend.blocked_by {userId}` → `{userIds}`: who blocked a player, for modules that
//!   deliver messages (the group chat leaves them out);
//! - pushes `friend.request {userId, name}`, `friend.accepted {userId, name}`, and
//!   `friend.online` / `friend.offline {userId}` to a player's friends when they log in or leave
//!   (the module's `on_online` and `on_offline` hooks).
//!
//! One document per player (id = user id) holds their list and who blocked them. A change that
//! concerns two players writes the other player's document first, then the caller's, each a
//! compare-and-set: a crash between the two leaves a half that the caller's retry completes (every
//! route is idempotent). Names come from `user.lookup`, so the user module must be served too.

use mortar::prelude::*;
use serde::{Deserialize, Serialize};
use std::time::UNIX_EPOCH;

/// The messages of `proto/friend.proto`.
pub mod friend {
    mortar::include_proto!("friend");
}

use friend::{
    Accepted, BlockedByReq, BlockedByResp, Done, Found, ListReq, ListResp, Listed, Lookup, Presence, Request,
    State, Target,
};

mortar::module!("friend", on_online = came_online, on_offline = went_offline);
mortar::export_module!();

/// I, or the other player, already have `max_friends` friends.
pub const FRIEND_LIMIT: Code = Code::module(1001);
/// I, or the other player, already have `max_pending` requests waiting (sent and received).
pub const PENDING_LIMIT: Code = Code::module(1002);
/// I already block `max_blocked` players.
pub const BLOCK_LIMIT: Code = Code::module(1003);

/// `[modules.friend]`: the sizes of one player's list.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FriendConfig {
    /// Friends one player may have.
    pub max_friends: usize,
    /// Requests one player may have waiting, sent and received together.
    pub max_pending: usize,
    /// Players one player may block.
    pub max_blocked: usize,
}

impl Default for FriendConfig {
    fn default() -> Self {
        Self { max_friends: 200, max_pending: 100, max_blocked: 200 }
    }
}

fn check_config(config: &FriendConfig) -> Result<(), String> {
    let sizes = [config.max_friends, config.max_pending, config.max_blocked];
    if sizes.contains(&0) || sizes.iter().sum::<usize>() > 100_000 {
        return Err(
            "max_friends, max_pending and max_blocked must be at least 1, and 100000 at most together".into(),
        );
    }
    Ok(())
}

mortar::config!(FriendConfig, section = "friend", check = check_config);

/// How a player on my list stands with me.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Standing {
    /// We are friends.
    Friend,
    /// I asked them; they have not answered.
    Sent,
    /// They asked me; I have not answered.
    Received,
    /// I block them.
    Blocked,
}

impl Standing {
    fn state(self) -> State {
        match self {
            Self::Friend => State::Friend,
            Self::Sent => State::RequestSent,
            Self::Received => State::RequestReceived,
            Self::Blocked => State::Blocked,
        }
    }

    fn pending(self) -> bool {
        matches!(self, Self::Sent | Self::Received)
    }
}

/// One player on my list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The other player.
    pub user: u64,
    /// How they stand with me.
    pub standing: Standing,
    /// Since when, ms since the Unix epoch.
    pub since_ms: i64,
}

/// A player's list: document id = user id.
#[derive(Clone, Debug, Default, Serialize, Deserialize, mortar::Document)]
#[document(collection = "friend")]
pub struct Friends {
    /// Everyone on the list, oldest first.
    pub entries: Vec<Entry>,
    /// The players who block this one (their lists say `Blocked` for this player).
    pub blocked_by: Vec<u64>,
}

impl Friends {
    /// How `user` stands with the owner of this list.
    pub fn standing_of(&self, user: u64) -> Option<Standing> {
        self.entries.iter().find(|entry| entry.user == user).map(|entry| entry.standing)
    }

    fn count(&self, which: impl Fn(Standing) -> bool) -> usize {
        self.entries.iter().filter(|entry| which(entry.standing)).count()
    }

    /// The friends' ids.
    pub fn friends(&self) -> Vec<u64> {
        self.entries
            .iter()
            .filter(|entry| entry.standing == Standing::Friend)
            .map(|entry| entry.user)
            .collect()
    }

    /// Sets how `user` stands, keeping their place on the list when they are on it.
    fn set(&mut self, user: u64, standing: Standing, now_ms: i64) {
        match self.entries.iter_mut().find(|entry| entry.user == user) {
            Some(entry) => *entry = Entry { user, standing, since_ms: now_ms },
            None => self.entries.push(Entry { user, standing, since_ms: now_ms }),
        }
    }

    fn remove(&mut self, user: u64) {
        self.entries.retain(|entry| entry.user != user);
    }

    /// Makes `user` a friend unless `max` friends are there already.
    fn befriend(&mut self, user: u64, max: usize, now_ms: i64) -> Result<(), Code> {
        match self.standing_of(user) {
            Some(Standing::Friend) => Ok(()),
            _ if self.count(|standing| standing == Standing::Friend) >= max => Err(FRIEND_LIMIT),
            _ => {
                self.set(user, Standing::Friend, now_ms);
                Ok(())
            }
        }
    }
}

fn now_ms(ctx: &Ctx) -> i64 {
    ctx.now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

/// The caller and the other player of a request: `BAD_REQUEST` for 0 or oneself.
fn pair(ctx: &Ctx, target: &Target) -> Result<(u64, u64), Code> {
    let me = ctx.user_id().ok_or(Code::NOT_LOGGED_IN)?;
    if target.user_id == 0 || target.user_id == me {
        return Err(Code::BAD_REQUEST);
    }
    Ok((me, target.user_id))
}

/// The names of `users` (by `user.lookup`, at most 1,000 a call), in their order; an empty name
/// for an id without an account.
async fn names(ctx: &Ctx, users: &[u64]) -> Result<Vec<String>, Code> {
    let mut names = std::collections::HashMap::new();
    for chunk in users.chunks(1000) {
        let found: Found = ctx.call("user.lookup", &Lookup { user_ids: chunk.to_vec() }).await?;
        names.extend(found.users.into_iter().map(|player| (player.user_id, player.name)));
    }
    Ok(users.iter().map(|user| names.get(user).cloned().unwrap_or_default()).collect())
}

/// The caller's name and the other player's: `NOT_FOUND` when the other has no account.
async fn both_names(ctx: &Ctx, me: u64, them: u64) -> Result<(String, String), Code> {
    let [mine, theirs]: [String; 2] =
        names(ctx, &[me, them]).await?.try_into().map_err(|_| Code::INTERNAL)?;
    if theirs.is_empty() {
        return Err(Code::NOT_FOUND);
    }
    Ok((mine, theirs))
}

async fn list_of(ctx: &Ctx, user: u64) -> Result<Friends, Code> {
    Ok(ctx.store::<Friends>().try_get(user).await?.map(|found| found.doc).unwrap_or_default())
}

/// Asks to be friends. Answers `{}` (the push of the same route, to them, carries a filled one):
/// when they asked me first we become friends (they get `friend.accepted`); otherwise they get
/// `friend.request`, unless they block me, in which case nothing reaches them (my list still says
/// `REQUEST_SENT`). Asking again changes nothing, unless the first request never reached them. `NOT_FOUND` for a player without an account,
/// `CONFLICT` when I block them, `PENDING_LIMIT` or `FRIEND_LIMIT`.
#[mortar::handler("friend.request")]
async fn request(ctx: Ctx, req: Target) -> Result<Request, Code> {
    let (me, them) = pair(&ctx, &req)?;
    let config = ctx.config::<FriendConfig>();
    let (my_name, _) = both_names(&ctx, me, them).await?;
    let mine = list_of(&ctx, me).await?;
    match mine.standing_of(them) {
        Some(Standing::Blocked) => return Err(Code::CONFLICT),
        Some(Standing::Friend) => return Ok(Request::default()),
        // Asked before: delivered below unless it was (it was not while they blocked me).
        Some(Standing::Sent) => {}
        Some(Standing::Received) => {
            befriend(&ctx, me, them, &my_name).await?;
            return Ok(Request::default());
        }
        None if mine.count(Standing::pending) >= config.max_pending => return Err(PENDING_LIMIT),
        None => {}
    }
    let now = now_ms(&ctx);
    let (_, theirs) = ctx
        .store::<Friends>()
        .upsert(them, |theirs| {
            let standing = theirs.standing_of(me);
            if standing.is_none() {
                if theirs.count(Standing::pending) >= config.max_pending {
                    return Err(PENDING_LIMIT);
                }
                theirs.set(me, Standing::Received, now);
            }
            Ok(standing)
        })
        .await?;
    match theirs {
        // They asked me too (and my list missed it): we are friends.
        Some(Standing::Sent | Standing::Friend) => befriend(&ctx, me, them, &my_name).await?,
        // They block me: only my side says so.
        Some(Standing::Blocked) => set_mine(&ctx, me, them, Standing::Sent, now).await?,
        Some(Standing::Received) => set_mine(&ctx, me, them, Standing::Sent, now).await?,
        None => {
            set_mine(&ctx, me, them, Standing::Sent, now).await?;
            let _ = ctx.push(&[them], "friend.request", &Request { user_id: me, name: my_name }).await;
        }
    }
    Ok(Request::default())
}

/// Writes how `them` stands on my list.
async fn set_mine(ctx: &Ctx, me: u64, them: u64, standing: Standing, now: i64) -> Result<(), Code> {
    ctx.store::<Friends>()
        .upsert(me, |mine| {
            mine.set(them, standing, now);
            Ok(())
        })
        .await?;
    Ok(())
}

/// Makes `me` and `them` friends (their side first) and tells them with `friend.accepted`.
async fn befriend(ctx: &Ctx, me: u64, them: u64, my_name: &str) -> Result<(), Code> {
    let (max, now) = (ctx.config::<FriendConfig>().max_friends, now_ms(ctx));
    let store = ctx.store::<Friends>();
    // Mine is checked first, so that a full list of mine does not leave theirs half done.
    if list_of(ctx, me).await?.befriend(them, max, now).is_err() {
        return Err(FRIEND_LIMIT);
    }
    store
        .upsert(them, |theirs| match theirs.standing_of(me) {
            // They withdrew their request, or block me now.
            None | Some(Standing::Blocked) => Err(Code::NOT_FOUND),
            _ => theirs.befriend(me, max, now),
        })
        .await?;
    store.upsert(me, |mine| mine.befriend(them, max, now)).await?;
    let accepted = Accepted { user_id: me, name: my_name.to_owned() };
    let _ = ctx.push(&[them], "friend.accepted", &accepted).await;
    Ok(())
}

/// Accepts their request: we are friends, and they get `friend.accepted`. `NOT_FOUND` when they
/// have not asked (or withdrew), `FRIEND_LIMIT` when either list is full.
#[mortar::handler("friend.accept")]
async fn accept(ctx: Ctx, req: Target) -> Result<Done, Code> {
    let (me, them) = pair(&ctx, &req)?;
    match list_of(&ctx, me).await?.standing_of(them) {
        Some(Standing::Received) => {}
        Some(Standing::Friend) => return Ok(Done {}),
        _ => return Err(Code::NOT_FOUND),
    }
    let (my_name, _) = both_names(&ctx, me, them).await?;
    befriend(&ctx, me, them, &my_name).await?;
    Ok(Done {})
}

/// Takes `them` off my list and me off theirs (unless they block me), when `mine` allows it.
async fn part(ctx: &Ctx, me: u64, them: u64, mine: impl Fn(Standing) -> bool) -> Result<Done, Code> {
    let store = ctx.store::<Friends>();
    if !list_of(ctx, me).await?.standing_of(them).is_some_and(&mine) {
        return Err(Code::NOT_FOUND);
    }
    if store.try_get(them).await?.is_some() {
        store
            .update(them, |theirs| {
                if theirs.standing_of(me) != Some(Standing::Blocked) {
                    theirs.remove(me);
                }
                Ok(())
            })
            .await?;
    }
    store
        .update(me, |list| {
            if list.standing_of(them).is_some_and(&mine) {
                list.remove(them);
            }
            Ok(())
        })
        .await?;
    Ok(Done {})
}

/// Refuses their request: it is gone from both lists. `NOT_FOUND` when there is none.
#[mortar::handler("friend.reject")]
async fn reject(ctx: Ctx, req: Target) -> Result<Done, Code> {
    let (me, them) = pair(&ctx, &req)?;
    part(&ctx, me, them, |standing| standing == Standing::Received).await
}

/// Ends a friendship, or withdraws my request: gone from both lists. `NOT_FOUND` when we are
/// neither friends nor have I asked.
#[mortar::handler("friend.remove")]
async fn remove(ctx: Ctx, req: Target) -> Result<Done, Code> {
    let (me, them) = pair(&ctx, &req)?;
    part(&ctx, me, them, |standing| matches!(standing, Standing::Friend | Standing::Sent)).await
}

/// Blocks them: whatever stood between us ends, their requests no longer reach me, and modules
/// that read `friend.blocked_by` (group chat) leave their messages out. Blocking again changes
/// nothing. `NOT_FOUND` for a player without an account, `BLOCK_LIMIT`.
#[mortar::handler("friend.block")]
async fn block(ctx: Ctx, req: Target) -> Result<Done, Code> {
    let (me, them) = pair(&ctx, &req)?;
    let config = ctx.config::<FriendConfig>();
    let mine = list_of(&ctx, me).await?;
    match mine.standing_of(them) {
        Some(Standing::Blocked) => return Ok(Done {}),
        _ if mine.count(|standing| standing == Standing::Blocked) >= config.max_blocked => {
            return Err(BLOCK_LIMIT);
        }
        _ => {}
    }
    both_names(&ctx, me, them).await?;
    let store = ctx.store::<Friends>();
    store
        .upsert(them, |theirs| {
            if theirs.standing_of(me) != Some(Standing::Blocked) {
                theirs.remove(me);
            }
            if !theirs.blocked_by.contains(&me) {
                theirs.blocked_by.push(me);
            }
            Ok(())
        })
        .await?;
    let now = now_ms(&ctx);
    set_mine(&ctx, me, them, Standing::Blocked, now).await?;
    Ok(Done {})
}

/// Lifts my block: they are off my list, and may ask again. `NOT_FOUND` when I do not block them.
#[mortar::handler("friend.unblock")]
async fn unblock(ctx: Ctx, req: Target) -> Result<Done, Code> {
    let (me, them) = pair(&ctx, &req)?;
    let store = ctx.store::<Friends>();
    if list_of(&ctx, me).await?.standing_of(them) != Some(Standing::Blocked) {
        return Err(Code::NOT_FOUND);
    }
    if store.try_get(them).await?.is_some() {
        store
            .update(them, |theirs| {
                theirs.blocked_by.retain(|&user| user != me);
                Ok(())
            })
            .await?;
    }
    store
        .update(me, |mine| {
            if mine.standing_of(them) == Some(Standing::Blocked) {
                mine.remove(them);
            }
            Ok(())
        })
        .await?;
    Ok(Done {})
}

/// Everyone on my list with their name, state and whether they are online (never, for players I
/// block), oldest first.
#[mortar::handler("friend.list")]
async fn list(ctx: Ctx, _req: ListReq) -> Result<ListResp, Code> {
    let me = ctx.user_id().ok_or(Code::NOT_LOGGED_IN)?;
    let entries = list_of(&ctx, me).await?.entries;
    let users: Vec<u64> = entries.iter().map(|entry| entry.user).collect();
    let (names, online) = futures::try_join!(names(&ctx, &users), ctx.online(&users))?;
    let friends = entries
        .iter()
        .zip(names)
        .zip(online)
        .map(|((entry, name), online)| Listed {
            user_id: entry.user,
            name,
            state: entry.standing.state().into(),
            online: online && entry.standing != Standing::Blocked,
        })
        .collect();
    Ok(ListResp { friends })
}

/// Who blocks `userId` (internal, for modules that deliver a player's messages to others).
#[mortar::handler("friend.blocked_by", internal)]
async fn blocked_by(ctx: Ctx, req: BlockedByReq) -> Result<BlockedByResp, Code> {
    Ok(BlockedByResp { user_ids: list_of(&ctx, req.user_id).await?.blocked_by })
}

/// Tells the player's friends who are online that they logged in.
async fn came_online(ctx: Ctx, user: u64) {
    tell_friends(&ctx, user, "friend.online").await;
}

/// Tells the player's friends who are online that they left.
async fn went_offline(ctx: Ctx, user: u64) {
    tell_friends(&ctx, user, "friend.offline").await;
}

async fn tell_friends(ctx: &Ctx, user: u64, route: &str) {
    let Ok(list) = list_of(ctx, user).await else { return };
    let friends = list.friends();
    if !friends.is_empty() {
        let _ = ctx.push(&friends, route, &Presence { user_id: user }).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn befriending_keeps_the_place_and_stops_at_the_limit() {
        let mut list = Friends::default();
        list.set(5, Standing::Received, 1);
        list.set(6, Standing::Friend, 2);
        assert_eq!(list.befriend(7, 2, 3), Ok(()));
        assert_eq!(list.befriend(5, 2, 4), Err(FRIEND_LIMIT), "two friends already");
        assert_eq!(list.befriend(6, 2, 4), Ok(()), "a friend again is no new friend");
        let order: Vec<u64> = list.entries.iter().map(|entry| entry.user).collect();
        assert_eq!(order, [5, 6, 7]);
        assert_eq!(list.friends(), [6, 7]);
        assert_eq!(list.count(Standing::pending), 1);
    }

    #[test]
    fn the_default_config_is_valid() {
        check_config(&FriendConfig::default()).unwrap();
        assert!(check_config(&FriendConfig { max_pending: 0, ..FriendConfig::default() }).is_err());
    }
}
