//! A gateway's worker pool following a registry: a worker that registers is dialled over real
//! TCP and served to requests; one that deregisters is dropped at once, and the gateway is not
//! ready without workers.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use mortar_cluster::registry::{NodeEntry, NodeKind, Registry as _, memory::MemoryRegistry};
use mortar_cluster::rpc::workers::{Dialing, WorkerPool};
use mortar_cluster::rpc::{AgentMessage, handshake::Identity};
use mortar_echo::echo::EchoResp;
use mortar_node::NodeConfig;
use mortar_node::admin::Health;
use mortar_node::config::RpcConfig;
use mortar_node::worker::WorkerListeners;
use mortar_pb::ErrorCode;
use mortar_tests::echo_body;
use prost::Message as _;
use std::{sync::Arc, time::Duration};
use tokio::net::TcpListener;

const SECRET: &str = "worker-pool-test";

fn entry(id: &str, kind: NodeKind, addr: String) -> NodeEntry {
    NodeEntry {
        sessions: mortar_backends::session::identity(&Default::default()),
        ..NodeEntry::new(id, kind, addr)
    }
}

/// Gateway-1 of this cluster, whose pools the tests start.
fn gateway_identity() -> Arc<Identity> {
    let entry = entry("gateway-1", NodeKind::Gateway, "127.0.0.1:1".into());
    Arc::new(Identity { cluster: "mortar".into(), secret: SECRET.into(), entry })
}

/// `testkit.whoami` (the testkit module is linked into the tests; it answers the session id).
fn whoami(session: u64) -> AgentMessage {
    AgentMessage {
        main: "testkit".into(),
        sub: "whoami".into(),
        seq: 1,
        data: echo_body(""),
        session,
        user: None,
        client_ip: std::net::Ipv4Addr::LOCALHOST.into(),
        gateway: "gateway-1".into(),
        trace_id: 1,
    }
}

/// A real worker node `id` of this cluster on 127.0.0.1 (with the testkit module): its RPC
/// address, the sender that stops it, and its task.
async fn start_worker(
    id: &str,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), mortar_node::NodeError>>,
    mortar_tests::TempDir,
) {
    let store = mortar_tests::TempDir::new("store");
    let mut config = NodeConfig::default();
    config.node.id = id.into();
    config.cluster.secret = SECRET.into();
    config.admin.enabled = false;
    config.storage.path = store.0.clone();
    let rpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = rpc.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker =
        tokio::spawn(mortar_node::worker::run(config, WorkerListeners { rpc, admin: None }, || {}, async {
            let _ = stopped.await;
        }));
    (addr, stop, worker, store)
}

async fn until(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_follows_the_registry() {
    mortar_telemetry::metrics::install();
    let (addr, stop, worker, _store) = start_worker("worker-1").await;

    let registry = Arc::new(MemoryRegistry::default());
    let health = Health::default();
    health.set_ready(true);
    let me = gateway_identity();
    let pool = WorkerPool::start(
        me,
        RpcConfig::default(),
        registry.clone(),
        Some(Box::new({
            let health = health.clone();
            move |live| health.set_peers_ok(live > 0)
        })),
        Dialing::Always,
    );
    assert!(!health.is_ready(), "no worker yet");
    let timeout = Duration::from_secs(5);
    let reply = pool.relay(&whoami(1), timeout).await;
    assert_eq!(
        (reply.code, reply.reason.as_str()),
        (ErrorCode::Unavailable as i32, "no worker is up; retry later")
    );

    registry.register(&entry("worker-1", NodeKind::Worker, addr)).await.unwrap();
    until("the registered worker is live", || pool.live_count() == 1).await;
    assert!(health.is_ready());
    let reply = pool.relay(&whoami(2), timeout).await;
    assert_eq!((reply.code, EchoResp::decode(reply.data).unwrap().text.as_str()), (0, "2"));
    assert_eq!(reply.reason, "");
    // Every registered worker is known and none serves the module: NO_ROUTE, with a suggestion
    // when the name is close to a module one serves.
    let typo = AgentMessage { main: "testkti".into(), ..whoami(4) };
    let reply = pool.relay(&typo, timeout).await;
    assert_eq!(
        (reply.code, reply.reason.as_str()),
        (ErrorCode::NoRoute as i32, r#"no worker serves module "testkti" (did you mean "testkit"?)"#)
    );
    let unknown = AgentMessage { main: "nothing".into(), ..whoami(4) };
    let reply = pool.relay(&unknown, timeout).await;
    assert_eq!(
        (reply.code, reply.reason.as_str()),
        (ErrorCode::NoRoute as i32, r#"no worker serves module "nothing""#)
    );
    // The worker answers for its own routes.
    let reply = pool.relay(&AgentMessage { sub: "whoamI".into(), ..whoami(5) }, timeout).await;
    assert_eq!(
        (reply.code, reply.reason.as_str()),
        (ErrorCode::NoRoute as i32, r#"module "testkit" has no route "whoamI" (did you mean "whoami"?)"#)
    );

    registry.deregister("worker-1").await.unwrap();
    until("the deregistered worker is dropped", || pool.live_count() == 0).await;
    assert!(!health.is_ready());
    assert_eq!(pool.relay(&whoami(3), timeout).await.code, ErrorCode::Unavailable as i32);

    pool.close();
    let _ = stop.send(());
    worker.await.unwrap().unwrap();
}

/// A worker whose connection dies under a session's queued requests: the request that met the
/// dead connection is `UNAVAILABLE`, and the next pick — right away, before any other task of
/// the gateway runs — goes to the other worker. (On one thread the pool's own tasks cannot run
/// in between: a pool that took the worker out only there kept choosing it.)
#[tokio::test(flavor = "current_thread")]
async fn a_dead_connection_leaves_the_choice_before_the_next_pick() {
    let (real, stop, worker, _store) = start_worker("worker-2").await;

    // worker-1 takes the handshake, serves testkit by its entry, and never answers a request.
    let fake = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake_addr = fake.local_addr().unwrap().to_string();
    let fake_entry = NodeEntry {
        modules: vec!["testkit".into()],
        ..entry("worker-1", NodeKind::Worker, fake_addr.clone())
    };
    let fake_me = Identity { cluster: "mortar".into(), secret: SECRET.into(), entry: fake_entry };
    let fake_connection = tokio::spawn(async move {
        let (stream, peer) = fake.accept().await.unwrap();
        let kinds = [NodeKind::Gateway];
        mortar_cluster::rpc::handshake::accept(stream, peer, &kinds, &fake_me, &RpcConfig::default())
            .await
            .unwrap()
            .1
    });

    let registry = Arc::new(MemoryRegistry::default());
    let me = gateway_identity();
    let pool = WorkerPool::start(me, RpcConfig::default(), registry.clone(), None, Dialing::Always);
    registry.register(&entry("worker-1", NodeKind::Worker, fake_addr)).await.unwrap();
    registry.register(&entry("worker-2", NodeKind::Worker, real)).await.unwrap();
    until("both workers are live", || pool.live_count() == 2).await;
    let connection = fake_connection.await.unwrap();

    // A session whose requests go to worker-1: they time out.
    let mut session = 0;
    for candidate in 1..100 {
        if pool.relay(&whoami(candidate), Duration::from_millis(200)).await.code == ErrorCode::Timeout as i32
        {
            session = candidate;
            break;
        }
    }
    assert_ne!(session, 0, "some session goes to worker-1");

    // worker-1's connection dies; the session's sixteen queued requests are relayed in turn.
    drop(connection);
    let mut codes = Vec::new();
    for _ in 0..16 {
        codes.push(pool.relay(&whoami(session), Duration::from_secs(5)).await.code);
    }
    let unavailable = codes.iter().filter(|&&code| code == ErrorCode::Unavailable as i32).count();
    assert_eq!(unavailable, 1, "one request met the dead connection, the rest moved: {codes:?}");
    assert!(codes.iter().skip(1).all(|&code| code == 0), "{codes:?}");

    pool.close();
    let _ = stop.send(());
    worker.await.unwrap().unwrap();
}

/// A worker whose connection closes by itself, again and again: each new connection stays in the
/// choice. (The close used to leave a stale "gone" word behind, which took the next connection
/// down the moment it was up, and the worker was out for a backoff.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_connection_is_not_taken_down_by_the_last_ones_end() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let worker_entry =
        NodeEntry { modules: vec!["testkit".into()], ..entry("worker-1", NodeKind::Worker, addr.clone()) };
    let worker_me =
        Arc::new(Identity { cluster: "mortar".into(), secret: SECRET.into(), entry: worker_entry });
    let (connections, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            let (kinds, me) = ([NodeKind::Gateway], worker_me.clone());
            let accepted =
                mortar_cluster::rpc::handshake::accept(stream, peer, &kinds, &me, &RpcConfig::default())
                    .await;
            if let Some((_, frames)) = accepted {
                let _ = connections.send(frames);
            }
        }
    });
    let registry = Arc::new(MemoryRegistry::default());
    let me = gateway_identity();
    let pool = WorkerPool::start(me, RpcConfig::default(), registry.clone(), None, Dialing::Always);
    registry.register(&entry("worker-1", NodeKind::Worker, addr)).await.unwrap();
    let mut connection = accepted.recv().await.unwrap();
    for round in 0..12 {
        until("the worker is live", || pool.live_count() == 1).await;
        drop(connection); // the worker closes it
        connection = tokio::time::timeout(Duration::from_secs(5), accepted.recv()).await.unwrap().unwrap();
        until("the worker is live again", || pool.live_count() == 1).await;
        // It stays: no stale word takes it out (the pool would dial again after its backoff).
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(pool.live_count(), 1, "round {round}");
        assert!(
            accepted.try_recv().is_err(),
            "round {round}: the new connection was taken down and dialled again"
        );
    }
    pool.close();
}
