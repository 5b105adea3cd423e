//! Failed logins rate-limited per address, per account and address, and per account across
//! addresses without locking the owner out; registrations limited per address and in all; in
//! `mortar dev`, with clients on several loopback addresses (every `127.x.y.z` is one on Linux),
//! each node with small limits in its own `[modules.user]`.
#![allow(clippy::unwrap_used)]

use mortar_cli::client::Client;
use mortar_pb::ErrorCode;
use mortar_tests::{DevNode, login, register};
use mortar_user::user::{RegisterReq, RegisterResp, ResumeReq, ResumeResp};
use prost::Message;
use std::net::{IpAddr, Ipv4Addr};

/// A client connected from loopback address `127.0.A.B`.
async fn from(node: &DevNode, a: u8, b: u8) -> Client {
    Client::connect_from(&node.url(), IpAddr::V4(Ipv4Addr::new(127, 0, a, b))).await.unwrap()
}

/// Every node of this binary: cheap argon2, 3 failures per account and 6 per IP, 4 registrations
/// per address and 8 a second in all.
async fn node() -> DevNode {
    DevNode::with_config(|config| {
        let user = serde_json::json!({
            "argon2_memory_kib": 1024, "argon2_iterations": 1, "failures_per_account": 3, "failures_per_ip": 6,
            "register_per_ip": 4, "register_per_sec": 8
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_from_other_addresses_never_lock_the_owner_out() {
    let node = node().await;
    register(&mut from(&node, 0, 1).await, "vic", "password1").await.unwrap();
    // Five addresses guess wrong, more than the account's 3: each gets its answer.
    for b in 2..=6 {
        let guessed = login(&mut from(&node, 0, b).await, "vic", "guess-pass").await.map(|r| r.user_id);
        assert_eq!(guessed, Err(ErrorCode::PermissionDenied as i32), "guesser 127.0.0.{b}");
    }
    // The owner, from an address that has not been failing, logs in with the right password.
    let owner = login(&mut from(&node, 0, 20).await, "vic", "password1").await;
    assert!(owner.is_ok(), "the owner logs in: {:?}", owner.map(|r| r.user_id));
    // Guessing stays throttled: an address that failed on the account is refused it now (the
    // right password included: it cannot tell the guesser from the owner),
    for b in [2, 6] {
        let again = login(&mut from(&node, 0, b).await, "vic", "password1").await.map(|r| r.user_id);
        assert_eq!(again, Err(ErrorCode::RateLimited as i32), "guesser 127.0.0.{b} again");
    }
    // and a new address gets one guess at it.
    let mut fresh = from(&node, 0, 7).await;
    let first = login(&mut fresh, "vic", "guess-two").await.map(|r| r.user_id);
    assert_eq!(first, Err(ErrorCode::PermissionDenied as i32));
    let second = login(&mut fresh, "vic", "guess-three").await.map(|r| r.user_id);
    assert_eq!(second, Err(ErrorCode::RateLimited as i32));
    // The owner's address is still fine, also after a login again.
    assert!(login(&mut from(&node, 0, 20).await, "vic", "password1").await.is_ok());
}

async fn register_from(client: &mut Client, account: &str) -> Result<u64, (i32, String)> {
    let req = RegisterReq { account: account.into(), password: "password1".into() };
    let reply = client.request("user", "register", req.encode_to_vec().into(), |_| {}).await.unwrap();
    match reply.code {
        0 => Ok(RegisterResp::decode(reply.data).unwrap().user_id),
        code => Err((code, reply.reason)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_are_limited_per_address() {
    let node = node().await;
    let mut client = from(&node, 1, 1).await;
    for n in 0..4 {
        register_from(&mut client, &format!("many_{n}")).await.unwrap();
    }
    let (code, reason) = register_from(&mut client, "many_4").await.unwrap_err();
    assert_eq!(code, ErrorCode::RateLimited as i32);
    assert!(reason.contains("4 registrations from your address"), "{reason}");
    // A bad request is refused for what it is, and another address is not limited by this one.
    assert_eq!(register_from(&mut client, "X").await.unwrap_err().0, ErrorCode::BadRequest as i32);
    register_from(&mut from(&node, 1, 2).await, "many_4").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_are_limited_in_all() {
    let node = node().await;
    // Twelve addresses at once, each within its own limit: 8 a second in all get through.
    let mut tasks = tokio::task::JoinSet::new();
    for b in 1..=12u8 {
        let url = node.url();
        tasks.spawn(async move {
            let mut client =
                Client::connect_from(&url, IpAddr::V4(Ipv4Addr::new(127, 0, 2, b))).await.unwrap();
            register_from(&mut client, &format!("all_{b}")).await
        });
    }
    let mut refused = Vec::new();
    while let Some(done) = tasks.join_next().await {
        if let Err(refusal) = done.unwrap() {
            refused.push(refusal);
        }
    }
    assert!(!refused.is_empty(), "some of 12 registrations at once are refused");
    for (code, reason) in refused {
        assert_eq!(code, ErrorCode::RateLimited as i32);
        assert!(reason.contains("8 registrations per second"), "{reason}");
    }
}

/// An address past its own registration limit no longer counts against everyone's: 24 attempts
/// from one address at once (3× the 8 a second of everyone) leave room for a newcomer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_past_its_limit_does_not_use_up_everyones() {
    let node = node().await;
    let mut flood = Vec::new();
    for _ in 0..24 {
        flood.push(from(&node, 9, 1).await);
    }
    let attempts = flood.iter_mut().enumerate().map(|(n, client)| async move {
        let req = RegisterReq { account: format!("flood_{n}"), password: "password1".into() };
        call::<_, RegisterResp>(client, "user.register", req).await.err()
    });
    let refused = futures::future::join_all(attempts).await;
    let limited = refused.iter().filter(|code| **code == Some(ErrorCode::RateLimited as i32)).count();
    assert_eq!(limited, 20, "4 from the address, then its own limit: {refused:?}");
    let mut newcomer = from(&node, 9, 2).await;
    assert!(register(&mut newcomer, "newcomer", "password1").await.is_ok(), "everyone's share is left");
}
