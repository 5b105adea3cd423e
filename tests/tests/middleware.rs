//! Middleware: layers modules declare with `mortar::layer!`, around handlers, in order, placed
//! by the node's `worker.layers`; through a real client against `mortar dev`.
#![allow(clippy::unwrap_used)]

use mortar_cli::client::Client;
use mortar_echo::echo::EchoResp;
use mortar_pb::ErrorCode;
use mortar_tests::{DevNode, echo_body};
use prost::Message as _;

async fn ask(node: &DevNode, route: &str, text: &str) -> (i32, String) {
    let mut client = Client::connect(&node.url()).await.unwrap();
    let (main, sub) = route.split_once('.').unwrap();
    let reply = client.request(main, sub, echo_body(text), |_| {}).await.unwrap();
    (reply.code, EchoResp::decode(reply.data).map(|r| r.text).unwrap_or_default())
}

/// The code and reason of a failed request.
async fn refusal(node: &DevNode, route: &str, text: &str) -> (i32, String) {
    let mut client = Client::connect(&node.url()).await.unwrap();
    let (main, sub) = route.split_once('.').unwrap();
    let reply = client.request(main, sub, echo_body(text), |_| {}).await.unwrap();
    (reply.code, reply.reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_wrap_handlers_in_order_and_may_answer_themselves() {
    let node = DevNode::start().await;
    assert_eq!(
        ask(&node, "testkit.layered", "x").await,
        (0, "x>outer>inner>handler<inner<outer".into()),
        "the lowest order is outermost, on the way in and out"
    );
    assert_eq!(
        refusal(&node, "testkit.layered", "deny").await,
        (ErrorCode::PermissionDenied as i32, "the outer layer denies \"deny\"".into()),
        "a layer answers with a reason"
    );
    assert_eq!(
        refusal(&node, "testkit.layered", "fail").await,
        (ErrorCode::Conflict as i32, "the handler refuses \"fail\"".into()),
        "the handler's reason passes through the layers"
    );
    assert_eq!(refusal(&node, "testkit.layer_panic", "x").await, (ErrorCode::Internal as i32, String::new()));
    // Routes no layer names run bare.
    assert_eq!(ask(&node, "testkit.me", "").await, (0, "none".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_config_moves_or_switches_off_a_layer() {
    let node = DevNode::with_config(|config| {
        config.worker.layers.insert("testkit_inner".into(), Vec::new());
        config.worker.layers.insert("testkit_outer".into(), vec!["testkit.*".into()]);
    })
    .await;
    assert_eq!(ask(&node, "testkit.layered", "x").await, (0, "x>outer>handler<outer".into()));
    // testkit.me now runs through testkit_outer too, which refuses `deny`.
    assert_eq!(ask(&node, "testkit.me", "deny").await.0, ErrorCode::PermissionDenied as i32);
    // An internal call to a route of this node runs through the layers too: `testkit.relay`'s
    // and then `testkit.double`'s.
    let (code, text) = ask(&node, "testkit.relay", "x").await;
    assert_eq!(code, 0);
    assert!(text.starts_with("x>outer>outerx>outer>outer from session "), "{text}");
    assert!(text.ends_with("<outer<outer"), "{text}");
}
