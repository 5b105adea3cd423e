//! Logins of a real player while a register flood runs, in `mortar dev` (embedded store, handlers
//! in-process, the user module's default argon2: 19 MiB, 2 passes), through real WebSocket
//! clients. The player logs in again and again on one connection, from `127.0.0.2`, for
//! `SECONDS`; meanwhile `FLOOD` connections from `127.0.0.1` each register a new account, again
//! and again. Three rows, measured in one run:
//! 1. the yardstick: the player alone;
//! 2. the flood against the default limits (registrations per address and in all, the hashing
//!    queue);
//! 3. the flood with the limits per address and in all off: the hashing queue alone.
//!
//! Each row also gives the process's resident memory after it (node and clients: every hash of
//! every row has run in it by then).
//!
//! `cargo bench -p mortar-tests --bench login_under_register_flood` (results in
//! docs/benchmarks.md).
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use hdrhistogram::Histogram;
use mortar_cli::client::Client;
use mortar_pb::ErrorCode;
use mortar_tests::{DevNode, login, register};
use mortar_user::user::RegisterReq;
use prost::Message as _;
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

const SECONDS: u64 = 5;
const FLOOD: usize = 800;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(bench());
}

async fn bench() {
    println!(
        "| run | logins/s | login p50 ms | login p99 ms | login errors | flood registrations: answered/s | accounts made | refused RATE_LIMITED | other codes | resident MiB after |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    run("the player alone (yardstick)", 0, true).await;
    run(&format!("{FLOOD} connections registering, default limits"), FLOOD, true).await;
    run(
        &format!("{FLOOD} connections registering, no limit per address or in all (the hashing queue alone)"),
        FLOOD,
        false,
    )
    .await;
}

async fn run(label: &str, flood: usize, limits: bool) {
    let node = DevNode::with_config(|config| {
        if !limits {
            let user = serde_json::json!({ "register_per_ip": 0, "register_per_sec": 0 });
            config.modules.insert("user".into(), user);
        }
    })
    .await;
    let url = node.url();
    let player_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    register(&mut Client::connect_from(&url, player_ip).await.unwrap(), "real_player", "real-password")
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (answered, made) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let codes = Arc::new(Mutex::new(BTreeMap::<i32, u64>::new()));
    let mut flooders = Vec::new();
    for n in 0..flood {
        let Ok(mut client) = Client::connect(&url).await else { break };
        let (stop, answered, made, codes) = (stop.clone(), answered.clone(), made.clone(), codes.clone());
        flooders.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let req = RegisterReq { account: format!("f{n}_{i}"), password: "flood-password".into() };
                let Ok(reply) = client.request("user", "register", req.encode_to_vec().into(), |_| {}).await
                else {
                    return;
                };
                answered.fetch_add(1, Ordering::Relaxed);
                if reply.code == 0 {
                    made.fetch_add(1, Ordering::Relaxed);
                } else {
                    *codes.lock().unwrap().entry(reply.code).or_default() += 1;
                }
            }
        }));
    }

    let mut player = Client::connect_from(&url, player_ip).await.unwrap();
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let (mut logins, mut errors) = (0u64, BTreeMap::<i32, u64>::new());
    let started = Instant::now();
    let answered_before = answered.load(Ordering::Relaxed);
    while started.elapsed() < Duration::from_secs(SECONDS) {
        let sent = Instant::now();
        match login(&mut player, "real_player", "real-password").await {
            Ok(_) => {
                logins += 1;
                latency.record(sent.elapsed().as_micros() as u64).unwrap();
            }
            Err(code) => *errors.entry(code).or_default() += 1,
        }
    }
    let took = started.elapsed().as_secs_f64();
    let answered = answered.load(Ordering::Relaxed) - answered_before;
    stop.store(true, Ordering::Relaxed);
    for flooder in flooders {
        let _ = flooder.await;
    }
    let codes = codes.lock().unwrap().clone();
    let limited = codes.get(&(ErrorCode::RateLimited as i32)).copied().unwrap_or(0);
    let other: u64 =
        codes.iter().filter(|(code, _)| **code != ErrorCode::RateLimited as i32).map(|(_, n)| n).sum();
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "| {label} | {:.1} | {:.1} | {:.1} | {} | {:.0} | {} | {limited} | {other} | {} |",
        logins as f64 / took,
        ms(0.5),
        ms(0.99),
        if errors.is_empty() { "0".into() } else { format!("{errors:?}") },
        answered as f64 / took,
        made.load(Ordering::Relaxed),
        resident_mib(),
    );
    drop(player);
    node.stop().await.unwrap();
}

/// This process's resident memory (node and clients), in MiB.
fn resident_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    kib.unwrap_or(0) / 1024
}
