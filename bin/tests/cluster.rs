//! The cluster as a user runs it: `mortar worker` and `mortar gateway` as separate processes,
//! found through the static or the Redis registry, driven by WebSocket clients. Workers are
//! killed, frozen, restarted and refused; Redis is restarted under them.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod support;

use mortar_cli::client::Client;
use mortar_echo::echo::{NodeResp, RoomReq};
use mortar_pb::{ErrorCode, Kick};
use prost::Message;
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};
use support::{Redis, TempDir, gateway, static_registry, wait_live, worker};

/// The workers of these tests serve echo: only modules without documents may run on several
/// workers with their own embedded stores.
const ECHO: &str = "[worker]\nmodules = [\"echo\"]\n";

/// Sends `echo.node`; the reply's code and the node that ran it ("" unless OK).
async fn where_ran(client: &mut Client) -> (i32, String) {
    let reply = tokio::time::timeout(
        Duration::from_secs(15),
        client.request("echo", "node", Default::default(), |_| {}),
    )
    .await
    .expect("every request gets a reply: none hangs")
    .expect("the connection stays up");
    let node = if reply.code == 0 { NodeResp::decode(reply.data).unwrap().node } else { String::new() };
    (reply.code, node)
}

/// Opens `n` connections and asks each where its requests run.
async fn spread(url: &str, n: usize) -> BTreeMap<String, usize> {
    let mut nodes = BTreeMap::new();
    for _ in 0..n {
        let mut client = Client::connect(url).await.unwrap();
        let (code, node) = where_ran(&mut client).await;
        assert_eq!(code, 0);
        *nodes.entry(node).or_default() += 1;
    }
    nodes
}

/// Every connection's requests stay on one worker; many connections use both.
async fn serves_sticky_and_spread(url: &str) {
    let mut seen = BTreeSet::new();
    for _ in 0..16 {
        let mut client = Client::connect(url).await.unwrap();
        let (code, first) = where_ran(&mut client).await;
        assert_eq!(code, 0);
        for _ in 0..10 {
            assert_eq!(
                where_ran(&mut client).await,
                (0, first.clone()),
                "a session's requests stay on one worker"
            );
        }
        seen.insert(first);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["worker-1", "worker-2"], "sessions spread over both");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_registry_serves_sticky_sessions_over_both_workers() {
    let dir = TempDir::new("static");
    let w1 = worker(&dir, "worker-1", "127.0.0.1:0", ECHO, &[]);
    let w2 = worker(&dir, "worker-2", "127.0.0.1:0", ECHO, &[]);
    let gw = gateway(&dir, "gateway-1", &static_registry(&[&w1, &w2]), &[]);
    wait_live(&gw, 2);
    serves_sticky_and_spread(&gw.addr).await;
    let (_, metrics) = gw.admin_get("/metrics");
    assert!(metrics.contains("mortar_registry_nodes{kind=\"worker\"} 2"), "{metrics}");
    assert!(metrics.contains("mortar_rpc_duration_seconds_count{peer=\"worker-1\"}"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_registry_serves_and_survives_a_redis_restart() {
    let mut redis = Redis::start();
    let dir = TempDir::new("redis");
    let url = redis.url();
    let env = [("MORTAR_REGISTRY__URL", url.as_str())];
    let w1 = worker(&dir, "worker-1", "127.0.0.1:0", ECHO, &env);
    let w2 = worker(&dir, "worker-2", "127.0.0.1:0", ECHO, &env);
    let gw = gateway(&dir, "gateway-1", "", &env);
    wait_live(&gw, 2);
    serves_sticky_and_spread(&gw.addr).await;
    assert_eq!(redis.command("EXISTS mortar:mortar:node:gateway-1").as_deref(), Some(":1"));

    // Redis goes away: the cluster keeps serving from what it knows.
    redis.kill();
    let mut client = Client::connect(&gw.addr).await.unwrap();
    for _ in 0..20 {
        assert_eq!(where_ran(&mut client).await.0, 0);
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(where_ran(&mut client).await.0, 0);
    assert!(gw.log().contains("registry unreachable"), "{}", gw.log());

    // Redis comes back empty: every node registers again, and a new worker joins.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis.command("EXISTS mortar:mortar:node:worker-2").as_deref() != Some(":1") {
        assert!(Instant::now() < deadline, "worker-2 did not register again");
        std::thread::sleep(Duration::from_millis(50));
    }
    let w3 = worker(&dir, "worker-3", "127.0.0.1:0", ECHO, &env);
    wait_live(&gw, 3);
    let nodes = spread(&gw.addr, 30).await;
    assert!(nodes.contains_key("worker-3"), "{nodes:?}");
    drop((w1, w2, w3));
}

/// Clients sending `echo.node` in a loop until stopped: (started at, code, node) per request.
fn load(
    url: &str,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<(Instant, i32, String)>>> {
    pipelined(url, clients, 1, stop)
}

/// Clients sending `echo.node` in rounds of `depth` requests at once until stopped: (round
/// started at, code, node) per request, in reply order. The gateway handles a session's requests
/// one after another (`session_concurrency` 1): the others of a round wait in its queue.
fn pipelined(
    url: &str,
    clients: usize,
    depth: usize,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<(Instant, i32, String)>>> {
    (0..clients)
        .map(|_| {
            let (url, stop) = (url.to_owned(), stop.clone());
            tokio::spawn(async move {
                let mut client = Client::connect(&url).await.unwrap();
                let mut results = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    if depth == 1 {
                        let (code, node) = where_ran(&mut client).await;
                        results.push((started, code, node));
                        continue;
                    }
                    for _ in 0..depth {
                        client.send("echo", "node", Default::default()).await.unwrap();
                    }
                    for _ in 0..depth {
                        let reply = tokio::time::timeout(Duration::from_secs(15), client.next())
                            .await
                            .expect("every request gets a reply: none hangs")
                            .expect("the connection stays up");
                        let node = if reply.code == 0 {
                            NodeResp::decode(reply.data).unwrap().node
                        } else {
                            String::new()
                        };
                        results.push((started, reply.code, node));
                    }
                }
                results
            })
        })
        .collect()
}

async fn collect(
    tasks: Vec<tokio::task::JoinHandle<Vec<(Instant, i32, String)>>>,
) -> Vec<(Instant, i32, String)> {
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all
}

/// Sends `echo.room {room}`; the node that holds the room.
async fn room_node(client: &mut Client, room: &str) -> String {
    let body = RoomReq { room: room.to_owned() }.encode_to_vec().into();
    let reply = client.request("echo", "room", body, |_| {}).await.unwrap();
    assert_eq!(reply.code, 0, "{}", reply.reason);
    NodeResp::decode(reply.data).unwrap().node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_route_reaches_one_worker_per_key_whoever_sends_and_moves_when_it_dies() {
    let dir = TempDir::new("keyed");
    let w1 = worker(&dir, "worker-1", "127.0.0.1:0", ECHO, &[]);
    let w2 = worker(&dir, "worker-2", "127.0.0.1:0", ECHO, &[]);
    let gw = gateway(&dir, "gateway-1", &static_registry(&[&w1, &w2]), &[]);
    wait_live(&gw, 2);
    let mut players = Vec::new();
    for _ in 0..12 {
        players.push(Client::connect(&gw.addr).await.unwrap());
    }
    // Players' own requests spread over both workers (by player) ...
    let mut own = BTreeSet::new();
    for player in &mut players {
        own.insert(where_ran(player).await.1);
    }
    assert_eq!(own.len(), 2, "players spread: {own:?}");
    // ... but every request for one room, from any of them, reaches one worker; rooms spread.
    let mut holders = BTreeMap::new();
    for room in (0..20).map(|n| format!("room-{n}")) {
        let mut seen = BTreeSet::new();
        for player in &mut players {
            seen.insert(room_node(player, &room).await);
        }
        assert_eq!(seen.len(), 1, "{room} is held by one worker: {seen:?}");
        holders.insert(room, seen.into_iter().next().unwrap());
    }
    let by_worker: BTreeSet<&String> = holders.values().collect();
    assert_eq!(by_worker.len(), 2, "rooms spread over both workers: {holders:?}");

    // The holder of room-0 dies: its rooms move to the other worker; the others stay.
    let dead = holders["room-0"].clone();
    let doomed = if dead == "worker-1" { &w1 } else { &w2 };
    doomed.signal("KILL");
    wait_live(&gw, 1);
    for (room, holder) in &holders {
        let now = room_node(&mut players[0], room).await;
        assert_ne!(now, dead, "{room} moved off the dead worker");
        if *holder != dead {
            assert_eq!(&now, holder, "{room} stayed where it was");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_fails_only_its_requests_in_flight() {
    let dir = TempDir::new("kill");
    let w1 = worker(&dir, "worker-1", "127.0.0.1:0", ECHO, &[]);
    let w2 = worker(&dir, "worker-2", "127.0.0.1:0", ECHO, &[]);
    let gw = gateway(&dir, "gateway-1", &static_registry(&[&w1, &w2]), &[]);
    wait_live(&gw, 2);
    let stop = Arc::new(AtomicBool::new(false));
    // Sixteen requests queued per session: those not yet sent when the worker dies move.
    let tasks = pipelined(&gw.addr, 20, 16, stop.clone());
    tokio::time::sleep(Duration::from_millis(800)).await;
    w1.signal("KILL");
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut results = Vec::new();
    let unavailable = ErrorCode::Unavailable as i32;
    for task in tasks {
        let client = task.await.unwrap();
        // One request of a session at a time is at a worker: the kill fails at most that one.
        // The first failure takes the worker out of every request's choice before the next pick.
        let failed = client.iter().filter(|(_, code, _)| *code == unavailable).count();
        assert!(failed <= 1, "{failed} UNAVAILABLE in a row for one client");
        results.extend(client);
    }

    let before = results.iter().filter(|(at, ..)| *at < killed).count();
    assert!(results.iter().filter(|(at, ..)| *at < killed).any(|(_, _, node)| node == "worker-1"));
    for (at, code, node) in &results {
        assert!(
            *code == 0 || *code == unavailable,
            "code {code} at {:?} after the kill",
            at.checked_duration_since(killed)
        );
        if at.checked_duration_since(killed).is_some_and(|after| after > Duration::from_millis(300)) {
            assert_eq!(
                (*code, node.as_str()),
                (0, "worker-2"),
                "later requests all succeed on the other worker"
            );
        }
    }
    assert!(results.len() > before + 100, "the load went on after the kill");

    // Started again on its address, it rejoins.
    let addr = w1.addr.clone();
    drop(w1);
    let _w1 = worker(&dir, "worker-1", &addr, ECHO, &[]);
    wait_live(&gw, 2);
    let nodes = spread(&gw.addr, 30).await;
    assert!(nodes.contains_key("worker-1"), "it rejoins: {nodes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_players_replies_keep_their_order_across_a_failover() {
    let dir = TempDir::new("order");
    let w1 = worker(&dir, "worker-1", "127.0.0.1:0", ECHO, &[]);
    let w2 = worker(&dir, "worker-2", "127.0.0.1:0", ECHO, &[]);
    // Four requests of a session run at once, so some are in flight when their worker dies.
    let env = [("MORTAR_GATEWAY__SESSION_CONCURRENCY", "4")];
    let gw = gateway(&dir, "gateway-1", &static_registry(&[&w1, &w2]), &env);
    wait_live(&gw, 2);
    let stop = Arc::new(AtomicBool::new(false));
    // Each client sends windows of 16 requests without waiting, then reads the 16 replies.
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (url, stop) = (gw.addr.clone(), stop.clone());
            tokio::spawn(async move {
                let mut client = Client::connect(&url).await.unwrap();
                let mut replies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..16 {
                        client.send("echo", "node", Default::default()).await.unwrap();
                    }
                    for _ in 0..16 {
                        let reply = tokio::time::timeout(Duration::from_secs(15), client.next())
                            .await
                            .expect("every request gets a reply")
                            .unwrap();
                        let node = match reply.code {
                            0 => NodeResp::decode(reply.data).unwrap().node,
                            _ => String::new(),
                        };
                        replies.push((reply.seq, reply.code, node));
                    }
                }
                replies
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(600)).await;
    w1.signal("KILL");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    stop.store(true, Ordering::Relaxed);

    let mut moved = 0;
    for client in clients {
        let replies = client.await.unwrap();
        let seqs: Vec<u32> = replies.iter().map(|(seq, ..)| *seq).collect();
        assert_eq!(seqs, (1..=seqs.len() as u32).collect::<Vec<_>>(), "replies come in request order");
        let unavailable = ErrorCode::Unavailable as i32;
        assert!(replies.iter().all(|(_, code, _)| *code == 0 || *code == unavailable), "{replies:?}");
        // A player on the dead worker: its requests in flight there are answered before the
        // ones the other worker ran, and none runs on the dead one after that.
        if let Some(first_on_w2) = replies.iter().position(|(_, _, node)| node == "worker-2")
            && replies[..first_on_w2].iter().any(|(_, _, node)| node == "worker-1")
        {
            moved += 1;
            assert!(replies[first_on_w2..].iter().all(|(_, _, node)| node != "worker-1"), "{replies:?}");
        }
    }
    assert!(moved > 0, "some players moved from the killed worker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_worker_times_out_its_requests_and_rejoins_when_thawed() {
    let dir = TempDir::new("freeze");
    let w1 = worker(&dir, "worker-1", "127.0.0.1:0", ECHO, &[]);
    let w2 = worker(&dir, "worker-2", "127.0.0.1:0", ECHO, &[]);
    let extra = static_registry(&[&w1, &w2]) + "[gateway]\nrequest_timeout_ms = 1500\n";
    let gw = gateway(&dir, "gateway-1", &extra, &[]);
    wait_live(&gw, 2);
    // A session whose requests run on worker-1.
    let mut on_w1 = loop {
        let mut client = Client::connect(&gw.addr).await.unwrap();
        if where_ran(&mut client).await.1 == "worker-1" {
            break client;
        }
    };
    w1.signal("STOP");
    let started = Instant::now();
    assert_eq!(
        where_ran(&mut on_w1).await.0,
        ErrorCode::Timeout as i32,
        "in flight to a frozen worker: TIMEOUT"
    );
    assert!(started.elapsed() >= Duration::from_millis(1400), "{:?}", started.elapsed());
    // The gateway's pings find it frozen: new sessions go to the other worker.
    wait_live(&gw, 1);
    let nodes = spread(&gw.addr, 12).await;
    assert_eq!(nodes.keys().collect::<Vec<_>>(), ["worker-2"], "{nodes:?}");

    w1.signal("CONT");
    wait_live(&gw, 2);
    let nodes = spread(&gw.addr, 30).await;
    assert!(nodes.contains_key("worker-1"), "it rejoins: {nodes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_the_wrong_secret_is_refused() {
    let dir = TempDir::new("secret");
    let w1 = worker(&dir, "worker-1", "127.0.0.1:0", ECHO, &[]);
    let intruder =
        worker(&dir, "worker-2", "127.0.0.1:0", ECHO, &[("MORTAR_CLUSTER__SECRET", "not-the-secret")]);
    let gw = gateway(&dir, "gateway-1", &static_registry(&[&w1, &intruder]), &[]);
    wait_live(&gw, 1);
    let nodes = spread(&gw.addr, 12).await;
    assert_eq!(nodes.keys().collect::<Vec<_>>(), ["worker-1"], "{nodes:?}");
    let (_, metrics) = intruder.admin_get("/metrics");
    assert!(metrics.contains("mortar_rpc_refused_total{reason=\"wrong cluster secret\"}"), "{metrics}");
    assert!(intruder.log().contains("peer refused"), "{}", intruder.log());
    assert!(gw.log().contains("refused this node: wrong cluster secret"), "{}", gw.log());

    // Something that is not a mortar node at all: refused after its first frame.
    use std::io::{Read as _, Write as _};
    let mut stranger = std::net::TcpStream::connect(&w1.addr).unwrap();
    stranger.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stranger.write_all(b"\x00\x00\x00\x05hello").unwrap();
    let mut rest = Vec::new();
    let _ = stranger.read_to_end(&mut rest);
    assert!(rest.is_empty(), "no answer but the close");
    assert!(w1.log().contains("the first frame is not a mortar handshake"), "{}", w1.log());
}

/// Strangers on the RPC port — connections that have not passed the handshake — can hold no
/// more than a small first frame each, a bounded number at once: a hundred of them announcing
/// 16 MiB frames and sending 4 MiB each leave the worker's memory where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_on_the_rpc_port_pin_no_memory() {
    use std::io::{Read as _, Write as _};
    let dir = TempDir::new("strangers");
    let w1 = worker(&dir, "worker-1", "127.0.0.1:0", ECHO, &[]);
    let gw = gateway(&dir, "gateway-1", &static_registry(&[&w1]), &[]);
    wait_live(&gw, 1);
    let baseline = w1.rss_kib();

    let addr = w1.addr.clone();
    let strangers: Vec<_> = (0..100)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut stranger = std::net::TcpStream::connect(&addr).unwrap();
                stranger.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
                // A length prefix of 16 MiB - 1, then 4 MiB of it.
                let mut sent = stranger.write_all(&[0x00, 0xff, 0xff, 0xff]).is_ok();
                let chunk = vec![0u8; 64 << 10];
                for _ in 0..64 {
                    sent = sent && stranger.write_all(&chunk).is_ok();
                }
                stranger
            })
        })
        .collect();
    let strangers: Vec<_> = strangers.into_iter().map(|thread| thread.join().unwrap()).collect();
    // Within the handshake timeout (1 s): what the worker read of them, it holds now.
    std::thread::sleep(Duration::from_millis(300));
    let held = w1.rss_kib();
    drop(strangers);
    std::thread::sleep(Duration::from_millis(500));
    let after = w1.rss_kib();
    assert!(held < baseline + (32 << 10), "strangers pinned {} KiB", held.saturating_sub(baseline));
    assert!(after < baseline + (32 << 10), "{} KiB stayed", after.saturating_sub(baseline));
    let (_, metrics) = w1.admin_get("/metrics");
    assert!(metrics.contains("mortar_rpc_refused_total{reason=\"not a handshake\"}"), "{metrics}");

    // Silent strangers: past rpc.max_handshakes (64) in their handshake at once, closed at once.
    let silent: Vec<_> = (0..64).map(|_| std::net::TcpStream::connect(&addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut one_more = std::net::TcpStream::connect(&addr).unwrap();
    one_more.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut buf = [0u8; 1];
    assert!(matches!(one_more.read(&mut buf), Ok(0)), "closed without waiting for the handshake timeout");
    let (_, metrics) = w1.admin_get("/metrics");
    assert!(metrics.contains("mortar_rpc_refused_total{reason=\"too many handshakes\"}"), "{metrics}");
    drop(silent);
    // The cluster's own connections are unharmed.
    assert_eq!(where_ran(&mut Client::connect(&gw.addr).await.unwrap()).await.0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_answers_every_request() {
    let dir = TempDir::new("rolling");
    let mut w1 = worker(&dir, "worker-1", "127.0.0.1:0", ECHO, &[]);
    let mut w2 = worker(&dir, "worker-2", "127.0.0.1:0", ECHO, &[]);
    let gw = gateway(&dir, "gateway-1", &static_registry(&[&w1, &w2]), &[]);
    wait_live(&gw, 2);
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(&gw.addr, 20, stop.clone());
    for old in [&mut w1, &mut w2] {
        tokio::time::sleep(Duration::from_millis(500)).await;
        old.signal("TERM");
        assert_eq!(old.wait_exit(Duration::from_secs(15)), Some(0), "a worker stops cleanly on SIGTERM");
        let addr = old.addr.clone();
        *old = worker(&dir, &old.name.clone(), &addr, ECHO, &[]);
        wait_live(&gw, 2);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let results = collect(tasks).await;
    let failed: Vec<_> = results.iter().filter(|(_, code, _)| *code != 0).collect();
    assert!(failed.is_empty(), "{} of {} requests failed: {failed:?}", failed.len(), results.len());
    let nodes: BTreeSet<_> = results.iter().map(|(_, _, node)| node.as_str()).collect();
    assert_eq!(nodes.into_iter().collect::<Vec<_>>(), ["worker-1", "worker-2"]);
    // Requests that reached a draining worker were handed back and ran elsewhere.
    assert!(gw.log().contains("reason=\"draining\""), "{}", gw.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_is_ready_only_with_a_worker_and_kicks_its_clients_on_sigterm() {
    let dir = TempDir::new("lifecycle");
    let port = support::free_port();
    let registry = format!("[registry]\nnodes = [{{ id = \"worker-1\", addr = \"127.0.0.1:{port}\" }}]\n");
    let mut gw = gateway(&dir, "gateway-1", &registry, &[]);
    assert_eq!(gw.admin_get("/readyz").0, 503, "no worker yet");
    let mut client = Client::connect(&gw.addr).await.unwrap();
    assert_eq!(where_ran(&mut client).await.0, ErrorCode::Unavailable as i32, "no live worker serves echo");

    let mut w1 = worker(&dir, "worker-1", &format!("127.0.0.1:{port}"), ECHO, &[]);
    wait_live(&gw, 1);
    assert_eq!(gw.admin_get("/readyz").0, 200);
    assert_eq!(where_ran(&mut client).await, (0, "worker-1".to_owned()));
    // The only worker is live and does not serve `ecoh`: the gateway says so, and what was meant.
    let reply = client.request("ecoh", "node", Default::default(), |_| {}).await.unwrap();
    assert_eq!(
        (reply.code, reply.reason.as_str()),
        (ErrorCode::NoRoute as i32, r#"no worker serves module "ecoh" (did you mean "echo"?)"#)
    );

    gw.signal("TERM");
    let kick = tokio::time::timeout(Duration::from_secs(10), client.next()).await.unwrap().unwrap();
    assert_eq!((kick.main_type.as_str(), kick.sub_type.as_str()), ("sys", "kick"));
    assert_eq!(Kick::decode(kick.data).unwrap().reason, ErrorCode::ServerShutdown as i32);
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0));
    w1.signal("TERM");
    assert_eq!(w1.wait_exit(Duration::from_secs(10)), Some(0));
}

/// The connections between workers' RPC ports: (worker, the worker it dialled).
fn worker_links(workers: &[&support::Node]) -> Vec<(String, String)> {
    let port = |node: &support::Node| node.addr.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let mut links = Vec::new();
    for from in workers {
        for remote in support::established_remote_ports(from.child.id()) {
            if let Some(to) = workers.iter().find(|to| to.name != from.name && port(to) == remote) {
                links.push((from.name.clone(), to.name.clone()));
            }
        }
    }
    links.sort();
    links.dedup();
    links
}

/// Workers dial each other only for calls: four workers that call nothing hold no connection
/// between them; `user.register` on the user module's worker grants the starter items through
/// `pack.add_items` on the pack module's, which opens that one connection; it closes after
/// `rpc.peer_idle_ms` without a call and opens again for the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_dial_each_other_only_for_calls_and_close_idle_connections() {
    use mortar_pack::pack::{QueryReq, QueryResp};
    use mortar_user::user::{LoginReq, LoginResp, RegisterReq, RegisterResp};
    let dir = TempDir::new("on-demand");
    let env = [("MORTAR_RPC__PEER_IDLE_MS", "1000"), ("MORTAR_MODULES__USER__ARGON2_MEMORY_KIB", "1024")];
    let module = |names: &str| format!("[worker]\nmodules = [{names}]\n");
    let w1 = worker(&dir, "worker-1", "127.0.0.1:0", &module(r#""user""#), &env);
    let w2 = worker(&dir, "worker-2", "127.0.0.1:0", &module(r#""pack""#), &env);
    let w3 = worker(&dir, "worker-3", "127.0.0.1:0", &module(r#""mail", "friend""#), &env);
    let w4 = worker(&dir, "worker-4", "127.0.0.1:0", &module(r#""group", "echo""#), &env);
    let gw = gateway(&dir, "gateway-1", &static_registry(&[&w1, &w2, &w3, &w4]), &[]);
    wait_live(&gw, 4);
    let workers = [&w1, &w2, &w3, &w4];
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(worker_links(&workers), [] as [(String, String); 0], "no call, no connection");

    let mut client = Client::connect(&gw.addr).await.unwrap();
    for round in 0..2 {
        let account = format!("caller_{round}");
        let (account, password) = (account.clone(), format!("{account}-password"));
        let req = RegisterReq { account: account.clone(), password: password.clone() };
        support::call::<_, RegisterResp>(&mut client, "user.register", req).await.unwrap();
        support::call::<_, LoginResp>(&mut client, "user.login", LoginReq { account, password })
            .await
            .unwrap();
        let pack: QueryResp = support::call(&mut client, "pack.query", QueryReq {}).await.unwrap();
        assert!(!pack.items.is_empty(), "round {round}: the starter items came through worker-2");
        let links = worker_links(&workers);
        assert!(links.contains(&("worker-1".into(), "worker-2".into())), "round {round}: {links:?}");
        // No call for peer_idle_ms: every connection between workers closes.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !worker_links(&workers).is_empty() {
            assert!(Instant::now() < deadline, "still linked: {:?}", worker_links(&workers));
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
