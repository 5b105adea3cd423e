//! The friend module in `mortar dev` (embedded store), through real WebSocket clients: request →
//! accept → both lists, pushes of requests, acceptances and presence, blocks, limits (small ones:
//! every node here has its own `[modules.friend]`).
#![allow(clippy::unwrap_used)]

use mortar_cli::client::Client;
use mortar_friend::friend::{Accepted, Done, ListReq, ListResp, Listed, Presence, Request, State, Target};
use mortar_pb::ErrorCode;
use mortar_tests::{DevNode, admin_request, no_push, push_of, signed_up};
use prost::Message as _;
use serde_json::json;
use std::time::Duration;

const TOKEN: &str = "friend-test-token";

/// Every node of this binary: cheap argon2, no registration limit (the races register hundreds of
/// players from one address); 3 friends, 2 requests sent and 2 received waiting,
/// 2 blocks a player.
async fn node() -> DevNode {
    DevNode::with_config(|config| {
        config.admin.token = TOKEN.into();
        config.modules.insert("user".into(), json!({ "argon2_memory_kib": 1024, "argon2_iterations": 1, "register_per_ip": 0, "register_per_sec": 0 }));
        config.modules.insert(
            "friend".into(),
            json!({ "max_friends": 3, "max_pending": 2, "max_incoming": 2, "max_blocked": 2 }),
        );
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
    // Two may wait for the other player: a third request makes the oldest give way.
    act(&mut others[3].0, "friend.request", f3).await.unwrap();
    act(&mut others[4].0, "friend.request", f3).await.unwrap();
    assert_eq!(act(&mut erin, "friend.request", f3).await, Ok(()), "f4's request to f3 gives way");
    assert_eq!(state_of(&mut others[3].0, f3).await, None);
    assert_eq!(state_of(&mut others[2].0, f4).await, None);
    assert_eq!(state_of(&mut others[2].0, e).await, Some(State::RequestReceived));
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

/// How `client` sees `other`: the state on its list, none when `other` is not on it.
async fn state_of(client: &mut Client, other: u64) -> Option<State> {
    let listed: Result<ListResp, i32> = client.call("friend.list", &ListReq {}).await.unwrap();
    let listed = listed.unwrap().friends;
    let mut found = listed.iter().filter(|entry| entry.user_id == other);
    let state = found.next().map(|entry| State::try_from(entry.state).unwrap());
    assert!(found.next().is_none(), "{other} is on the list once");
    state
}

/// Runs `route_a` of `a` (against `b`) and `route_b` of `b` (against `a`) at the same moment:
/// both requests are written before either reply is read.
async fn at_once(
    (a, ida): (&mut Client, u64),
    route_a: &str,
    (b, idb): (&mut Client, u64),
    route_b: &str,
) -> (Result<(), i32>, Result<(), i32>) {
    futures::join!(act(a, route_a, idb), act(b, route_b, ida))
}

/// Many rounds of two players' routes raced against each other (fresh pairs each round): their
/// lists always agree afterwards, mutual requests make friends, and a block always wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_routes_of_two_players_leave_lists_that_agree() {
    let node = node().await;
    const ROUNDS: usize = 20;
    let mut players = Vec::new();
    for round in 0..ROUNDS {
        players.push((
            signed_up(&node.url(), &format!("racea{round}")).await,
            signed_up(&node.url(), &format!("raceb{round}")).await,
        ));
    }
    let mut split = [0usize; 3];
    for ((mut a, ida), (mut b, idb)) in players {
        // request ∥ request: friends, whoever came first.
        let answers = at_once((&mut a, ida), "friend.request", (&mut b, idb), "friend.request").await;
        assert_eq!(answers, (Ok(()), Ok(())));
        let views = (state_of(&mut a, idb).await, state_of(&mut b, ida).await);
        assert_eq!(views, (Some(State::Friend), Some(State::Friend)), "mutual requests make friends");

        // accept ∥ remove: a withdraws (or ends) what b accepts: nothing is left on either side.
        act(&mut a, "friend.remove", idb).await.unwrap();
        act(&mut a, "friend.request", idb).await.unwrap();
        let answers = at_once((&mut a, ida), "friend.remove", (&mut b, idb), "friend.accept").await;
        assert_eq!(answers.0, Ok(()));
        split[0] += usize::from(answers.1.is_ok());
        let views = (state_of(&mut a, idb).await, state_of(&mut b, ida).await);
        assert_eq!(views, (None, None), "accept ∥ remove (accepted: {:?})", answers.1);

        // accept ∥ block: the block wins whatever came first.
        act(&mut a, "friend.request", idb).await.unwrap();
        let answers = at_once((&mut a, ida), "friend.block", (&mut b, idb), "friend.accept").await;
        assert_eq!(answers.0, Ok(()));
        split[1] += usize::from(answers.1.is_ok());
        let views = (state_of(&mut a, idb).await, state_of(&mut b, ida).await);
        assert_eq!(views, (Some(State::Blocked), None), "accept ∥ block (accepted: {:?})", answers.1);

        // block ∥ request of the blocked one: still blocked, and b's request never reaches a.
        let answers = at_once((&mut a, ida), "friend.unblock", (&mut b, idb), "friend.request").await;
        assert_eq!(answers.0, Ok(()));
        let views = (state_of(&mut a, idb).await, state_of(&mut b, ida).await);
        assert!(
            matches!(
                views,
                (None, Some(State::RequestSent)) | (Some(State::RequestReceived), Some(State::RequestSent))
            ),
            "unblock ∥ request: {views:?}"
        );
        split[2] += usize::from(views.0.is_some());
    }
    // Not an assertion (timing decides): how often each side of the races came first.
    println!(
        "accepted before remove {}, before block {}, request after unblock {} of {ROUNDS}",
        split[0], split[1], split[2]
    );
}

/// The blocked player never hears of the blocker's presence, nor the blocker of theirs, even
/// when the block raced an accept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_that_raced_an_accept_stops_presence_both_ways() {
    let node = node().await;
    for round in 0..5 {
        let (mut a, ida) = signed_up(&node.url(), &format!("presa{round}")).await;
        let (mut b, idb) = signed_up(&node.url(), &format!("presb{round}")).await;
        act(&mut a, "friend.request", idb).await.unwrap();
        let _ = at_once((&mut a, ida), "friend.block", (&mut b, idb), "friend.accept").await;
        // b leaves and comes back; then a does.
        b.close().await.unwrap();
        no_push(&mut a, "friend.offline", Duration::from_millis(200)).await;
        let mut b = Client::connect(&node.url()).await.unwrap();
        mortar_tests::login(&mut b, &format!("presb{round}"), &format!("presb{round}-password"))
            .await
            .unwrap();
        no_push(&mut a, "friend.online", Duration::from_millis(200)).await;
        a.close().await.unwrap();
        no_push(&mut b, "friend.offline", Duration::from_millis(200)).await;
        let mut a = Client::connect(&node.url()).await.unwrap();
        mortar_tests::login(&mut a, &format!("presa{round}"), &format!("presa{round}-password"))
            .await
            .unwrap();
        no_push(&mut b, "friend.online", Duration::from_millis(200)).await;
        assert_eq!((state_of(&mut a, idb).await, state_of(&mut b, ida).await), (Some(State::Blocked), None));
    }
}

/// Strangers' requests never stop a player asking others, and the newest requests reach them
/// (the oldest waiting one gives way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_requests_never_stop_a_player_asking_or_being_asked() {
    let node = node().await;
    let (mut vic, v) = signed_up(&node.url(), "victim").await;
    let mut strangers = Vec::new();
    for n in 0..4 {
        let (mut stranger, s) = signed_up(&node.url(), &format!("stranger{n}")).await;
        assert_eq!(act(&mut stranger, "friend.request", v).await, Ok(()), "stranger {n}");
        strangers.push((stranger, s));
    }
    // Two may wait for her (max_incoming here): the two newest.
    let ids: Vec<u64> = strangers.iter().map(|(_, s)| *s).collect();
    let waiting: Vec<(u64, Option<State>)> = {
        let mut waiting = Vec::new();
        for &s in &ids {
            waiting.push((s, state_of(&mut vic, s).await));
        }
        waiting
    };
    assert_eq!(
        waiting,
        [
            (ids[0], None),
            (ids[1], None),
            (ids[2], Some(State::RequestReceived)),
            (ids[3], Some(State::RequestReceived))
        ]
    );
    // The ones that gave way see their request gone, as she does.
    assert_eq!(state_of(&mut strangers[0].0, v).await, None);
    assert_eq!(state_of(&mut strangers[3].0, v).await, Some(State::RequestSent));
    // She still asks others (her own two requests may wait), and a friend's request reaches her.
    let (mut pal, p) = signed_up(&node.url(), "pal").await;
    let (_, q) = signed_up(&node.url(), "quill").await;
    assert_eq!(act(&mut vic, "friend.request", p).await, Ok(()));
    assert_eq!(act(&mut vic, "friend.request", q).await, Ok(()));
    assert_eq!(act(&mut pal, "friend.accept", v).await, Ok(()));
    let (_, r) = signed_up(&node.url(), "rook").await;
    assert_eq!(act(&mut vic, "friend.request", r).await, Ok(()));
    let (_, t) = signed_up(&node.url(), "tern").await;
    assert_eq!(act(&mut vic, "friend.request", t).await, Err(1002), "PENDING_LIMIT: two of hers wait");
}
