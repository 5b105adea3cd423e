//! The session store's conformance suite against a real Redis server started by the test (the
//! memory backend runs the same suite in the host's unit tests), and players across two gateways
//! and two worker processes: with a Redis session store, and with the gateways as the session
//! directory (no session store, the static registry).
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod support;

use mortar_backends::session::{Location, SessionStore as _, conformance, redis::RedisSessions};
use mortar_cli::client::{Client, ClientError};
use mortar_pb::{ErrorCode, Kick, UserMessage};
use prost::Message as _;
use std::{sync::Arc, time::Duration};
use support::{Node, Redis, TempDir, library};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sessions_conform() {
    let redis = Redis::start();
    let store = RedisSessions::connect(&redis.url(), "conformance", Duration::from_secs(1)).await.unwrap();
    conformance::run(Arc::new(store.clone())).await;
    // The keys live where the module docs say, under the cluster's name.
    let at = Location { gateway: "gw-1".into(), session: u64::MAX, login_at_ms: 1 };
    store.bind(5, at.clone()).await.unwrap();
    assert_eq!(redis.command("EXISTS mortar:conformance:session:user:5").as_deref(), Some(":1"));
    assert_eq!(redis.command("SISMEMBER mortar:conformance:session:gateway:gw-1 5").as_deref(), Some(":1"));
    assert_eq!(store.locate(vec![5]).await.unwrap(), [Some(at)], "u64 session ids survive Lua");
}

#[tokio::test]
async fn an_unreachable_redis_session_store_is_a_clear_error_at_start() {
    let port = support::free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let error = RedisSessions::connect(&url, "x", Duration::from_millis(300))
        .await
        .err()
        .expect("nothing listens there");
    assert!(error.to_string().contains(&port.to_string()), "{error}");
}

/// `dyntest.Text` and the echo messages encode alike: field 1, a string.
fn text(text: &str) -> bytes::Bytes {
    mortar_echo::echo::EchoReq { text: text.into() }.encode_to_vec().into()
}

fn text_of(msg: &UserMessage) -> String {
    mortar_echo::echo::EchoResp::decode(msg.data.clone()).unwrap().text
}

async fn login(url: &str, user: u64) -> Client {
    let mut client = Client::connect(url).await.unwrap();
    let reply = client.request("dyntest", "login", text(&user.to_string()), |_| {}).await.unwrap();
    assert_eq!((reply.code, text_of(&reply)), (0, format!("logged in as {user}")));
    client
}

/// Logs in as `user`, trying again for 10 s while the cluster answers `UNAVAILABLE` (its Redis
/// just restarted).
async fn login_soon(url: &str, user: u64) -> Client {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut client = Client::connect(url).await.unwrap();
        let reply = client.request("dyntest", "login", text(&user.to_string()), |_| {}).await.unwrap();
        if reply.code == 0 {
            return client;
        }
        assert_eq!(reply.code, ErrorCode::Unavailable as i32);
        assert!(std::time::Instant::now() < deadline, "no login within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The next push `client` receives within 5 s.
async fn next_push(client: &mut Client) -> UserMessage {
    tokio::time::timeout(Duration::from_secs(5), client.next()).await.expect("a push in time").unwrap()
}

/// Sends `text` to `dyntest.SUB`; the reply's code and text.
async fn ask(client: &mut Client, sub: &str, text: &str) -> (i32, String) {
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        client.request("dyntest", sub, self::text(text), |_| {}),
    )
    .await
    .expect("a reply in time")
    .unwrap();
    let text = if reply.code == 0 { text_of(&reply) } else { String::new() };
    (reply.code, text)
}

/// The `key=value` pairs of a text.
fn pairs(text: &str) -> std::collections::HashMap<&str, &str> {
    text.split(' ').filter_map(|pair| pair.split_once('=')).collect()
}

/// `GET /v1/online/USER` on `worker`'s admin API: the gateway the user is logged in on, if
/// online. Asks again (for 5 s) while the worker's Redis connection is coming back (503).
fn online(worker: &Node, user: u64) -> Option<String> {
    let admin = worker.admin.expect("the worker's admin address");
    let path = format!("/v1/online/{user}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let (status, body) = loop {
        let (status, body) = support::http_request(admin, "GET", &path, Some(ADMIN_TOKEN), "");
        if status != 503 || std::time::Instant::now() > deadline {
            break (status, body);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    match status {
        200 => {
            let found: serde_json::Value = serde_json::from_str(&body).unwrap();
            Some(found["gateway"].as_str().unwrap().to_owned())
        }
        404 => None,
        _ => panic!("/v1/online/{user}: {status} {body}"),
    }
}

/// Two gateways and two workers as processes, sharing a Redis for the registry, the session
/// store and the cache. Both workers serve `dyntest` (loaded from the test library); only
/// worker-2 serves `echo`.
struct Cluster {
    // Dropped in this order: the nodes (which print their logs when a test failed), then the
    // directory holding those logs, then Redis.
    gateways: [Node; 2],
    workers: [Node; 2],
    _dir: TempDir,
    redis: Redis,
}

/// The workers' admin API token.
const ADMIN_TOKEN: &str = "sessions-admin-token";

/// Where the cluster keeps its players' sessions.
#[derive(Clone, Copy, Debug)]
enum Sessions {
    /// A Redis session store, and the Redis registry.
    Redis,
    /// The gateways themselves (`session.url = "memory"`), and the static registry: the gateways
    /// list the workers, the workers list nothing.
    Gateways,
}

impl Cluster {
    fn start(sessions: Sessions) -> Self {
        let redis = Redis::start();
        let dir = TempDir::new("sessions");
        let url = redis.url();
        let library = format!("[{:?}]", library().to_str().unwrap());
        let mut env = vec![
            ("MORTAR_CACHE__URL", url.as_str()),
            ("MORTAR_GATEWAY__REQUEST_TIMEOUT_MS", "3000"),
            ("MORTAR_WORKER__DYNAMIC_MODULES", library.as_str()),
        ];
        if let Sessions::Redis = sessions {
            env.extend([
                ("MORTAR_REGISTRY__URL", url.as_str()),
                ("MORTAR_SESSION__URL", url.as_str()),
                ("MORTAR_REGISTRY__TTL_MS", "1000"),
                ("MORTAR_REGISTRY__HEARTBEAT_MS", "200"),
            ]);
        }
        let mut worker_env = env.clone();
        worker_env.push(("MORTAR_ADMIN__TOKEN", ADMIN_TOKEN));
        let w1 = support::worker(
            &dir,
            "worker-1",
            "127.0.0.1:0",
            "[worker]\nmodules = [\"dyntest\"]\n",
            &worker_env,
        );
        let w2 =
            support::worker(&dir, "worker-2", "127.0.0.1:0", "[worker]\nmodules = [\"echo\"]\n", &worker_env);
        let listed = match sessions {
            Sessions::Redis => String::new(),
            Sessions::Gateways => support::static_registry(&[&w1, &w2]),
        };
        let gw1 = support::gateway(&dir, "gateway-1", &listed, &env);
        let gw2 = support::gateway(&dir, "gateway-2", &listed, &env);
        for gateway in [&gw1, &gw2] {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !gateway.admin_get("/metrics").1.contains("mortar_gateway_workers_live 2\n") {
                assert!(std::time::Instant::now() < deadline, "{} never had both workers", gateway.name);
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Self { gateways: [gw1, gw2], workers: [w1, w2], _dir: dir, redis }
    }

    /// `GET /v1/online/USER` on worker-1's admin API (see [`online`]).
    fn online(&self, user: u64) -> Option<String> {
        online(&self.workers[0], user)
    }

    /// Waits (at most 10 s) until `/v1/online/USER` says `gateway`.
    fn wait_online(&self, user: u64, gateway: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let found = self.online(user);
            if found.as_deref() == Some(gateway) {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "user {user} is {found:?}, not on {gateway}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn url(&self, gateway: usize) -> String {
        self.gateways[gateway].addr.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_on_two_gateways_push_to_each_other_and_a_second_login_kicks_the_first() {
    pushes_logins_and_a_dead_gateway(Sessions::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_session_store_the_gateways_are_the_directory() {
    pushes_logins_and_a_dead_gateway(Sessions::Gateways).await;
}

/// Players on two gateways push to each other (one push batch per gateway, offline players
/// reported), a second login kicks the first, and the players of a gateway that dies are offline
/// at once and log in again elsewhere.
async fn pushes_logins_and_a_dead_gateway(sessions: Sessions) {
    let mut cluster = Cluster::start(sessions);
    let (url1, url2) = (cluster.url(0), cluster.url(1));
    let mut alice = login(&url1, 1).await;
    let mut bob = login(&url2, 2).await;
    let mut carol = login(&url1, 3).await;
    let reply = alice.request("dyntest", "push", text("2,3,9"), |_| {}).await.unwrap();
    assert_eq!((reply.code, text_of(&reply)), (0, "delivered=2 offline=[9]".to_owned()));
    for client in [&mut bob, &mut carol] {
        let push = next_push(client).await;
        assert_eq!((push.main_type.as_str(), push.sub_type.as_str(), push.seq), ("dyntest", "note", 0));
        assert_eq!(text_of(&push), "from 1");
    }
    // One push batch per gateway: each received exactly one.
    for gateway in &cluster.gateways {
        let (_, metrics) = gateway.admin_get("/metrics");
        assert!(
            metrics.contains("mortar_gateway_pushes_total{route=\"dyntest.note\"} 1"),
            "{}: {metrics}",
            gateway.name
        );
    }

    // Alice logs in again through the other gateway: her first session is kicked.
    let _alice_again = login(&url2, 1).await;
    let kick = next_push(&mut alice).await;
    assert_eq!((kick.main_type.as_str(), kick.sub_type.as_str()), ("sys", "kick"));
    assert_eq!(Kick::decode(kick.data).unwrap().reason, ErrorCode::LoggedInElsewhere as i32);
    match tokio::time::timeout(Duration::from_secs(5), alice.next()).await.unwrap() {
        Err(ClientError::Closed(Some(close))) => assert!(close.starts_with("1008"), "{close}"),
        other => panic!("expected the close, got {other:?}"),
    }

    // Gateway 2 dies: once its registry entry expires (with the gateways as the directory: at
    // once) its players' logins are gone, and they log in again through gateway 1 at once.
    let gw2 = &mut cluster.gateways[1];
    gw2.signal("KILL");
    let _ = gw2.wait_exit(Duration::from_secs(5));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reply = carol.request("dyntest", "push", text("2"), |_| {}).await.unwrap();
        if text_of(&reply) == "delivered=0 offline=[2]" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gateway-2's players stayed logged in: {}",
            text_of(&reply)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut bob_again = login(&url1, 2).await;
    let reply = carol.request("dyntest", "push", text("2"), |_| {}).await.unwrap();
    assert_eq!(text_of(&reply), "delivered=1 offline=[]");
    assert_eq!(text_of(&next_push(&mut bob_again).await), "from 3");
}

/// Redis restarted without its data forgets who is online; the gateways put their players'
/// logins back within seconds, and a login made meanwhile is never overwritten: the older session
/// is kicked instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restarted_empty_gets_the_gateways_logins_back() {
    let mut cluster = Cluster::start(Sessions::Redis);
    let (url1, url2) = (cluster.url(0), cluster.url(1));
    let mut alice = login(&url1, 1).await;
    let mut bob = login(&url2, 2).await;
    let mut carol = login(&url1, 3).await;
    cluster.wait_online(1, "gateway-1");
    cluster.wait_online(2, "gateway-2");
    // Each gateway has read the store's generation once (through a worker, once one is live).
    for gateway in &cluster.gateways {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !gateway.admin_get("/metrics").1.contains("mortar_gateway_sessions_restored_total") {
            assert!(std::time::Instant::now() < deadline, "{} never read the generation", gateway.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // Redis restarts empty while gateway-1 is frozen; carol logs in again through gateway-2
    // meanwhile: the store had no login of hers, so her first session is not kicked at login.
    cluster.gateways[0].signal("STOP");
    cluster.redis.restart();
    assert_eq!(cluster.online(3), None, "the restarted Redis knows no one");
    let mut carol_again = login_soon(&url2, 3).await;
    cluster.gateways[0].signal("CONT");

    // Within seconds every player still connected is online again, where they are.
    cluster.wait_online(1, "gateway-1");
    cluster.wait_online(2, "gateway-2");
    // Gateway-1 found carol's newer login in place: it kept it and kicked her older session.
    let kick = next_push(&mut carol).await;
    assert_eq!((kick.main_type.as_str(), kick.sub_type.as_str()), ("sys", "kick"));
    assert_eq!(Kick::decode(kick.data).unwrap().reason, ErrorCode::LoggedInElsewhere as i32);
    assert_eq!(cluster.online(3).as_deref(), Some("gateway-2"), "the newer login was not overwritten");

    // Pushes reach them again.
    let reply = alice.request("dyntest", "push", text("2,3"), |_| {}).await.unwrap();
    assert_eq!((reply.code, text_of(&reply)), (0, "delivered=2 offline=[]".to_owned()));
    assert_eq!(text_of(&next_push(&mut bob).await), "from 1");
    assert_eq!(text_of(&next_push(&mut carol_again).await), "from 1");

    // And a second login kicks the first again.
    let _alice_again = login(&url2, 1).await;
    let kick = next_push(&mut alice).await;
    assert_eq!((kick.main_type.as_str(), kick.sub_type.as_str()), ("sys", "kick"));
    cluster.wait_online(1, "gateway-2");
    let (_, metrics) = cluster.gateways[0].admin_get("/metrics");
    assert!(metrics.contains("mortar_gateway_sessions_restored_total"), "{metrics}");
    assert!(
        cluster.gateways[0].log().contains("session store lost its logins"),
        "{}",
        cluster.gateways[0].log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_hooks_and_logins_work_across_workers_and_gateways() {
    calls_hooks_and_racing_logins(Sessions::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_gateways_as_the_directory_calls_hooks_and_racing_logins_work() {
    calls_hooks_and_racing_logins(Sessions::Gateways).await;
}

/// Calls between workers carry the caller's context, `on_offline` runs once per departure, and
/// 50 logins of one user racing over two gateways leave exactly one bound session.
async fn calls_hooks_and_racing_logins(sessions: Sessions) {
    let cluster = Cluster::start(sessions);
    let (url1, url2) = (cluster.url(0), cluster.url(1));

    // A guest is refused a route that needs a login, and reaches no internal route.
    let mut guest = Client::connect(&url1).await.unwrap();
    assert_eq!(ask(&mut guest, "push", "1").await.0, ErrorCode::NotLoggedIn as i32);
    for sub in ["upper", "context"] {
        let reply = guest.request("echo", sub, text("x"), |_| {}).await.unwrap();
        assert_eq!(reply.code, ErrorCode::NoRoute as i32, "echo.{sub} is internal");
    }

    // A player whose requests land on worker-1, which does not serve echo: its calls to echo's
    // internal routes run on worker-2 with the caller's session, trace and deadline.
    let (mut player, user) = 'found: {
        for user in 100..200u64 {
            let mut client = login(&url1, user).await;
            if ask(&mut client, "whoami", "").await.1 == format!("user={user} node=worker-1") {
                break 'found (client, user);
            }
        }
        panic!("no user of 100 lands on worker-1");
    };
    assert_eq!(ask(&mut player, "shout", "hi").await, (0, "HI!".into()));
    let (code, seen) = ask(&mut player, "context", "").await;
    assert_eq!(code, 0, "{seen}");
    let seen = pairs(&seen);
    assert_eq!((seen["node"], seen["caller_node"], seen["gateway"]), ("worker-2", "worker-1", "gateway-1"));
    assert_eq!(seen["user"], user.to_string());
    assert_eq!(seen["trace"], seen["caller_trace"]);
    let remaining: u64 = seen["remaining_ms"].parse().unwrap();
    assert!(remaining > 0 && remaining <= 3000, "the caller's deadline travels: {remaining} ms left");

    // on_offline runs once per departure, on one of the two workers serving dyntest, and not for
    // a session that a newer login replaced.
    let mut observer = Client::connect(&url2).await.unwrap();
    player.close().await.unwrap();
    offline_count_settles(&mut observer, user, 1).await;
    let mut first = login(&url1, user).await;
    let second = login(&url2, user).await;
    assert_eq!(next_push(&mut first).await.sub_type, "kick");
    offline_count_settles(&mut observer, user, 1).await;
    second.close().await.unwrap();
    offline_count_settles(&mut observer, user, 2).await;

    // 50 logins of one user racing over both gateways leave exactly one bound session.
    let mut logins = tokio::task::JoinSet::new();
    for n in 0..50 {
        let url = if n % 2 == 0 { url1.clone() } else { url2.clone() };
        logins.spawn(async move {
            let mut client = Client::connect(&url).await.unwrap();
            let code = ask(&mut client, "login", "77").await.0;
            (client, code)
        });
    }
    let mut bound = 0;
    let mut kicked_or_refused = 0;
    let mut clients = Vec::new();
    while let Some(joined) = logins.join_next().await {
        clients.push(joined.unwrap());
    }
    // Every session either got OK and was kicked later, or is the one left bound.
    for (client, code) in &mut clients {
        if *code != 0 {
            kicked_or_refused += 1;
            continue;
        }
        let me = tokio::time::timeout(
            Duration::from_millis(1000),
            client.request("dyntest", "whoami", text(""), |_| {}),
        )
        .await;
        match me {
            Ok(Ok(reply)) if reply.code == 0 && text_of(&reply).starts_with("user=77 ") => bound += 1,
            _ => kicked_or_refused += 1,
        }
    }
    assert_eq!((bound, kicked_or_refused), (1, 49));
    let reply = observer.request("dyntest", "offline_count", text("77"), |_| {}).await.unwrap();
    assert_eq!(text_of(&reply), "0", "no racing session counted as the player going offline");
}

/// Waits until the `on_offline` hook has run `count` times for `user`, then checks it runs no
/// more for a while.
async fn offline_count_settles(client: &mut Client, user: u64, count: u32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, seen) = ask(client, "offline_count", &user.to_string()).await;
        if seen == count.to_string() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "on_offline ran {seen} times for {user}, not {count}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ask(client, "offline_count", &user.to_string()).await.1, count.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_restarted_on_another_port_is_learnt_again_by_the_worker() {
    let dir = TempDir::new("moved");
    let library = format!("[{:?}]", library().to_str().unwrap());
    let env = [("MORTAR_WORKER__DYNAMIC_MODULES", library.as_str())];
    // The worker lists nothing: it learns the gateway from the gateway's handshake.
    let worker =
        support::worker(&dir, "worker-1", "127.0.0.1:0", "[worker]\nmodules = [\"dyntest\"]\n", &env);
    let listed = support::static_registry(&[&worker]);
    for run in 0..2 {
        // Each run binds its RPC service on another free port (the test env binds port 0).
        let gateway = support::gateway(&dir, "gateway-1", &listed, &[]);
        support::wait_live(&gateway, 1);
        let url = gateway.addr.clone();
        let mut alice = login(&url, 1).await;
        let mut bob = login(&url, 2).await;
        let reply = alice.request("dyntest", "push", text("2,3"), |_| {}).await.unwrap();
        assert_eq!((reply.code, text_of(&reply)), (0, "delivered=1 offline=[3]".to_owned()), "run {run}");
        assert_eq!(text_of(&next_push(&mut bob).await), "from 1");
        gateway.signal("TERM");
    }
    assert!(worker.log().contains("gateway moved: dialling its new address"), "{}", worker.log());
}

/// A gateway killed with `kill -9` and started again at once (its registry entry never expires,
/// so no worker takes it for gone) leaves logins of its previous run in the session store: the
/// new run has the workers, the store's one writer, purge them, and keeps its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_and_started_again_has_its_previous_runs_logins_purged() {
    let redis = Redis::start();
    let dir = TempDir::new("rerun");
    let (url, library) = (redis.url(), format!("[{:?}]", library().to_str().unwrap()));
    let env = [
        ("MORTAR_REGISTRY__URL", url.as_str()),
        ("MORTAR_REGISTRY__TTL_MS", "60000"),
        ("MORTAR_SESSION__URL", url.as_str()),
        ("MORTAR_WORKER__DYNAMIC_MODULES", library.as_str()),
        ("MORTAR_ADMIN__TOKEN", ADMIN_TOKEN),
    ];
    let worker =
        support::worker(&dir, "worker-1", "127.0.0.1:0", "[worker]\nmodules = [\"dyntest\"]\n", &env);
    let gateway = support::gateway(&dir, "gateway-1", "", &env);
    support::wait_live(&gateway, 1);
    let alice = login(&gateway.addr, 5).await;
    assert_eq!(online(&worker, 5).as_deref(), Some("gateway-1"));
    gateway.signal("KILL");
    drop((alice, gateway));

    let gateway = support::gateway(&dir, "gateway-1", "", &env);
    support::wait_live(&gateway, 1);
    let bob = login(&gateway.addr, 6).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while online(&worker, 5).is_some() {
        assert!(std::time::Instant::now() < deadline, "the previous run's login stays: {}", gateway.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(online(&worker, 6).as_deref(), Some("gateway-1"), "the new run's login is kept");
    let _alice = login(&gateway.addr, 5).await;
    assert_eq!(online(&worker, 5).as_deref(), Some("gateway-1"));
    drop(bob);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_whose_session_url_differs_refuse_each_other() {
    let (redis, dir) = (Redis::start(), TempDir::new("mixed"));
    let url = redis.url();
    // The worker keeps sessions in Redis; the gateway, as the README's recipe once left it, keeps
    // its own: a push between them would be lost, so they never connect.
    let worker =
        support::worker(&dir, "worker-1", "127.0.0.1:0", "", &[("MORTAR_SESSION__URL", url.as_str())]);
    let gateway = support::gateway(&dir, "gateway-1", &support::static_registry(&[&worker]), &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !worker.log().contains("session.url differs") || !gateway.log().contains("session.url differs") {
        assert!(std::time::Instant::now() < deadline, "{}\n{}", worker.log(), gateway.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(worker.log().contains(" ERROR "), "refused at ERROR: {}", worker.log());
    assert_eq!(gateway.admin_get("/readyz").0, 503, "no worker it may use");
    let mut client = Client::connect(&gateway.addr).await.unwrap();
    let reply = client.request("echo", "say", text("hi"), |_| {}).await.unwrap();
    assert_eq!(reply.code, ErrorCode::Unavailable as i32);

    // With the Redis registry the newcomer sees the others' entries: it refuses to start.
    let registry = [("MORTAR_REGISTRY__URL", url.as_str()), ("MORTAR_SESSION__URL", url.as_str())];
    let _worker = support::worker(&dir, "worker-2", "127.0.0.1:0", "", &registry);
    let conf = support::node_conf(&dir, "gateway-2", "");
    let args = ["gateway", "--conf", conf.to_str().unwrap()];
    let env = [
        ("MORTAR_REGISTRY__URL", url.as_str()),
        ("MORTAR_GATEWAY__LISTEN", "127.0.0.1:0"),
        ("MORTAR_GATEWAY__RPC_LISTEN", "127.0.0.1:0"),
        ("MORTAR_ADMIN__LISTEN", "127.0.0.1:0"),
    ];
    let refused =
        Node::try_start("gateway-2", &dir, &args, &env).err().expect("the gateway refuses to start");
    assert!(refused.contains("exit Some(1)") && refused.contains("session.url differs"), "{refused}");
}
