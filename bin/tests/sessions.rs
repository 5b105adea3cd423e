//! The session store's conformance suite against a real Redis server started by the test (the
//! memory backend runs the same suite in the host's unit tests).
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod support;

use mortar_cli::client::{Client, ClientError};
use mortar_host::session::{Location, SessionStore as _, conformance, redis::RedisSessions};
use mortar_pb::{ErrorCode, Kick, UserMessage};
use prost::Message as _;
use std::{sync::Arc, time::Duration};
use support::{Redis, TempDir, library};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sessions_conform() {
    let redis = Redis::start();
    let store = RedisSessions::connect(&redis.url(), "conformance", Duration::from_secs(1)).await.unwrap();
    conformance::run(Arc::new(store.clone())).await;
    // The keys live where the module docs say, under the cluster's name.
    let at = Location { gateway: "gw-1".into(), session: u64::MAX, login_at_ms: 1 };
    store.bind(5, at.clone()).await.unwrap();
    assert_eq!(redis.command("EXISTS mortar:conformance:session:user:5").as_deref(), Some(":1"));
    assert_eq!(redis.command("SISMEMBER mortar:conformance:session:gateway:gw-1 5").as_deref(), Some(":1"));
    assert_eq!(store.locate(vec![5]).await.unwrap(), [Some(at)], "u64 session ids survive Lua");
}

#[tokio::test]
async fn an_unreachable_redis_session_store_is_a_clear_error_at_start() {
    let port = support::free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let error = RedisSessions::connect(&url, "x", Duration::from_millis(300))
        .await
        .err()
        .expect("nothing listens there");
    assert!(error.to_string().contains(&port.to_string()), "{error}");
}

/// `dyntest.Text` and the echo messages encode alike: field 1, a string.
fn text(text: &str) -> bytes::Bytes {
    mortar_echo::echo::EchoReq { text: text.into() }.encode_to_vec().into()
}

fn text_of(msg: &UserMessage) -> String {
    mortar_echo::echo::EchoResp::decode(msg.data.clone()).unwrap().text
}

async fn login(url: &str, user: u64) -> Client {
    let mut client = Client::connect(url).await.unwrap();
    let reply = client.request("dyntest", "login", text(&user.to_string()), |_| {}).await.unwrap();
    assert_eq!((reply.code, text_of(&reply)), (0, format!("logged in as {user}")));
    client
}

/// The next push `client` receives within 5 s.
async fn next_push(client: &mut Client) -> UserMessage {
    tokio::time::timeout(Duration::from_secs(5), client.next()).await.expect("a push in time").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_on_two_gateways_push_to_each_other_and_a_second_login_kicks_the_first() {
    let redis = Redis::start();
    let dir = TempDir::new("sessions");
    let url = redis.url();
    let modules = format!("[{:?}]", library().to_str().unwrap());
    let env = [
        ("MORTAR_REGISTRY__URL", url.as_str()),
        ("MORTAR_SESSION__URL", url.as_str()),
        ("MORTAR_REGISTRY__TTL_MS", "1000"),
        ("MORTAR_REGISTRY__HEARTBEAT_MS", "200"),
    ];
    let worker_env: Vec<_> =
        env.iter().copied().chain([("MORTAR_WORKER__DYNAMIC_MODULES", modules.as_str())]).collect();
    let _worker = support::worker(&dir, "worker-1", "127.0.0.1:0", "", &worker_env);
    let gw1 = support::gateway(&dir, "gateway-1", "", &env);
    let mut gw2 = support::gateway(&dir, "gateway-2", "", &env);
    for gateway in [&gw1, &gw2] {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while gateway.admin_get("/readyz").0 != 200 {
            assert!(std::time::Instant::now() < deadline, "{} never had a worker", gateway.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    let mut alice = login(&gw1.addr, 1).await;
    let mut bob = login(&gw2.addr, 2).await;
    let mut carol = login(&gw1.addr, 3).await;
    let reply = alice.request("dyntest", "push", text("2,3,9"), |_| {}).await.unwrap();
    assert_eq!((reply.code, text_of(&reply)), (0, "delivered=2 offline=[9]".to_owned()));
    for client in [&mut bob, &mut carol] {
        let push = next_push(client).await;
        assert_eq!((push.main_type.as_str(), push.sub_type.as_str(), push.seq), ("dyntest", "note", 0));
        assert_eq!(text_of(&push), "from 1");
    }
    // One push batch per gateway: each received exactly one.
    for gateway in [&gw1, &gw2] {
        let (_, metrics) = gateway.admin_get("/metrics");
        assert!(
            metrics.contains("mortar_gateway_pushes_total{route=\"dyntest.note\"} 1"),
            "{}: {metrics}",
            gateway.name
        );
    }

    // Alice logs in again through the other gateway: her first session is kicked.
    let _alice_again = login(&gw2.addr, 1).await;
    let kick = next_push(&mut alice).await;
    assert_eq!((kick.main_type.as_str(), kick.sub_type.as_str()), ("sys", "kick"));
    assert_eq!(Kick::decode(kick.data).unwrap().reason, ErrorCode::LoggedInElsewhere as i32);
    match tokio::time::timeout(Duration::from_secs(5), alice.next()).await.unwrap() {
        Err(ClientError::Closed(Some(close))) => assert!(close.starts_with("1008"), "{close}"),
        other => panic!("expected the close, got {other:?}"),
    }

    // Gateway 2 dies: once its registry entry expires its players' logins are gone, and they log
    // in again through gateway 1 at once.
    gw2.signal("KILL");
    let _ = gw2.wait_exit(Duration::from_secs(5));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reply = carol.request("dyntest", "push", text("2"), |_| {}).await.unwrap();
        if text_of(&reply) == "delivered=0 offline=[2]" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gateway-2's players stayed logged in: {}",
            text_of(&reply)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut bob_again = login(&gw1.addr, 2).await;
    let reply = carol.request("dyntest", "push", text("2"), |_| {}).await.unwrap();
    assert_eq!(text_of(&reply), "delivered=1 offline=[]");
    assert_eq!(text_of(&next_push(&mut bob_again).await), "from 3");
}
