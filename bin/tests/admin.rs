//! The admin listener of a `mortar dev` process from the outside, as a token guesser sees it.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod support;

use support::{Node, TempDir, http_request};

/// Two thousand wrong tokens in a burst: each is refused (401) and counted, and the log gets a
/// line a second (saying how many it did not write), not one per guess.
#[test]
fn wrong_admin_tokens_are_counted_and_logged_once_a_second() {
    let dir = TempDir::new("admin-guesser");
    let env = [("MORTAR_ADMIN__LISTEN", "127.0.0.1:0"), ("MORTAR_ADMIN__TOKEN", "the-real-admin-token")];
    let node = Node::start("dev", &dir, &["dev", "--listen", "127.0.0.1:0", "--data", "data"], &env);
    let admin = node.admin.unwrap();
    let started = std::time::Instant::now();
    for guess in 0..2000 {
        let token = format!("guess-{guess}");
        let (status, _) = http_request(admin, "GET", "/v1/online/1", Some(&token), "");
        assert_eq!(status, 401);
    }
    let seconds = started.elapsed().as_secs();
    let lines = node.log().matches("admin API request without the right token").count();
    assert!((1..=usize::try_from(seconds).unwrap() + 2).contains(&lines), "{lines} lines in {seconds} s");
    assert!(node.log().contains("not_logged_since="), "the next line says how many were held back");
    let (_, metrics) = node.admin_get("/metrics");
    assert!(metrics.contains("mortar_admin_unauthorized_total 2000"), "{metrics}");
    let (status, _) = http_request(admin, "GET", "/v1/online/1", Some("the-real-admin-token"), "");
    assert_eq!(status, 404, "the right token still works: player 1 is offline");
}

/// An internal call to a module of the same node runs like one from another node: through the
/// route's layers, in its span, counted in `mortar_requests_total`. `user.register` grants the
/// starter items through `pack.add_items`, a local call in `mortar dev`. Presence hooks are
/// counted there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_internal_call_is_counted_like_a_remote_one() {
    use mortar_user::user::{LoginReq, LoginResp, RegisterReq, RegisterResp};
    let dir = TempDir::new("admin-local-call");
    let env = [("MORTAR_ADMIN__LISTEN", "127.0.0.1:0")];
    let node = Node::start("dev", &dir, &["dev", "--listen", "127.0.0.1:0", "--data", "data"], &env);
    let mut client = mortar_cli::client::Client::connect(&node.addr).await.unwrap();
    let req = RegisterReq { account: "counted".into(), password: "counted-password".into() };
    support::call::<_, RegisterResp>(&mut client, "user.register", req).await.unwrap();
    let (_, metrics) = node.admin_get("/metrics");
    let line = r#"mortar_requests_total{route="pack.add_items",code="OK"} 1"#;
    assert!(metrics.lines().any(|l| l == line), "no `{line}` in:\n{metrics}");
    // A presence hook is counted too, under its route: the login runs friend's on_online.
    let req = LoginReq { account: "counted".into(), password: "counted-password".into() };
    support::call::<_, LoginResp>(&mut client, "user.login", req).await.unwrap();
    let line = r#"mortar_requests_total{route="friend.on_online",code="OK"} 1"#;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !node.admin_get("/metrics").1.lines().any(|l| l == line) {
        assert!(std::time::Instant::now() < deadline, "no `{line}` in:\n{}", node.admin_get("/metrics").1);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
