//! The matchmake module: players wait in a mode's queue until a match forms, then play it in a
//! room the mode's module creates for them.
//!
//! `matchmake.join {mode, rating?, party?}` → `{ticketId}` puts a ticket in the queue of a mode of
//! the game table `modes.json` ([`Mode`]); `matchmake.cancel {ticketId}` → `{}` takes it out.
//! A match forms as soon as `max` players fit in it, or with at least `min` once its oldest
//! ticket has waited `waitS` seconds; a party is one ticket and is never split. Tickets with a
//! rating match those whose rating is within a window that starts at
//! [`MatchmakeConfig::rating_window`] and widens by [`MatchmakeConfig::widen_per_s`] each second
//! either of them waits. Then the mode's module creates the room (`<module>.create {roomId, mode,
//! userIds}`, e.g. `arena.create`) and every player of the match gets `matchmake.matched {mode,
//! roomId, userIds}`.
//!
//! **Once per mode in the cluster.** `matchmake.join` and the internal `matchmake.drop` are
//! routed by `mode`: one worker among those serving matchmake holds a mode's queue, whoever sends.
//! When it dies, its queues are lost and the mode moves to another worker; players whose join
//! answered `UNAVAILABLE`, or who wait longer than they expect, join again. A ticket is dropped
//! when its player or one of its party goes offline (the `on_offline` hook).

use mortar::prelude::*;
use serde::{Deserialize, Serialize};
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, UNIX_EPOCH},
};

/// The messages of `proto/matchmake.proto`.
pub mod matchmake {
    mortar::include_proto!("matchmake");
}

use matchmake::{
    CancelReq, CancelResp, CreateRoom, CreateRoomResp, DropReq, DropResp, JoinReq, JoinResp, Matched,
};

/// The module on a node: the queues of the modes this worker holds.
#[derive(Default)]
pub struct Matchmaker {
    queues: Mutex<HashMap<String, Queue>>,
    /// Makes ticket and room ids unique on this node.
    made: AtomicU64,
}

impl Module for Matchmaker {
    fn name(&self) -> &'static str {
        "matchmake"
    }
}

mortar::module!(Matchmaker, on_offline = went_offline);
mortar::export_module!();

/// `[modules.matchmake]`: the rating window and the limits of a queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatchmakeConfig {
    /// Ratings within this of each other match at once.
    pub rating_window: u32,
    /// How much the window widens per second a ticket waits.
    pub widen_per_s: u32,
    /// How often a queue looks for matches, in ms (10–10000).
    pub form_every_ms: u64,
    /// The most tickets waiting in one mode; more answer `UNAVAILABLE`.
    pub max_tickets: usize,
    /// How long creating a match's room may take before its tickets go back in the queue.
    pub create_timeout_ms: u64,
}

impl Default for MatchmakeConfig {
    fn default() -> Self {
        Self {
            rating_window: 100,
            widen_per_s: 50,
            form_every_ms: 100,
            max_tickets: 100_000,
            create_timeout_ms: 2000,
        }
    }
}

fn check_config(config: &MatchmakeConfig) -> Result<(), String> {
    if !(10..=10_000).contains(&config.form_every_ms)
        || config.max_tickets == 0
        || config.create_timeout_ms == 0
    {
        return Err("form_every_ms must be 10 to 10000, max_tickets and create_timeout_ms at least 1".into());
    }
    Ok(())
}

mortar::config!(MatchmakeConfig, section = "matchmake", check = check_config);

/// One row of the game table `modes.json`: a game mode players queue for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Mode {
    /// The mode's id, as clients name it.
    pub id: String,
    /// The fewest players of a match.
    pub min: usize,
    /// The most players of a match.
    pub max: usize,
    /// After this many seconds of its oldest ticket's wait, a match forms with at least `min`.
    #[serde(default)]
    pub wait_s: u64,
    /// The module whose `<module>.create` makes a match's room (e.g. `arena`).
    pub module: String,
}

fn check_mode(mode: &Mode) -> Result<(), String> {
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if mode.id.is_empty() || mode.id.len() > 32 || !mode.id.chars().all(valid) {
        return Err(format!("id {:?}: 1–32 characters of a–z, A–Z, 0–9, _ and -", mode.id));
    }
    if mode.min == 0 || mode.min > mode.max || mode.max > 1000 {
        return Err(format!("mode {}: 1 ≤ min ≤ max ≤ 1000", mode.id));
    }
    if mode.module.is_empty() || !mode.module.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
        return Err(format!("mode {}: module must be a module's name (a–z and _)", mode.id));
    }
    Ok(())
}

mortar::table!(
    Mode,
    file = "modes",
    id = id,
    default = include_str!("../tables/modes.json"),
    check = check_mode
);

/// A mode's queue on the worker holding it.
#[derive(Default)]
struct Queue {
    /// Oldest first.
    tickets: Vec<Ticket>,
    /// Whether its forming task runs.
    forming: bool,
}

/// Players waiting together for a match.
#[derive(Clone, Debug)]
struct Ticket {
    id: String,
    /// The player who made it, then their party.
    users: Vec<u64>,
    rating: Option<i32>,
    since: Instant,
}

impl Ticket {
    /// Its rating window after waiting until `now`.
    fn window(&self, now: Instant, config: &MatchmakeConfig) -> u64 {
        let waited = now.saturating_duration_since(self.since).as_secs_f64();
        u64::from(config.rating_window) + (waited * f64::from(config.widen_per_s)) as u64
    }

    /// Whether it may play with `other` at `now`.
    fn fits(&self, other: &Ticket, now: Instant, config: &MatchmakeConfig) -> bool {
        match (self.rating, other.rating) {
            (Some(a), Some(b)) => {
                a.abs_diff(b) as u64 <= self.window(now, config).max(other.window(now, config))
            }
            _ => true,
        }
    }
}

/// The matches that form from `tickets` (oldest first) at `now`, each as the indexes of its
/// tickets: a match takes the oldest ticket left and the next ones that fit it, as long as the
/// players fit in `max`; it forms when full, or with at least `min` once that oldest ticket has
/// waited `wait_s`.
fn form(tickets: &[Ticket], mode: &Mode, now: Instant, config: &MatchmakeConfig) -> Vec<Vec<usize>> {
    let mut used = vec![false; tickets.len()];
    let mut matches = Vec::new();
    for anchor in 0..tickets.len() {
        if used[anchor] {
            continue;
        }
        let mut taken = vec![anchor];
        let mut players = tickets[anchor].users.len();
        for other in anchor + 1..tickets.len() {
            if players == mode.max {
                break;
            }
            if !used[other]
                && players + tickets[other].users.len() <= mode.max
                && tickets[anchor].fits(&tickets[other], now, config)
            {
                taken.push(other);
                players += tickets[other].users.len();
            }
        }
        let waited = now.saturating_duration_since(tickets[anchor].since) >= Duration::from_secs(mode.wait_s);
        if players == mode.max || (players >= mode.min && waited) {
            taken.iter().for_each(|&index| used[index] = true);
            matches.push(taken);
        }
    }
    matches
}

fn matchmaker(ctx: &Ctx) -> Result<Arc<Matchmaker>, Code> {
    ctx.module::<Matchmaker>().ok_or(Code::INTERNAL)
}

impl Matchmaker {
    fn queues(&self) -> std::sync::MutexGuard<'_, HashMap<String, Queue>> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An id unique in the cluster for a ticket or room of `mode`: `mode:hex` or `mode-hex`.
    fn new_id(&self, ctx: &Ctx, mode: &str, separator: char) -> String {
        let made = self.made.fetch_add(1, Ordering::Relaxed);
        let nanos = ctx.now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
        let id =
            mortar::store::stable_id(&[ctx.node_id().as_bytes(), &nanos.to_le_bytes(), &made.to_le_bytes()]);
        format!("{mode}{separator}{id:016x}")
    }
}

/// Queues a ticket for the caller (and party) in `mode`.
#[mortar::handler("matchmake.join", key = mode)]
pub async fn join(ctx: Ctx, req: JoinReq) -> Result<JoinResp, Failure> {
    let user = ctx.user_id().ok_or(Code::NOT_LOGGED_IN)?;
    let mode = ctx.table::<Mode>().find(&req.mode).cloned();
    let mode =
        mode.filter(|mode| mode.id == req.mode).ok_or_else(|| Code::NOT_FOUND.because("no such mode"))?;
    let mut users = vec![user];
    for member in &req.party {
        if *member == 0 || users.contains(member) {
            return Err(Code::BAD_REQUEST.because("party: each player once, not the caller"));
        }
        users.push(*member);
    }
    if users.len() > mode.max {
        return Err(
            Code::BAD_REQUEST.because(format!("a party of at most {} players in {}", mode.max, mode.id))
        );
    }
    if users.len() > 1 && !ctx.online(&users[1..]).await?.iter().all(|online| *online) {
        return Err(Code::BAD_REQUEST.because("every player of the party must be online"));
    }
    let config = ctx.config::<MatchmakeConfig>();
    let mm = matchmaker(&ctx)?;
    let ticket =
        Ticket { id: mm.new_id(&ctx, &mode.id, ':'), users, rating: req.rating, since: Instant::now() };
    let start = {
        let mut queues = mm.queues();
        let queue = queues.entry(mode.id.clone()).or_default();
        if queue.tickets.iter().any(|waiting| waiting.users.iter().any(|u| ticket.users.contains(u))) {
            return Err(Code::ALREADY_EXISTS.because("already waiting in this mode: cancel first"));
        }
        if queue.tickets.len() >= config.max_tickets {
            return Err(Code::UNAVAILABLE.because("the queue is full; retry later"));
        }
        queue.tickets.push(ticket.clone());
        !std::mem::replace(&mut queue.forming, true)
    };
    if start {
        let ctx = ctx.with_timeout(Duration::from_secs(3600 * 24 * 365));
        ctx.clone().spawn(forming(ctx, mm, mode.id.clone()));
    }
    Ok(JoinResp { ticket_id: ticket.id })
}

/// Takes the caller's ticket out of its queue.
#[mortar::handler("matchmake.cancel")]
pub async fn cancel(ctx: Ctx, req: CancelReq) -> Result<CancelResp, Failure> {
    let user = ctx.user_id().ok_or(Code::NOT_LOGGED_IN)?;
    let Some((mode, _)) = req.ticket_id.split_once(':') else {
        return Err(Code::NOT_FOUND.because("no such ticket"));
    };
    let drop = DropReq { mode: mode.to_owned(), ticket_id: req.ticket_id.clone(), user_id: user };
    let dropped: DropResp = ctx.call("matchmake.drop", &drop).await?;
    match dropped.dropped {
        true => Ok(CancelResp {}),
        false => Err(Code::NOT_FOUND.because("no such ticket: matched, cancelled or never made")),
    }
}

/// Internal: drops ticket `ticket_id` (or, when empty, every ticket) of `user_id` in `mode`.
#[mortar::handler("matchmake.drop", internal, key = mode)]
pub async fn drop_ticket(ctx: Ctx, req: DropReq) -> Result<DropResp, Code> {
    let mm = matchmaker(&ctx)?;
    let mut queues = mm.queues();
    let Some(queue) = queues.get_mut(&req.mode) else { return Ok(DropResp { dropped: false }) };
    let before = queue.tickets.len();
    queue.tickets.retain(|ticket| {
        let named = req.ticket_id.is_empty() || ticket.id == req.ticket_id;
        !(named && ticket.users.contains(&req.user_id))
    });
    Ok(DropResp { dropped: queue.tickets.len() < before })
}

/// A player went offline: their tickets (and their parties') are dropped in every mode.
async fn went_offline(ctx: Ctx, user: u64) {
    for mode in ctx.table::<Mode>().iter() {
        let drop = DropReq { mode: mode.id.clone(), ticket_id: String::new(), user_id: user };
        if let Err(code) = ctx.call::<_, DropResp>("matchmake.drop", &drop).await {
            ctx.warn(format_args!("cannot drop the tickets of user {user} in mode {}: {code:?}", mode.id));
        }
    }
}

/// Forms the matches of `mode`'s queue every `form_every_ms` until it is empty.
async fn forming(ctx: Ctx, mm: Arc<Matchmaker>, mode: String) {
    loop {
        let config = ctx.config::<MatchmakeConfig>();
        ctx.sleep(Duration::from_millis(config.form_every_ms)).await;
        if ctx.stopping() {
            // The queue is this node's memory: it goes with it.
            return;
        }
        let Some(row) = ctx.table::<Mode>().find(&mode).cloned() else {
            // The mode left the table: its tickets go.
            mm.queues().remove(&mode);
            return;
        };
        let matches = {
            let mut queues = mm.queues();
            let queue = queues.entry(mode.clone()).or_default();
            if queue.tickets.is_empty() {
                queue.forming = false;
                return;
            }
            let formed = form(&queue.tickets, &row, Instant::now(), &config);
            let mut taken: Vec<usize> = formed.iter().flatten().copied().collect();
            taken.sort_unstable();
            let mut tickets: Vec<Option<Ticket>> = queue.tickets.drain(..).map(Some).collect();
            let matches: Vec<Vec<Ticket>> = formed
                .into_iter()
                .map(|indexes| indexes.into_iter().filter_map(|index| tickets[index].take()).collect())
                .collect();
            queue.tickets = tickets.into_iter().flatten().collect();
            matches
        };
        for tickets in matches {
            start_match(&ctx, &mm, &row, tickets, &config).await;
        }
    }
}

/// Has the mode's module create the room of a match and tells its players; when the room cannot
/// be created, puts the tickets back at the front of the queue.
async fn start_match(
    ctx: &Ctx,
    mm: &Matchmaker,
    mode: &Mode,
    tickets: Vec<Ticket>,
    config: &MatchmakeConfig,
) {
    let user_ids: Vec<u64> = tickets.iter().flat_map(|ticket| ticket.users.iter().copied()).collect();
    let room_id = mm.new_id(ctx, &mode.id, '-');
    let create = CreateRoom { room_id: room_id.clone(), mode: mode.id.clone(), user_ids: user_ids.clone() };
    let call = ctx.with_timeout(Duration::from_millis(config.create_timeout_ms));
    let route = format!("{}.create", mode.module);
    if let Err(code) = call.call::<_, CreateRoomResp>(&route, &create).await {
        ctx.warn(format_args!("cannot create room {room_id} on {route}: {code:?}; its tickets wait again"));
        let mut queues = mm.queues();
        let queue = queues.entry(mode.id.clone()).or_default();
        queue.tickets.splice(0..0, tickets);
        return;
    }
    let matched = Matched { mode: mode.id.clone(), room_id, user_ids: user_ids.clone() };
    if let Err(code) = ctx.push(&user_ids, "matchmake.matched", &matched).await {
        ctx.warn(format_args!("cannot tell the players of room {} they matched: {code:?}", matched.room_id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(min: usize, max: usize, wait_s: u64) -> Mode {
        Mode { id: "m".into(), min, max, wait_s, module: "arena".into() }
    }

    fn ticket(users: &[u64], rating: Option<i32>, waited_s: u64, now: Instant) -> Ticket {
        Ticket {
            id: String::new(),
            users: users.to_vec(),
            rating,
            since: now - Duration::from_secs(waited_s),
        }
    }

    #[test]
    fn a_full_match_forms_at_once_and_a_short_one_after_the_wait() {
        let config = MatchmakeConfig::default();
        let now = Instant::now() + Duration::from_secs(100);
        let duel = mode(2, 2, 0);
        let three = [ticket(&[1], None, 0, now), ticket(&[2], None, 0, now), ticket(&[3], None, 0, now)];
        assert_eq!(form(&three, &duel, now, &config), vec![vec![0, 1]], "the third waits");
        let squad = mode(2, 10, 5);
        assert!(form(&three, &squad, now, &config).is_empty(), "not full, not waited");
        let waited = [ticket(&[1], None, 6, now), ticket(&[2], None, 0, now)];
        assert_eq!(form(&waited, &squad, now, &config), vec![vec![0, 1]]);
    }

    #[test]
    fn parties_stay_whole_and_ratings_widen_with_the_wait() {
        let config = MatchmakeConfig::default();
        let now = Instant::now() + Duration::from_secs(100);
        let duel = mode(2, 2, 0);
        let party = [ticket(&[1, 2], None, 0, now), ticket(&[3], None, 0, now), ticket(&[4], None, 0, now)];
        assert_eq!(form(&party, &duel, now, &config), vec![vec![0], vec![1, 2]]);
        let apart = [ticket(&[1], Some(1000), 0, now), ticket(&[2], Some(1300), 0, now)];
        assert!(form(&apart, &duel, now, &config).is_empty(), "300 apart, window 100");
        let waited = [ticket(&[1], Some(1000), 4, now), ticket(&[2], Some(1300), 0, now)];
        assert_eq!(form(&waited, &duel, now, &config), vec![vec![0, 1]], "window 100 + 4 × 50");
    }
}
