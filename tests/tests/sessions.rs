//! Players in `mortar dev` (memory session store): login binding, duplicate-login kicks, pushes to
//! users, kicks and presence, through real WebSocket clients.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use mortar_cli::client::{Client, ClientError};
use mortar_echo::echo::EchoResp;
use mortar_pb::{ErrorCode, Kick, UserMessage};
use mortar_tests::{DevNode, echo_body};
use prost::Message as _;
use std::time::Duration;

/// Sends `text` to `route`; the reply's code and text, pushes that came meanwhile kept in `pushes`.
async fn call(client: &mut Client, route: &str, text: &str, pushes: &mut Vec<UserMessage>) -> (i32, String) {
    let (main, sub) = route.split_once('.').unwrap();
    let reply = client.request(main, sub, echo_body(text), |push| pushes.push(push)).await.unwrap();
    (reply.code, EchoResp::decode(reply.data).map(|r| r.text).unwrap_or_default())
}

async fn ask(client: &mut Client, route: &str, text: &str) -> (i32, String) {
    call(client, route, text, &mut Vec::new()).await
}

async fn logged_in(node: &DevNode, user: u64) -> Client {
    let mut client = Client::connect(&node.url()).await.unwrap();
    assert_eq!(
        ask(&mut client, "testkit.login", &user.to_string()).await,
        (0, format!("logged in as {user}"))
    );
    client
}

/// Reads until the server's `sys.kick`, then its close; the kick's reason and the close reason.
async fn kicked(client: &mut Client) -> (i32, String) {
    let mut reason = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), client.next()).await.expect("kicked in time") {
            Ok(msg) if msg.main_type == "sys" && msg.sub_type == "kick" => {
                reason = Some(Kick::decode(msg.data).unwrap().reason);
            }
            Ok(_) => {}
            Err(ClientError::Closed(close)) => {
                return (reason.expect("sys.kick before the close"), close.unwrap_or_default());
            }
            Err(error) => panic!("{error}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_binds_the_session_and_its_requests_carry_the_user() {
    let node = DevNode::start().await;
    let mut client = Client::connect(&node.url()).await.unwrap();
    assert_eq!(ask(&mut client, "testkit.me", "").await, (0, "none".into()));
    assert_eq!(ask(&mut client, "testkit.login", "0").await.0, ErrorCode::BadRequest as i32, "0 is no user");
    assert_eq!(ask(&mut client, "testkit.login", "7").await, (0, "logged in as 7".into()));
    assert_eq!(ask(&mut client, "testkit.me", "").await, (0, "7".into()));
    assert_eq!(ask(&mut client, "testkit.online", "7,8").await, (0, "true,false".into()));
    // Logging in again on the same session keeps it.
    assert_eq!(ask(&mut client, "testkit.login", "7").await.0, 0);
    assert_eq!(ask(&mut client, "testkit.me", "").await, (0, "7".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_login_kicks_the_first_session() {
    let node = DevNode::start().await;
    let mut first = logged_in(&node, 7).await;
    let mut second = logged_in(&node, 7).await;
    let (reason, close) = kicked(&mut first).await;
    assert_eq!(reason, ErrorCode::LoggedInElsewhere as i32);
    assert!(close.starts_with("1008"), "{close}");
    assert_eq!(ask(&mut second, "testkit.me", "").await, (0, "7".into()));
    assert_eq!(ask(&mut second, "testkit.online", "7").await, (0, "true".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_reach_online_users_and_report_the_offline_ones() {
    let node = DevNode::start().await;
    let mut alice = logged_in(&node, 1).await;
    let mut bob = logged_in(&node, 2).await;
    let mut carol = logged_in(&node, 3).await;
    let (code, text) = ask(&mut alice, "testkit.push", "2,3,9").await;
    assert_eq!((code, text.as_str()), (0, "delivered=2 offline=[9] undelivered=0"));
    for client in [&mut bob, &mut carol] {
        let push = tokio::time::timeout(Duration::from_secs(5), client.next()).await.unwrap().unwrap();
        assert_eq!((push.main_type.as_str(), push.sub_type.as_str(), push.seq), ("testkit", "note", 0));
        assert_eq!(EchoResp::decode(push.data).unwrap().text, "from 1");
    }
}

/// With `push_flush_ms`, pushes to a client are held: they leave with its next reply, before it
/// and in order, or when the delay ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_pushes_leave_with_the_next_reply_or_after_the_flush_delay() {
    let node = DevNode::with_config(|config| config.gateway.push_flush_ms = 1_000).await;
    let mut alice = logged_in(&node, 1).await;
    let mut bob = logged_in(&node, 2).await;
    for _ in 0..2 {
        assert_eq!(ask(&mut alice, "testkit.push", "2").await.0, 0);
    }
    mortar_tests::no_push(&mut bob, "testkit.note", Duration::from_millis(300)).await;
    let mut pushes = Vec::new();
    assert_eq!(call(&mut bob, "testkit.me", "", &mut pushes).await, (0, "2".into()));
    let notes: Vec<_> = pushes.iter().map(|push| EchoResp::decode(push.data.clone()).unwrap().text).collect();
    assert_eq!(notes, ["from 1", "from 1"]);
    // Nothing to take it along: the delay's end sends it.
    assert_eq!(ask(&mut alice, "testkit.push", "2").await.0, 0);
    let push = mortar_tests::push_of(&mut bob, "testkit.note").await;
    assert_eq!(EchoResp::decode(push.data).unwrap().text, "from 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_unbinds_and_a_kick_closes() {
    let node = DevNode::start().await;
    let mut alice = logged_in(&node, 1).await;
    let bob = logged_in(&node, 2).await;
    let mut carol = logged_in(&node, 3).await;
    bob.close().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while ask(&mut alice, "testkit.online", "2").await.1 != "false" {
        assert!(tokio::time::Instant::now() < deadline, "bob stays online after leaving");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(ask(&mut alice, "testkit.kick", "3").await, (0, "true".into()));
    let (reason, _) = kicked(&mut carol).await;
    assert_eq!(reason, ErrorCode::PermissionDenied as i32);
    assert_eq!(ask(&mut alice, "testkit.kick", "42").await, (0, "false".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_racing_logins_of_one_user_leave_one_session() {
    let node = DevNode::with_config(|config| config.gateway.max_connections_per_ip = 0).await;
    let mut logins = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let url = node.url();
        logins.spawn(async move {
            let mut client = Client::connect(&url).await.unwrap();
            let (main, sub) = ("testkit", "login");
            let reply = client.request(main, sub, echo_body("77"), |_| {}).await;
            (client, reply.map(|reply| reply.code))
        });
    }
    let mut clients = Vec::new();
    while let Some(joined) = logins.join_next().await {
        clients.push(joined.unwrap());
    }
    // Every session either got OK and was kicked later, or is the one left bound.
    let mut bound = 0;
    let mut kicked_or_refused = 0;
    for (mut client, reply) in clients {
        match reply {
            Ok(0) => {}
            _ => {
                kicked_or_refused += 1;
                continue;
            }
        }
        let me = tokio::time::timeout(
            Duration::from_millis(500),
            client.request("testkit", "me", echo_body(""), |_| {}),
        )
        .await;
        match me {
            Ok(Ok(reply)) if EchoResp::decode(reply.data.clone()).unwrap().text == "77" => bound += 1,
            _ => kicked_or_refused += 1,
        }
    }
    assert_eq!((bound, kicked_or_refused), (1, 49));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_need_a_login_unless_public() {
    let node =
        DevNode::with_config(|config| config.worker.public_routes = vec!["testkit.online".into()]).await;
    let mut guest = Client::connect(&node.url()).await.unwrap();
    assert_eq!(ask(&mut guest, "testkit.push", "1").await.0, ErrorCode::NotLoggedIn as i32);
    let reply = guest.request("testkit", "kick", echo_body("1"), |_| {}).await.unwrap();
    assert_eq!((reply.code, reply.reason.as_str()), (ErrorCode::NotLoggedIn as i32, "log in first"));
    // Public by its handler, and public by the config.
    assert_eq!(ask(&mut guest, "testkit.me", "").await, (0, "none".into()));
    assert_eq!(ask(&mut guest, "testkit.online", "1").await, (0, "false".into()));
    // Internal routes stay unreachable, logged in or not.
    assert_eq!(ask(&mut guest, "testkit.double", "").await.0, ErrorCode::NoRoute as i32);
    let mut player = logged_in(&node, 1).await;
    assert_eq!(ask(&mut player, "testkit.push", "1").await.0, 0);
    assert_eq!(ask(&mut player, "testkit.double", "").await.0, ErrorCode::NoRoute as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_pushes_to_its_own_session_before_login() {
    let node = DevNode::start().await;
    let mut guest = Client::connect(&node.url()).await.unwrap();
    let mut pushes = Vec::new();
    assert_eq!(call(&mut guest, "testkit.tell", "queue position 3", &mut pushes).await, (0, "true".into()));
    let push = match pushes.pop() {
        Some(push) => push,
        None => tokio::time::timeout(Duration::from_secs(5), guest.next()).await.unwrap().unwrap(),
    };
    assert_eq!((push.main_type.as_str(), push.sub_type.as_str(), push.seq), ("testkit", "note", 0));
    assert_eq!(EchoResp::decode(push.data).unwrap().text, "queue position 3");
}

/// Waits until the `on_offline` hook has run `count` times for `user`, then checks it runs no
/// more for a while.
async fn offline_count_settles(client: &mut Client, user: u64, count: u32) {
    hook_count_settles(client, "offline", user, count).await;
}

/// Waits until the `on_STATUS` hook has run `count` times for `user`, then checks it runs no
/// more for a while.
async fn hook_count_settles(client: &mut Client, status: &str, user: u64, count: u32) {
    let route = format!("testkit.{status}_count");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, seen) = ask(client, &route, &user.to_string()).await;
        if seen == count.to_string() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "on_{status} ran {seen} times for {user}, not {count}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ask(client, &route, &user.to_string()).await.1, count.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_online_runs_per_login_and_on_offline_once_per_departure_not_for_a_replaced_login() {
    for local_dispatch in [true, false] {
        let node = DevNode::with_config(|config| config.gateway.local_dispatch = local_dispatch).await;
        let mut observer = Client::connect(&node.url()).await.unwrap();
        let alice = logged_in(&node, 1).await;
        hook_count_settles(&mut observer, "online", 1, 1).await;
        alice.close().await.unwrap();
        offline_count_settles(&mut observer, 1, 1).await;
        // A guest leaving is no player going offline.
        Client::connect(&node.url()).await.unwrap().close().await.unwrap();
        // A login elsewhere replaces the first session: the player stays online, no hook runs.
        let mut first = logged_in(&node, 1).await;
        let second = logged_in(&node, 1).await;
        kicked(&mut first).await;
        offline_count_settles(&mut observer, 1, 1).await;
        // Each login ran `on_online`, the replacing one too.
        hook_count_settles(&mut observer, "online", 1, 3).await;
        second.close().await.unwrap();
        offline_count_settles(&mut observer, 1, 2).await;
    }
}
