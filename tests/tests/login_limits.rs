//! Failed logins rate-limited per account and per client IP, in `mortar dev`. Its own test
//! binary: a module's config (here `[modules.user]` with small limits) is one per process.
#![allow(clippy::unwrap_used)]

use mortar_cli::client::Client;
use mortar_pb::ErrorCode;
use mortar_tests::{DevNode, login, register};
use mortar_user::user::{ResumeReq, ResumeResp};
use prost::Message;

/// Every node of this binary: cheap argon2, 3 failures per account and 6 per IP.
async fn node() -> DevNode {
    DevNode::with_config(|config| {
        let user = serde_json::json!({
            "argon2_memory_kib": 1024, "argon2_iterations": 1, "failures_per_account": 3, "failures_per_ip": 6
        });
        config.modules.insert("user".into(), user);
    })
    .await
}

async fn call<Req: Message, Resp: Message + Default>(
    client: &mut Client,
    route: &str,
    req: Req,
) -> Result<Resp, i32> {
    client.call(route, &req).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_of_an_account_are_rate_limited() {
    let node = node().await;
    let mut client = Client::connect(&node.url()).await.unwrap();
    register(&mut client, "bo_b", "password1").await.unwrap();
    for _ in 0..3 {
        assert_eq!(
            login(&mut client, "bo_b", "wrong-pass").await.map(|r| r.user_id),
            Err(ErrorCode::PermissionDenied as i32)
        );
    }
    // The right password too, until the window passes.
    assert_eq!(
        login(&mut client, "bo_b", "password1").await.map(|r| r.user_id),
        Err(ErrorCode::RateLimited as i32)
    );
    // Another account from the same IP is not limited by it.
    register(&mut client, "cyd", "password1").await.unwrap();
    assert!(login(&mut client, "cyd", "password1").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_from_one_ip_are_rate_limited_across_accounts() {
    let node = node().await;
    let mut client = Client::connect(&node.url()).await.unwrap();
    register(&mut client, "dee", "password1").await.unwrap();
    for account in ["nobody_1", "nobody_2", "nobody_3", "nobody_4", "nobody_5", "nobody_6"] {
        let denied = login(&mut client, account, "password1").await.map(|r| r.user_id);
        assert_eq!(denied, Err(ErrorCode::PermissionDenied as i32));
    }
    let limited = login(&mut client, "dee", "password1").await.map(|r| r.user_id);
    assert_eq!(limited, Err(ErrorCode::RateLimited as i32), "this IP failed too often");
    let resume = call::<_, ResumeResp>(&mut client, "user.resume", ResumeReq { token: "1.x".into() }).await;
    assert_eq!(resume.map(|r| r.user_id), Err(ErrorCode::RateLimited as i32), "resumes too");
}
