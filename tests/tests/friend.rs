//! The friend module in `mortar dev` (embedded store), through real WebSocket clients: request →
//! accept → both lists, pushes of requests, acceptances and presence, blocks, limits. Its own test
//! binary: `[modules.friend]` has small limits here (a module's config is one per process).
#![allow(clippy::unwrap_used)]

use mortar_cli::client::Client;
use mortar_friend::friend::{Accepted, Done, ListReq, ListResp, Listed, Presence, Request, State, Target};
use mortar_pb::ErrorCode;
use mortar_tests::{DevNode, admin_request, no_push, push_of, signed_up};
use prost::Message as _;
use serde_json::json;
use std::time::Duration;

const TOKEN: &str = "friend-test-token";

/// Every node of this binary: cheap argon2; 3 friends, 2 pending requests, 2 blocks a player.
async fn node() -> DevNode {
    DevNode::with_config(|config| {
        config.admin.token = TOKEN.into();
        config.modules.insert("user".into(), json!({ "argon2_memory_kib": 1024, "argon2_iterations": 1 }));
        config
            .modules
            .insert("friend".into(), json!({ "max_friends": 3, "max_pending": 2, "max_blocked": 2 }));
    })
    .await
}

async fn act(client: &mut Client, route: &str, user_id: u64) -> Result<(), i32> {
    if route == "friend.request" {
        let answered: Result<Request, i32> = client.call(route, &Target { user_id }).await.unwrap();
        return answered.map(|reply| assert_eq!(reply, Request::default()));
    }
    let answered: Result<Done, i32> = client.call(route, &Target { user_id }).await.unwrap();
    answered.map(|_| ())
}

/// `(user, state, online)` of each on the list; the names are checked against `names`.
async fn list(client: &mut Client, names: &[(u64, &str)]) -> Vec<(u64, State, bool)> {
    let listed: Result<ListResp, i32> = client.call("friend.list", &ListReq {}).await.unwrap();
    listed
        .unwrap()
        .friends
        .into_iter()
        .map(|Listed { user_id, name, state, online }| {
            let known = names.iter().find(|(user, _)| *user == user_id).map(|(_, name)| *name);
            assert_eq!(known, Some(name.as_str()), "the name of {user_id}");
            (user_id, State::try_from(state).unwrap(), online)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_accept_lists_and_presence_pushes() {
    let node = node().await;
    let (mut alice, a) = signed_up(&node.url(), "alice").await;
    let (mut bob, b) = signed_up(&node.url(), "bob").await;
    let names = [(a, "alice"), (b, "bob")];

    assert_eq!(act(&mut alice, "friend.request", b).await, Ok(()));
    let asked = push_of(&mut bob, "friend.request").await;
    assert_eq!(Request::decode(asked.data).unwrap(), Request { user_id: a, name: "alice".into() });
    assert_eq!(list(&mut alice, &names).await, [(b, State::RequestSent, true)]);
    assert_eq!(list(&mut bob, &names).await, [(a, State::RequestReceived, true)]);
    // Asking again sends nothing more.
    assert_eq!(act(&mut alice, "friend.request", b).await, Ok(()));
    no_push(&mut bob, "friend.request", Duration::from_millis(300)).await;

    assert_eq!(act(&mut bob, "friend.accept", a).await, Ok(()));
    let accepted = push_of(&mut alice, "friend.accepted").await;
    assert_eq!(Accepted::decode(accepted.data).unwrap(), Accepted { user_id: b, name: "bob".into() });
    assert_eq!(list(&mut alice, &names).await, [(b, State::Friend, true)]);
    assert_eq!(list(&mut bob, &names).await, [(a, State::Friend, true)]);

    // Bob leaves and comes back: Alice hears both.
    bob.close().await.unwrap();
    let left = push_of(&mut alice, "friend.offline").await;
    assert_eq!(Presence::decode(left.data).unwrap(), Presence { user_id: b });
    assert_eq!(list(&mut alice, &names).await, [(b, State::Friend, false)]);
    let mut bob = Client::connect(&node.url()).await.unwrap();
    mortar_tests::login(&mut bob, "bob", "bob-password").await.unwrap();
    let came = push_of(&mut alice, "friend.online").await;
    assert_eq!(Presence::decode(came.data).unwrap(), Presence { user_id: b });

    // Asking someone who asked you makes you friends.
    let (mut carol, c) = signed_up(&node.url(), "carol").await;
    assert_eq!(act(&mut carol, "friend.request", a).await, Ok(()));
    assert_eq!(act(&mut alice, "friend.request", c).await, Ok(()));
    push_of(&mut carol, "friend.accepted").await;
    let names = [(a, "alice"), (b, "bob"), (c, "carol")];
    assert_eq!(list(&mut alice, &names).await, [(b, State::Friend, true), (c, State::Friend, true)]);

    // Remove ends it on both sides; reject drops a request from both.
    assert_eq!(act(&mut bob, "friend.remove", a).await, Ok(()));
    assert_eq!(list(&mut alice, &names).await, [(c, State::Friend, true)]);
    assert!(list(&mut bob, &names).await.is_empty());
    assert_eq!(act(&mut bob, "friend.request", c).await, Ok(()));
    assert_eq!(act(&mut carol, "friend.reject", b).await, Ok(()));
    assert!(list(&mut bob, &names).await.is_empty());
    assert_eq!(list(&mut carol, &names).await, [(a, State::Friend, true)]);

    // Refusals.
    let not_found = Err(ErrorCode::NotFound as i32);
    assert_eq!(act(&mut bob, "friend.request", b).await, Err(ErrorCode::BadRequest as i32), "oneself");
    assert_eq!(act(&mut bob, "friend.request", 0).await, Err(ErrorCode::BadRequest as i32));
    assert_eq!(act(&mut bob, "friend.request", 987_654).await, not_found, "no such account");
    assert_eq!(act(&mut bob, "friend.accept", c).await, not_found, "no request");
    assert_eq!(act(&mut bob, "friend.remove", c).await, not_found);
    assert_eq!(act(&mut bob, "friend.unblock", c).await, not_found);
    let mut guest = Client::connect(&node.url()).await.unwrap();
    assert_eq!(act(&mut guest, "friend.request", a).await, Err(ErrorCode::NotLoggedIn as i32));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_stops_requests() {
    let node = node().await;
    let (mut dora, d) = signed_up(&node.url(), "dora").await;
    let (mut mallory, m) = signed_up(&node.url(), "mallory").await;
    let names = [(d, "dora"), (m, "mallory")];
    // They were friends; Dora blocks Mallory.
    act(&mut mallory, "friend.request", d).await.unwrap();
    act(&mut dora, "friend.accept", m).await.unwrap();
    assert_eq!(act(&mut dora, "friend.block", m).await, Ok(()));
    assert_eq!(list(&mut dora, &names).await, [(m, State::Blocked, false)], "online is hidden");
    assert!(list(&mut mallory, &names).await.is_empty());

    // Mallory's requests answer as any other, and never reach Dora.
    assert_eq!(act(&mut mallory, "friend.request", d).await, Ok(()));
    no_push(&mut dora, "friend.request", Duration::from_millis(300)).await;
    assert_eq!(list(&mut dora, &names).await, [(m, State::Blocked, false)]);
    assert_eq!(list(&mut mallory, &names).await, [(d, State::RequestSent, true)]);
    // Dora cannot ask whom she blocks; other modules learn who blocks Mallory.
    assert_eq!(act(&mut dora, "friend.request", m).await, Err(ErrorCode::Conflict as i32));
    let (status, reply) = admin_request(
        node.admin,
        "POST",
        "/v1/call/friend.blocked_by",
        Some(TOKEN),
        &json!({ "userId": m.to_string() }).to_string(),
    )
    .await;
    assert_eq!((status, reply), (200, json!({ "code": 0, "data": { "userIds": [d.to_string()] } })));

    // Unblocked, Mallory's next request reaches her.
    assert_eq!(act(&mut dora, "friend.unblock", m).await, Ok(()));
    assert!(list(&mut dora, &names).await.is_empty());
    assert_eq!(act(&mut mallory, "friend.request", d).await, Ok(()));
    push_of(&mut dora, "friend.request").await;
    assert_eq!(list(&mut dora, &names).await, [(m, State::RequestReceived, true)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_on_friends_pending_requests_and_blocks() {
    let node = node().await;
    let (mut erin, e) = signed_up(&node.url(), "erin").await;
    let mut others = Vec::new();
    for name in ["fox1", "fox2", "fox3", "fox4", "fox5"] {
        others.push(signed_up(&node.url(), name).await);
    }
    // Two requests may wait; a third is refused.
    act(&mut erin, "friend.request", others[0].1).await.unwrap();
    act(&mut erin, "friend.request", others[1].1).await.unwrap();
    let (f3, f4, f5) = (others[2].1, others[3].1, others[4].1);
    assert_eq!(act(&mut erin, "friend.request", f3).await, Err(1002), "PENDING_LIMIT");
    for other in &mut others[..2] {
        act(&mut other.0, "friend.accept", e).await.unwrap();
    }
    // Nor may more wait for the other player.
    act(&mut others[3].0, "friend.request", f3).await.unwrap();
    act(&mut others[4].0, "friend.request", f3).await.unwrap();
    assert_eq!(act(&mut erin, "friend.request", f3).await, Err(1002), "f3 has two waiting");
    // Three friends at most.
    act(&mut erin, "friend.request", f4).await.unwrap();
    act(&mut others[3].0, "friend.accept", e).await.unwrap();
    act(&mut others[4].0, "friend.request", e).await.unwrap();
    assert_eq!(act(&mut erin, "friend.accept", f5).await, Err(1001), "FRIEND_LIMIT");
    // Two blocks at most.
    act(&mut erin, "friend.block", f5).await.unwrap();
    act(&mut erin, "friend.block", f3).await.unwrap();
    assert_eq!(act(&mut erin, "friend.block", f4).await, Err(1003), "BLOCK_LIMIT");
}
