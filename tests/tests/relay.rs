//! Both ways a dev node's gateway reaches its worker: handlers run in-process on the session's
//! task (`local_dispatch`, the default) and the worker's tarpc service over an in-process channel
//! (the remote-worker path). The dev-node suite covers the default; this runs the request
//! semantics on the tarpc path too, and what both promise when a client leaves mid-request.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use mortar_cli::client::Client;
use mortar_echo::echo::EchoResp;
use mortar_node::NodeConfig;
use mortar_pb::{ErrorCode, UserMessage};
use mortar_tests::{DevNode, Received, admin_get, echo_body, raw, receive, request, send, testkit};
use prost::Message as _;
use std::time::Duration;

fn text_of(reply: &UserMessage) -> String {
    EchoResp::decode(reply.data.clone()).expect("reply decodes as EchoResp").text
}

async fn over_rpc(change: impl FnOnce(&mut NodeConfig)) -> DevNode {
    DevNode::with_config(|config| {
        config.gateway.local_dispatch = false;
        change(config);
    })
    .await
}

#[tokio::test]
async fn rpc_path_answers_replies_codes_panics_and_internal_calls() {
    let node = over_rpc(|_| {}).await;
    let mut client = Client::connect(&node.url()).await.unwrap();
    let reply = client.request("echo", "say", echo_body("hi"), |_| {}).await.unwrap();
    assert_eq!((reply.code, reply.seq, text_of(&reply)), (0, 1, "hi".to_owned()));
    let reply = client.request("testkit", "fail", echo_body(""), |_| {}).await.unwrap();
    assert_eq!(reply.code, 1001);
    let reply = client.request("testkit", "panic", echo_body("boom"), |_| {}).await.unwrap();
    assert_eq!(reply.code, ErrorCode::Internal as i32);
    let reply = client.request("testkit", "double", echo_body(""), |_| {}).await.unwrap();
    assert_eq!(reply.code, ErrorCode::NoRoute as i32);
    let reply = client.request("testkit", "relay", echo_body("ab"), |_| {}).await.unwrap();
    assert!(text_of(&reply).starts_with("abab from session "), "{}", text_of(&reply));
    let (_, metrics) = admin_get(node.admin, "/metrics").await;
    assert!(metrics.contains("mortar_rpc_duration_seconds_count{peer=\"dev-1\"}"), "{metrics}");
    node.stop().await.unwrap();
}

#[tokio::test]
async fn rpc_path_keeps_reply_order_with_several_in_flight() {
    let node = over_rpc(|config| config.gateway.session_concurrency = 8).await;
    let mut socket = raw(&node.url()).await;
    let delays = [60, 0, 30, 0, 10];
    for (seq, delay) in (1u32..).zip(delays) {
        send(&mut socket, request("testkit.slow", seq, echo_body(&delay.to_string()))).await;
    }
    for (seq, delay) in (1u32..).zip(delays) {
        let Received::Message(reply) = receive(&mut socket).await else { panic!("closed at {seq}") };
        assert_eq!((reply.seq, reply.code, text_of(&reply)), (seq, 0, delay.to_string()));
    }
}

#[tokio::test]
async fn rpc_path_times_out_slow_handlers() {
    let node = over_rpc(|config| config.gateway.request_timeout_ms = 100).await;
    let mut client = Client::connect(&node.url()).await.unwrap();
    let reply = client.request("testkit", "slow", echo_body("2000"), |_| {}).await.unwrap();
    assert_eq!((reply.code, reply.seq), (ErrorCode::Timeout as i32, 1));
    let reply = client.request("echo", "say", echo_body("next"), |_| {}).await.unwrap();
    assert_eq!(text_of(&reply), "next");
}

/// A client that disconnects while its request runs must not cut the handler short: it could be
/// between two writes of a player's items.
async fn handler_outlives_its_client(node: DevNode, marker: &str) {
    let mut socket = raw(&node.url()).await;
    send(&mut socket, request("testkit.finish", 1, echo_body(marker))).await;
    // Let the gateway start the request, then vanish without a close handshake.
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(socket);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !testkit::finished(marker) {
        assert!(tokio::time::Instant::now() < deadline, "the handler of {marker} was cut short");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.stop().await.unwrap();
}

#[tokio::test]
async fn local_handler_runs_to_completion_after_its_client_leaves() {
    handler_outlives_its_client(DevNode::start().await, "local-left").await;
}

#[tokio::test]
async fn rpc_handler_runs_to_completion_after_its_client_leaves() {
    handler_outlives_its_client(over_rpc(|_| {}).await, "rpc-left").await;
}
