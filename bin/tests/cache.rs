//! The cache's conformance suite against a real Redis server started by the test (the memory
//! backend runs the same suite in the host's unit tests).
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod support;

use mortar_backends::cache::{conformance, redis::RedisCache};
use std::{sync::Arc, time::Duration};
use support::Redis;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cache_conforms() {
    let redis = Redis::start();
    let cache = RedisCache::connect(&redis.url(), "conformance", Duration::from_secs(1)).await.unwrap();
    conformance::run(Arc::new(cache)).await;
    // The keys live where docs/storage.md says, under the cluster's and the module's names.
    assert_eq!(redis.command("EXISTS mortar:conformance:cache:conformance_a:hits").as_deref(), Some(":1"));
}

#[tokio::test]
async fn an_unreachable_redis_cache_is_a_clear_error_at_start() {
    let port = support::free_port();
    let error = RedisCache::connect(&format!("redis://127.0.0.1:{port}"), "x", Duration::from_millis(300))
        .await
        .err()
        .expect("nothing listens there");
    assert!(error.to_string().contains(&port.to_string()), "{error}");
}
