//! The rank module on one board of `ENTRIES` (1,000,000) entries, in `mortar dev` (embedded store,
//! handlers in-process), through real WebSocket clients, once with the memory cache and once with
//! a Redis cache (a `redis-server` started here, as the replicated cluster's workers share one).
//!
//! The entries are written into the store before the node starts (random scores); the node then
//! has no sorted set for the board, as after a restart. Per row:
//! - **rebuild**: from the first `rank.me` (which counts its rank in the store and starts the
//!   rebuild) until `rank.around` answers (the set is marked ready);
//! - **memory per entry** of the sorted set: the process's resident memory (memory cache) or
//!   Redis's `used_memory` (Redis), after the rebuild minus before, over the entries;
//! - `rank.submit` per second from `PLAYERS` players, closed loop, random scores, with p50/p99, on
//!   the `best` board of the million (most submits beat nothing and write nothing) and on a `set`
//!   board (every submit writes its entry, adds a member and removes one);
//! - p50/p99 of `rank.me` (each player's own rank among the million) and of `rank.top {limit: 100}`,
//!   open loop at `RATE` requests per second per player (latency from the scheduled send);
//! - the yardstick: `echo.say` round trips from the same players, in the same run.
//!
//! `cargo bench -p mortar-tests --bench rank_million` (results in docs/benchmarks.md); set
//! `RANK_BENCH_ENTRIES` for a smaller board.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use futures::StreamExt as _;
use hdrhistogram::Histogram;
use mortar::store::{Store, StoreBackend};
use mortar_cli::client::Client;
use mortar_rank::{
    Entry,
    rank::{AroundReq, AroundResp, MeReq, MeResp, SubmitReq, SubmitResp, TopReq, TopResp},
};
use mortar_tests::{DevNode, echo_body, temp_dir};
use prost::Message as _;
use std::{
    path::Path,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

const PLAYERS: u64 = 100;
const SECONDS: u64 = 10;
/// Requests per second per player while `rank.me` and `rank.top` latencies are measured.
const RATE: u64 = 10;
/// Seeded players' ids start here, above the benchmark's own players.
const SEEDED_FROM: u64 = 1_000_000;

fn entries() -> u64 {
    std::env::var("RANK_BENCH_ENTRIES").ok().and_then(|n| n.parse().ok()).unwrap_or(1_000_000)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(bench());
}

/// A small xorshift: scores without a dependency.
struct Scores(u64);

impl Scores {
    fn next(&mut self) -> i64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % 1_000_000_000) as i64
    }
}

async fn seed(data: &Path, count: u64) -> Duration {
    let started = Instant::now();
    let backend: Arc<dyn StoreBackend> =
        Arc::new(mortar_backends::storage::embedded::EmbeddedStore::open(data).unwrap());
    let store = Store::<Entry>::new(backend);
    futures::stream::iter(0..count)
        .map(|n| {
            let store = store.clone();
            async move {
                let user = SEEDED_FROM + n;
                let score = Scores(n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1).next();
                let at_ms = 1_700_000_000_000 + n as i64;
                let tie = -at_ms * 1000;
                let entry =
                    Entry { board: "alltime".into(), period: 0, user, score, tie, reached_at_ms: at_ms };
                store.insert(Entry::id("alltime", 0, user), entry).await.unwrap();
            }
        })
        .buffer_unordered(512)
        .collect::<()>()
        .await;
    started.elapsed()
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:")?.trim().strip_suffix(" kB")?.trim().parse().ok())
        .unwrap_or(0)
}

struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Option<Redis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .ok()?;
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(Redis { child, port });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    fn used_memory(&self) -> u64 {
        let out = Command::new("redis-cli").args(["-p", &self.port.to_string(), "info", "memory"]).output();
        let text = out.map(|out| String::from_utf8_lossy(&out.stdout).into_owned()).unwrap_or_default();
        text.lines().find_map(|line| line.strip_prefix("used_memory:")?.trim().parse().ok()).unwrap_or(0)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn bench() {
    let count = entries();
    let data = temp_dir("rank-million");
    let seeded = seed(&data, count).await;
    println!("seeded {count} entries into the embedded store in {:.1} s", seeded.as_secs_f64());
    println!(
        "| cache | rebuild of {count} entries, s | set bytes per entry | rank.submit/s (best) | p50 / p99 ms | rank.submit/s (set: every one writes) | p50 / p99 ms | rank.me p50 / p99 ms | rank.top 100 p50 / p99 ms | echo.say/s (yardstick) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    row("memory", &data, None).await;
    match Redis::start() {
        Some(redis) => row("Redis", &data, Some(&redis)).await,
        None => println!("| Redis | (no redis-server on this machine: row skipped) |"),
    }
    let _ = std::fs::remove_dir_all(data);
}

async fn row(name: &str, data: &Path, redis: Option<&Redis>) {
    let count = entries();
    let url = redis.map(|redis| format!("redis://127.0.0.1:{}", redis.port));
    let data = data.to_owned();
    let tables = temp_dir("rank-million-tables");
    std::fs::create_dir_all(&tables).unwrap();
    std::fs::write(
        tables.join("boards.json"),
        r#"[{ "id": "alltime" }, { "id": "latest", "operator": "set" }]"#,
    )
    .unwrap();
    let node_tables = tables.clone();
    let node = DevNode::with_config(move |config| {
        config.storage.path = data;
        config.tables.path = node_tables;
        config.gateway.rate_per_sec = 0;
        config.gateway.max_connections_per_ip = 0;
        if let Some(url) = url {
            config.cache.url = url;
        }
    })
    .await;
    let mut players = Vec::new();
    for user in 1..=PLAYERS {
        let mut client = Client::connect(&node.url()).await.unwrap();
        let reply = client.request("testkit", "login", echo_body(&user.to_string()), |_| {}).await.unwrap();
        assert_eq!(reply.code, 0);
        players.push(client);
    }

    // The rebuild: the first submit counts its rank in the store and starts it.
    let before = redis.map_or_else(|| rss_kib() * 1024, Redis::used_memory);
    let started = Instant::now();
    let first = &mut players[0];
    let _: SubmitResp = first
        .call("rank.submit", &SubmitReq { board_id: "alltime".into(), score: 1 })
        .await
        .unwrap()
        .unwrap();
    loop {
        let around: Result<AroundResp, i32> =
            first.call("rank.around", &AroundReq { board_id: "alltime".into(), limit: 1 }).await.unwrap();
        if around.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rebuild = started.elapsed();
    let after = redis.map_or_else(|| rss_kib() * 1024, Redis::used_memory);
    let per_entry = after.saturating_sub(before) as f64 / count as f64;

    let (players, submits, submitted) = phase(players, 0, |user, n| {
        let score = Scores((user << 32 | n) | 1).next();
        ("rank.submit", SubmitReq { board_id: "alltime".into(), score }.encode_to_vec())
    })
    .await;
    let (players, sets, set) = phase(players, 0, |user, n| {
        let score = Scores((user << 32 | n) | 1).next();
        ("rank.submit", SubmitReq { board_id: "latest".into(), score }.encode_to_vec())
    })
    .await;
    let (players, _, me) =
        phase(players, RATE, |_, _| ("rank.me", MeReq { board_id: "alltime".into() }.encode_to_vec())).await;
    let (players, _, top) = phase(players, RATE, |_, _| {
        ("rank.top", TopReq { board_id: "alltime".into(), limit: 100, ..TopReq::default() }.encode_to_vec())
    })
    .await;
    let (_, echoes, _) = phase(players, 0, |_, _| ("echo.say", echo_body("hi").to_vec())).await;
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "| {name} | {:.1} | {per_entry:.0} | {:.0} | {:.2} / {:.2} | {:.0} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.0} |",
        rebuild.as_secs_f64(),
        submits,
        ms(&submitted, 0.5),
        ms(&submitted, 0.99),
        sets,
        ms(&set, 0.5),
        ms(&set, 0.99),
        ms(&me, 0.5),
        ms(&me, 0.99),
        ms(&top, 0.5),
        ms(&top, 0.99),
        echoes,
    );
    // Decoded once, to be sure the phases were answered what they asked.
    let mut check = Client::connect(&node.url()).await.unwrap();
    let reply = check.request("testkit", "login", echo_body("1"), |_| {}).await.unwrap();
    assert_eq!(reply.code, 0);
    let me: MeResp = check.call("rank.me", &MeReq { board_id: "alltime".into() }).await.unwrap().unwrap();
    let top: TopResp = check
        .call("rank.top", &TopReq { board_id: "alltime".into(), limit: 100, ..TopReq::default() })
        .await
        .unwrap()
        .unwrap();
    assert!(me.rank >= 1 && top.entries.len() == 100);
    node.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(tables);
}

/// Each player sends the request `make(user, n)` gives for `SECONDS`, one after another (`rate`
/// 0) or `rate` per second on a schedule (latency counted from the scheduled time): the players
/// back, requests per second, and the latency histogram (µs).
async fn phase(
    players: Vec<Client>,
    rate: u64,
    make: impl Fn(u64, u64) -> (&'static str, Vec<u8>) + Send + Sync + Copy + 'static,
) -> (Vec<Client>, f64, Histogram<u64>) {
    let deadline = Instant::now() + Duration::from_secs(SECONDS);
    let started = Instant::now();
    let runs = players.into_iter().zip(1..).map(|(mut client, user)| {
        tokio::spawn(async move {
            let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let mut n = 0;
            let mut ticks = (rate > 0).then(|| {
                // Players spread over the period, not all at its start.
                let period = Duration::from_micros(1_000_000 / rate);
                let start = tokio::time::Instant::now() + period.mul_f64(user as f64 / PLAYERS as f64);
                tokio::time::interval_at(start, period)
            });
            while Instant::now() < deadline {
                let (route, body) = make(user, n);
                let (main, sub) = route.split_once('.').unwrap();
                let sent = match &mut ticks {
                    Some(ticks) => ticks.tick().await.into_std(),
                    None => Instant::now(),
                };
                let reply = client.request(main, sub, body.into(), |_| {}).await.unwrap();
                assert_eq!(reply.code, 0, "{route}: {}", reply.reason);
                latency.record(sent.elapsed().as_micros() as u64).unwrap();
                n += 1;
            }
            (client, n, latency)
        })
    });
    let mut clients = Vec::new();
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut total = 0;
    for done in futures::future::join_all(runs).await {
        let (client, n, own) = done.unwrap();
        latency.add(own).unwrap();
        total += n;
        clients.push(client);
    }
    (clients, total as f64 / started.elapsed().as_secs_f64(), latency)
}
