//! Rooms, matchmaking and the arena game as players see them: WebSocket clients log in, queue
//! with `matchmake.join`, join the room they are matched into and play, against `mortar dev` and
//! against a cluster of two workers of which the one holding a room is killed.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod support;

use mortar_arena::arena::{
    BroadcastReq, BroadcastResp, Broadcasted, EchoReq, EchoResp, Echoed, Ended, JoinReq, JoinResp, LeaveReq,
    LeaveResp, MoveReq, MoveResp, State,
};
use mortar_cli::client::Client;
use mortar_matchmake::matchmake::{self as mm, Matched};
use mortar_pb::{ErrorCode, UserMessage};
use mortar_user::user::{LoginReq, LoginResp, RegisterReq, RegisterResp};
use prost::Message;
use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    time::Duration,
};
use support::{Node, TempDir, gateway, static_registry, wait_live, worker};

/// Cheap password hashes: these tests log many players in.
const FAST_HASH: (&str, &str) = ("MORTAR_MODULES__USER__ARGON2_MEMORY_KIB", "1024");

/// A logged-in player: its connection and the pushes read while waiting for replies.
struct Player {
    id: u64,
    client: Client,
    pushes: VecDeque<UserMessage>,
}

impl Player {
    async fn login(url: &str, account: &str) -> Player {
        let mut client = Client::connect(url).await.unwrap();
        let password = format!("{account}-password");
        let req = RegisterReq { account: account.into(), password: password.clone() };
        let registered: RegisterResp = support::call(&mut client, "user.register", req).await.unwrap();
        let req = LoginReq { account: account.into(), password };
        let _: LoginResp = support::call(&mut client, "user.login", req).await.unwrap();
        Player { id: registered.user_id, client, pushes: VecDeque::new() }
    }

    /// Sends `req` to `route`: the reply decoded, or its code. Pushes meanwhile are kept.
    async fn call<Req: Message, Resp: Message + Default>(
        &mut self,
        route: &str,
        req: Req,
    ) -> Result<Resp, i32> {
        let (main, sub) = route.split_once('.').unwrap();
        let pushes = &mut self.pushes;
        let reply = self.client.request(main, sub, req.encode_to_vec().into(), |push| pushes.push_back(push));
        let reply =
            tokio::time::timeout(Duration::from_secs(15), reply).await.expect("a reply in time").unwrap();
        match reply.code {
            0 => Ok(Resp::decode(reply.data).unwrap()),
            code => Err(code),
        }
    }

    /// The next push of `route` (within `within`), dropping the pushes of other routes before it.
    async fn push<M: Message + Default>(&mut self, route: &str, within: Duration) -> M {
        M::decode(self.push_of(&[route], within).await.data).unwrap()
    }

    /// The next push of one of `routes` (within `within`), dropping the others before it.
    async fn push_of(&mut self, routes: &[&str], within: Duration) -> UserMessage {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let msg = match self.pushes.pop_front() {
                Some(msg) => msg,
                None => tokio::time::timeout_at(deadline, self.client.next())
                    .await
                    .unwrap_or_else(|_| panic!("player {} got none of {routes:?} in {within:?}", self.id))
                    .unwrap(),
            };
            if msg.seq == 0 && routes.contains(&format!("{}.{}", msg.main_type, msg.sub_type).as_str()) {
                return msg;
            }
        }
    }
}

/// Queues `players` for `mode` and waits until each is told its match: the room of each player.
async fn matchmake(players: &mut [Player], mode: &str) -> Vec<Matched> {
    for player in players.iter_mut() {
        let req = mm::JoinReq { mode: mode.into(), ..Default::default() };
        let ticket: mm::JoinResp = player.call("matchmake.join", req).await.unwrap();
        assert!(ticket.ticket_id.starts_with(&format!("{mode}:")), "{}", ticket.ticket_id);
    }
    let mut matched = Vec::new();
    for player in players.iter_mut() {
        let got: Matched = player.push("matchmake.matched", Duration::from_secs(10)).await;
        assert_eq!(got.mode, mode);
        assert!(got.user_ids.contains(&player.id));
        matched.push(got);
    }
    matched
}

/// A duel from the queue to the winner in `mortar dev`: two players matched into one room, moves
/// checked by the server, state at 10 Hz with a gapless tick, echo and broadcast, hits, a winner;
/// a stranger is refused, an unknown room is not found, a move too long is a bad request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duel_is_matched_played_and_won_in_dev() {
    let dir = TempDir::new("arena-dev");
    let env = [("MORTAR_ADMIN__LISTEN", "127.0.0.1:0"), FAST_HASH];
    let node = Node::start("dev", &dir, &["dev", "--listen", "127.0.0.1:0", "--data", "data"], &env);
    let mut duel =
        vec![Player::login(&node.addr, "duelist_a").await, Player::login(&node.addr, "duelist_b").await];
    let mut stranger = Player::login(&node.addr, "stranger").await;

    // Queued twice: refused. Cancelled: gone. Then both queue and match into one room.
    let req = || mm::JoinReq { mode: "duel".into(), ..Default::default() };
    let ticket: mm::JoinResp = duel[0].call("matchmake.join", req()).await.unwrap();
    assert_eq!(
        duel[0].call::<_, mm::JoinResp>("matchmake.join", req()).await,
        Err(ErrorCode::AlreadyExists as i32)
    );
    let cancel = mm::CancelReq { ticket_id: ticket.ticket_id.clone() };
    let _: mm::CancelResp = duel[0].call("matchmake.cancel", cancel.clone()).await.unwrap();
    assert_eq!(
        duel[0].call::<_, mm::CancelResp>("matchmake.cancel", cancel).await,
        Err(ErrorCode::NotFound as i32)
    );
    let unknown = mm::JoinReq { mode: "chess".into(), ..Default::default() };
    assert_eq!(
        duel[0].call::<_, mm::JoinResp>("matchmake.join", unknown).await,
        Err(ErrorCode::NotFound as i32)
    );
    let matched = matchmake(&mut duel, "duel").await;
    assert_eq!(matched[0], matched[1], "one match for both");
    let room_id = matched[0].room_id.clone();
    let users: BTreeSet<u64> = duel.iter().map(|player| player.id).collect();
    assert_eq!(matched[0].user_ids.iter().copied().collect::<BTreeSet<_>>(), users);

    for player in &mut duel {
        let joined: JoinResp = player.call("arena.join", JoinReq { room_id: room_id.clone() }).await.unwrap();
        assert!(joined.players.iter().any(|p| p.user_id == player.id && p.hp == 3), "{joined:?}");
    }
    let room = || room_id.clone();
    let denied = ErrorCode::PermissionDenied as i32;
    assert_eq!(stranger.call::<_, JoinResp>("arena.join", JoinReq { room_id: room() }).await, Err(denied));
    let step = |dx, dy| MoveReq { room_id: room(), dx, dy };
    assert_eq!(stranger.call::<_, MoveResp>("arena.move", step(1, 0)).await, Err(denied));
    let gone = MoveReq { room_id: "duel-nowhere".into(), dx: 1, dy: 0 };
    assert_eq!(duel[0].call::<_, MoveResp>("arena.move", gone).await, Err(ErrorCode::NotFound as i32));
    assert_eq!(
        duel[0].call::<_, MoveResp>("arena.move", step(2, 0)).await,
        Err(ErrorCode::BadRequest as i32)
    );

    // Ten times a second, every member sees every player; the tick counts up without gaps.
    let mut ticks = Vec::new();
    for _ in 0..5 {
        let state: State = duel[1].push("arena.state", Duration::from_secs(2)).await;
        assert_eq!((state.room_id.as_str(), state.players.len()), (room_id.as_str(), 2));
        ticks.push(state.tick);
    }
    assert!(ticks.windows(2).all(|pair| pair[1] == pair[0] + 1), "ticks {ticks:?}");

    // Echo comes back to its sender only; broadcast reaches both.
    let payload = vec![7u8; 44];
    let _: EchoResp = duel[0]
        .call("arena.echo", EchoReq { room_id: room(), payload: payload.clone().into() })
        .await
        .unwrap();
    let echoed: Echoed = duel[0].push("arena.echoed", Duration::from_secs(2)).await;
    assert_eq!(echoed.payload.to_vec(), payload);
    let cast = BroadcastReq { room_id: room(), payload: vec![9u8; 35].into() };
    let _: BroadcastResp = duel[1].call("arena.broadcast", cast).await.unwrap();
    let sender = duel[1].id;
    for player in &mut duel {
        let got: Broadcasted = player.push("arena.broadcasted", Duration::from_secs(2)).await;
        assert_eq!((got.from, got.payload.len()), (sender, 35));
    }
    let big = EchoReq { room_id: room(), payload: vec![0u8; 2000].into() };
    assert_eq!(duel[0].call::<_, EchoResp>("arena.echo", big).await, Err(ErrorCode::BadRequest as i32));

    // The first player walks into the second: one step, then three hits, and wins.
    let positions = |state: &State| -> BTreeMap<u64, (i32, i32, i32)> {
        state.players.iter().map(|p| (p.user_id, (p.x, p.y, p.hp))).collect()
    };
    let (a, b) = (duel[0].id, duel[1].id);
    let start: State = duel[0].push("arena.state", Duration::from_secs(2)).await;
    let (ax, ay, _) = positions(&start)[&a];
    let (bx, by, _) = positions(&start)[&b];
    assert_eq!(ay, by, "duelists start on one row: {start:?}");
    let dx = (bx - ax).signum();
    let mut ended = None;
    let mut last = start;
    'walk: for _ in 0..(bx - ax).abs() + 3 {
        let _: MoveResp = duel[0].call("arena.move", step(dx, 0)).await.unwrap();
        // The move is applied at the next tick: the second state from now shows it.
        for _ in 0..2 {
            let msg = duel[0].push_of(&["arena.state", "arena.ended"], Duration::from_secs(2)).await;
            if msg.sub_type == "ended" {
                ended = Some(Ended::decode(msg.data).unwrap());
                break 'walk;
            }
            last = State::decode(msg.data).unwrap();
        }
    }
    let ended = ended.unwrap_or_else(|| panic!("no winner; last state {last:?}"));
    assert_eq!((ended.reason.as_str(), ended.winner), ("won", Some(a)), "{ended:?}");
    let told: Ended = duel[1].push("arena.ended", Duration::from_secs(2)).await;
    assert_eq!(told, ended);
    // The room is gone once it ended.
    let leave = LeaveReq { room_id: room() };
    assert_eq!(duel[1].call::<_, LeaveResp>("arena.leave", leave).await, Err(ErrorCode::NotFound as i32));
}

/// A node stopping with rooms in play ends them at their next tick (`shutdown`), so it stops at
/// once rather than waiting out `worker.shutdown_grace_ms` for their tick tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_rooms_in_play_stops_at_once() {
    let dir = TempDir::new("arena-stop");
    let env = [("MORTAR_ADMIN__LISTEN", "127.0.0.1:0"), FAST_HASH];
    let mut node = Node::start("dev", &dir, &["dev", "--listen", "127.0.0.1:0", "--data", "data"], &env);
    let mut duel =
        vec![Player::login(&node.addr, "stopper_a").await, Player::login(&node.addr, "stopper_b").await];
    let matched = matchmake(&mut duel, "duel").await;
    for player in &mut duel {
        let _: JoinResp =
            player.call("arena.join", JoinReq { room_id: matched[0].room_id.clone() }).await.unwrap();
    }
    let _: State = duel[0].push("arena.state", Duration::from_secs(2)).await;
    let stopping = std::time::Instant::now();
    node.signal("TERM");
    assert_eq!(node.wait_exit(Duration::from_secs(8)), Some(0), "{}", node.log());
    assert!(stopping.elapsed() < Duration::from_secs(5), "stopped after {:?}", stopping.elapsed());
    assert!(!node.log().contains("still running after the shutdown grace"), "{}", node.log());
    assert!(node.log().contains("ended: shutdown"), "{}", node.log());
}

/// `mortar bot --scenario match` against `mortar dev`: forty players matched into rooms of ten,
/// echo and broadcast measured, the servers' tick lateness read from the admin listener.
#[test]
fn the_match_bot_plays_rooms_of_ten_and_reports_what_it_measured() {
    let dir = TempDir::new("arena-bot");
    let env = [
        ("MORTAR_ADMIN__LISTEN", "127.0.0.1:0"),
        ("MORTAR_MODULES__USER__REGISTER_PER_IP", "0"),
        ("MORTAR_MODULES__USER__REGISTER_PER_SEC", "0"),
        FAST_HASH,
    ];
    let node = Node::start("dev", &dir, &["dev", "--listen", "127.0.0.1:0", "--data", "data"], &env);
    let json = dir.0.join("match.json");
    let (admin, pid) = (node.admin.unwrap().to_string(), node.pid().to_string());
    let args = ["bot", "--scenario", "match", "--url", &node.addr, "--clients", "40", "--duration", "2s"];
    let out = std::process::Command::new(support::MORTAR)
        .args(args)
        .args(["--metrics", &admin, "--server-pid", &pid, "--quiet", "--json", json.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!((report["playing"].as_u64(), report["rooms"].as_u64()), (Some(40), Some(4)), "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert!(report["sent"].as_u64().unwrap() >= 80, "{report}");
    assert!(report["echo_ms"]["p50"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["broadcasts_per_sec"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["states_per_sec"].as_f64().unwrap() > 100.0, "{report}");
    assert!(report["ticks"]["ticks"].as_u64().unwrap() >= 40, "{report}");
    assert!(report["servers"]["cores"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["servers"]["rss_growth_kib"].as_u64().unwrap() > 0, "{report}");
}

/// Two workers serve arena and matchmake behind one gateway. Rooms spread over both; all of a
/// room's requests reach the worker holding it (every member sees one tick sequence); after
/// `kill -9` of one worker, the members of its rooms get `arena.ended` within 2 s, the others
/// play on, and the players of the lost rooms matchmake again into rooms of the survivor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_lives_on_one_worker_and_its_members_are_told_when_it_dies() {
    let dir = TempDir::new("arena-cluster");
    let env = [FAST_HASH];
    let w1 = worker(
        &dir,
        "worker-1",
        "127.0.0.1:0",
        "[worker]\nmodules = [\"user\", \"arena\", \"matchmake\"]\n",
        &env,
    );
    let w2 =
        worker(&dir, "worker-2", "127.0.0.1:0", "[worker]\nmodules = [\"arena\", \"matchmake\"]\n", &env);
    let gw = gateway(&dir, "gateway-1", &static_registry(&[&w1, &w2]), &[]);
    wait_live(&gw, 2);
    let mut players = Vec::new();
    for n in 0..20 {
        players.push(Player::login(&gw.addr, &format!("fighter_{n}")).await);
    }
    let matched = matchmake(&mut players, "duel").await;
    let rooms: BTreeSet<&str> = matched.iter().map(|m| m.room_id.as_str()).collect();
    assert_eq!(rooms.len(), 10, "ten duels");
    let holder = |room: &str| match (
        w1.log().contains(&format!("room {room} created")),
        w2.log().contains(&format!("room {room} created")),
    ) {
        (true, false) => "worker-1",
        (false, true) => "worker-2",
        other => panic!("room {room} created on {other:?}"),
    };
    // Rooms spread over both workers (ten by rendezvous on random ids: all on one is a 1-in-512
    // chance, which the test survives: it kills the holder of the first room either way).
    let held: BTreeMap<&str, &str> = rooms.iter().map(|room| (*room, holder(room))).collect();

    for (player, matched) in players.iter_mut().zip(&matched) {
        let _: JoinResp =
            player.call("arena.join", JoinReq { room_id: matched.room_id.clone() }).await.unwrap();
    }
    // Every member of a room sees one increasing tick sequence, without gaps: one worker runs
    // the room, and the states of its ticks reach every member.
    let mut ticks: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for player in &mut players {
        let mut last = None;
        for _ in 0..5 {
            let state: State = player.push("arena.state", Duration::from_secs(2)).await;
            if let Some(last) = last {
                assert!(state.tick > last && state.tick - last <= 3, "tick {last} then {}", state.tick);
            }
            last = Some(state.tick);
            ticks.entry(state.room_id).or_default().insert(state.tick);
        }
    }
    assert_eq!(ticks.len(), 10, "each player saw its own room's states");

    // The holder of the first room dies: the members of its rooms are told within 2 s; the
    // others play on.
    let (dead, survivor) = match held[matched[0].room_id.as_str()] {
        "worker-1" => (&w1, &w2),
        _ => (&w2, &w1),
    };
    let doomed: BTreeSet<&str> =
        held.iter().filter(|(_, w)| **w == dead.name).map(|(room, _)| *room).collect();
    let killed = std::time::Instant::now();
    dead.signal("KILL");
    for (player, matched) in players.iter_mut().zip(&matched) {
        if doomed.contains(matched.room_id.as_str()) {
            let ended: Ended = player.push("arena.ended", Duration::from_secs(2)).await;
            assert_eq!(
                (ended.room_id.as_str(), ended.reason.as_str()),
                (matched.room_id.as_str(), "worker lost")
            );
        }
    }
    assert!(killed.elapsed() < Duration::from_secs(3), "told in {:?}", killed.elapsed());
    for (player, matched) in players.iter_mut().zip(&matched) {
        if !doomed.contains(matched.room_id.as_str()) {
            player.pushes.clear();
            let state: State = player.push("arena.state", Duration::from_secs(2)).await;
            assert_eq!(state.room_id, matched.room_id, "a room of the survivor plays on");
        }
    }

    // The players of the lost rooms queue again and are matched into rooms of the survivor.
    let mut lost: Vec<Player> = Vec::new();
    for (player, matched) in players.into_iter().zip(&matched) {
        if doomed.contains(matched.room_id.as_str()) {
            lost.push(player);
        }
    }
    for player in &mut lost {
        player.pushes.clear();
    }
    let again = matchmake(&mut lost, "duel").await;
    for (player, matched) in lost.iter_mut().zip(&again) {
        assert!(survivor.log().contains(&format!("room {} created", matched.room_id)));
        let _: JoinResp =
            player.call("arena.join", JoinReq { room_id: matched.room_id.clone() }).await.unwrap();
    }
}
