//! The harness on its own: a node serving only its `testing` module, players logged in by id, and
//! the failures a test reads (code and reason).
#![allow(clippy::unwrap_used)]

use mortar::{Caller as _, Code};
use mortar_testing::{
    TestNode,
    testing::{LoginReq, LoginResp, TestingClient},
};

#[tokio::test]
async fn players_log_in_by_id_and_failures_carry_code_and_reason() {
    let node = TestNode::builder().modules(Vec::<String>::new()).start().await;
    let mut player = node.player(7).await;
    assert_eq!(player.user_id(), Some(7));
    let zero = TestingClient(&player).login(&LoginReq { user_id: 0 }).await.unwrap_err();
    assert_eq!((zero.code(), zero.reason()), (Code::BAD_REQUEST, Some("userId: 0 is no user's id")));
    let unknown = player.call::<_, LoginResp>("nowhere.at_all", &LoginReq::default()).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NO_ROUTE);
    player.login(8).await.unwrap();
    assert_eq!(player.user_id(), Some(8));
    let quiet =
        tokio::time::timeout(std::time::Duration::from_millis(200), player.push::<LoginResp>("testing.none"));
    assert!(quiet.await.is_err(), "no push arrives");
    player.close().await;
    node.stop().await.unwrap();
}

#[tokio::test]
async fn a_node_that_cannot_start_says_why() {
    let start = tokio::spawn(TestNode::builder().modules(["no_such_module"]).start());
    let panic = start.await.unwrap_err().into_panic();
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("no_such_module"), "the panic names the module: {message}");
}
