//! Password hashing in a real `mortar dev` process, with the user module's default argon2
//! parameters (19 MiB, 2 passes): a register flood does not queue logins behind it, its excess is
//! refused at once; and the process's memory after many logins stays bounded by the hashes that
//! run at once.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod support;

use mortar_cli::client::Client;
use mortar_pb::ErrorCode;
use mortar_user::user::{LoginReq, LoginResp, RegisterReq, RegisterResp};
use prost::Message as _;
use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};
use support::{Node, TempDir, call};

fn dev(dir: &TempDir, env: &[(&str, &str)]) -> Node {
    let mut all = vec![("MORTAR_ADMIN__ENABLED", "false"), ("MORTAR_GATEWAY__RATE_PER_SEC", "0")];
    all.extend_from_slice(env);
    Node::start("dev", dir, &["dev", "--listen", "127.0.0.1:0", "--data", "data"], &all)
}

fn credentials(account: &str) -> (String, String) {
    (account.to_owned(), format!("{account}-password"))
}

async fn register(url: &str, account: &str) -> u64 {
    let mut client = Client::connect(url).await.unwrap();
    let (account, password) = credentials(account);
    call::<_, RegisterResp>(&mut client, "user.register", RegisterReq { account, password })
        .await
        .unwrap()
        .user_id
}

async fn login(client: &mut Client, account: &str) -> Result<LoginResp, i32> {
    let (account, password) = credentials(account);
    call(client, "user.login", LoginReq { account, password }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_flood_neither_queues_logins_behind_it_nor_waits_for_its_deadline() {
    let dir = TempDir::new("register-flood");
    // The limits per address and in all off: this is the hashing queue alone.
    let env = [
        ("MORTAR_MODULES__USER__REGISTER_PER_IP", "0"),
        ("MORTAR_MODULES__USER__REGISTER_PER_SEC", "0"),
        ("MORTAR_MODULES__USER__HASH_SLOTS", "2"),
        ("MORTAR_MODULES__USER__REGISTER_QUEUE", "100"),
    ];
    let node = dev(&dir, &env);
    let url = node.addr.clone();
    register(&url, "real_player").await;
    let mut player = Client::connect(&url).await.unwrap();

    // 120 connections send a registration each, all at once: one hashes (registrations get half
    // the slots), 100 wait, 19 are refused at once.
    let (ok, refused, other) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let reasons = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for n in 0..120 {
        clients.push((n, Client::connect(&url).await.unwrap()));
    }
    let mut flood = tokio::task::JoinSet::new();
    let sent = Arc::new(tokio::sync::Barrier::new(clients.len() + 1));
    for (n, mut client) in clients {
        let (ok, refused, other, reasons, sent) =
            (ok.clone(), refused.clone(), other.clone(), reasons.clone(), sent.clone());
        flood.spawn(async move {
            let (account, password) = credentials(&format!("flood_{n}"));
            let body = RegisterReq { account, password }.encode_to_vec();
            let seq = client.send("user", "register", body.into()).await.unwrap();
            sent.wait().await;
            let reply = loop {
                let msg = client.next().await.unwrap();
                if msg.seq == seq {
                    break msg;
                }
            };
            match reply.code {
                0 => ok.fetch_add(1, Ordering::SeqCst),
                code if code == ErrorCode::RateLimited as i32 => {
                    reasons.lock().unwrap().push(reply.reason);
                    refused.fetch_add(1, Ordering::SeqCst)
                }
                _ => other.fetch_add(1, Ordering::SeqCst),
            };
        });
    }
    sent.wait().await;
    // Once the flood is queued (the first registrations came back), the player logs in: the
    // registrations that finish meanwhile are the one hashing and replies on their way, not the
    // queue of up to 100 (a single queue for all had it wait for about 100).
    while ok.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let before = ok.load(Ordering::SeqCst);
    let logged_in = login(&mut player, "real_player").await;
    let during = ok.load(Ordering::SeqCst) - before;
    eprintln!("registrations finished while the login waited: {during}");
    assert!(logged_in.is_ok(), "the player logs in during the flood: {:?}", logged_in.map(|r| r.user_id));
    assert!(
        during <= 10,
        "{during} registrations finished while the login waited: it was queued behind them"
    );

    while flood.join_next().await.is_some() {}
    let (ok, refused, other) =
        (ok.load(Ordering::SeqCst), refused.load(Ordering::SeqCst), other.load(Ordering::SeqCst));
    assert_eq!(other, 0, "no registration waits for its deadline (TIMEOUT): {ok} OK, {refused} refused");
    assert!(refused > 0, "the queue is bounded: {ok} OK, {refused} refused");
    let reasons = reasons.lock().unwrap();
    assert!(reasons.iter().all(|reason| reason.contains("busy")), "{reasons:?}");
}

/// The resident memory of process `pid`, in MiB.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_after_a_hundred_logins_is_bounded_by_the_hashes_at_once() {
    let dir = TempDir::new("login-memory");
    let node = dev(&dir, &[]);
    let url = node.addr.clone();
    let start = rss_mib(node.child.id());
    // 10 players log in 10 times each, all at once: 110 hashes of 19 MiB.
    let mut players = tokio::task::JoinSet::new();
    for n in 0..10 {
        let url = url.clone();
        players.spawn(async move {
            let account = format!("mem_{n}");
            register(&url, &account).await;
            let mut client = Client::connect(&url).await.unwrap();
            for _ in 0..10 {
                login(&mut client, &account).await.unwrap();
            }
        });
    }
    while let Some(done) = players.join_next().await {
        done.unwrap();
    }
    let end = rss_mib(node.child.id());
    // Two hashes at once (one per core) hold 2 × 19 MiB; glibc's arenas held 350–800 MB here.
    assert!(end < 200, "{end} MiB resident after 110 hashes (started at {start} MiB)");
    eprintln!("resident memory: {start} MiB at start, {end} MiB after 110 hashes");
}
