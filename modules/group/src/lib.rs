//! The group module: chat groups with an owner and members, and messages pushed to every
//! online member.
//!
//! - `group.create {name}` → `{groupId}` (the creator owns it), `group.join`, `group.leave
//!   {groupId}`, `group.kick {groupId, userId}` (the owner only) → `{}`, `group.members
//!   {groupId}` → `{members}`, `group.mine {}` → `{groups}`, for a logged-in player;
//! - `group.say {groupId, text}` → `{}`, and the push `group.message {groupId, from, name, text,
//!   sentAt}` to every online member, the sender included, but not to members who block the
//!   sender (`friend.blocked_by`, when the friend module is served). The host sends one batch per
//!   gateway.
//!
//! A group is one document (collection `group_chat`, id random below 2^53) holding its members; it is
//! what `say`, `members` and every check read. Each player's groups are listed in a second
//! document (collection `group_member`, id = user id), what `mine` reads and the per-player limit
//! counts; joining writes it first and leaving last, so it may name a group the player is not
//! (or no longer) in only while a join or leave is under way, or after a crash between the two
//! writes, never the other way round; `mine` skips such names.
//!
//! The last member to leave **closes** the group in the same compare-and-set that removes them
//! (`closed_ms`, a state no write leaves), and only then deletes it: a join racing that leave
//! either comes first (the group keeps the joiner) or finds it closed or gone and takes it off
//! the joiner's list again, so a lost group never keeps a slot of `max_groups_per_user`. Names of
//! groups that are gone or closed — from a crash, or written by the previous version, which
//! could delete a group a player had just joined — are dropped from a player's list when it is
//! full (`make_room`) and when they leave such a group.

use mortar::{prelude::*, store::StoreError};
use serde::{Deserialize, Serialize};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::UNIX_EPOCH,
};

/// The messages of `proto/group.proto`.
pub mod group {
    mortar::include_proto!("group");
}

/// The user module's messages and typed client (`user.lookup`).
pub mod user {
    mortar::import_proto!("user");
}

/// The friend module's messages and typed client (`friend.blocked_by`).
pub mod friend {
    mortar::import_proto!("friend");
}

use group::{
    CreateReq, CreateResp, Done, GroupReq, Joined, KickReq, Member, MembersResp, MineReq, MineResp, Role,
    Said, SayReq,
};

mortar::module!(Group);
mortar::export_module!();

/// The module on a node: the turns of the groups written on it now (see `Turn`).
#[derive(Default)]
pub struct Group {
    turns: Mutex<HashMap<u64, Arc<futures::lock::Mutex<()>>>>,
}

impl Module for Group {
    fn name(&self) -> &'static str {
        "group"
    }
}

/// The group already has `max_members` members.
pub const GROUP_FULL: Code = Code::module(group::ModuleCode::GroupFull as i32);
/// The player is in `max_groups_per_user` groups already.
pub const GROUP_LIMIT: Code = Code::module(group::ModuleCode::GroupLimit as i32);

/// `[modules.group]`: the sizes of groups, names and messages.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupConfig {
    /// Members one group may have.
    pub max_members: usize,
    /// Groups one player may be in.
    pub max_groups_per_user: usize,
    /// The longest group name, in characters.
    pub max_name_chars: usize,
    /// The longest `group.say` text, in characters.
    pub max_text_chars: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self { max_members: 1000, max_groups_per_user: 20, max_name_chars: 32, max_text_chars: 500 }
    }
}

fn check_config(config: &GroupConfig) -> Result<(), String> {
    let limits =
        [config.max_members, config.max_groups_per_user, config.max_name_chars, config.max_text_chars];
    if limits.contains(&0) {
        return Err(
            "max_members, max_groups_per_user, max_name_chars and max_text_chars must be at least 1".into()
        );
    }
    if config.max_members > 100_000 || config.max_groups_per_user > 10_000 {
        return Err("max_members must be at most 100000, and max_groups_per_user at most 10000".into());
    }
    Ok(())
}

mortar::config!(GroupConfig, section = "group", check = check_config);

/// A member's part in a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Part {
    /// May kick; one per group.
    Owner,
    /// Anyone else.
    Member,
}

impl Part {
    fn role(self) -> Role {
        match self {
            Self::Owner => Role::Owner,
            Self::Member => Role::Member,
        }
    }
}

/// One member of a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The player.
    pub user: u64,
    /// Their part.
    pub part: Part,
    /// When they joined, ms since the Unix epoch.
    pub joined_ms: i64,
}

/// A group: document id = group id.
#[derive(Clone, Debug, Default, Serialize, Deserialize, mortar::Document)]
#[document(collection = "group_chat")]
pub struct Chat {
    /// Its name.
    pub name: String,
    /// The members, in the order they joined; the owner is one of them.
    pub members: Vec<Membership>,
    /// When it was created, ms since the Unix epoch.
    pub created_ms: i64,
    /// When the last member left, ms since the Unix epoch; 0 while open. Set in the write that
    /// removes that member: a closed group is gone for everyone (read as not found, never written
    /// again), and deleted next. (A number, not a bool: the MongoDB test server nx-27017 reads
    /// booleans back as integers.)
    #[serde(default)]
    pub closed_ms: i64,
}

impl Chat {
    /// Whether its last member left (see `closed_ms`).
    pub fn closed(&self) -> bool {
        self.closed_ms != 0
    }

    /// `user`'s part, when they are a member.
    pub fn part_of(&self, user: u64) -> Option<Part> {
        self.members.iter().find(|member| member.user == user).map(|member| member.part)
    }

    /// Removes `user`; an owner's part goes to the member who joined first after them. Whether
    /// they were a member.
    fn remove(&mut self, user: u64) -> bool {
        let Some(at) = self.members.iter().position(|member| member.user == user) else { return false };
        let gone = self.members.remove(at);
        if gone.part == Part::Owner
            && let Some(heir) = self.members.first_mut()
        {
            heir.part = Part::Owner;
        }
        true
    }
}

/// The groups one player is in: document id = user id.
#[derive(Clone, Debug, Default, Serialize, Deserialize, mortar::Document)]
#[document(collection = "group_member")]
pub struct Groups {
    /// Group ids, in the order they were joined.
    pub groups: Vec<u64>,
}

fn now_ms(ctx: &Ctx) -> i64 {
    ctx.now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

fn caller(ctx: &Ctx) -> Result<u64, Code> {
    ctx.user_id().ok_or(Code::NOT_LOGGED_IN)
}

/// `text` is 1 to `max` characters, not only blanks, with no control characters but line breaks.
fn valid_text(text: &str, max: usize) -> bool {
    !text.trim().is_empty()
        && text.chars().count() <= max
        && !text.chars().any(|c| c.is_control() && c != '\n')
}

/// Group `group`: `NOT_FOUND` when there is none, or it is closed.
async fn chat(ctx: &Ctx, group: u64) -> Result<Chat, Code> {
    match ctx.store::<Chat>().try_get(group).await? {
        Some(found) if group != 0 && !found.doc.closed() => Ok(found.doc),
        _ => Err(Code::NOT_FOUND),
    }
}

/// Adds `group` to `user`'s groups, unless they are in `max` already (after dropping the names
/// of groups that are gone: [`make_room`]).
async fn enlist(ctx: &Ctx, user: u64, group: u64, max: usize) -> Result<(), Code> {
    let add = |mine: &mut Groups| {
        if !mine.groups.contains(&group) {
            if mine.groups.len() >= max {
                return Err(GROUP_LIMIT);
            }
            mine.groups.push(group);
        }
        Ok(())
    };
    match ctx.store::<Groups>().upsert(user, add).await {
        Err(mortar::store::UpdateError::Refused(GROUP_LIMIT)) if make_room(ctx, user, max).await? => {
            ctx.store::<Groups>().upsert(user, add).await?;
        }
        other => {
            other?;
        }
    }
    Ok(())
}

/// Drops from `user`'s list the groups that are gone or closed (they hold no one): whether the
/// list has room for one more below `max` afterwards. Only when it is full, since it reads every
/// listed group. Groups that exist and do not hold the player are kept: a join may be under way.
async fn make_room(ctx: &Ctx, user: u64, max: usize) -> Result<bool, Code> {
    let Some(listed) = ctx.store::<Groups>().try_get(user).await? else { return Ok(true) };
    if listed.doc.groups.len() < max {
        return Ok(true);
    }
    let mut gone = Vec::new();
    for &group in &listed.doc.groups {
        if matches!(chat(ctx, group).await, Err(Code::NOT_FOUND)) {
            gone.push(group);
        }
    }
    if gone.is_empty() {
        return Ok(false);
    }
    let (kept, ()) = ctx
        .store::<Groups>()
        .update(user, |mine| {
            mine.groups.retain(|group| !gone.contains(group));
            Ok(())
        })
        .await?;
    Ok(kept.doc.groups.len() < max)
}

/// Takes `group` off `user`'s groups.
async fn unlist(ctx: &Ctx, user: u64, group: u64) -> Result<(), Code> {
    let updated = ctx
        .store::<Groups>()
        .update(user, |mine| {
            mine.groups.retain(|&id| id != group);
            Ok(())
        })
        .await;
    match updated {
        Ok(_) | Err(mortar::store::UpdateError::Store(StoreError::NotFound)) => Ok(()),
        Err(error) => Err(error.code()),
    }
}

/// Creates a group owned by the caller: its id. `BAD_REQUEST` for an empty or too long name,
/// `GROUP_LIMIT`.
#[mortar::handler("group.create")]
async fn create(ctx: Ctx, req: CreateReq) -> Result<CreateResp, Code> {
    let me = caller(&ctx)?;
    let config = ctx.config::<GroupConfig>();
    if !valid_text(&req.name, config.max_name_chars) || req.name.contains('\n') {
        return Err(Code::BAD_REQUEST);
    }
    if !make_room(&ctx, me, config.max_groups_per_user).await? {
        return Err(GROUP_LIMIT);
    }
    let now = now_ms(&ctx);
    let doc = Chat {
        name: req.name,
        members: vec![Membership { user: me, part: Part::Owner, joined_ms: now }],
        created_ms: now,
        closed_ms: 0,
    };
    let store = ctx.store::<Chat>();
    let group = loop {
        let id = rand::random::<u64>() % (1 << 53) + 1;
        match store.insert(id, doc.clone()).await {
            Ok(_) => break id,
            Err(StoreError::AlreadyExists { index: None }) => continue,
            Err(error) => return Err(error.code()),
        }
    };
    if let Err(code) = enlist(&ctx, me, group, config.max_groups_per_user).await {
        // A racing create took the last place: this group never had anyone else.
        let _ = store.delete(group).await;
        return Err(code);
    }
    Ok(CreateResp { group_id: group })
}

/// Joins a group; joining again changes nothing. `NOT_FOUND`, `GROUP_FULL`, `GROUP_LIMIT`.
#[mortar::handler("group.join")]
async fn join(ctx: Ctx, req: GroupReq) -> Result<Done, Code> {
    let me = caller(&ctx)?;
    let config = ctx.config::<GroupConfig>();
    let group = req.group_id;
    let found = chat(&ctx, group).await?;
    if found.part_of(me).is_some() {
        return Ok(Done {});
    }
    if found.members.len() >= config.max_members {
        return Err(GROUP_FULL);
    }
    enlist(&ctx, me, group, config.max_groups_per_user).await?;
    let now = now_ms(&ctx);
    let joined = crowded_update(&ctx, group, |chat| {
        if chat.closed() {
            return Err(Code::NOT_FOUND); // its last member left since
        }
        if chat.part_of(me).is_none() {
            if chat.members.len() >= config.max_members {
                return Err(GROUP_FULL);
            }
            chat.members.push(Membership { user: me, part: Part::Member, joined_ms: now });
        }
        Ok(())
    })
    .await;
    if let Err(error) = joined {
        let _ = unlist(&ctx, me, group).await;
        return Err(error.code());
    }
    Ok(Done {})
}

/// [`Store::update`](mortar::store::Store::update) of a group's document, tried again on
/// `CONFLICT` until the request's deadline is near: a popular group's joins and leaves race for
/// the one document (a thousand players joining at once), and each is safe to repeat.
/// On one node the writes of one group also wait their turn ([`Turn`]), so that racing there
/// does not burn the attempts.
async fn crowded_update(
    ctx: &Ctx,
    group: u64,
    mut change: impl FnMut(&mut Chat) -> Result<(), Code>,
) -> Result<mortar::store::Versioned<Chat>, mortar::store::UpdateError> {
    let store = ctx.store::<Chat>();
    let turn = Turn::of(ctx, group)?;
    let _guard = turn.lock.lock().await;
    loop {
        match store.update(group, &mut change).await {
            Err(mortar::store::UpdateError::Store(StoreError::Conflict))
                if ctx.remaining() > std::time::Duration::from_millis(500) => {}
            other => return other.map(|(saved, ())| saved),
        }
    }
}

/// A group's turn to write its document on this node: one async lock per group with writers
/// waiting, in the node's [`Group`], dropped from its table with its last holder.
struct Turn {
    group: u64,
    lock: Arc<futures::lock::Mutex<()>>,
    module: Arc<Group>,
}

impl Turn {
    fn of(ctx: &Ctx, group: u64) -> Result<Self, mortar::store::UpdateError> {
        let module = ctx.module::<Group>().ok_or(mortar::store::UpdateError::Refused(Code::INTERNAL))?;
        let lock =
            module.turns.lock().unwrap_or_else(PoisonError::into_inner).entry(group).or_default().clone();
        Ok(Self { group, lock, module })
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut turns = self.module.turns.lock().unwrap_or_else(PoisonError::into_inner);
        // The table's and this one: no one else waits.
        if Arc::strong_count(&self.lock) == 2 {
            turns.remove(&self.group);
        }
    }
}

/// Removes `user` from `group` (see [`Chat::remove`]), closing and deleting a group left empty
/// (see the module docs), then from the player's list. `NOT_FOUND` when they are no member.
async fn depart(ctx: &Ctx, group: u64, user: u64) -> Result<(), Code> {
    let now = now_ms(ctx).max(1);
    let left = crowded_update(ctx, group, |chat| {
        if chat.closed() || !chat.remove(user) {
            return Err(Code::NOT_FOUND);
        }
        if chat.members.is_empty() {
            chat.closed_ms = now;
        }
        Ok(())
    })
    .await
    .map_err(|error| error.code())?;
    // Closed in the write above: no one writes it again, so deleting it loses nothing.
    if left.doc.closed() {
        ctx.store::<Chat>().delete(group).await?;
    }
    unlist(ctx, user, group).await
}

/// Leaves a group. An owner's part passes to the member who joined first after them; the last
/// member leaving deletes the group. `NOT_FOUND` when I am no member.
#[mortar::handler("group.leave")]
async fn leave(ctx: Ctx, req: GroupReq) -> Result<Done, Code> {
    let me = caller(&ctx)?;
    if let Err(code) = chat(&ctx, req.group_id).await {
        // Gone: nor should my list name it (see the module docs).
        unlist(&ctx, me, req.group_id).await?;
        return Err(code);
    }
    depart(&ctx, req.group_id, me).await?;
    Ok(Done {})
}

/// Removes a member: the owner only (`PERMISSION_DENIED` for anyone else), and not themself
/// (`BAD_REQUEST`: they leave instead). `NOT_FOUND` for a group or member that is not there.
#[mortar::handler("group.kick")]
async fn kick(ctx: Ctx, req: KickReq) -> Result<Done, Code> {
    let me = caller(&ctx)?;
    let found = chat(&ctx, req.group_id).await?;
    if found.part_of(me) != Some(Part::Owner) {
        return Err(Code::PERMISSION_DENIED);
    }
    if req.user_id == me {
        return Err(Code::BAD_REQUEST);
    }
    depart(&ctx, req.group_id, req.user_id).await?;
    Ok(Done {})
}

/// The names of `users` (by `user.lookup`, at most 1,000 a call), in their order; an empty name
/// for an id without an account.
async fn names(ctx: &Ctx, users: &[u64]) -> Result<Vec<String>, Code> {
    let mut names = HashMap::new();
    for chunk in users.chunks(1000) {
        let found = user::UserClient(ctx).lookup(&user::LookupReq { user_ids: chunk.to_vec() }).await?;
        names.extend(found.users.into_iter().map(|player| (player.user_id, player.name)));
    }
    Ok(users.iter().map(|user| names.get(user).cloned().unwrap_or_default()).collect())
}

/// The members with their names, roles and whether they are online; for members only
/// (`PERMISSION_DENIED`). `NOT_FOUND`.
#[mortar::handler("group.members")]
async fn members(ctx: Ctx, req: GroupReq) -> Result<MembersResp, Code> {
    let me = caller(&ctx)?;
    let found = chat(&ctx, req.group_id).await?;
    if found.part_of(me).is_none() {
        return Err(Code::PERMISSION_DENIED);
    }
    let users: Vec<u64> = found.members.iter().map(|member| member.user).collect();
    let (names, online) = futures::try_join!(names(&ctx, &users), ctx.online(&users))?;
    let members = found
        .members
        .iter()
        .zip(names)
        .zip(online)
        .map(|((member, name), online)| Member {
            user_id: member.user,
            name,
            role: member.part.role().into(),
            online,
        })
        .collect();
    Ok(MembersResp { members })
}

/// The groups I am in, with their names and my role, in the order I joined them.
#[mortar::handler("group.mine")]
async fn mine(ctx: Ctx, _req: MineReq) -> Result<MineResp, Code> {
    use futures::StreamExt as _;
    let me = caller(&ctx)?;
    let Some(listed) = ctx.store::<Groups>().try_get(me).await? else {
        return Ok(MineResp::default());
    };
    let store = ctx.store::<Chat>();
    let found: Vec<Result<Option<Joined>, Code>> = futures::stream::iter(listed.doc.groups)
        .map(|group| {
            let store = store.clone();
            async move {
                let chat = store.try_get(group).await.map_err(|error| error.code())?;
                // A group deleted, or left, since the list was written (see the module docs).
                Ok(chat.and_then(|chat| {
                    let part = chat.doc.part_of(me)?;
                    Some(Joined { group_id: group, name: chat.doc.name, role: part.role().into() })
                }))
            }
        })
        .buffered(16)
        .collect()
        .await;
    let groups = found.into_iter().filter_map(Result::transpose).collect::<Result<_, _>>()?;
    Ok(MineResp { groups })
}

/// Says `text` to the group: every online member gets `group.message` (the sender too), except
/// those who block the sender. Members only (`PERMISSION_DENIED`); `BAD_REQUEST` for an empty or
/// too long text, or control characters but line breaks; `NOT_FOUND`.
#[mortar::handler("group.say")]
async fn say(ctx: Ctx, req: SayReq) -> Result<Done, Code> {
    let me = caller(&ctx)?;
    if !valid_text(&req.text, ctx.config::<GroupConfig>().max_text_chars) {
        return Err(Code::BAD_REQUEST);
    }
    let found = chat(&ctx, req.group_id).await?;
    if found.part_of(me).is_none() {
        return Err(Code::PERMISSION_DENIED);
    }
    let blocking = async {
        match friend::FriendClient(&ctx).blocked_by(&friend::BlockedByReq { user_id: me }).await {
            Ok(blocked) => Ok(blocked.user_ids),
            // No friend module served: no one blocks anyone.
            Err(Code::NO_ROUTE) => Ok(Vec::new()),
            Err(code) => Err(code),
        }
    };
    let sender = [me];
    let (blocking, name) = futures::try_join!(blocking, names(&ctx, &sender))?;
    let to: Vec<u64> =
        found.members.iter().map(|member| member.user).filter(|user| !blocking.contains(user)).collect();
    let said = Said {
        group_id: req.group_id,
        from: me,
        name: name.into_iter().next().unwrap_or_default(),
        text: req.text,
        sent_at: now_ms(&ctx),
    };
    ctx.push(&to, "group.message", &said).await?;
    Ok(Done {})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(user: u64, part: Part) -> Membership {
        Membership { user, part, joined_ms: 0 }
    }

    #[test]
    fn an_owner_leaving_passes_the_group_to_the_oldest_member() {
        let mut chat = Chat {
            members: vec![member(1, Part::Owner), member(2, Part::Member), member(3, Part::Member)],
            ..Chat::default()
        };
        assert!(!chat.remove(9));
        assert!(chat.remove(1));
        assert_eq!(chat.members, [member(2, Part::Owner), member(3, Part::Member)]);
        assert!(chat.remove(3));
        assert_eq!(chat.part_of(2), Some(Part::Owner));
    }

    #[test]
    fn texts_are_bounded_and_printable() {
        assert!(valid_text("hi\nthere", 10));
        assert!(!valid_text("  ", 10));
        assert!(!valid_text("12345678901", 10));
        assert!(!valid_text("bell\u{7}", 10));
        assert!(valid_text("ключ", 4), "characters, not bytes");
    }

    #[test]
    fn the_default_config_is_valid() {
        check_config(&GroupConfig::default()).unwrap();
        assert!(check_config(&GroupConfig { max_members: 0, ..GroupConfig::default() }).is_err());
    }
}
