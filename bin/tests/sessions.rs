//! The session store's conformance suite against a real Redis server started by the test (the
//! memory backend runs the same suite in the host's unit tests).
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod support;

use mortar_host::session::{Location, SessionStore as _, conformance, redis::RedisSessions};
use std::{sync::Arc, time::Duration};
use support::Redis;

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
