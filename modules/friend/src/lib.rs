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
//! Each pair of players has one truth, kept in the document of the lower user id and copied to
//! the other's under compare-and-set, so that after any interleaving of two players' routes their
//! lists agree (see [`pair`] for the protocol and how documents of the previous version are
//! read). A block always wins: it is applied to the truth whatever came first, and an accept
//! that comes after it finds no request. Two players asking each other at the same moment
//! become friends: whichever request comes second finds the first and accepts it. Names come
//! from `user.lookup`, so the user module must be served too.

pub mod pair;

use mortar::prelude::*;
use pair::{Counts, Pair, change, doc_of, list_of};
use serde::{Deserialize, Serialize};
use std::time::UNIX_EPOCH;

pub use pair::{Entry, Friends, Link};

/// The messages of `proto/friend.proto`.
pub mod friend {
    mortar::include_proto!("friend");
}

/// The user module's messages and typed client (`user.lookup`).
pub mod user {
    mortar::import_proto!("user");
}

use friend::{
    Accepted, BlockedByReq, BlockedByResp, Done, ListReq, ListResp, Listed, Presence, Request, State, Target,
};

mortar::module!("friend", on_online = came_online, on_offline = went_offline);
mortar::export_module!();

/// I, or the other player, already have `max_friends` friends.
pub const FRIEND_LIMIT: Code = Code::module(friend::ModuleCode::FriendLimit as i32);
/// I already have `max_pending` requests of mine waiting for an answer.
pub const PENDING_LIMIT: Code = Code::module(friend::ModuleCode::PendingLimit as i32);
/// I already block `max_blocked` players.
pub const BLOCK_LIMIT: Code = Code::module(friend::ModuleCode::BlockLimit as i32);

/// Never sent: a change closure's way to say that nothing needs writing.
const UNCHANGED: Code = Code::module(1999);

/// `[modules.friend]`: the sizes of one player's list.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FriendConfig {
    /// Friends one player may have.
    pub max_friends: usize,
    /// Requests of one player waiting for an answer (sent by them); past it `friend.request`
    /// answers `PENDING_LIMIT`. Requests they received do not count.
    pub max_pending: usize,
    /// Requests waiting for one player's answer (received by them); a request past it makes
    /// the oldest waiting one give way (gone from both lists), so strangers can neither fill a
    /// player's list for good nor stop them asking.
    pub max_incoming: usize,
    /// Players one player may block.
    pub max_blocked: usize,
}

impl Default for FriendConfig {
    fn default() -> Self {
        Self { max_friends: 200, max_pending: 100, max_incoming: 100, max_blocked: 200 }
    }
}

fn check_config(config: &FriendConfig) -> Result<(), String> {
    let sizes = [config.max_friends, config.max_pending, config.max_incoming, config.max_blocked];
    if sizes.contains(&0) || sizes.iter().sum::<usize>() > 100_000 {
        return Err("max_friends, max_pending, max_incoming and max_blocked must be at least 1, and 100000 \
                    at most together"
            .into());
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
}

pub(crate) fn now_ms(ctx: &Ctx) -> i64 {
    ctx.now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

/// The caller and the other player of a request: `BAD_REQUEST` for 0 or oneself.
fn pair(ctx: &Ctx, target: &Target) -> Result<(u64, u64), Failure> {
    let me = ctx.user_id().ok_or(Code::NOT_LOGGED_IN)?;
    if target.user_id == 0 {
        return Err(Code::BAD_REQUEST.because("userId: 0 is no player's id"));
    }
    if target.user_id == me {
        return Err(Code::BAD_REQUEST.because("userId: that is you"));
    }
    Ok((me, target.user_id))
}

/// The names of `users` (by `user.lookup`, at most 1,000 a call), in their order; an empty name
/// for an id without an account.
async fn names(ctx: &Ctx, users: &[u64]) -> Result<Vec<String>, Code> {
    let mut names = std::collections::HashMap::new();
    for chunk in users.chunks(1000) {
        let found = user::UserClient(ctx).lookup(&user::LookupReq { user_ids: chunk.to_vec() }).await?;
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

/// What a request did, for the push it calls for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Asked {
    /// Nothing they need to hear of: we are friends already, my request waits already, or they
    /// block me (my list says `REQUEST_SENT`, theirs nothing).
    Nothing,
    /// My request now waits for them: `friend.request` to them.
    Waiting,
    /// They had asked me: we are friends, `friend.accepted` to them.
    Friends,
}

/// The module's codes with a reason that names the limit.
fn explain(code: Code, config: &FriendConfig) -> Failure {
    match code {
        FRIEND_LIMIT => {
            code.because(format!("one of you has {} friends, the most there may be", config.max_friends))
        }
        PENDING_LIMIT => code.because(format!(
            "{} requests of yours wait for an answer, the most there may be",
            config.max_pending
        )),
        BLOCK_LIMIT => {
            code.because(format!("you block {} players, the most there may be", config.max_blocked))
        }
        code => code.into(),
    }
}

/// `FRIEND_LIMIT` unless both of us have room for one more friend.
fn room_for_friends(mine: Counts, theirs: Counts, max: usize) -> Result<(), Code> {
    if mine.friends >= max || theirs.friends >= max { Err(FRIEND_LIMIT) } else { Ok(()) }
}

/// `friend.request` on the pair as I see it.
fn ask(pair: &mut Pair, mine: Counts, theirs: Counts, config: &FriendConfig) -> Result<Asked, Code> {
    use Standing::{Blocked, Friend, Received, Sent};
    match (pair.mine, pair.theirs) {
        (Some(Blocked), _) => Err(Code::CONFLICT),
        (Some(Friend), _) | (Some(Sent), Some(Received | Blocked)) => Ok(Asked::Nothing),
        // They asked me (also a request that never reached me while I blocked them).
        (Some(Received), _) | (None, Some(Sent)) => {
            room_for_friends(mine, theirs, config.max_friends)?;
            *pair = Pair::FRIENDS;
            Ok(Asked::Friends)
        }
        // Asked before, while they blocked me and since unblocked: it reaches them now.
        (Some(Sent), _) => {
            pair.theirs = Some(Received);
            Ok(Asked::Waiting)
        }
        (None, _) if mine.sent >= config.max_pending => Err(PENDING_LIMIT),
        (None, Some(Blocked)) => {
            pair.mine = Some(Sent);
            Ok(Asked::Nothing)
        }
        (None, _) => {
            *pair = Pair { mine: Some(Sent), theirs: Some(Received) };
            Ok(Asked::Waiting)
        }
    }
}

/// Asks to be friends. Answers `{}` (the push of the same route, to them, carries a filled one):
/// when they asked me first we become friends (they get `friend.accepted`); otherwise they get
/// `friend.request`, unless they block me, in which case nothing reaches them (my list still says
/// `REQUEST_SENT`). Asking again changes nothing, unless the first request never reached them.
/// When `max_incoming` requests wait for them already, the oldest gives way. `NOT_FOUND` for a
/// player without an account, `CONFLICT` when I block them, `PENDING_LIMIT` when `max_pending`
/// of mine wait, `FRIEND_LIMIT`.
#[mortar::handler("friend.request")]
async fn request(ctx: Ctx, req: Target) -> Result<Request, Failure> {
    let config = ctx.config::<FriendConfig>();
    let (me, them) = pair(&ctx, &req)?;
    request_pair(ctx, me, them).await.map_err(|code| explain(code, &config))
}

async fn request_pair(ctx: Ctx, me: u64, them: u64) -> Result<Request, Code> {
    let config = ctx.config::<FriendConfig>();
    let (my_name, _) = both_names(&ctx, me, them).await?;
    let mine = list_of(&ctx, me).await?;
    // Would this request wait for them? Then make room for it.
    let mut preview = mine.pair(them);
    let counts = Counts::default(); // limits are checked for real below
    if ask(&mut preview, counts, counts, &config) == Ok(Asked::Waiting) {
        make_room(&ctx, them, me, config.max_incoming).await?;
    }
    let asked = change(&ctx, me, them, |pair, mine, theirs| ask(pair, mine, theirs, &config)).await?;
    match asked {
        Asked::Nothing => {}
        Asked::Waiting => {
            let _ = ctx.push(&[them], "friend.request", &Request { user_id: me, name: my_name }).await;
        }
        Asked::Friends => {
            let _ = ctx.push(&[them], "friend.accepted", &Accepted { user_id: me, name: my_name }).await;
        }
    }
    Ok(Request::default())
}

/// Lets the oldest requests waiting for `target` give way until one more fits below `max`
/// (`asker`'s own request stays).
async fn make_room(ctx: &Ctx, target: u64, asker: u64, max: usize) -> Result<(), Code> {
    let waiting: Vec<u64> = doc_of(ctx, target)
        .await?
        .received_oldest_first()
        .into_iter()
        .filter(|&user| user != asker)
        .collect();
    let excess = (waiting.len() + 1).saturating_sub(max);
    for &oldest in &waiting[..excess] {
        change(ctx, target, oldest, |pair, _, _| {
            if pair.mine == Some(Standing::Received) {
                *pair = Pair::default();
            }
            Ok(())
        })
        .await?;
    }
    Ok(())
}

/// Accepts their request: we are friends, and they get `friend.accepted`. `NOT_FOUND` when they
/// have not asked (or withdrew, or I block them now), `FRIEND_LIMIT` when either list is full.
#[mortar::handler("friend.accept")]
async fn accept(ctx: Ctx, req: Target) -> Result<Done, Failure> {
    let config = ctx.config::<FriendConfig>();
    let (me, them) = pair(&ctx, &req)?;
    accept_pair(ctx, me, them).await.map_err(|code| explain(code, &config))
}

async fn accept_pair(ctx: Ctx, me: u64, them: u64) -> Result<Done, Code> {
    let config = ctx.config::<FriendConfig>();
    match list_of(&ctx, me).await?.standing_of(them) {
        Some(Standing::Received) => {}
        Some(Standing::Friend) => return Ok(Done {}),
        _ => return Err(Code::NOT_FOUND),
    }
    let (my_name, _) = both_names(&ctx, me, them).await?;
    let befriended = change(&ctx, me, them, |pair, mine, theirs| match pair.mine {
        Some(Standing::Friend) => Ok(false),
        Some(Standing::Received) => {
            room_for_friends(mine, theirs, config.max_friends)?;
            *pair = Pair::FRIENDS;
            Ok(true)
        }
        _ => Err(Code::NOT_FOUND),
    })
    .await?;
    if befriended {
        let _ = ctx.push(&[them], "friend.accepted", &Accepted { user_id: me, name: my_name }).await;
    }
    Ok(Done {})
}

/// Refuses their request: it is gone from both lists. `NOT_FOUND` when there is none.
#[mortar::handler("friend.reject")]
async fn reject(ctx: Ctx, req: Target) -> Result<Done, Failure> {
    let (me, them) = pair(&ctx, &req)?;
    change(&ctx, me, them, |pair, _, _| match pair.mine {
        Some(Standing::Received) => {
            *pair = Pair::default();
            Ok(())
        }
        _ => Err(Code::NOT_FOUND),
    })
    .await?;
    Ok(Done {})
}

/// Ends a friendship, or withdraws my request: gone from both lists (their block of me stays).
/// `NOT_FOUND` when we are neither friends nor have I asked.
#[mortar::handler("friend.remove")]
async fn remove(ctx: Ctx, req: Target) -> Result<Done, Failure> {
    let (me, them) = pair(&ctx, &req)?;
    change(&ctx, me, them, |pair, _, _| match pair.mine {
        Some(Standing::Friend | Standing::Sent) => {
            pair.mine = None;
            pair.theirs = pair.theirs.filter(|&theirs| theirs == Standing::Blocked);
            Ok(())
        }
        _ => Err(Code::NOT_FOUND),
    })
    .await?;
    Ok(Done {})
}

/// Blocks them: whatever stood between us ends (also when it is being changed at this moment:
/// the block wins), their requests no longer reach me, neither of us hears of the other's
/// presence, and modules that read `friend.blocked_by` (group chat) leave their messages out.
/// Blocking again changes nothing. `NOT_FOUND` for a player without an account, `BLOCK_LIMIT`.
#[mortar::handler("friend.block")]
async fn block(ctx: Ctx, req: Target) -> Result<Done, Failure> {
    let config = ctx.config::<FriendConfig>();
    let (me, them) = pair(&ctx, &req)?;
    block_pair(ctx, me, them).await.map_err(|code| explain(code, &config))
}

async fn block_pair(ctx: Ctx, me: u64, them: u64) -> Result<Done, Code> {
    let config = ctx.config::<FriendConfig>();
    if list_of(&ctx, me).await?.standing_of(them) == Some(Standing::Blocked) {
        return Ok(Done {});
    }
    both_names(&ctx, me, them).await?;
    change(&ctx, me, them, |pair, mine, _| {
        if pair.mine != Some(Standing::Blocked) {
            if mine.blocked >= config.max_blocked {
                return Err(BLOCK_LIMIT);
            }
            pair.mine = Some(Standing::Blocked);
            pair.theirs = pair.theirs.filter(|&theirs| theirs == Standing::Blocked);
        }
        Ok(())
    })
    .await?;
    Ok(Done {})
}

/// Lifts my block: they are off my list, and may ask again. `NOT_FOUND` when I do not block them.
#[mortar::handler("friend.unblock")]
async fn unblock(ctx: Ctx, req: Target) -> Result<Done, Failure> {
    let (me, them) = pair(&ctx, &req)?;
    change(&ctx, me, them, |pair, _, _| match pair.mine {
        Some(Standing::Blocked) => {
            pair.mine = None;
            Ok(())
        }
        _ => Err(Code::NOT_FOUND),
    })
    .await?;
    Ok(Done {})
}

/// Everyone on my list with their name, state and whether they are online (never, for players I
/// block), oldest first.
#[mortar::handler("friend.list")]
async fn list(ctx: Ctx, _req: ListReq) -> Result<ListResp, Code> {
    let me = ctx.user_id().ok_or(Code::NOT_LOGGED_IN)?;
    let shown: Vec<(u64, Standing)> = list_of(&ctx, me)
        .await?
        .links
        .iter()
        .filter_map(|link| link.mine.map(|standing| (link.user, standing)))
        .collect();
    let users: Vec<u64> = shown.iter().map(|(user, _)| *user).collect();
    let (names, online) = futures::try_join!(names(&ctx, &users), ctx.online(&users))?;
    let friends = shown
        .iter()
        .zip(names)
        .zip(online)
        .map(|((&(user_id, standing), name), online)| Listed {
            user_id,
            name,
            state: standing.state().into(),
            online: online && standing != Standing::Blocked,
        })
        .collect();
    Ok(ListResp { friends })
}

/// Who blocks `userId` (internal, for modules that deliver a player's messages to others).
#[mortar::handler("friend.blocked_by", internal)]
async fn blocked_by(ctx: Ctx, req: BlockedByReq) -> Result<BlockedByResp, Code> {
    Ok(BlockedByResp { user_ids: list_of(&ctx, req.user_id).await?.blocked_by() })
}

/// Tells the player's friends who are online that they logged in.
async fn came_online(ctx: Ctx, user: u64) {
    tell_friends(&ctx, user, "friend.online").await;
}

/// Tells the player's friends who are online that they left.
async fn went_offline(ctx: Ctx, user: u64) {
    tell_friends(&ctx, user, "friend.offline").await;
}

/// Pushes `route` to the player's friends: friends on both sides, so never to a player either
/// of them blocks.
async fn tell_friends(ctx: &Ctx, user: u64, route: &str) {
    let Ok(list) = list_of(ctx, user).await else { return };
    let friends: Vec<u64> = list
        .links
        .iter()
        .filter(|link| link.mine == Some(Standing::Friend) && link.theirs == Some(Standing::Friend))
        .map(|link| link.user)
        .collect();
    if !friends.is_empty() {
        let _ = ctx.push(&friends, route, &Presence { user_id: user }).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_between_two_players() {
        use Standing::{Blocked, Friend, Received, Sent};
        let config = FriendConfig { max_friends: 1, max_pending: 1, ..FriendConfig::default() };
        let none = Counts::default();
        let ask_on = |mine: Option<Standing>, theirs: Option<Standing>, counts: Counts| {
            let mut pair = Pair { mine, theirs };
            ask(&mut pair, counts, none, &config).map(|asked| (asked, pair))
        };
        let waiting = Pair { mine: Some(Sent), theirs: Some(Received) };
        assert_eq!(ask_on(None, None, none), Ok((Asked::Waiting, waiting)));
        assert_eq!(ask_on(Some(Received), Some(Sent), none), Ok((Asked::Friends, Pair::FRIENDS)));
        assert_eq!(ask_on(Some(Sent), Some(Received), none), Ok((Asked::Nothing, waiting)));
        let muted = Pair { mine: Some(Sent), theirs: Some(Blocked) };
        assert_eq!(ask_on(None, Some(Blocked), none), Ok((Asked::Nothing, muted)));
        assert_eq!(ask_on(Some(Sent), None, none), Ok((Asked::Waiting, waiting)), "unblocked since");
        assert_eq!(ask_on(None, Some(Sent), none), Ok((Asked::Friends, Pair::FRIENDS)));
        assert_eq!(ask_on(Some(Blocked), None, none), Err(Code::CONFLICT));
        assert_eq!(ask_on(Some(Friend), Some(Friend), none), Ok((Asked::Nothing, Pair::FRIENDS)));
        let full = Counts { friends: 1, sent: 1, ..none };
        assert_eq!(ask_on(None, None, full), Err(PENDING_LIMIT));
        assert_eq!(ask_on(Some(Received), Some(Sent), full), Err(FRIEND_LIMIT));
    }

    #[test]
    fn the_default_config_is_valid() {
        check_config(&FriendConfig::default()).unwrap();
        assert!(check_config(&FriendConfig { max_pending: 0, ..FriendConfig::default() }).is_err());
    }
}
