//! The mail, friend and group modules across a cluster of processes: two gateways and two
//! workers sharing MongoDB (nx-27017) and Redis, players on both gateways; a mail worker
//! killed with `kill -9` while its claim waits on the pack, which grants once after the retry;
//! and two players' friend routes, and a join and the last leave of a group, racing on two
//! workers.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod support;

use mortar_cli::client::Client;
use mortar_friend::friend::{self, Target};
use mortar_group::group::{CreateReq, CreateResp, GroupReq, KickReq, MineReq, MineResp, Said, SayReq};
use mortar_mail::mail::{ClaimReq, ClaimResp, ListReq, ListResp, New};
use mortar_pack::pack::{Item, QueryReq, QueryResp};
use mortar_pb::ErrorCode;
use mortar_user::user::{LoginReq, LoginResp, RegisterReq, RegisterResp};
use prost::Message;
use serde_json::{Value, json};
use std::{net::SocketAddr, time::Duration};
use support::{Mongo, Redis, TempDir, call, push_of, wait_live};

const TOKEN: &str = "cluster-gm-token";

async fn register(url: &str, account: &str) -> u64 {
    let mut client = Client::connect(url).await.unwrap();
    let req = RegisterReq { account: account.into(), password: format!("{account}-password") };
    call::<_, RegisterResp>(&mut client, "user.register", req).await.unwrap().user_id
}

async fn login(url: &str, account: &str) -> Client {
    let mut client = Client::connect(url).await.unwrap();
    let req = LoginReq { account: account.into(), password: format!("{account}-password") };
    call::<_, LoginResp>(&mut client, "user.login", req).await.unwrap();
    client
}

async fn signed_up(url: &str, account: &str) -> (Client, u64) {
    let user = register(url, account).await;
    (login(url, account).await, user)
}

/// Reads for `wait` and fails on a push of `route`.
async fn no_push(client: &mut Client, route: &str, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(msg) = tokio::time::timeout_at(deadline, client.next()).await {
        let msg = msg.unwrap();
        assert!(!(msg.seq == 0 && format!("{}.{}", msg.main_type, msg.sub_type) == route), "a {route} push");
    }
}

/// `group.say` of `text` from `client`, answered OK: the `group.message` pushes that arrived
/// before the reply (at most the sender's own copy).
async fn say(client: &mut Client, group_id: u64, text: &str) -> Vec<Said> {
    let mut kept = Vec::new();
    let body = SayReq { group_id, text: text.into() }.encode_to_vec().into();
    let reply = tokio::time::timeout(
        Duration::from_secs(15),
        client.request("group", "say", body, |push| {
            if (push.main_type.as_str(), push.sub_type.as_str()) == ("group", "message") {
                kept.push(Said::decode(push.data).unwrap());
            }
        }),
    )
    .await
    .expect("a reply in time")
    .unwrap();
    assert_eq!(reply.code, 0);
    assert!(kept.len() <= 1);
    kept
}

/// `mail.send` through the admin API at `admin`: the mail ids.
fn send_mail(admin: SocketAddr, to: &[u64], attachments: Value) -> Vec<u64> {
    let to: Vec<String> = to.iter().map(u64::to_string).collect();
    let body = json!({ "toUsers": to, "title": "Gift", "body": "from the team", "attachments": attachments });
    let (status, reply) =
        support::http_request(admin, "POST", "/v1/call/mail.send", Some(TOKEN), &body.to_string());
    let reply: Value = serde_json::from_str(&reply).unwrap();
    assert_eq!((status, &reply["code"]), (200, &json!(0)), "{reply}");
    reply["data"]["mailIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().parse().unwrap())
        .collect()
}

async fn count(client: &mut Client, item: u32) -> u32 {
    let items: Vec<Item> = call::<_, QueryResp>(client, "pack.query", QueryReq {}).await.unwrap().items;
    items.iter().find(|i| i.item_id == item).map_or(0, |i| i.count)
}

/// The shared servers' addresses and the test settings, as environment variables.
fn cluster_env(redis: &Redis, mongo: &Mongo) -> Vec<(&'static str, String)> {
    vec![
        ("MORTAR_REGISTRY__URL", redis.url()),
        ("MORTAR_SESSION__URL", redis.url()),
        ("MORTAR_CACHE__URL", redis.url()),
        ("MORTAR_STORAGE__URL", mongo.url("game")),
        ("MORTAR_ADMIN__TOKEN", TOKEN.into()),
        ("MORTAR_GATEWAY__SESSION_CONCURRENCY", "4".into()),
        ("MORTAR_MODULES__USER__ARGON2_MEMORY_KIB", "1024".into()),
        ("MORTAR_MODULES__USER__ARGON2_ITERATIONS", "1".into()),
        // The races register hundreds of players from one address.
        ("MORTAR_MODULES__USER__REGISTER_PER_IP", "0".into()),
        ("MORTAR_MODULES__USER__REGISTER_PER_SEC", "0".into()),
    ]
}

fn borrowed<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(key, value)| (*key, value.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_friends_and_groups_across_two_gateways_on_mongodb() {
    let (redis, mongo, dir) = (Redis::start(), Mongo::start(), TempDir::new("social"));
    let env = cluster_env(&redis, &mongo);
    let env = borrowed(&env);
    let workers = [
        support::worker(&dir, "worker-1", "127.0.0.1:0", "", &env),
        support::worker(&dir, "worker-2", "127.0.0.1:0", "", &env),
    ];
    let gateways =
        [support::gateway(&dir, "gateway-1", "", &env), support::gateway(&dir, "gateway-2", "", &env)];
    gateways.iter().for_each(|gateway| wait_live(gateway, 2));
    let (url1, url2) = (gateways[0].addr.clone(), gateways[1].addr.clone());
    let admin = workers[0].admin.unwrap();

    // The admin API needs its token.
    let body = json!({ "toUsers": ["1"], "title": "x" }).to_string();
    for token in [None, Some("wrong")] {
        assert_eq!(support::http_request(admin, "POST", "/v1/call/mail.send", token, &body).0, 401);
    }

    // Mail to a player who is offline is there at their login; one online gets mail.new.
    let (mut ana, a) = signed_up(&url1, "ana").await;
    let eve = register(&url2, "eve").await;
    let ids = send_mail(admin, &[a, eve], json!([{ "itemId": 100, "count": 3 }]));
    let new = New::decode(push_of(&mut ana, "mail.new").await.data).unwrap();
    assert_eq!(new.mail_id, ids[0]);
    let mut eve_client = login(&url2, "eve").await;
    let listed: ListResp = call(&mut eve_client, "mail.list", ListReq {}).await.unwrap();
    assert_eq!(listed.mails.iter().map(|mail| mail.mail_id).collect::<Vec<_>>(), [ids[1]]);

    // Ana claims from two sessions at once: four claims in flight on gateway 1, then a login on
    // gateway 2 (which kicks the first session) claims twice more. The items arrive once.
    let before = count(&mut ana, 100).await;
    let claim = ClaimReq { mail_id: ids[0] }.encode_to_vec();
    for _ in 0..4 {
        ana.send("mail", "claim", claim.clone().into()).await.unwrap();
    }
    let mut second = login(&url2, "ana").await;
    let mut granted = 0;
    for _ in 0..2 {
        match call::<_, ClaimResp>(&mut second, "mail.claim", ClaimReq { mail_id: ids[0] }).await {
            Ok(resp) => {
                granted += 1;
                assert_eq!(resp.items.len(), 1);
            }
            Err(code) => assert_eq!(code, ErrorCode::AlreadyExists as i32),
        }
    }
    // The first session's replies, those that came before its kick.
    while let Ok(Ok(reply)) = tokio::time::timeout(Duration::from_secs(2), ana.next()).await {
        if reply.main_type == "mail" && reply.sub_type == "claim" {
            assert!(reply.code == 0 || reply.code == ErrorCode::AlreadyExists as i32, "{}", reply.code);
            granted += u32::from(reply.code == 0);
        }
    }
    assert!(granted <= 1, "{granted} claims answered with the items");
    assert_eq!(count(&mut second, 100).await, before + 3, "the attachments, once");
    let mut ana = second;

    // Friends across gateways: request, accept, presence.
    let (mut ben, b) = signed_up(&url2, "ben").await;
    let _: friend::Request = call(&mut ana, "friend.request", Target { user_id: b }).await.unwrap();
    let asked = friend::Request::decode(push_of(&mut ben, "friend.request").await.data).unwrap();
    assert_eq!(asked.user_id, a);
    assert!(asked.name.starts_with("Player"), "a default display name, not the account: {}", asked.name);
    let _: friend::Done = call(&mut ben, "friend.accept", Target { user_id: a }).await.unwrap();
    let accepted = friend::Accepted::decode(push_of(&mut ana, "friend.accepted").await.data).unwrap();
    assert_eq!(accepted.user_id, b);
    assert!(accepted.name.starts_with("Player"), "{}", accepted.name);
    let listed: friend::ListResp = call(&mut ana, "friend.list", friend::ListReq {}).await.unwrap();
    assert_eq!(listed.friends.len(), 1);
    assert_eq!((listed.friends[0].state, listed.friends[0].online), (friend::State::Friend as i32, true));
    ben.close().await.unwrap();
    assert_eq!(friend::Presence::decode(push_of(&mut ana, "friend.offline").await.data).unwrap().user_id, b);
    let mut ben = login(&url2, "ben").await;
    assert_eq!(friend::Presence::decode(push_of(&mut ana, "friend.online").await.data).unwrap().user_id, b);

    // A block across gateways stops requests.
    let (mut cy, c) = signed_up(&url1, "cyra").await;
    let (mut dee, d) = signed_up(&url2, "dee").await;
    let _: friend::Done = call(&mut cy, "friend.block", Target { user_id: d }).await.unwrap();
    let _: friend::Request = call(&mut dee, "friend.request", Target { user_id: c }).await.unwrap();
    no_push(&mut cy, "friend.request", Duration::from_millis(500)).await;

    // A group with members on both gateways: each hears a message once, Eve (outside) never.
    let created: CreateResp =
        call(&mut ana, "group.create", CreateReq { name: "Raid".into() }).await.unwrap();
    let group = created.group_id;
    for member in [&mut ben, &mut cy, &mut dee] {
        let _: mortar_group::group::Done =
            call(member, "group.join", GroupReq { group_id: group }).await.unwrap();
    }
    // The sender's own copy may come before the reply.
    let mut kept = say(&mut ben, group, "go").await;
    for member in [&mut ben, &mut ana, &mut cy, &mut dee] {
        let said = match kept.pop() {
            Some(said) => said,
            None => Said::decode(push_of(member, "group.message").await.data).unwrap(),
        };
        assert_eq!((said.from, said.name.as_str(), said.text.as_str()), (b, accepted.name.as_str(), "go"));
        no_push(member, "group.message", Duration::from_millis(300)).await;
    }
    no_push(&mut eve_client, "group.message", Duration::from_millis(300)).await;
    // Dee's messages skip Cy, who blocks Dee.
    say(&mut dee, group, "hi").await;
    assert_eq!(Said::decode(push_of(&mut ana, "group.message").await.data).unwrap().from, d);
    no_push(&mut cy, "group.message", Duration::from_millis(300)).await;
    // Leave and kick stop delivery.
    let _: mortar_group::group::Done =
        call(&mut ben, "group.leave", GroupReq { group_id: group }).await.unwrap();
    let _: mortar_group::group::Done =
        call(&mut ana, "group.kick", KickReq { group_id: group, user_id: d }).await.unwrap();
    let mut kept = say(&mut cy, group, "left?").await;
    for member in [&mut cy, &mut ana] {
        let said = match kept.pop() {
            Some(said) => said,
            None => Said::decode(push_of(member, "group.message").await.data).unwrap(),
        };
        assert_eq!(said.text, "left?");
    }
    for gone in [&mut ben, &mut dee] {
        no_push(gone, "group.message", Duration::from_millis(300)).await;
    }
    drop((workers, gateways));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_worker_killed_between_claim_and_grant_grants_once_after_the_retry() {
    let (redis, mongo, dir) = (Redis::start(), Mongo::start(), TempDir::new("social-kill"));
    let env = cluster_env(&redis, &mongo);
    let env = borrowed(&env);
    // Mail on one worker, the pack (and accounts) on the other.
    let mail_only = "[worker]\nmodules = [\"mail\"]\n";
    let mail = support::worker(&dir, "worker-mail", "127.0.0.1:0", mail_only, &env);
    let pack = support::worker(
        &dir,
        "worker-pack",
        "127.0.0.1:0",
        "[worker]\nmodules = [\"pack\", \"user\"]\n",
        &env,
    );
    let gateway = support::gateway(&dir, "gateway-1", "", &env);
    wait_live(&gateway, 2);
    let url = gateway.addr.clone();
    let (mut ana, a) = signed_up(&url, "ana").await;
    let before = count(&mut ana, 100).await;
    let mail_id = send_mail(pack.admin.unwrap(), &[a], json!([{ "itemId": 100, "count": 4 }]))[0];

    // The claim reaches the pack worker while it is stopped; the mail worker dies waiting for it.
    pack.signal("STOP");
    ana.send("mail", "claim", ClaimReq { mail_id }.encode_to_vec().into()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    mail.signal("KILL");
    drop(mail);
    pack.signal("CONT");
    let reply = loop {
        let msg = tokio::time::timeout(Duration::from_secs(15), ana.next()).await.unwrap().unwrap();
        if msg.seq != 0 {
            break msg; // not mail.new
        }
    };
    assert!(
        [ErrorCode::Unavailable as i32, ErrorCode::Timeout as i32].contains(&reply.code),
        "the claim in flight failed: {}",
        reply.code
    );

    // A new mail worker; the retry finds the grant done or does it, once.
    let _mail = support::worker(&dir, "worker-mail-2", "127.0.0.1:0", mail_only, &env);
    wait_live(&gateway, 2);
    let retried = loop {
        match call::<_, ClaimResp>(&mut ana, "mail.claim", ClaimReq { mail_id }).await {
            Err(code) if code == ErrorCode::Unavailable as i32 => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => break other,
        }
    };
    assert!(
        retried.as_ref().is_ok_and(|resp| resp.items.len() == 1)
            || retried == Err(ErrorCode::AlreadyExists as i32),
        "{retried:?}"
    );
    assert_eq!(
        call::<_, ClaimResp>(&mut ana, "mail.claim", ClaimReq { mail_id }).await,
        Err(ErrorCode::AlreadyExists as i32)
    );
    assert_eq!(count(&mut ana, 100).await, before + 4, "the attachments, once");
    let listed: ListResp = call(&mut ana, "mail.list", ListReq {}).await.unwrap();
    assert!(listed.mails[0].claimed);
    drop((pack, gateway));
}

/// Two workers and two gateways on MongoDB and Redis: `(workers, gateways)`.
fn two_by_two(dir: &TempDir, env: &[(&str, &str)]) -> (Vec<support::Node>, Vec<support::Node>) {
    let workers = vec![
        support::worker(dir, "worker-1", "127.0.0.1:0", "", env),
        support::worker(dir, "worker-2", "127.0.0.1:0", "", env),
    ];
    let gateways =
        vec![support::gateway(dir, "gateway-1", "", env), support::gateway(dir, "gateway-2", "", env)];
    gateways.iter().for_each(|gateway| wait_live(gateway, 2));
    (workers, gateways)
}

/// How `client` sees `other`: the state on its friend list, none when `other` is not on it.
async fn state_of(client: &mut Client, other: u64) -> Option<friend::State> {
    let listed: friend::ListResp = call(client, "friend.list", friend::ListReq {}).await.unwrap();
    let found: Vec<_> = listed.friends.iter().filter(|entry| entry.user_id == other).collect();
    assert!(found.len() <= 1, "{other} is on the list once");
    found.first().map(|entry| friend::State::try_from(entry.state).unwrap())
}

/// `route` of `client` against `other`: OK, or the code.
async fn act(client: &mut Client, route: &str, other: u64) -> Result<(), i32> {
    let target = Target { user_id: other };
    if route == "friend.request" {
        return call::<_, friend::Request>(client, route, target).await.map(drop);
    }
    call::<_, friend::Done>(client, route, target).await.map(drop)
}

/// Two players' friend routes raced, round after round, each player on their own gateway (so
/// their requests run on either worker): the two lists always agree afterwards, mutual requests
/// make friends, and a block always wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_friend_routes_on_two_workers_leave_lists_that_agree() {
    use friend::State::{Blocked, Friend};
    let (redis, mongo, dir) = (Redis::start(), Mongo::start(), TempDir::new("social-friend-race"));
    let env = cluster_env(&redis, &mongo);
    let env = borrowed(&env);
    let (workers, gateways) = two_by_two(&dir, &env);
    let (url1, url2) = (gateways[0].addr.clone(), gateways[1].addr.clone());
    const PAIRS: usize = 12;
    for pair in 0..PAIRS {
        let (mut a, ida) = signed_up(&url1, &format!("racea{pair}")).await;
        let (mut b, idb) = signed_up(&url2, &format!("raceb{pair}")).await;
        for _ in 0..2 {
            let answers =
                futures::join!(act(&mut a, "friend.request", idb), act(&mut b, "friend.request", ida));
            assert_eq!(answers, (Ok(()), Ok(())));
            let views = (state_of(&mut a, idb).await, state_of(&mut b, ida).await);
            assert_eq!(views, (Some(Friend), Some(Friend)), "request ∥ request");

            act(&mut a, "friend.remove", idb).await.unwrap();
            act(&mut a, "friend.request", idb).await.unwrap();
            let answers =
                futures::join!(act(&mut a, "friend.remove", idb), act(&mut b, "friend.accept", ida));
            assert_eq!(answers.0, Ok(()));
            let views = (state_of(&mut a, idb).await, state_of(&mut b, ida).await);
            assert_eq!(views, (None, None), "accept ∥ remove (accepted: {:?})", answers.1);

            act(&mut a, "friend.request", idb).await.unwrap();
            let answers = futures::join!(act(&mut a, "friend.block", idb), act(&mut b, "friend.accept", ida));
            assert_eq!(answers.0, Ok(()));
            let views = (state_of(&mut a, idb).await, state_of(&mut b, ida).await);
            assert_eq!(views, (Some(Blocked), None), "accept ∥ block (accepted: {:?})", answers.1);
            // Neither hears of the other's presence.
            b.close().await.unwrap();
            no_push(&mut a, "friend.offline", Duration::from_millis(100)).await;
            b = login(&url2, &format!("raceb{pair}")).await;
            no_push(&mut a, "friend.online", Duration::from_millis(100)).await;
            act(&mut a, "friend.unblock", idb).await.unwrap();
        }
    }
    drop((workers, gateways));
}

/// A join racing the last member's leave, the two on different gateways and workers: the joiner
/// is in the group, or the group is gone and not on the joiner's list; no slot of
/// `max_groups_per_user` is ever lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_racing_the_last_leave_on_two_workers_never_burns_a_slot() {
    let (redis, mongo, dir) = (Redis::start(), Mongo::start(), TempDir::new("social-group-race"));
    let env = cluster_env(&redis, &mongo);
    let mut env = borrowed(&env);
    env.push(("MORTAR_MODULES__GROUP__MAX_GROUPS_PER_USER", "2"));
    let (workers, gateways) = two_by_two(&dir, &env);
    let (mut owner, _) = signed_up(&gateways[0].addr, "lastone").await;
    let (mut joiner, _) = signed_up(&gateways[1].addr, "joiner").await;
    for round in 0..24 {
        let created: CreateResp =
            call(&mut owner, "group.create", CreateReq { name: "Brief".into() }).await.unwrap();
        let group = created.group_id;
        let (join, leave) = futures::join!(
            call::<_, mortar_group::group::Done>(&mut joiner, "group.join", GroupReq { group_id: group }),
            call::<_, mortar_group::group::Done>(&mut owner, "group.leave", GroupReq { group_id: group }),
        );
        leave.unwrap();
        let mine: MineResp = call(&mut joiner, "group.mine", MineReq {}).await.unwrap();
        let listed: Vec<u64> = mine.groups.iter().map(|joined| joined.group_id).collect();
        match join {
            Ok(_) => {
                assert_eq!(listed, [group], "round {round}");
                let left: Result<mortar_group::group::Done, i32> =
                    call(&mut joiner, "group.leave", GroupReq { group_id: group }).await;
                left.unwrap();
            }
            Err(code) => {
                assert_eq!(code, ErrorCode::NotFound as i32, "round {round}");
                assert!(listed.is_empty(), "round {round}");
            }
        }
        // Both of the joiner's slots are free.
        let mut made = Vec::new();
        for name in ["one", "two"] {
            let created: Result<CreateResp, i32> =
                call(&mut joiner, "group.create", CreateReq { name: name.into() }).await;
            made.push(
                created.unwrap_or_else(|code| panic!("round {round}: create answered {code}")).group_id,
            );
        }
        for group_id in made {
            let _: mortar_group::group::Done =
                call(&mut joiner, "group.leave", GroupReq { group_id }).await.unwrap();
        }
    }
    drop((workers, gateways));
}
