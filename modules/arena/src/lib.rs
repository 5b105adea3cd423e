//! The arena module: a small authoritative game played in rooms ([`mortar::room`]), to prove that
//! a game itself runs on mortar, not only its meta-game.
//!
//! The matchmaker creates a room for the players it matched (`arena.create`, internal); each of
//! them joins it (`arena.join {roomId}` → `{tick, players}`) and sends moves (`arena.move {roomId,
//! dx, dy}`, each −1..1). The server owns the truth: before each tick it applies each player's
//! last move (one cell per tick at most, inside the grid); a move into another player hits them
//! instead (hp down by one; at 0 they are out); when one player of two or more is left standing,
//! they win and the room ends (`arena.ended {roomId, reason: "won", winner}`). Ten times a second
//! every member gets `arena.state {roomId, tick, players}`.
//!
//! Two relay routes follow Nakama's published match benchmark: `arena.echo {roomId, payload}`
//! sends the payload back to the sender with the room's next tick (`arena.echoed`), and
//! `arena.broadcast {roomId, payload}` to every member at once (`arena.broadcasted {from,
//! payload}`).
//!
//! Every route naming a room is routed by `room_id`, so all of a room's requests reach the worker
//! holding it. Rooms are not persisted: when that worker dies, its members' gateways push them
//! `arena.ended {reason: "worker lost"}`, and they may matchmake again.

use mortar::prelude::*;
use mortar::room::{Ending, Game, Outbox, RoomSpec, Rooms, Will};
use serde::{Deserialize, Serialize};
use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

/// The messages of `proto/arena.proto`.
pub mod arena {
    mortar::include_proto!("arena");
}

use arena::{
    BroadcastReq, BroadcastResp, Broadcasted, CreateReq, CreateResp, EchoReq, EchoResp, Echoed, Ended,
    JoinReq, JoinResp, LeaveReq, LeaveResp, MoveReq, MoveResp, Player, State,
};

/// The module on a node: the rooms this worker holds.
#[derive(Default)]
pub struct Arena {
    rooms: Rooms<Match>,
}

impl Module for Arena {
    fn name(&self) -> &'static str {
        "arena"
    }
}

mortar::module!(Arena);
mortar::export_module!();

/// `[modules.arena]`: how rooms run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArenaConfig {
    /// Ticks per second (1–60): moves applied and `arena.state` pushed each tick.
    pub hz: u32,
    /// A room with no member present for this long ends (`empty`).
    pub empty_s: u64,
    /// A member whose connection dropped may join again within this long.
    pub rejoin_grace_s: u64,
    /// The grid's side (cells), 4–1000.
    pub size: i32,
    /// Each player's hit points at the start, 1–100.
    pub hp: i32,
    /// The most players one room is created for, 2–1000.
    pub max_players: usize,
    /// The largest payload of `arena.echo` and `arena.broadcast`; larger is `BAD_REQUEST`.
    pub max_payload_bytes: usize,
}

impl Default for ArenaConfig {
    fn default() -> Self {
        Self {
            hz: 10,
            empty_s: 10,
            rejoin_grace_s: 10,
            size: 20,
            hp: 3,
            max_players: 100,
            max_payload_bytes: 1024,
        }
    }
}

fn check_config(config: &ArenaConfig) -> Result<(), String> {
    if !(1..=60).contains(&config.hz) {
        return Err("hz must be 1 to 60".into());
    }
    if !(4..=1000).contains(&config.size) || !(1..=100).contains(&config.hp) {
        return Err("size must be 4 to 1000, hp 1 to 100".into());
    }
    if !(2..=1000).contains(&config.max_players) || config.max_payload_bytes > 65536 {
        return Err("max_players must be 2 to 1000, max_payload_bytes at most 65536".into());
    }
    Ok(())
}

mortar::config!(ArenaConfig, section = "arena", check = check_config);

/// The longest room id.
pub const MAX_ROOM_ID_BYTES: usize = 64;

/// One room's game.
pub struct Match {
    room_id: String,
    size: i32,
    hp: i32,
    /// The players matched into the room: who may join.
    matched: BTreeSet<u64>,
    /// The players who joined, by user.
    players: BTreeMap<u64, Player>,
    /// Each player's move for the next tick (the last asked).
    moves: BTreeMap<u64, (i32, i32)>,
    /// Payloads to send back to their senders with the next tick.
    echoes: Vec<(u64, mortar::bytes::Bytes)>,
    /// The last tick run.
    tick: u64,
    winner: Option<u64>,
}

impl Match {
    fn new(room_id: &str, matched: BTreeSet<u64>, config: &ArenaConfig) -> Self {
        Self {
            room_id: room_id.to_owned(),
            size: config.size,
            hp: config.hp,
            matched,
            players: BTreeMap::new(),
            moves: BTreeMap::new(),
            echoes: Vec::new(),
            tick: 0,
            winner: None,
        }
    }

    /// Where the `index`-th matched player starts: every other cell of the rows, every other row.
    fn spawn(&self, index: usize) -> (i32, i32) {
        let cell = i32::try_from(index).unwrap_or(i32::MAX).saturating_mul(2);
        let per_row = (self.size / 2).max(1);
        ((cell / 2 % per_row) * 2, (cell / 2 / per_row * 2).min(self.size - 1))
    }

    fn join(&mut self, user: u64) -> Result<JoinResp, Code> {
        let index =
            self.matched.iter().position(|matched| *matched == user).ok_or(Code::PERMISSION_DENIED)?;
        if !self.players.contains_key(&user) {
            let (x, y) = self.spawn(index);
            self.players.insert(user, Player { user_id: user, x, y, hp: self.hp });
        }
        Ok(JoinResp { tick: self.tick, players: self.players.values().cloned().collect() })
    }

    /// Applies the moves asked since the last tick, in user order.
    fn apply_moves(&mut self) {
        for (user, (dx, dy)) in std::mem::take(&mut self.moves) {
            let Some(mover) = self.players.get(&user).filter(|player| player.hp > 0) else { continue };
            let to = ((mover.x + dx).clamp(0, self.size - 1), (mover.y + dy).clamp(0, self.size - 1));
            let hit = self
                .players
                .values_mut()
                .find(|other| other.user_id != user && other.hp > 0 && (other.x, other.y) == to);
            match hit {
                Some(other) => other.hp -= 1,
                None => {
                    if let Some(mover) = self.players.get_mut(&user) {
                        (mover.x, mover.y) = to;
                    }
                }
            }
        }
    }
}

impl Game for Match {
    fn tick(&mut self, tick: u64, out: &mut Outbox) {
        self.tick = tick;
        self.apply_moves();
        for (user, payload) in std::mem::take(&mut self.echoes) {
            out.send(user, "arena.echoed", &Echoed { payload });
        }
        let state =
            State { room_id: self.room_id.clone(), tick, players: self.players.values().cloned().collect() };
        out.broadcast("arena.state", &state);
        let standing: Vec<u64> =
            self.players.values().filter(|player| player.hp > 0).map(|player| player.user_id).collect();
        if self.players.len() >= 2 && standing.len() <= 1 {
            self.winner = standing.first().copied();
            out.end("won");
        }
    }

    /// A player who leaves (or whose connection stayed lost past the rejoin grace) forfeits: out
    /// of the game, as if hit to 0.
    fn left(&mut self, user: u64, _: &mut Outbox) {
        if let Some(player) = self.players.get_mut(&user) {
            player.hp = 0;
        }
        self.moves.remove(&user);
    }

    fn ended(&mut self, reason: &Ending, out: &mut Outbox) {
        let ended =
            Ended { room_id: self.room_id.clone(), reason: reason.reason().to_owned(), winner: self.winner };
        out.broadcast("arena.ended", &ended);
    }

    fn will(&self) -> Option<Will> {
        let ended = Ended { room_id: self.room_id.clone(), reason: "worker lost".into(), winner: None };
        Some(Will::new("arena.ended", &ended))
    }
}

fn arena(ctx: &Ctx) -> Result<std::sync::Arc<Arena>, Code> {
    ctx.module::<Arena>().ok_or(Code::INTERNAL)
}

fn room(ctx: &Ctx, id: &str) -> Result<std::sync::Arc<mortar::room::Room<Match>>, Code> {
    arena(ctx)?.rooms.get(id).ok_or(Code::NOT_FOUND)
}

/// Internal: creates room `room_id` for the matched `user_ids` (the matchmaker calls it).
#[mortar::handler("arena.create", internal, key = room_id)]
pub async fn create(ctx: Ctx, req: CreateReq) -> Result<CreateResp, Failure> {
    let config = ctx.config::<ArenaConfig>();
    if req.room_id.is_empty() || req.room_id.len() > MAX_ROOM_ID_BYTES {
        return Err(Code::BAD_REQUEST.because(format!("room_id: 1 to {MAX_ROOM_ID_BYTES} bytes")));
    }
    let matched: BTreeSet<u64> = req.user_ids.iter().copied().filter(|user| *user != 0).collect();
    if matched.is_empty() || matched.len() > config.max_players {
        return Err(Code::BAD_REQUEST.because(format!("user_ids: 1 to {} players", config.max_players)));
    }
    let spec = RoomSpec {
        hz: config.hz,
        empty_for: Duration::from_secs(config.empty_s),
        rejoin_grace: Duration::from_secs(config.rejoin_grace_s),
        max_members: config.max_players,
    };
    let game = Match::new(&req.room_id, matched, &config);
    arena(&ctx)?.rooms.create(&ctx, &req.room_id, &req.mode, spec, game)?;
    Ok(CreateResp {})
}

/// Joins a room the caller was matched into (again, after a reconnect): its tick and players.
#[mortar::handler("arena.join", key = room_id)]
pub async fn join(ctx: Ctx, req: JoinReq) -> Result<JoinResp, Code> {
    room(&ctx, &req.room_id)?.join(&ctx, |game, user, _| game.join(user)).await
}

/// Asks to move by `(dx, dy)`, each −1..1, at the next tick.
#[mortar::handler("arena.move", key = room_id)]
pub async fn step(ctx: Ctx, req: MoveReq) -> Result<MoveResp, Failure> {
    if !(-1..=1).contains(&req.dx) || !(-1..=1).contains(&req.dy) {
        return Err(Code::BAD_REQUEST.because("dx and dy must each be -1, 0 or 1"));
    }
    let room = room(&ctx, &req.room_id)?;
    room.input(&ctx, |game, user, _| {
        game.moves.insert(user, (req.dx, req.dy));
        Ok(())
    })
    .await?;
    Ok(MoveResp {})
}

/// Leaves a room.
#[mortar::handler("arena.leave", key = room_id)]
pub async fn leave(ctx: Ctx, req: LeaveReq) -> Result<LeaveResp, Code> {
    room(&ctx, &req.room_id)?.leave(&ctx).await?;
    Ok(LeaveResp {})
}

fn check_payload(ctx: &Ctx, payload: &[u8]) -> Result<(), Failure> {
    let max = ctx.config::<ArenaConfig>().max_payload_bytes;
    if payload.len() > max {
        return Err(Code::BAD_REQUEST.because(format!("payload: at most {max} bytes")));
    }
    Ok(())
}

/// Sends `payload` back to the caller with the room's next tick (`arena.echoed`).
#[mortar::handler("arena.echo", key = room_id)]
pub async fn echo(ctx: Ctx, req: EchoReq) -> Result<EchoResp, Failure> {
    check_payload(&ctx, &req.payload)?;
    let room = room(&ctx, &req.room_id)?;
    room.input(&ctx, |game, user, _| {
        game.echoes.push((user, req.payload));
        Ok(())
    })
    .await?;
    Ok(EchoResp {})
}

/// Sends `payload` to every member of the room at once (`arena.broadcasted`).
#[mortar::handler("arena.broadcast", key = room_id)]
pub async fn broadcast(ctx: Ctx, req: BroadcastReq) -> Result<BroadcastResp, Failure> {
    check_payload(&ctx, &req.payload)?;
    let room = room(&ctx, &req.room_id)?;
    room.input(&ctx, |_, user, out| {
        out.broadcast("arena.broadcasted", &Broadcasted { from: user, payload: req.payload });
        Ok(())
    })
    .await?;
    Ok(BroadcastResp {})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn game(players: &[u64]) -> Match {
        let mut game = Match::new("r", players.iter().copied().collect(), &ArenaConfig::default());
        for user in players {
            game.join(*user).unwrap();
        }
        game
    }

    #[test]
    fn players_start_apart_inside_the_grid() {
        let game = game(&(1..=100).collect::<Vec<_>>());
        let cells: BTreeSet<(i32, i32)> = game.players.values().map(|p| (p.x, p.y)).collect();
        assert_eq!(cells.len(), 100);
        assert!(cells.iter().all(|(x, y)| (0..20).contains(x) && (0..20).contains(y)), "{cells:?}");
    }

    #[test]
    fn a_move_into_a_player_hits_and_the_last_standing_wins() {
        let mut game = game(&[7, 9]);
        assert_eq!((game.players[&7].x, game.players[&9].x), (0, 2));
        game.moves.insert(7, (1, 0));
        game.apply_moves();
        assert_eq!(game.players[&7].x, 1);
        for hp in [2, 1, 0] {
            game.moves.insert(7, (1, 0));
            game.apply_moves();
            assert_eq!((game.players[&7].x, game.players[&9].hp), (1, hp));
        }
        // Out of the game: no more moves, and no one to hit.
        game.moves.insert(9, (-1, 0));
        game.apply_moves();
        assert_eq!(game.players[&9].x, 2);
    }

    #[test]
    fn moves_stay_inside_the_grid() {
        let mut game = game(&[1]);
        game.moves.insert(1, (-1, -1));
        game.apply_moves();
        assert_eq!((game.players[&1].x, game.players[&1].y), (0, 0));
    }

    #[test]
    fn only_matched_players_join() {
        let mut game = game(&[1, 2]);
        assert_eq!(game.join(3).unwrap_err(), Code::PERMISSION_DENIED);
        assert_eq!(game.join(2).unwrap().players.len(), 2, "joining again changes nothing");
    }

    #[test]
    fn a_player_who_leaves_forfeits() {
        let mut game = game(&[1, 2]);
        game.left(2, &mut Outbox::default());
        assert_eq!(game.players[&2].hp, 0);
        assert_eq!(game.join(2).unwrap().players.iter().find(|p| p.user_id == 2).unwrap().hp, 0, "still out");
    }
}
