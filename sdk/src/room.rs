//! Rooms: live game state held by one worker, advanced by a tick, fed by its members' inputs.
//!
//! A module keeps its rooms in its instance ([`Ctx::module`]) as a [`Rooms<G>`], where `G` is the
//! game of one room (its state and rules, a [`Game`]). Its routes name the room in a request field
//! and are routed by it (`#[handler("arena.move", key = room_id)]`), so every request for one room
//! reaches the worker that holds it, whoever sends it.
//!
//! ```ignore
//! #[derive(Default)]
//! pub struct Arena { rooms: Rooms<Match> }
//! mortar::module!(Arena);
//!
//! #[mortar::handler("arena.move", key = room_id)]
//! async fn step(ctx: Ctx, req: MoveReq) -> Result<MoveResp, Code> {
//!     let arena = ctx.module::<Arena>().ok_or(Code::INTERNAL)?;
//!     let room = arena.rooms.get(&req.room_id).ok_or(Code::NOT_FOUND)?;
//!     room.input(&ctx, |game, user, _out| game.step(user, req.dx, req.dy)).await?;
//!     Ok(MoveResp {})
//! }
//! ```
//!
//! What the SDK does for a room:
//! - **Tick.** [`Rooms::create`] starts one task that calls [`Game::tick`] at [`RoomSpec::hz`]
//!   (1–60), on a fixed schedule: a tick that runs late does not shift the ones after it. How late
//!   each tick ran is exported (`mortar_room_tick_late_seconds{module}`); a tick whose work takes
//!   longer than the period counts in `mortar_room_tick_overruns_total{module}` and is logged
//!   with the room's id (at most once a second per room).
//! - **Members.** [`Room::join`] checks and adds a member (its session is kept, so pushes reach it
//!   without a session-store lookup), [`Room::input`] runs a member's input (a non-member gets
//!   `PERMISSION_DENIED`), [`Room::leave`] removes one. A member whose session ends (a push finds
//!   it gone) is marked gone ([`Member::gone`]) and may join again within
//!   [`RoomSpec::rejoin_grace`] (from a new session: the room then pushes there); after that it
//!   is removed and the game told ([`Game::left`]).
//! - **Messages.** What the game puts in its [`Outbox`] (to every member, or to one) is pushed
//!   after the game's code returns, outside the room's lock: one message per gateway holding any
//!   recipient.
//! - **End.** A room ends when the game says so ([`Outbox::end`]), when it has had no member
//!   present for [`RoomSpec::empty_for`], when the module ends it ([`Room::end`]), when its
//!   tick panics, or at its next tick once the node is stopping. [`Game::ended`] is told why, so it can tell the members; then the room is gone
//!   from [`Rooms`] and requests for it find nothing (`NOT_FOUND` is the usual answer).
//! - **Not persisted.** A room lives in its worker's memory only: when the worker stops or dies,
//!   its rooms are gone. Its members' gateways then deliver the room's [`Game::will`] to them (a
//!   push saying the room ended), so clients learn it within the time it takes the gateway to
//!   notice (a killed worker's connection resets at once).

use crate::{code::Code, ctx::Ctx};
use bytes::Bytes;
use prost::{Message, Name};
use std::{
    collections::{BTreeMap, HashMap},
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

pub use crate::ctx::Will;
pub use mortar_abi::host::Session;

/// The game of one room: its state and rules. Its methods run under the room's lock, one at a
/// time, and must not block; what they send goes in the [`Outbox`].
pub trait Game: Send + 'static {
    /// Advances the game by one tick (`tick` counts from 1).
    fn tick(&mut self, tick: u64, out: &mut Outbox);

    /// Member `user` is removed: it left ([`Room::leave`]) or was gone longer than the rejoin
    /// grace.
    fn left(&mut self, user: u64, out: &mut Outbox) {
        let _ = (user, out);
    }

    /// The room ends, for `reason`; the members still in it are those of [`Outbox::members`].
    /// The place to tell them.
    fn ended(&mut self, reason: &Ending, out: &mut Outbox) {
        let _ = (reason, out);
    }

    /// What a member's gateway pushes to it when this room's worker stops answering (it died):
    /// a message saying the room ended (`Will::new("arena.ended", &ended)`). None by default.
    fn will(&self) -> Option<Will> {
        None
    }
}

/// Why a room ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The game ended it ([`Outbox::end`]) or the module did ([`Room::end`]), saying why.
    Over(String),
    /// No member was present for [`RoomSpec::empty_for`].
    Empty,
    /// Its tick panicked.
    Failed,
    /// Its node is stopping.
    Shutdown,
}

impl Ending {
    /// A short word for it: the game's reason, `empty`, `failed` or `shutdown`.
    pub fn reason(&self) -> &str {
        match self {
            Ending::Over(reason) => reason,
            Ending::Empty => "empty",
            Ending::Failed => "failed",
            Ending::Shutdown => "shutdown",
        }
    }
}

/// How a room runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoomSpec {
    /// Ticks per second, 1 to 60.
    pub hz: u32,
    /// The room ends after this long without a member present.
    pub empty_for: Duration,
    /// How long a member whose session ended may join again before it is removed.
    pub rejoin_grace: Duration,
    /// The most members at once; one more is refused `CONFLICT`.
    pub max_members: usize,
}

impl Default for RoomSpec {
    fn default() -> Self {
        Self {
            hz: 10,
            empty_for: Duration::from_secs(30),
            rejoin_grace: Duration::from_secs(10),
            max_members: 64,
        }
    }
}

/// A member of a room.
#[derive(Clone, Debug)]
pub struct Member {
    /// The session it joined from (its last join's).
    pub session: Session,
    /// Since when its session is gone, if it is.
    pub gone: Option<Instant>,
}

/// A push the game asks for: to every member present, or to one member.
struct Outgoing {
    to: Option<u64>,
    route: String,
    message: String,
    body: Bytes,
}

/// What a [`Game`]'s code sends; pushed once its code has returned. `Outbox::default()` is an
/// empty one, to call a game's methods in a unit test.
#[derive(Default)]
pub struct Outbox {
    members: Vec<u64>,
    out: Vec<Outgoing>,
    end: Option<String>,
}

impl Outbox {
    /// Pushes `msg` as `route` to every member present.
    pub fn broadcast<M: Message + Name>(&mut self, route: &str, msg: &M) {
        self.push(None, route, msg);
    }

    /// Pushes `msg` as `route` to member `user` (nothing when it is not one, or gone).
    pub fn send<M: Message + Name>(&mut self, user: u64, route: &str, msg: &M) {
        self.push(Some(user), route, msg);
    }

    fn push<M: Message + Name>(&mut self, to: Option<u64>, route: &str, msg: &M) {
        let body = Bytes::from(msg.encode_to_vec());
        self.out.push(Outgoing { to, route: route.to_owned(), message: M::full_name(), body });
    }

    /// Ends the room once this code returns ([`Game::ended`] is told `Over(reason)`).
    pub fn end(&mut self, reason: impl Into<String>) {
        self.end.get_or_insert_with(|| reason.into());
    }

    /// The members, present or gone, in user order.
    pub fn members(&self) -> &[u64] {
        &self.members
    }
}

/// A room as [`Rooms::list`] shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    /// The room's id.
    pub id: String,
    /// Its label.
    pub label: String,
    /// Its members, present or gone.
    pub members: usize,
}

/// The rooms of a module on this worker, by id. Kept in the module's instance.
pub struct Rooms<G: Game> {
    rooms: Arc<Mutex<HashMap<String, Arc<Room<G>>>>>,
}

impl<G: Game> Default for Rooms<G> {
    fn default() -> Self {
        Self { rooms: Arc::default() }
    }
}

impl<G: Game> Rooms<G> {
    /// Creates room `id` with `label` (for [`Rooms::list`]) running `game` as `spec` says, and
    /// starts its tick on `ctx`'s host.
    ///
    /// # Errors
    /// `ALREADY_EXISTS` when a room `id` is here; `BAD_REQUEST` for a rate outside 1–60 Hz.
    pub fn create(
        &self,
        ctx: &Ctx,
        id: &str,
        label: &str,
        spec: RoomSpec,
        game: G,
    ) -> Result<Arc<Room<G>>, Code> {
        if !(1..=60).contains(&spec.hz) {
            return Err(Code::BAD_REQUEST);
        }
        let room = {
            let mut rooms = lock(&self.rooms);
            if rooms.contains_key(id) {
                return Err(Code::ALREADY_EXISTS);
            }
            let will = game.will();
            let room = Arc::new(Room {
                id: id.to_owned(),
                label: label.to_owned(),
                spec,
                will,
                state: Mutex::new(State {
                    game,
                    members: BTreeMap::new(),
                    tick: 0,
                    closing: None,
                    ended: false,
                }),
            });
            rooms.insert(id.to_owned(), room.clone());
            room
        };
        ctx.info(format_args!("room {id} created ({label}, {} Hz)", spec.hz));
        let (ticking, rooms) = (room.clone(), self.rooms.clone());
        let ctx = ctx.with_timeout(Duration::from_secs(3600 * 24 * 365));
        ctx.clone().spawn(async move {
            // Whatever ends the task (the room's end, a panic in the game), the room goes.
            let _gone = Remove { rooms, room: ticking.clone() };
            ticking.run(&ctx).await;
        });
        Ok(room)
    }

    /// Room `id`, if it is here and has not ended.
    pub fn get(&self, id: &str) -> Option<Arc<Room<G>>> {
        lock(&self.rooms).get(id).cloned()
    }

    /// The rooms here whose label passes `filter`, by id.
    pub fn list(&self, filter: impl Fn(&str) -> bool) -> Vec<Listing> {
        let rooms: Vec<Arc<Room<G>>> = lock(&self.rooms).values().cloned().collect();
        let mut listed: Vec<Listing> = rooms
            .iter()
            .filter(|room| filter(&room.label))
            .map(|room| Listing {
                id: room.id.clone(),
                label: room.label.clone(),
                members: room.state().members.len(),
            })
            .collect();
        listed.sort_by(|a, b| a.id.cmp(&b.id));
        listed
    }

    /// How many rooms are here.
    pub fn len(&self) -> usize {
        lock(&self.rooms).len()
    }

    /// Whether no room is here.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Takes a room out of its [`Rooms`] when its tick task ends, however it ends.
struct Remove<G: Game> {
    rooms: Arc<Mutex<HashMap<String, Arc<Room<G>>>>>,
    room: Arc<Room<G>>,
}

impl<G: Game> Drop for Remove<G> {
    fn drop(&mut self) {
        let mut rooms = lock(&self.rooms);
        if rooms.get(&self.room.id).is_some_and(|held| Arc::ptr_eq(held, &self.room)) {
            rooms.remove(&self.room.id);
        }
        drop(rooms);
        self.room.state().ended = true;
    }
}

/// One room: its game, members and tick.
pub struct Room<G: Game> {
    id: String,
    label: String,
    spec: RoomSpec,
    will: Option<Will>,
    state: Mutex<State<G>>,
}

struct State<G> {
    game: G,
    members: BTreeMap<u64, Member>,
    /// The last tick run.
    tick: u64,
    /// Why the module ended the room ([`Room::end`]), until its tick task finishes the ending.
    closing: Option<String>,
    ended: bool,
}

impl<G> State<G> {
    /// Whether the room has ended or is ending: requests for it find nothing.
    fn over(&self) -> bool {
        self.ended || self.closing.is_some()
    }

    fn outbox(&self) -> Outbox {
        Outbox { members: self.members.keys().copied().collect(), out: Vec::new(), end: None }
    }
}

impl<G: Game> Room<G> {
    /// The room's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The room's label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The last tick run (0 before the first).
    pub fn tick(&self) -> u64 {
        self.state().tick
    }

    /// The members, present or gone, by user.
    pub fn members(&self) -> BTreeMap<u64, Member> {
        self.state().members.clone()
    }

    /// Adds the user of `ctx` as a member (again, from a new session, when it was one), after
    /// `check` (the game's rule: may this user join? what does it see?) accepted it; answers what
    /// `check` answered.
    ///
    /// # Errors
    /// `NOT_LOGGED_IN` without a user; `NOT_FOUND` when the room has ended; `CONFLICT` when it is
    /// full ([`RoomSpec::max_members`]); what `check` refused with.
    pub async fn join<T>(
        &self,
        ctx: &Ctx,
        check: impl FnOnce(&mut G, u64, &mut Outbox) -> Result<T, Code>,
    ) -> Result<T, Code> {
        let user = ctx.user_id().ok_or(Code::NOT_LOGGED_IN)?;
        let (answer, out) = {
            let mut state = self.state();
            if state.over() {
                return Err(Code::NOT_FOUND);
            }
            if !state.members.contains_key(&user) && state.members.len() >= self.spec.max_members {
                return Err(Code::CONFLICT);
            }
            let mut out = state.outbox();
            let answer = check(&mut state.game, user, &mut out)?;
            let member = Member { session: ctx.request().session.clone(), gone: None };
            state.members.insert(user, member);
            out.members = state.members.keys().copied().collect();
            (answer, out)
        };
        if let Some(will) = &self.will {
            ctx.leave_will(&self.id, will).await;
        }
        self.send(ctx, out).await;
        Ok(answer)
    }

    /// Runs `input` (a member's move, action or message) on the game for the user of `ctx`.
    ///
    /// # Errors
    /// `NOT_FOUND` when the room has ended; `PERMISSION_DENIED` when the user is not a member;
    /// what `input` refused with.
    pub async fn input<T>(
        &self,
        ctx: &Ctx,
        input: impl FnOnce(&mut G, u64, &mut Outbox) -> Result<T, Code>,
    ) -> Result<T, Code> {
        let (answer, out) = {
            let mut state = self.state();
            if state.over() {
                return Err(Code::NOT_FOUND);
            }
            let user = ctx.user_id().filter(|user| state.members.contains_key(user));
            let user = user.ok_or(Code::PERMISSION_DENIED)?;
            let mut out = state.outbox();
            (input(&mut state.game, user, &mut out)?, out)
        };
        self.send(ctx, out).await;
        Ok(answer)
    }

    /// Removes the user of `ctx` from the members ([`Game::left`] is told).
    ///
    /// # Errors
    /// `NOT_FOUND` when the room has ended; `PERMISSION_DENIED` when the user is not a member.
    pub async fn leave(&self, ctx: &Ctx) -> Result<(), Code> {
        let (member, out) = {
            let mut state = self.state();
            if state.over() {
                return Err(Code::NOT_FOUND);
            }
            let user = ctx.user_id().ok_or(Code::PERMISSION_DENIED)?;
            let member = state.members.remove(&user).ok_or(Code::PERMISSION_DENIED)?;
            let mut out = state.outbox();
            state.game.left(user, &mut out);
            (member, out)
        };
        if self.will.is_some() {
            ctx.revoke_wills(&self.id, &[member.session]).await;
        }
        self.send(ctx, out).await;
        Ok(())
    }

    /// Ends the room for `reason` ([`Game::ended`] is told `Over(reason)`) before its next tick.
    pub fn end(&self, reason: impl Into<String>) {
        let mut state = self.state();
        if !state.over() {
            // The tick task finishes the ending with this reason.
            state.closing = Some(reason.into());
        }
    }

    fn state(&self) -> MutexGuard<'_, State<G>> {
        lock(&self.state)
    }

    /// The tick loop, until the room ends.
    async fn run(&self, ctx: &Ctx) {
        let period = Duration::from_secs(1) / self.spec.hz;
        let module = ctx.invocation().module();
        let host = ctx.invocation().host().clone();
        let mut next = Instant::now() + period;
        let mut empty_since: Option<Instant> = None;
        let mut overrun_logged: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if next > now {
                ctx.sleep(next - now).await;
            }
            let woke = Instant::now();
            let late = woke.saturating_duration_since(next);
            let (out, ending) = {
                let mut state = self.state();
                let mut out = state.outbox();
                let ending = if let Some(reason) = state.closing.take() {
                    Some(Ending::Over(reason))
                } else if ctx.stopping() && !state.ended {
                    Some(Ending::Shutdown)
                } else if state.ended {
                    return;
                } else {
                    state.tick += 1;
                    let tick = state.tick;
                    let game = &mut state.game;
                    let ticked = catch_unwind(AssertUnwindSafe(|| game.tick(tick, &mut out)));
                    let failed = ticked.is_err();
                    if let Err(panic) = ticked {
                        let message = mortar_abi::panic::message(&*panic);
                        ctx.error(format_args!(
                            "room {} tick {tick} panicked: {message}; the room ends",
                            self.id
                        ));
                        // What the panicked tick meant to send is not sent.
                        out = state.outbox();
                    }
                    self.sweep(&mut state, woke, &mut out);
                    let present = state.members.values().any(|member| member.gone.is_none());
                    match (present, empty_since) {
                        (true, _) => empty_since = None,
                        (false, None) => empty_since = Some(woke),
                        (false, Some(since)) if woke.duration_since(since) >= self.spec.empty_for => {
                            out.end.get_or_insert_with(String::new);
                        }
                        (false, Some(_)) => {}
                    }
                    match out.end.take() {
                        _ if failed => Some(Ending::Failed),
                        Some(reason) if reason.is_empty() && !present => Some(Ending::Empty),
                        other => other.map(Ending::Over),
                    }
                };
                if let Some(ending) = &ending {
                    state.ended = true;
                    out.members = state.members.keys().copied().collect();
                    let game = &mut state.game;
                    if catch_unwind(AssertUnwindSafe(|| game.ended(ending, &mut out))).is_err() {
                        ctx.error(format_args!("room {}: its game panicked as it ended", self.id));
                    }
                }
                (out, ending)
            };
            let sessions = self.send(ctx, out).await;
            let took = woke.elapsed();
            let overran = took > period;
            host.room_tick(module, late, overran);
            if overran && overrun_logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                overrun_logged = Some(Instant::now());
                ctx.warn(format_args!(
                    "room {} tick {} took {took:?}, longer than its period {period:?}",
                    self.id,
                    self.tick()
                ));
            }
            if let Some(ending) = ending {
                if self.will.is_some() {
                    ctx.revoke_wills(&self.id, &sessions).await;
                }
                ctx.info(format_args!("room {} ended: {}", self.id, ending.reason()));
                return;
            }
            // A fixed schedule; when a tick ran later than a whole period, the missed ones are
            // skipped rather than run back to back.
            next += period;
            if next + period < Instant::now() {
                next = Instant::now() + period;
            }
        }
    }

    /// Removes the members gone longer than the rejoin grace, telling the game.
    fn sweep(&self, state: &mut State<G>, now: Instant, out: &mut Outbox) {
        let expired: Vec<u64> = state
            .members
            .iter()
            .filter(|(_, member)| {
                member.gone.is_some_and(|gone| now.duration_since(gone) >= self.spec.rejoin_grace)
            })
            .map(|(user, _)| *user)
            .collect();
        for user in expired {
            state.members.remove(&user);
            state.game.left(user, out);
        }
    }

    /// Pushes what `out` holds to the members present, marking gone those whose sessions have
    /// ended; the sessions of the members present.
    async fn send(&self, ctx: &Ctx, out: Outbox) -> Vec<Session> {
        let present: Vec<(u64, Session)> = {
            let state = self.state();
            let present = state.members.iter().filter(|(_, member)| member.gone.is_none());
            present.map(|(user, member)| (*user, member.session.clone())).collect()
        };
        let mut gone = Vec::new();
        for outgoing in out.out {
            let targets: Vec<&(u64, Session)> = match outgoing.to {
                None => present.iter().collect(),
                Some(to) => present.iter().filter(|(user, _)| *user == to).collect(),
            };
            if targets.is_empty() {
                continue;
            }
            let sessions: Vec<Session> = targets.iter().map(|(_, session)| session.clone()).collect();
            let pushed = ctx
                .invocation()
                .host()
                .push_sessions(ctx.invocation(), sessions, &outgoing.route, &outgoing.message, outgoing.body)
                .await;
            if let Ok(pushed) = pushed {
                gone.extend(pushed.gone.iter().map(|&index| targets[index].clone()));
            }
        }
        if !gone.is_empty() {
            let now = Instant::now();
            let mut state = self.state();
            for (user, session) in gone {
                // Only if it is still that session: the member may have joined again meanwhile.
                if let Some(member) = state.members.get_mut(&user)
                    && member.session == session
                {
                    member.gone.get_or_insert(now);
                }
            }
        }
        present.into_iter().map(|(_, session)| session).collect()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
