//! Server pushes from a gateway to many sessions, over real WebSocket connections.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use bytes::Bytes;
use mortar_cli::client::Client;
use mortar_cluster::rpc::PushReport;
use mortar_echo::echo::{EchoReq, EchoResp};
use mortar_gateway::{self as gateway, Gateway, relay::Relay};
use mortar_node::config::GatewayConfig;
use mortar_node::local::OwnWorker;
use mortar_runtime::Backends;
use mortar_runtime::{Worker, routes::RouteTable};
use mortar_tests::echo_body;
use prost::Message as _;
use std::{sync::Arc, time::Duration};
use tokio::net::TcpListener;

/// A gateway with every linked module, run in-process so the test holds a handle to push with.
async fn start_gateway() -> (Gateway, String, tokio::sync::oneshot::Sender<()>) {
    let worker = Worker::new("push-1".into(), RouteTable::from_registry(&[]).unwrap(), Backends::none());
    let config = GatewayConfig { rate_per_sec: 0, max_connections_per_ip: 0, ..GatewayConfig::default() };
    let relay = Relay::local(Arc::new(OwnWorker(worker)), config.request_timeout());
    let gateway = Gateway::new(config, "push-1".into(), relay);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(gateway::serve(listener, gateway.clone(), async move {
        let _ = stopped.await;
    }));
    (gateway, url, stop)
}

async fn session_id(client: &mut Client) -> u64 {
    let reply = client.request("testkit", "whoami", echo_body(""), |_| {}).await.unwrap();
    EchoResp::decode(reply.data).unwrap().text.parse().unwrap()
}

#[tokio::test]
async fn one_push_reaches_every_addressed_session_and_no_other() {
    let (gateway, url, _stop) = start_gateway().await;
    let mut clients = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..50 {
        let mut client = Client::connect(&url).await.unwrap();
        ids.push(session_id(&mut client).await);
        clients.push(client);
    }
    let mut bystander = Client::connect(&url).await.unwrap();
    let bystander_id = session_id(&mut bystander).await;
    assert_eq!(gateway.session_count(), 51);

    let body = Bytes::from(EchoReq { text: "hello all".into() }.encode_to_vec());
    let mut addressed = ids.clone();
    addressed.push(987_654); // never connected
    let report = gateway.push(&addressed, "chat", "message", body);
    assert_eq!(report, PushReport { delivered: 50, offline: 1, gone: vec![987_654], dropped: 0 });

    for client in &mut clients {
        let push = tokio::time::timeout(Duration::from_secs(5), client.next()).await.unwrap().unwrap();
        assert_eq!((push.main_type.as_str(), push.sub_type.as_str(), push.seq), ("chat", "message", 0));
        assert_eq!(EchoReq::decode(push.data).unwrap().text, "hello all");
    }
    // The bystander got nothing: its next message is the reply to its own request.
    let reply =
        bystander.request("echo", "say", echo_body("mine"), |push| panic!("unexpected {push:?}")).await;
    assert_eq!(reply.unwrap().seq, 2);
    assert!(!ids.contains(&bystander_id));
}

#[tokio::test]
async fn a_session_that_ended_is_offline_for_pushes() {
    let (gateway, url, _stop) = start_gateway().await;
    let mut client = Client::connect(&url).await.unwrap();
    let id = session_id(&mut client).await;
    client.close().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while gateway.session_count() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the session never left the table");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(gateway.push(&[id], "chat", "message", Bytes::new()).offline, 1);
}
