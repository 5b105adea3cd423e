//! The gateway's own RPC service over real TCP: a worker (here, the test posing as one after a
//! real handshake) pushes to a session (a push over the frame limit fails alone) and kicks it. Gateway and worker run in this process with
//! the testkit module, on loopback sockets.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use mortar_cli::client::Client;
use mortar_cluster::registry::{NodeEntry, NodeKind};
use mortar_cluster::rpc::{
    GatewayRpcClient, PushBatch, codec,
    handshake::{self, DialError, Identity},
};
use mortar_echo::echo::EchoResp;
use mortar_node::NodeConfig;
use mortar_node::config::StaticNode;
use mortar_node::{gateway::GatewayListeners, worker::WorkerListeners};
use mortar_pb::{ErrorCode, Kick};
use mortar_tests::echo_body;
use prost::Message as _;
use std::time::Duration;
use tokio::net::TcpListener;

const SECRET: &str = "gateway-rpc-test";

fn config(id: &str) -> NodeConfig {
    let mut config = NodeConfig::default();
    config.node.id = id.into();
    config.cluster.secret = SECRET.into();
    config.admin.enabled = false;
    config
}

async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// A worker posing node, as the test introduces itself to the gateway.
fn worker_identity(secret: &str) -> Identity {
    let entry = NodeEntry {
        sessions: mortar_backends::session::identity(&Default::default()),
        ..NodeEntry::new("test-worker", NodeKind::Worker, "127.0.0.1:1")
    };
    Identity { cluster: "mortar".into(), secret: secret.into(), entry }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_push_to_and_kick_a_gateways_sessions() {
    mortar_telemetry::metrics::install();
    let worker_rpc = bind().await;
    let worker_addr = worker_rpc.local_addr().unwrap();
    let (stop_worker, worker_stopped) = tokio::sync::oneshot::channel::<()>();
    let store = mortar_tests::TempDir::new("store");
    let mut worker_config = config("worker-1");
    worker_config.storage.path = store.0.clone();
    let worker = tokio::spawn(mortar_node::worker::run(
        worker_config,
        WorkerListeners { rpc: worker_rpc, admin: None },
        || {},
        async move {
            let _ = worker_stopped.await;
        },
    ));

    let mut gateway_config = config("gateway-1");
    gateway_config.registry.nodes =
        vec![StaticNode { id: "worker-1".into(), kind: "worker".into(), addr: worker_addr.to_string() }];
    let (clients, rpc) = (bind().await, bind().await);
    let (client_addr, rpc_addr) = (clients.local_addr().unwrap(), rpc.local_addr().unwrap());
    let (stop_gateway, gateway_stopped) = tokio::sync::oneshot::channel::<()>();
    let gateway = tokio::spawn(mortar_node::gateway::run(
        gateway_config.clone(),
        GatewayListeners { clients, rpc, admin: None },
        || {},
        async move {
            let _ = gateway_stopped.await;
        },
    ));

    // A player, and the session id the worker sees for it.
    let mut client = Client::connect(&format!("ws://{client_addr}/ws")).await.unwrap();
    let session = loop {
        let reply = client.request("testkit", "whoami", echo_body(""), |_| {}).await.unwrap();
        if reply.code == 0 {
            break EchoResp::decode(reply.data).unwrap().text.parse::<u64>().unwrap();
        }
        assert_eq!(reply.code, ErrorCode::Unavailable as i32, "only until the worker is connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // The wrong secret gets nowhere.
    let refused = handshake::dial(
        &rpc_addr.to_string(),
        "gateway-1",
        &worker_identity("wrong"),
        Vec::new(),
        &gateway_config.rpc,
    )
    .await;
    assert!(
        matches!(refused, Err(DialError::Refused { ref reason, .. }) if reason == "wrong cluster secret"),
        "{refused:?}"
    );

    let (entry, frames) = handshake::dial(
        &rpc_addr.to_string(),
        "gateway-1",
        &worker_identity(SECRET),
        Vec::new(),
        &gateway_config.rpc,
    )
    .await
    .unwrap();
    assert_eq!(entry.kind, NodeKind::Gateway);
    let gateway_rpc = GatewayRpcClient::new(Default::default(), codec::transport(frames)).spawn();

    // A push over the cluster's frame limit (a module's bug) is not sent: its call fails alone,
    // and the connection carries the next push (the gateway would have closed it, failing every
    // push and kick on it).
    let oversized = PushBatch {
        sessions: vec![session],
        main: "testkit".into(),
        sub: "note".into(),
        data: vec![0; gateway_config.rpc.max_frame_bytes].into(),
    };
    let refused = gateway_rpc.push(tarpc::context::current(), oversized).await;
    let Err(tarpc::client::RpcError::Server(error)) = refused else { panic!("refused: {refused:?}") };
    assert!(error.detail.contains("over the cluster's frame limit"), "{}", error.detail);

    let batch = PushBatch {
        sessions: vec![session, 999_999],
        main: "testkit".into(),
        sub: "note".into(),
        data: echo_body("pushed"),
    };
    let report = gateway_rpc.push(tarpc::context::current(), batch).await.unwrap();
    assert_eq!((report.delivered, report.offline), (1, 1));
    let push = tokio::time::timeout(Duration::from_secs(5), client.next()).await.unwrap().unwrap();
    assert_eq!((push.main_type.as_str(), push.sub_type.as_str(), push.seq), ("testkit", "note", 0));

    assert!(
        gateway_rpc
            .kick(tarpc::context::current(), session, ErrorCode::LoggedInElsewhere as i32)
            .await
            .unwrap()
    );
    let kick = tokio::time::timeout(Duration::from_secs(5), client.next()).await.unwrap().unwrap();
    assert_eq!((kick.main_type.as_str(), kick.sub_type.as_str()), ("sys", "kick"));
    assert_eq!(Kick::decode(kick.data).unwrap().reason, ErrorCode::LoggedInElsewhere as i32);
    let closed = tokio::time::timeout(Duration::from_secs(5), client.next()).await.unwrap();
    assert!(closed.is_err(), "the kicked session is closed");
    assert!(!gateway_rpc.kick(tarpc::context::current(), session, 12).await.unwrap(), "gone after the kick");

    drop(gateway_rpc);
    let _ = stop_gateway.send(());
    gateway.await.unwrap().unwrap();
    let _ = stop_worker.send(());
    worker.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_never_answers_holds_up_only_its_own_callers() {
    use mortar_backends::session::memory::MemorySessions;
    use mortar_cluster::registry::{Registry as _, memory::MemoryRegistry};
    use mortar_runtime::gateways::{GatewayPool, Gateways as _};
    use std::sync::Arc;

    // A live gateway, and an address that accepts connections but never answers the handshake.
    let (clients, rpc, stuck) = (bind().await, bind().await, bind().await);
    let (rpc_addr, stuck_addr) = (rpc.local_addr().unwrap(), stuck.local_addr().unwrap());
    let (stop_gateway, gateway_stopped) = tokio::sync::oneshot::channel::<()>();
    let gateway = tokio::spawn(mortar_node::gateway::run(
        config("gateway-live"),
        GatewayListeners { clients, rpc, admin: None },
        || {},
        async move {
            let _ = gateway_stopped.await;
        },
    ));
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = stuck.accept().await {
            held.push(stream);
        }
    });

    let registry = Arc::new(MemoryRegistry::default());
    for (id, addr) in [("gateway-live", rpc_addr), ("gateway-stuck", stuck_addr)] {
        let entry = NodeEntry {
            id: id.into(),
            kind: NodeKind::Gateway,
            addr: addr.to_string(),
            ..worker_identity(SECRET).entry
        };
        registry.register(&entry).await.unwrap();
    }
    let mut rpc_config = config("worker-1").rpc;
    rpc_config.handshake_timeout_ms = 10_000;
    let pool = GatewayPool::start(
        Arc::new(worker_identity(SECRET)),
        rpc_config,
        registry,
        Some(Arc::new(MemorySessions::default())),
    );
    let stuck_kick = tokio::spawn({
        let pool = pool.clone();
        async move { pool.kick("gateway-stuck", 1, mortar::Code::PERMISSION_DENIED).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The live gateway answers (no such session) while the other one is still being dialled.
    let live = loop {
        match pool.kick("gateway-live", 1, mortar::Code::PERMISSION_DENIED).await {
            Err(mortar::Code::UNAVAILABLE) => tokio::time::sleep(Duration::from_millis(20)).await,
            other => break other,
        }
    };
    assert_eq!(live, Ok(false));
    assert!(!stuck_kick.is_finished(), "the stuck gateway's dial is still waiting for its handshake");

    stuck_kick.abort();
    held.abort();
    pool.close();
    let _ = stop_gateway.send(());
    gateway.await.unwrap().unwrap();
}
