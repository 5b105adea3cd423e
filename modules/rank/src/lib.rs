//! The rank module: leaderboards with exact ranks, periods that close once, rewards mailed once.
//!
//! Routes, for logged-in players: `rank.submit {boardId, score}` → `{score, rank}`;
//! `rank.top {boardId, limit, cursor, period?}` → `{entries, nextCursor, period}`;
//! `rank.around {boardId, limit}` → `{entries}`; `rank.me {boardId}` → `{rank, score}`;
//! `rank.friends {boardId}` → `{entries}`. Boards come from the game table `boards.json`
//! ([`Board`]).
//!
//! **Where ranks come from.** The store holds the truth: one [`Entry`] per player, board and
//! period, in the sorted index `standing` (board, period, score, tie), where `tie` orders equal
//! scores by who reached them first. Pages of `rank.top` are read from that index. A player's rank
//! comes from a sorted set in the cache (one per board and period; O(log n) in Redis and in
//! memory), whose member for a player is `TIE:USER` so that equal scores order the same way. A
//! set the cache lost (Redis restarted empty, a node that just started with a memory cache) has no
//! *ready* mark: the first request that finds it so starts one rebuild from the store (a cache lock
//! keeps it to one), and until the mark is set ranks are counted in the store instead (exact, and
//! slower) and `rank.around` answers `UNAVAILABLE` ("try again"). Submits keep writing to the set
//! meanwhile; the rebuild reads each page's documents again after adding them and takes back the
//! members of those that changed, so a submit racing the rebuild is never undone by it. Every
//! worker serving `rank` must share the cache (`cache.url = redis://…`) for their ranks to agree.
//!
//! **Periods.** A board with `reset_every_s > 0` has period `now / reset_every_s` (seconds since
//! the Unix epoch). The job `rank.close` (every second, on one worker) closes each period that
//! ended more than `close_grace_ms` ago and is not closed yet: it mails each rewarded rank's player
//! the rank's items through `mail.send` with the key `rank:BOARD:PERIOD:RANK`, which a mailbox
//! takes once (so a close retried after a crash mails nothing twice), drops the period's sorted
//! set, and records the period as closed. The closed period's entries stay in the store: `rank.top
//! {period}` reads its final standings.

use futures::StreamExt as _;
use mortar::{job::Run, prelude::*, store::Cursor};
use serde::{Deserialize, Serialize};
use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, UNIX_EPOCH},
};

/// The messages of `proto/rank.proto`.
pub mod rank {
    mortar::include_proto!("rank");
}

/// The user module's messages and typed client (`user.lookup`).
pub mod user {
    mortar::import_proto!("user");
}

/// The friend module's messages and typed client (`friend.list`).
pub mod friend {
    mortar::import_proto!("friend");
}

/// The mail module's messages and typed client (`mail.send`).
pub mod mail {
    mortar::import_proto!("mail");
}

use rank::{
    AroundReq, AroundResp, Entry as Ranked, FriendsReq, FriendsResp, MeReq, MeResp, SubmitReq, SubmitResp,
    TopReq, TopResp,
};

mortar::module!("rank");
mortar::export_module!();
mortar::job!("rank.close", every = Duration::from_secs(1), run = close);

/// The largest score, either sign: what a sorted set keeps exactly (2^53 − 1).
pub const MAX_SCORE: i64 = mortar::cache::MAX_SCORE;

/// `[modules.rank]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RankConfig {
    /// How long after a period ends it is closed: submits that started before the end land
    /// first.
    pub close_grace_ms: u64,
    /// How many ended periods of one board a close catches up (after every worker was down for
    /// long); older ones are marked closed without rewards, and logged.
    pub catch_up_periods: u64,
    /// Entries read per page when a sorted set is rebuilt from the store.
    pub rebuild_page: usize,
}

impl Default for RankConfig {
    fn default() -> Self {
        Self { close_grace_ms: 2_000, catch_up_periods: 30, rebuild_page: 1_000 }
    }
}

fn check_config(config: &RankConfig) -> Result<(), String> {
    if !(1..=10_000).contains(&config.rebuild_page) {
        return Err("rebuild_page must be within 1–10000".into());
    }
    Ok(())
}

mortar::config!(RankConfig, section = "rank", check = check_config);

/// How a board orders its scores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Highest first.
    #[default]
    Desc,
    /// Lowest first.
    Asc,
}

/// What a submitted score does to the player's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operator {
    /// Keeps the better of the two.
    #[default]
    Best,
    /// Keeps the last.
    Set,
    /// Adds it.
    Incr,
}

/// Items one reward tier gives.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RewardItem {
    /// An item of `items.json`.
    pub item_id: u32,
    /// How many, at least 1.
    pub count: u32,
}

/// What the players ranked `from_rank` to `to_rank` get when a period closes.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Reward {
    /// The first rank of the tier, from 1.
    pub from_rank: u32,
    /// The last rank of the tier.
    pub to_rank: u32,
    /// What each of them gets.
    pub items: Vec<RewardItem>,
}

/// One row of the game table `boards.json`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    /// The board's id, as clients name it.
    pub id: String,
    /// `"desc"` (default) or `"asc"`.
    #[serde(default)]
    pub order: Order,
    /// `"best"` (default), `"set"` or `"incr"`.
    #[serde(default)]
    pub operator: Operator,
    /// The length of a period in seconds; 0: one period forever.
    #[serde(default)]
    pub reset_every_s: u64,
    /// What the best players get when a period closes.
    #[serde(default)]
    pub rewards: Vec<Reward>,
}

/// The most ranks rewards may cover: the close reads them in one page.
pub const MAX_REWARDED_RANK: u32 = 10_000;

fn check_board(board: &Board) -> Result<(), String> {
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if board.id.is_empty() || board.id.len() > 32 || !board.id.chars().all(valid) {
        return Err(format!("id {:?}: 1–32 characters of a–z, A–Z, 0–9, _ and -", board.id));
    }
    for (at, reward) in board.rewards.iter().enumerate() {
        if reward.from_rank == 0 || reward.from_rank > reward.to_rank || reward.to_rank > MAX_REWARDED_RANK {
            return Err(format!("rewards[{at}]: 1 ≤ fromRank ≤ toRank ≤ {MAX_REWARDED_RANK}"));
        }
        if reward.items.is_empty() || reward.items.iter().any(|item| item.count == 0) {
            return Err(format!("rewards[{at}]: at least one item, each with a count of at least 1"));
        }
        if board.rewards[..at]
            .iter()
            .any(|other| other.to_rank >= reward.from_rank && other.from_rank <= reward.to_rank)
        {
            return Err(format!("rewards[{at}]: its ranks overlap another tier's"));
        }
    }
    if !board.rewards.is_empty() && board.reset_every_s == 0 {
        return Err("rewards need a period: set reset_every_s".into());
    }
    Ok(())
}

mortar::table!(
    Board,
    file = "boards",
    id = id,
    default = include_str!("../tables/boards.json"),
    check = check_board
);

/// The id of board `id`'s row in `boards.json`, and of its [`Closed`] document.
pub fn board_key(id: &str) -> u64 {
    mortar::table::RowId::row_id(id)
}

/// A player's score on a board in one period: the store's truth.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, mortar::Document)]
#[document(collection = "rank_entry", sorted(name = "standing", fields("board", "period", "score", "tie")))]
pub struct Entry {
    /// The board's id.
    pub board: String,
    /// The period's index (0 for a board that never resets).
    pub period: u64,
    /// The player.
    pub user: u64,
    /// The score after the operator.
    pub score: i64,
    /// Orders equal scores in the board's direction, who reached it first first: minus the time
    /// in microseconds for a descending board, the time for an ascending one. The times one node
    /// hands out only grow, so of two submits it serves one after the other the first ranks first.
    pub tie: i64,
    /// When the player reached this score, ms since the Unix epoch.
    pub reached_at_ms: i64,
}

impl Entry {
    /// The id of `user`'s entry on `board` in `period`.
    pub fn id(board: &str, period: u64, user: u64) -> u64 {
        mortar::store::stable_id(&[board.as_bytes(), &period.to_be_bytes(), &user.to_be_bytes()])
    }

    /// Its member in the board's sorted set: `TIE:USER`, with `TIE` fixed-width so that the set's
    /// order of equal scores (by member, reversed for a descending read) is who reached it first.
    fn member(&self) -> String {
        // tie is −time (desc) or time (asc); as u64 bits offset so the order of members is tie's.
        let tie = (self.tie as u64) ^ (1 << 63);
        format!("{tie:016x}:{}", self.user)
    }
}

fn user_of(member: &str) -> Option<u64> {
    member.split_once(':')?.1.parse().ok()
}

/// Which periods of a board are closed.
#[derive(Clone, Debug, Default, Serialize, Deserialize, mortar::Document)]
#[document(collection = "rank_board")]
pub struct Closed {
    /// The board's id.
    pub board: String,
    /// Every period up to this one is closed; none before the first close.
    pub through: Option<u64>,
}

fn now_ms(ctx: &Ctx) -> i64 {
    ctx.now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

/// The time a score is reached, in µs since the Unix epoch, strictly later than any this node
/// handed out before: two submits in one millisecond (or one microsecond) still order as served.
fn reached_at_us(ctx: &Ctx) -> i64 {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = ctx
        .now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| i64::try_from(since.as_micros()).unwrap_or(i64::MAX));
    let previous = LAST
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| Some(now.max(last.saturating_add(1))))
        .unwrap_or_else(|last| last);
    now.max(previous.saturating_add(1))
}

impl Board {
    fn period_at(&self, ms: i64) -> u64 {
        match self.reset_every_s {
            0 => 0,
            every => u64::try_from(ms).unwrap_or(0) / 1000 / every,
        }
    }

    fn descending(&self) -> bool {
        self.order == Order::Desc
    }

    fn tie(&self, reached_at_us: i64) -> i64 {
        if self.descending() { -reached_at_us } else { reached_at_us }
    }

    /// Whether `a` is a better score than `b` on this board.
    fn better(&self, a: i64, b: i64) -> bool {
        if self.descending() { a > b } else { a < b }
    }

    /// The key of a period's sorted set in the module's cache.
    fn set_key(&self, period: u64) -> String {
        format!("set:{}:{period}", self.id)
    }

    fn ready_key(&self, period: u64) -> String {
        format!("ready:{}:{period}", self.id)
    }
}

/// The board named by a request; `NOT_FOUND` with the reason when there is none.
fn board(ctx: &Ctx, id: &str) -> Result<Arc<Board>, Failure> {
    let boards = ctx.table::<Board>();
    match boards.find(id) {
        Some(board) if board.id == id => Ok(Arc::new(board.clone())),
        _ => Err(Code::NOT_FOUND.because(format!("boardId: no board {id:?}"))),
    }
}

fn check_limit(limit: u32) -> Result<u64, Failure> {
    match limit {
        1..=100 => Ok(u64::from(limit)),
        _ => Err(Code::BAD_REQUEST.because("limit: 1–100")),
    }
}

fn check_score(score: i64, what: &str) -> Result<i64, Failure> {
    if score.unsigned_abs() > MAX_SCORE.unsigned_abs() {
        return Err(Code::BAD_REQUEST.because(format!("score: {what} must be within ±{MAX_SCORE}")));
    }
    Ok(score)
}

fn rank_u32(rank: u64) -> u32 {
    u32::try_from(rank).unwrap_or(u32::MAX)
}

/// Submits a score: the operator applied to the player's entry of the current period, in the
/// store, then in the sorted set.
#[mortar::handler("rank.submit")]
async fn submit(ctx: Ctx, req: SubmitReq) -> Result<SubmitResp, Failure> {
    let user = ctx.user_id().ok_or(Code::NOT_LOGGED_IN)?;
    let board = board(&ctx, &req.board_id)?;
    let submitted = check_score(req.score, "the submitted score")?;
    let now = now_ms(&ctx);
    let period = board.period_at(now);
    let id = Entry::id(&board.id, period, user);
    let store = ctx.store::<Entry>();
    // Most submits to a "best" board do not beat the player's best: nothing to write.
    if board.operator == Operator::Best
        && let Some(current) = store.try_get(id).await?
        && current.doc.user == user
        && !board.better(submitted, current.doc.score)
    {
        let rank = rank_of(&ctx, &board, &current.doc).await?;
        return Ok(SubmitResp { score: current.doc.score, rank: rank_u32(rank) });
    }
    let mut before: Option<Entry> = None;
    let (saved, ()) = store
        .upsert(id, |entry| {
            let fresh = entry.board.is_empty();
            before = (!fresh).then(|| entry.clone());
            if !fresh && (entry.board != board.id || entry.period != period || entry.user != user) {
                return Err(Code::INTERNAL);
            }
            let score = match (board.operator, fresh) {
                (_, true) | (Operator::Set, _) => submitted,
                (Operator::Best, false) if board.better(submitted, entry.score) => submitted,
                (Operator::Best, false) => entry.score,
                (Operator::Incr, false) => entry.score.checked_add(submitted).ok_or(Code::BAD_REQUEST)?,
            };
            if score.unsigned_abs() > MAX_SCORE.unsigned_abs() {
                return Err(Code::BAD_REQUEST);
            }
            if fresh || score != entry.score {
                *entry = Entry {
                    board: board.id.clone(),
                    period,
                    user,
                    score,
                    tie: board.tie(reached_at_us(&ctx)),
                    reached_at_ms: now,
                };
            }
            Ok(())
        })
        .await
        .map_err(|error| match error.code() {
            Code::BAD_REQUEST => {
                Code::BAD_REQUEST.because(format!("score: the total must stay within ±{MAX_SCORE}"))
            }
            Code::INTERNAL => {
                ctx.error(format_args!("entry id {id} of board {} holds another entry", board.id));
                Code::INTERNAL.into()
            }
            code => code.into(),
        })?;
    let entry = saved.doc;
    let set = ctx.cache().sorted_set(&board.set_key(period));
    if before.as_ref() != Some(&entry) {
        // Added before the old member goes: a reader sees the player at worst twice, never not.
        set.add(&entry.member(), entry.score).await?;
        if let Some(old) = before.filter(|old| old.member() != entry.member()) {
            set.remove(&old.member()).await?;
        }
    }
    let rank = rank_of(&ctx, &board, &entry).await?;
    Ok(SubmitResp { score: entry.score, rank: rank_u32(rank) })
}

/// The player's 1-based rank: from the sorted set when it is ready, else counted in the store
/// (and a rebuild of the set started).
async fn rank_of(ctx: &Ctx, board: &Board, entry: &Entry) -> Result<u64, Failure> {
    if ready(ctx, board, entry.period).await? {
        let set = ctx.cache().sorted_set(&board.set_key(entry.period));
        if let Some(rank) = set.rank(&entry.member(), board.descending()).await? {
            return Ok(rank + 1);
        }
    }
    let entries = || ctx.store::<Entry>().sorted("standing").eq(&board.id).eq(entry.period);
    let better_score = if board.descending() {
        entries().range((entry.score + 1)..).count().await?
    } else {
        entries().range(..entry.score).count().await?
    };
    let same_score = entries().eq(entry.score);
    let earlier = if board.descending() {
        same_score.range((entry.tie + 1)..).count().await?
    } else {
        same_score.range(..entry.tie).count().await?
    };
    Ok(better_score + earlier + 1)
}

/// Whether the period's sorted set is complete. When it is not, starts its rebuild from the store
/// unless one runs (on any node sharing the cache).
async fn ready(ctx: &Ctx, board: &Board, period: u64) -> Result<bool, Failure> {
    let cache = ctx.cache();
    if cache.get::<u8>(&board.ready_key(period)).await?.is_some() {
        return Ok(true);
    }
    let lock = format!("rebuild:{}:{period}", board.id);
    if cache.set_if_absent(&lock, ctx.node_id(), Some(Duration::from_secs(60))).await? {
        let (task, board) = (ctx.with_timeout(Duration::from_secs(600)), board.clone());
        ctx.spawn(async move {
            let started = std::time::Instant::now();
            match rebuild(&task, &board, period).await {
                Ok(entries) => task.info(format_args!(
                    "rebuilt the sorted set of board {} period {period}: {entries} entries in {} ms",
                    board.id,
                    started.elapsed().as_millis()
                )),
                Err(code) => {
                    task.warn(format_args!("rebuild of board {} period {period} failed: {code}", board.id))
                }
            }
            let _ = task.cache().delete(&lock).await;
        });
    }
    Ok(false)
}

/// Fills the period's sorted set from the store, page by page, then marks it ready; how many
/// entries it read.
async fn rebuild(ctx: &Ctx, board: &Board, period: u64) -> Result<u64, Failure> {
    let page_size = ctx.config::<RankConfig>().rebuild_page;
    let store = ctx.store::<Entry>();
    let set = ctx.cache().sorted_set(&board.set_key(period));
    let (mut after, mut read): (Option<Cursor>, u64) = (None, 0);
    loop {
        let mut query = store.sorted("standing").eq(&board.id).eq(period).limit(page_size);
        if let Some(cursor) = &after {
            query = query.after(cursor);
        }
        let page = query.page().await?;
        read += page.items.len() as u64;
        set.add_many(page.items.iter().map(|entry| (entry.doc.member(), entry.doc.score)).collect()).await?;
        // A submit that changed an entry after this page was read has added its new member; the
        // old one just added back goes again.
        let ids: Vec<u64> = page.items.iter().map(|entry| entry.id).collect();
        let now: std::collections::HashMap<u64, u64> =
            store.get_many(&ids).await?.into_iter().map(|current| (current.id, current.version)).collect();
        for entry in &page.items {
            if now.get(&entry.id) != Some(&entry.version) {
                set.remove(&entry.doc.member()).await?;
            }
        }
        match page.next {
            Some(next) if !page.items.is_empty() => after = Some(next),
            _ => break,
        }
    }
    ctx.cache().set(&board.ready_key(period), &1u8, None).await?;
    Ok(read)
}

/// The names of `users` (empty for a player without an account, or when no worker serves
/// `user`).
async fn names(ctx: &Ctx, users: &[u64]) -> Result<Vec<String>, Code> {
    let mut names = std::collections::HashMap::new();
    for chunk in users.chunks(1000) {
        match user::UserClient(ctx).lookup(&user::LookupReq { user_ids: chunk.to_vec() }).await {
            Ok(found) => names.extend(found.users.into_iter().map(|player| (player.user_id, player.name))),
            Err(Code::NO_ROUTE) => break,
            Err(code) => return Err(code),
        }
    }
    Ok(users.iter().map(|user| names.get(user).cloned().unwrap_or_default()).collect())
}

/// `entries` (user, score) ranked from `first`, with their names.
async fn ranked(ctx: &Ctx, entries: Vec<(u64, i64)>, first: u64) -> Result<Vec<Ranked>, Code> {
    let users: Vec<u64> = entries.iter().map(|(user, _)| *user).collect();
    let names = names(ctx, &users).await?;
    Ok(entries
        .into_iter()
        .zip(names)
        .zip(first..)
        .map(|(((user_id, score), name), rank)| Ranked { rank: rank_u32(rank), user_id, name, score })
        .collect())
}

/// The rank of the first entry of the page a cursor of `rank.top` resumes, and the store's cursor.
fn read_cursor(cursor: &str) -> Result<(u64, Cursor), Failure> {
    let bad = || Code::BAD_REQUEST.because("cursor: not a cursor of rank.top");
    let (rank, rest) = cursor.split_once('.').ok_or_else(bad)?;
    Ok((rank.parse().map_err(|_| bad())?, rest.parse().map_err(|_| bad())?))
}

/// A page of the standings, best first, from the store.
#[mortar::handler("rank.top")]
async fn top(ctx: Ctx, req: TopReq) -> Result<TopResp, Failure> {
    let board = board(&ctx, &req.board_id)?;
    let limit = check_limit(req.limit)?;
    let current = board.period_at(now_ms(&ctx));
    let period = req.period.unwrap_or(current);
    if period > current {
        return Err(Code::BAD_REQUEST
            .because(format!("period: {period} has not begun (the current one is {current})")));
    }
    let mut query = ctx.store::<Entry>().sorted("standing").eq(&board.id).eq(period).limit(limit as usize);
    if board.descending() {
        query = query.descending();
    }
    let mut first = 1;
    if !req.cursor.is_empty() {
        let (rank, cursor) = read_cursor(&req.cursor)?;
        first = rank;
        query = query.after(&cursor);
    }
    let page = query.page().await?;
    let count = page.items.len() as u64;
    let next_cursor = match page.next {
        Some(next) if count == limit => format!("{}.{next}", first + count),
        _ => String::new(),
    };
    let entries = page.items.into_iter().map(|entry| (entry.doc.user, entry.doc.score)).collect();
    Ok(TopResp { entries: ranked(&ctx, entries, first).await?, next_cursor, period })
}

/// The caller's entry of the board's current period; `NOT_FOUND` when they have none.
async fn my_entry(ctx: &Ctx, board: &Board) -> Result<Entry, Failure> {
    let user = ctx.user_id().ok_or(Code::NOT_LOGGED_IN)?;
    let period = board.period_at(now_ms(ctx));
    match ctx.store::<Entry>().try_get(Entry::id(&board.id, period, user)).await? {
        Some(entry) if entry.doc.user == user && entry.doc.board == board.id => Ok(entry.doc),
        _ => Err(Code::NOT_FOUND.because("no score on this board this period")),
    }
}

/// The caller's rank and score this period.
#[mortar::handler("rank.me")]
async fn me(ctx: Ctx, req: MeReq) -> Result<MeResp, Failure> {
    let board = board(&ctx, &req.board_id)?;
    let entry = my_entry(&ctx, &board).await?;
    let rank = rank_of(&ctx, &board, &entry).await?;
    Ok(MeResp { rank: rank_u32(rank), score: entry.score })
}

/// The entries around the caller, the caller in the middle.
#[mortar::handler("rank.around")]
async fn around(ctx: Ctx, req: AroundReq) -> Result<AroundResp, Failure> {
    let board = board(&ctx, &req.board_id)?;
    let limit = check_limit(req.limit)?;
    let entry = my_entry(&ctx, &board).await?;
    if !ready(&ctx, &board, entry.period).await? {
        return Err(
            Code::UNAVAILABLE.because("the board's ranks are being rebuilt; try again in a few seconds")
        );
    }
    let set = ctx.cache().sorted_set(&board.set_key(entry.period));
    let Some(rank) = set.rank(&entry.member(), board.descending()).await? else {
        return Err(Code::UNAVAILABLE.because("your score is being saved; try again"));
    };
    let start = rank.saturating_sub(limit / 2);
    let members = set.range_by_rank(start, limit, board.descending()).await?;
    let entries = members.iter().filter_map(|(member, score)| Some((user_of(member)?, *score))).collect();
    Ok(AroundResp { entries: ranked(&ctx, entries, start + 1).await? })
}

/// The caller and their friends with a score this period, best first, each with their board rank.
#[mortar::handler("rank.friends")]
async fn friends(ctx: Ctx, req: FriendsReq) -> Result<FriendsResp, Failure> {
    let user = ctx.user_id().ok_or(Code::NOT_LOGGED_IN)?;
    let board = board(&ctx, &req.board_id)?;
    let period = board.period_at(now_ms(&ctx));
    let mut friend_names = std::collections::HashMap::new();
    match friend::FriendClient(&ctx).list(&friend::ListReq {}).await {
        Ok(list) => {
            let friends = list.friends.into_iter().filter(|f| f.state() == friend::State::Friend);
            friend_names.extend(friends.map(|f| (f.user_id, f.name)));
        }
        Err(Code::NO_ROUTE) => {}
        Err(code) => return Err(code.into()),
    }
    let mut ids: Vec<u64> = friend_names.keys().map(|&friend| Entry::id(&board.id, period, friend)).collect();
    ids.push(Entry::id(&board.id, period, user));
    let mut entries: Vec<Entry> = ctx
        .store::<Entry>()
        .get_many(&ids)
        .await?
        .into_iter()
        .map(|entry| entry.doc)
        .filter(|entry| entry.board == board.id && entry.period == period)
        .collect();
    entries.sort_by(|a, b| {
        let order = a.score.cmp(&b.score).then(a.tie.cmp(&b.tie)).then(a.user.cmp(&b.user));
        if board.descending() { order.reverse() } else { order }
    });
    let my_name = match names(&ctx, &[user]).await {
        Ok(mut mine) => mine.pop().unwrap_or_default(),
        Err(_) => String::new(),
    };
    let mut out = Vec::with_capacity(entries.len());
    for entry in &entries {
        let rank = rank_of(&ctx, &board, entry).await?;
        let name = match friend_names.get(&entry.user) {
            Some(name) => name.clone(),
            None => my_name.clone(),
        };
        out.push(Ranked { rank: rank_u32(rank), user_id: entry.user, name, score: entry.score });
    }
    Ok(FriendsResp { entries: out })
}

/// Closes every period of every resetting board that ended `close_grace_ms` ago and is not closed
/// yet (see the crate docs).
async fn close(ctx: Ctx, _run: Run) -> Result<(), Failure> {
    let config = ctx.config::<RankConfig>();
    let boards = ctx.table::<Board>();
    let now = now_ms(&ctx) - i64::try_from(config.close_grace_ms).unwrap_or(0);
    for board in boards.iter().filter(|board| board.reset_every_s > 0) {
        let ended = board.period_at(now);
        let Some(last_ended) = ended.checked_sub(1) else { continue };
        let states = ctx.store::<Closed>();
        let id = board_key(&board.id);
        let state = states.try_get(id).await?;
        let through = match state.as_ref().and_then(|state| state.doc.through) {
            Some(through) => through,
            // First close: the period before the current one may have entries.
            None => last_ended.saturating_sub(1),
        };
        let mut period = through + 1;
        if last_ended >= period + config.catch_up_periods {
            let skipped_to = last_ended + 1 - config.catch_up_periods;
            ctx.warn(format_args!(
                "board {}: periods {period}–{} ended long ago and are closed without rewards",
                board.id,
                skipped_to - 1
            ));
            period = skipped_to;
        }
        while period <= last_ended {
            close_period(&ctx, board, period).await?;
            states
                .upsert(id, |state| {
                    state.board.clone_from(&board.id);
                    state.through = Some(state.through.map_or(period, |through| through.max(period)));
                    Ok(())
                })
                .await?;
            period += 1;
        }
    }
    Ok(())
}

/// Mails the rewards of `period` (each once: `mail.send` with a key per board, period and rank)
/// and drops its sorted set.
async fn close_period(ctx: &Ctx, board: &Board, period: u64) -> Result<(), Failure> {
    let deepest = board.rewards.iter().map(|reward| reward.to_rank).max().unwrap_or(0);
    let mut mailed = 0;
    if deepest > 0 {
        let mut query =
            ctx.store::<Entry>().sorted("standing").eq(&board.id).eq(period).limit(deepest as usize);
        if board.descending() {
            query = query.descending();
        }
        let standings = query.page().await?.items;
        let rewarded: Vec<(u32, u64, Vec<RewardItem>)> = standings
            .iter()
            .zip(1u32..)
            .filter_map(|(entry, rank)| {
                let reward = board.rewards.iter().find(|r| (r.from_rank..=r.to_rank).contains(&rank))?;
                Some((rank, entry.doc.user, reward.items.clone()))
            })
            .collect();
        let sent: Vec<Result<(), Failure>> = futures::stream::iter(rewarded)
            .map(|(rank, user, items)| mail_reward(ctx, board, period, rank, user, items))
            .buffer_unordered(8)
            .collect()
            .await;
        mailed = sent.len();
        sent.into_iter().collect::<Result<Vec<()>, Failure>>()?;
    }
    let cache = ctx.cache();
    cache.delete(&board.set_key(period)).await?;
    cache.delete(&board.ready_key(period)).await?;
    ctx.info(format_args!("board {} closed period {period}: {mailed} rewards mailed", board.id));
    Ok(())
}

/// Mails the reward of `rank` in `period` to `user`, keyed so that the mailbox takes it once. A
/// player the mail cannot reach (no account, a full mailbox) is logged and skipped; a failure
/// worth retrying fails the close.
async fn mail_reward(
    ctx: &Ctx,
    board: &Board,
    period: u64,
    rank: u32,
    user: u64,
    items: Vec<RewardItem>,
) -> Result<(), Failure> {
    let mail = mail::SendReq {
        to_users: vec![user],
        title: format!("{}: rank {rank}", board.id),
        body: format!("You finished period {period} of the {} board at rank {rank}.", board.id),
        attachments: items
            .iter()
            .map(|item| mail::Attachment { item_id: item.item_id, count: item.count })
            .collect(),
        dedup_key: format!("rank:{}:{period}:{rank}", board.id),
    };
    match mail::MailClient(ctx).send(&mail).await {
        Ok(_) => Ok(()),
        Err(code)
            if matches!(code, Code::NOT_FOUND | Code::BAD_REQUEST | Code::NO_ROUTE) || code.get() >= 1000 =>
        {
            ctx.warn(format_args!(
                "board {} period {period}: the reward of rank {rank} (user {user}) was not mailed: {code}",
                board.id
            ));
            Ok(())
        }
        Err(code) => Err(code.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(json: &str) -> Result<(), String> {
        let board: Board = serde_json::from_str(json).map_err(|error| error.to_string())?;
        mortar::table::Row::check(&board)
    }

    #[test]
    fn the_shipped_boards_load() {
        mortar::table::decode::<Board>("boards.json", include_str!("../tables/boards.json"), &[]).unwrap();
        assert_eq!(include_str!("../tables/boards.json"), include_str!("../../../conf/tables/boards.json"));
    }

    #[test]
    fn bad_boards_say_why() {
        assert!(board(r#"{"id": "a b"}"#).unwrap_err().contains("id"));
        assert!(board(r#"{"id": "x", "order": "up"}"#).unwrap_err().contains("unknown variant"));
        let overlap = r#"{"id": "x", "reset_every_s": 60, "rewards": [
            {"fromRank": 1, "toRank": 3, "items": [{"itemId": 1, "count": 1}]},
            {"fromRank": 3, "toRank": 4, "items": [{"itemId": 1, "count": 1}]}]}"#;
        assert!(board(overlap).unwrap_err().contains("overlap"));
        let forever =
            r#"{"id": "x", "rewards": [{"fromRank": 1, "toRank": 1, "items": [{"itemId": 1, "count": 1}]}]}"#;
        assert!(board(forever).unwrap_err().contains("reset_every_s"));
    }

    #[test]
    fn members_order_equal_scores_by_who_came_first() {
        let entry = |tie: i64, user: u64| Entry { tie, user, ..Entry::default() }.member();
        // Ascending board: earlier time first, in member order.
        assert!(entry(1_000, 9) < entry(2_000, 1));
        // Descending board (tie = −time), read in reverse member order: earlier first.
        assert!(entry(-1_000, 9) > entry(-2_000, 1));
        assert_eq!(user_of(&entry(-5, 42)), Some(42));
    }
}
