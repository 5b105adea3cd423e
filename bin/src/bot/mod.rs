//! `mortar bot`: a load generator. N WebSocket clients each run a [`Scenario`]; the bot shows live
//! progress and reports throughput, errors by code and latency percentiles.
//!
//! Layout:
//! - this file: options and the run (connect all clients, then measure for the duration).
//! - [`scenario`]: what a client does (`echo`, `idle`, `login`, `pack`; add one by implementing
//!   [`Scenario`]).
//! - [`fanout`]: the `push` scenario, where one client's request pushes to all of them.
//! - [`rooms`]: the `match` scenario, Nakama's authoritative-match workload on the arena.
//! - `wire`: the client side of each wire protocol (mortar's `UserMessage`, Pinus packets).
//! - [`pinus`]: the Pomelo/Pinus packet format.
//! - [`report`]: the HDR histogram and the report.

pub mod fanout;
pub mod pinus;
pub mod report;
pub mod rooms;
pub mod scenario;
mod wire;

use crate::client::{Client, Contract};
use report::{ClientStats, Report};
use scenario::Scenario;
use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::time::Instant;
use wire::{Conn, Event};

/// Why the bot could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BotError {
    /// A scenario name or step is wrong.
    #[error("scenario: {0}")]
    Scenario(String),
    /// No client could connect.
    #[error("no client could connect to {url}: {reason}")]
    NoConnection {
        /// The target.
        url: String,
        /// The first client's error.
        reason: String,
    },
    /// The JSON report could not be written.
    #[error("cannot write {path}: {source}")]
    Report {
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The wire protocol the bot speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// mortar's binary `UserMessage` frames.
    Mortar,
    /// Pomelo/Pinus packets over WebSocket (hybridconnector), JSON bodies.
    Pinus,
}

impl Protocol {
    /// The protocol's name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Mortar => "mortar",
            Protocol::Pinus => "pinus",
        }
    }
}

/// `mortar bot` options.
#[derive(Clone, Debug, clap::Args)]
pub struct BotOptions {
    /// The gateway's WebSocket URL (for Pinus: its connector, e.g. ws://127.0.0.1:3010). Several,
    /// comma-separated, spread the clients over them in turn (client N uses URL N mod count).
    #[arg(long, default_value = "ws://127.0.0.1:4000/ws")]
    pub url: String,
    /// Concurrent clients, each on its own connection.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// How long to measure, counted from when every client has connected: 30s, 500ms, 2m.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// What each client does: `echo` (echo.say in a loop), `idle` (hold the connection), `login`
    /// (register once, then user.login in a loop), `pack` (register and log in, then pack.use of
    /// `--item` in a loop), `push` (one client's `--fanout` request pushes to every client,
    /// again and again) or `match` (matchmake into arena rooms, then echo and broadcast every
    /// 0.5 s: docs/benchmarks.md).
    #[arg(long, default_value = "echo")]
    pub scenario: String,
    /// push: the requests each client sends once to log in, as `ROUTE JSON`, several separated by
    /// ` ; `; `{user}` in the JSON becomes the client's number + 1 (its user id when a test module
    /// logs in by number), `{prepared}` the answer of `--prepare`, e.g.
    /// `user.login {"account":"bot{user}"} ; group.join {"groupId":"{prepared}"}` (the first
    /// client skips those naming `{prepared}`).
    #[arg(long)]
    pub login: Option<String>,
    /// push: a request the first client sends after its login and before the others connect, as
    /// `ROUTE JSON`; the first field of its answer becomes `{prepared}` in the other requests
    /// (e.g. `group.create {"name":"bench"}`, whose groupId the others join and the fanout names).
    #[arg(long)]
    pub prepare: Option<String>,
    /// push: the request that pushes to every client, as `ROUTE JSON`; `{users}` in the JSON
    /// becomes their comma-separated numbers + 1. Pushes of its module are what is counted.
    #[arg(long)]
    pub fanout: Option<String>,
    /// push: pushes in flight at once; a new one is sent when the oldest has reached everyone.
    #[arg(long, default_value_t = 1)]
    pub window: usize,
    /// push: clients sending the `--fanout` request, in turn (one session's requests run one
    /// after another; several senders are several players pushing at once).
    #[arg(long, default_value_t = 1)]
    pub senders: usize,
    /// Clients connected per second while ramping up; 0 connects them as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    pub ramp_up: f64,
    /// Requests per second per client (open loop, latency counted from the scheduled send time);
    /// 0 sends each request as soon as the previous reply arrives (closed loop).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Bytes of text in each echo request.
    #[arg(long, default_value_t = 16)]
    pub payload: usize,
    /// pack: the item `pack.use` takes.
    #[arg(long, default_value_t = 100)]
    pub item: u32,
    /// The wire protocol: mortar, or pinus to load a Pinus server for comparison.
    #[arg(long, value_enum, default_value_t = Protocol::Mortar)]
    pub protocol: Protocol,
    /// Replace the scenario's repeated route (e.g. connector.entryHandler.echo for Pinus, or any
    /// route of a module, also one loaded from a library: the gateway says how it encodes).
    #[arg(long)]
    pub route: Option<String>,
    /// Replace the repeated request's body: JSON of the route's request type.
    #[arg(long)]
    pub body: Option<String>,
    /// match: the game mode to queue for (conf/tables/modes.json; `squad` makes rooms of 10).
    #[arg(long, default_value = "squad")]
    pub mode: String,
    /// match: the servers' admin listeners (`HOST:PORT`, several comma-separated) whose tick
    /// lateness (`mortar_room_tick_late_seconds`) the report gives.
    #[arg(long)]
    pub metrics: Option<String>,
    /// match: the server processes (pids, comma-separated; Linux) whose CPU time over the run and
    /// memory growth from before the first client connected the report gives, per player.
    #[arg(long)]
    pub server_pid: Option<String>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No live progress line.
    #[arg(long)]
    pub quiet: bool,
    /// Threads of the bot's async runtime; 0 starts one per CPU core. On a machine shared with
    /// the server under test, fewer leave it cores of its own.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

impl BotOptions {
    /// The URL client number `client` connects to.
    pub fn url_for(&self, client: usize) -> &str {
        let count = self.url.split(',').count();
        self.url.split(',').nth(client % count).unwrap_or(&self.url).trim()
    }
}

/// Parses `30s`, `500ms`, `2m`, `1h` or a bare number of seconds.
///
/// # Errors
/// Anything else.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 =
        number.parse().map_err(|_| format!("`{text}` is not a duration like 30s, 500ms or 2m"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("`{text}` is out of range"))
}

/// Live counters for the progress line.
#[derive(Default)]
struct Progress {
    connected: AtomicU64,
    sent: AtomicU64,
    replies: AtomicU64,
    errors: AtomicU64,
}

/// The protos the bot encodes its requests with: the linked modules' and, speaking mortar, those
/// the gateway serves (so it drives modules loaded from libraries too).
async fn contract(options: &BotOptions) -> Contract {
    let mut contract = Contract::linked();
    if options.protocol == Protocol::Mortar {
        let fetched = async {
            let mut client = Client::connect(options.url_for(0)).await?;
            contract.add_from_gateway(&mut client).await?;
            client.close().await
        };
        if let Err(error) = fetched.await {
            eprintln!("mortar bot: using only this binary's protos: cannot fetch the gateway's: {error}");
        }
    }
    contract
}

/// Runs the `push` scenario (see [`fanout`]).
///
/// # Errors
/// See [`fanout::run`].
pub async fn run_push(options: BotOptions) -> Result<fanout::FanoutReport, BotError> {
    let contract = Arc::new(contract(&options).await);
    fanout::run(&options, contract).await
}

/// Runs the `match` scenario (see [`rooms`]).
///
/// # Errors
/// See [`rooms::run`]; a JSON report that cannot be written.
pub async fn run_match(options: BotOptions) -> Result<rooms::MatchReport, BotError> {
    let report = rooms::run(&options).await?;
    if let Some(path) = &options.json {
        let text = serde_json::to_string_pretty(&report).expect("the report serializes");
        std::fs::write(path, text + "\n")
            .map_err(|source| BotError::Report { path: path.clone(), source })?;
    }
    Ok(report)
}

/// Runs the bot: connects every client (ramping up as asked), runs the scenario on all of them
/// for the duration, and reports.
///
/// Stops when the duration has passed after the last client connected; clients whose connection
/// fails stop early and count the failure.
///
/// # Errors
/// An unknown scenario, no client connecting at all, or a JSON report that cannot be written.
pub async fn run(options: BotOptions) -> Result<Report, BotError> {
    let scenario: Arc<dyn Scenario> =
        scenario::by_name(&options.scenario, options.payload, options.item)?.into();
    let progress = Arc::new(Progress::default());
    let bar = progress_bar(&options);
    let ticker = tokio::spawn(show_progress(progress.clone(), bar.clone(), options.clients));

    let contract = Arc::new(contract(&options).await);

    // Phase 1: connect (and set up) every client.
    let mut connecting = tokio::task::JoinSet::new();
    let started = Instant::now();
    let connect_limit = Arc::new(tokio::sync::Semaphore::new(256));
    for client in 0..options.clients {
        let (options, scenario, progress, limit, contract) =
            (options.clone(), scenario.clone(), progress.clone(), connect_limit.clone(), contract.clone());
        if options.ramp_up > 0.0 {
            tokio::time::sleep_until(started + Duration::from_secs_f64(client as f64 / options.ramp_up))
                .await;
        }
        connecting.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let conn = Conn::connect(&options, scenario.as_ref(), contract, client).await;
            if conn.is_ok() {
                progress.connected.fetch_add(1, Ordering::Relaxed);
            }
            (client, conn)
        });
    }
    let mut conns = Vec::with_capacity(options.clients);
    let mut failed = ClientStats::new();
    let mut first_error = None;
    while let Some(joined) = connecting.join_next().await {
        match joined {
            Ok((client, Ok(conn))) => conns.push((client, conn)),
            Ok((_, Err(error))) => {
                failed.error("connect");
                first_error.get_or_insert(error);
            }
            Err(_) => failed.error("connect"),
        }
    }
    if conns.is_empty() {
        ticker.abort();
        bar.finish_and_clear();
        let reason = first_error.map_or_else(|| "no clients asked for".into(), |e| e.to_string());
        return Err(BotError::NoConnection { url: options.url, reason });
    }

    // Phase 2: every client runs the scenario until the common deadline.
    let connected = conns.len();
    let measured_from = Instant::now();
    let deadline = measured_from + options.duration;
    let mut running = tokio::task::JoinSet::new();
    for (client, conn) in conns {
        let step = scenario.step(client).map(|mut step| {
            if let Some(route) = &options.route {
                step.route.clone_from(route);
            }
            if let Some(body) = &options.body {
                step.json.clone_from(body);
            }
            step
        });
        running.spawn(conn.run(step, options.rate, deadline, progress.clone()));
    }
    let mut total = failed;
    while let Some(joined) = running.join_next().await {
        match joined {
            Ok(stats) => total.merge(stats),
            Err(_) => total.error("client_panic"),
        }
    }
    let elapsed = measured_from.elapsed().min(options.duration.max(Duration::from_millis(1)));
    ticker.abort();
    bar.finish_and_clear();

    let mut report = Report::new(
        scenario.name(),
        options.protocol.as_str(),
        &options.url,
        options.clients,
        connected,
        elapsed,
        &total,
    );
    report.connect_error = first_error.map(|error| error.to_string());
    if let Some(path) = &options.json {
        let text = serde_json::to_string_pretty(&report).expect("the report serializes");
        std::fs::write(path, text + "\n")
            .map_err(|source| BotError::Report { path: path.clone(), source })?;
    }
    Ok(report)
}

fn progress_bar(options: &BotOptions) -> indicatif::ProgressBar {
    if options.quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar
}

/// Updates the progress line four times a second: connected, sent, replies, errors, current rate.
async fn show_progress(progress: Arc<Progress>, bar: indicatif::ProgressBar, clients: usize) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last = (Instant::now(), 0u64);
    loop {
        tick.tick().await;
        let replies = progress.replies.load(Ordering::Relaxed);
        let now = Instant::now();
        let rate = (replies - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-9);
        last = (now, replies);
        bar.set_message(format!(
            "connected {}/{clients} · sent {} · replies {replies} · errors {} · {rate:.0} req/s",
            progress.connected.load(Ordering::Relaxed),
            progress.sent.load(Ordering::Relaxed),
            progress.errors.load(Ordering::Relaxed),
        ));
        bar.tick();
    }
}

/// Records one event of a client's run into its stats and the live counters.
fn record(stats: &mut ClientStats, progress: &Progress, event: Event) {
    match event {
        Event::Sent => {
            stats.sent += 1;
            progress.sent.fetch_add(1, Ordering::Relaxed);
        }
        Event::Reply { latency, error } => {
            let _ = stats.latency.record(latency.as_micros().clamp(1, 60_000_000) as u64);
            progress.replies.fetch_add(1, Ordering::Relaxed);
            match error {
                None => stats.ok += 1,
                Some(code) => {
                    progress.errors.fetch_add(1, Ordering::Relaxed);
                    stats.error(code);
                }
            }
        }
        Event::Failed(kind) => {
            progress.errors.fetch_add(1, Ordering::Relaxed);
            stats.error(kind);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3 weeks").is_err());
    }
}
