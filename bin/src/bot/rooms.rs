//! The `match` scenario: Nakama's published authoritative-match workload on the arena module.
//!
//! Every client connects (spread over the `--url` gateways), registers once (`bot_N`, kept from
//! an earlier run) and logs in, queues with `matchmake.join {mode}` (`--mode`, default `squad`:
//! rooms of 10), and joins the room it is matched into. Once every client is in a room, each
//! one, every 0.5 s (its own phase), alternates `arena.echo` with a 44-byte payload and
//! `arena.broadcast` with a 35-byte one, while it reads the room's 10 Hz `arena.state` and the
//! others' broadcasts. Each payload starts with its send time, so the bot measures:
//!
//! - **echo**: from sending `arena.echo` until its `arena.echoed` comes back (through the room's
//!   next tick: up to one tick period more than a reply);
//! - **broadcast delivery**: from sending `arena.broadcast` until each member (the sender too)
//!   has its `arena.broadcasted`;
//! - **states** per second and the largest gap in a member's tick sequence;
//! - echo, broadcast and states are counted from the run's first second on: until then each
//!   client reads through the states its room pushed while the other clients were setting up (it
//!   reads nothing while it waits for them), which would count as a late echo;
//! - **tick lateness** on the servers: `mortar_room_tick_late_seconds` read from each
//!   `--metrics` admin listener before and after the run (the share of ticks within 10 ms, and the
//!   histogram bucket holding the 99th percentile).

use super::{BotError, BotOptions, report::Latency};
use crate::client::Client;
use hdrhistogram::Histogram;
use mortar_arena::arena::{BroadcastReq, Broadcasted, EchoReq, Echoed, JoinReq, State};
use mortar_matchmake::matchmake::{JoinReq as QueueReq, Matched};
use mortar_pb::UserMessage;
use mortar_user::user::{LoginReq, RegisterReq};
use prost::Message as _;
use serde::Serialize;
use std::{fmt, sync::Arc, time::Duration};
use tokio::{sync::Semaphore, time::Instant};

/// Bytes of an `arena.echo` payload, as in Nakama's benchmark.
const ECHO_BYTES: usize = 44;
/// Bytes of an `arena.broadcast` payload.
const BROADCAST_BYTES: usize = 35;
/// How often a client sends, alternating echo and broadcast.
const EVERY: Duration = Duration::from_millis(500);
/// Echoes, broadcasts, states and frames are counted from this far into the run.
const MEASURED_FROM: Duration = Duration::from_secs(1);

/// What the run measured.
#[derive(Debug, Serialize)]
pub struct MatchReport {
    /// Clients asked for.
    pub clients: usize,
    /// Clients that logged in and joined a room.
    pub playing: usize,
    /// Rooms they were matched into.
    pub rooms: usize,
    /// Seconds to log every client in and put it in a room.
    pub setup_s: f64,
    /// Length of the measured run in seconds.
    pub duration_s: f64,
    /// Requests sent during the run (echo and broadcast), and replies that were not OK.
    pub sent: u64,
    /// Replies other than OK, and connections lost.
    pub errors: u64,
    /// Send to `arena.echoed`, from the run's first second on.
    pub echo_ms: Latency,
    /// Send to each member's `arena.broadcasted`, from the run's first second on.
    pub broadcast_ms: Latency,
    /// Broadcasts delivered per second (one per member).
    pub broadcasts_per_sec: f64,
    /// `arena.state` pushes received per second, all clients, after the run's first second (the
    /// states queued for a client while the others were still being matched arrive at once).
    pub states_per_sec: f64,
    /// Frames the clients received per second (replies and pushes), counted as states are: what
    /// the server's sockets carried, to set beside the bare echo's frames per second.
    pub frames_per_sec: f64,
    /// The largest step between two ticks one member saw (1 = no tick missed).
    pub max_tick_gap: u64,
    /// The servers' tick lateness over the run, when `--metrics` named their admin listeners.
    pub ticks: Option<TickLateness>,
    /// The servers' CPU and memory, when `--server-pid` named them.
    pub servers: Option<ServerCost>,
}

/// What the server processes spent (Linux `/proc`).
#[derive(Debug, Serialize)]
pub struct ServerCost {
    /// CPU time over the measured run, in cores (1.0 = one core busy all along).
    pub cores: f64,
    /// CPU time per player over the run, in µs per second.
    pub cpu_us_per_player_s: f64,
    /// Resident memory growth from before the first client connected to the run's start, KiB.
    pub rss_growth_kib: u64,
    /// That growth per room (its players' connections, sessions and logins included), KiB.
    pub kib_per_room: f64,
}

/// CPU seconds (user + system) and resident KiB of process `pid`, from `/proc`.
fn usage(pid: &str) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) in parentheses; utime and stime are the
    // 14th and 15th fields, in clock ticks (100 a second on Linux).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status.lines().find_map(|line| line.strip_prefix("VmRSS:"))?;
    let kib = rss.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some((ticks / 100.0, kib))
}

/// The summed [`usage`] of `pids`.
fn usage_of(pids: &[String]) -> (f64, u64) {
    pids.iter().filter_map(|pid| usage(pid)).fold((0.0, 0), |(cpu, rss), (c, r)| (cpu + c, rss + r))
}

/// The servers' `mortar_room_tick_late_seconds` over the run.
#[derive(Debug, Serialize)]
pub struct TickLateness {
    /// Ticks run.
    pub ticks: u64,
    /// The share of them that ran within 10 ms of their time.
    pub within_10ms: f64,
    /// The upper bound of the histogram bucket holding the 99th percentile, in ms.
    pub p99_at_most_ms: f64,
}

/// One client's measurements.
struct Seen {
    echo: Histogram<u64>,
    broadcast: Histogram<u64>,
    sent: u64,
    errors: u64,
    states: u64,
    frames: u64,
    max_gap: u64,
}

impl Seen {
    fn new() -> Self {
        let histogram = || Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
        Self {
            echo: histogram(),
            broadcast: histogram(),
            sent: 0,
            errors: 0,
            states: 0,
            frames: 0,
            max_gap: 0,
        }
    }

    fn merge(&mut self, other: Seen) {
        let _ = self.echo.add(&other.echo);
        let _ = self.broadcast.add(&other.broadcast);
        self.sent += other.sent;
        self.errors += other.errors;
        self.states += other.states;
        self.frames += other.frames;
        self.max_gap = self.max_gap.max(other.max_gap);
    }
}

/// Runs the `match` scenario (see the module docs).
///
/// # Errors
/// No client logging in and joining a room.
pub async fn run(options: &BotOptions) -> Result<MatchReport, BotError> {
    let pids: Vec<String> =
        options.server_pid.iter().flat_map(|p| p.split(',')).map(|p| p.trim().to_owned()).collect();
    let idle = usage_of(&pids);
    let origin = std::time::Instant::now();
    let started = Instant::now();
    let limit = Arc::new(Semaphore::new(256));
    let mut setting_up = tokio::task::JoinSet::new();
    for client in 0..options.clients {
        if options.ramp_up > 0.0 {
            tokio::time::sleep_until(started + Duration::from_secs_f64(client as f64 / options.ramp_up))
                .await;
        }
        let (url, mode, limit) = (options.url_for(client).to_owned(), options.mode.clone(), limit.clone());
        setting_up.spawn(async move {
            let _permit = limit.acquire_owned().await;
            set_up(&url, client, &mode).await
        });
    }
    let mut players = Vec::new();
    let mut first_error = None;
    while let Some(joined) = setting_up.join_next().await {
        match joined {
            Ok(Ok(player)) => players.push(player),
            Ok(Err(error)) => {
                first_error.get_or_insert(error);
            }
            Err(_) => {}
        }
    }
    if players.is_empty() {
        let reason = first_error.unwrap_or_else(|| "no clients asked for".into());
        return Err(BotError::NoConnection { url: options.url.clone(), reason });
    }
    if let Some(error) = &first_error {
        eprintln!(
            "mortar bot: {} clients could not play; the first: {error}",
            options.clients - players.len()
        );
    }
    let setup = started.elapsed();
    let rooms = {
        let mut rooms: Vec<&str> = players.iter().map(|(_, room)| room.as_str()).collect();
        rooms.sort_unstable();
        rooms.dedup();
        rooms.len()
    };
    let metrics: Vec<String> = options.metrics.iter().flat_map(|m| m.split(',')).map(str::to_owned).collect();
    let before = scrape(&metrics).await;
    let at_start = usage_of(&pids);
    let playing = players.len();
    let measured = Instant::now();
    let deadline = measured + options.duration;
    let mut running = tokio::task::JoinSet::new();
    for (index, (client, room)) in players.into_iter().enumerate() {
        // Each client's own phase within the period, so sends do not come in bursts.
        let phase = EVERY.mul_f64(index as f64 / playing as f64);
        running.spawn(play(client, room, origin, measured + phase, measured + MEASURED_FROM, deadline));
    }
    let mut seen = Seen::new();
    while let Some(joined) = running.join_next().await {
        match joined {
            Ok(one) => seen.merge(one),
            Err(_) => seen.errors += 1,
        }
    }
    let elapsed = measured.elapsed().as_secs_f64().max(f64::EPSILON);
    let at_end = usage_of(&pids);
    let after = scrape(&metrics).await;
    let servers = (!pids.is_empty()).then(|| {
        let cores = (at_end.0 - at_start.0) / elapsed;
        let growth = at_start.1.saturating_sub(idle.1);
        ServerCost {
            cores,
            cpu_us_per_player_s: cores * 1e6 / playing as f64,
            rss_growth_kib: growth,
            kib_per_room: growth as f64 / rooms.max(1) as f64,
        }
    });
    let ticks = (!metrics.is_empty()).then(|| lateness(&before, &after));
    Ok(MatchReport {
        clients: options.clients,
        playing,
        rooms,
        setup_s: setup.as_secs_f64(),
        duration_s: elapsed,
        sent: seen.sent,
        errors: seen.errors,
        echo_ms: Latency::of(&seen.echo),
        broadcast_ms: Latency::of(&seen.broadcast),
        broadcasts_per_sec: seen.broadcast.len() as f64 / elapsed,
        states_per_sec: seen.states as f64 / (elapsed - MEASURED_FROM.as_secs_f64()).max(f64::EPSILON),
        frames_per_sec: seen.frames as f64 / (elapsed - MEASURED_FROM.as_secs_f64()).max(f64::EPSILON),
        max_tick_gap: seen.max_gap,
        ticks,
        servers,
    })
}

/// Sends `req` to `route` on `client` and waits for its reply, keeping pushes that come first;
/// a `RATE_LIMITED` reply (registrations and logins queue for password hashing) is sent again
/// after a pause, as a game client would.
async fn call<M: prost::Message>(
    client: &mut Client,
    route: &str,
    req: &M,
    pushes: &mut Vec<UserMessage>,
) -> Result<UserMessage, String> {
    let (main, sub) = route.split_once('.').unwrap_or((route, ""));
    let mut pause = Duration::from_millis(50);
    loop {
        let reply = client
            .request(main, sub, req.encode_to_vec().into(), |push| pushes.push(push))
            .await
            .map_err(|error| format!("{route}: {error}"))?;
        if reply.code != mortar_pb::ErrorCode::RateLimited as i32 {
            return Ok(reply);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// Logs client `client` in, queues it for `mode` and joins the room it is matched into: the
/// connection and the room.
async fn set_up(url: &str, client: usize, mode: &str) -> Result<(Client, String), String> {
    let within = Duration::from_secs(120);
    let steps = async {
        let mut conn = Client::connect(url).await.map_err(|error| format!("connect: {error}"))?;
        let mut pushes = Vec::new();
        let (account, password) = (format!("bot_{client}"), format!("bot-password-{client}"));
        let register = RegisterReq { account: account.clone(), password: password.clone() };
        let reply = call(&mut conn, "user.register", &register, &mut pushes).await?;
        // Registered by an earlier run: fine.
        if reply.code != 0 && reply.code != mortar_pb::ErrorCode::AlreadyExists as i32 {
            return Err(format!("user.register answered code {}", reply.code));
        }
        let login = call(&mut conn, "user.login", &LoginReq { account, password }, &mut pushes).await?;
        ok(&login, "user.login")?;
        let queue = QueueReq { mode: mode.to_owned(), ..Default::default() };
        ok(&call(&mut conn, "matchmake.join", &queue, &mut pushes).await?, "matchmake.join")?;
        let matched = loop {
            if let Some(at) =
                pushes.iter().position(|m| m.main_type == "matchmake" && m.sub_type == "matched")
            {
                break Matched::decode(pushes.swap_remove(at).data).map_err(|e| e.to_string())?;
            }
            pushes.push(conn.next().await.map_err(|error| format!("waiting for a match: {error}"))?);
        };
        let join = JoinReq { room_id: matched.room_id.clone() };
        ok(&call(&mut conn, "arena.join", &join, &mut pushes).await?, "arena.join")?;
        Ok((conn, matched.room_id))
    };
    tokio::time::timeout(within, steps).await.map_err(|_| format!("not in a room after {within:?}"))?
}

fn ok(reply: &UserMessage, route: &str) -> Result<(), String> {
    match reply.code {
        0 => Ok(()),
        code => Err(format!("{route} answered code {code}")),
    }
}

/// Plays until `deadline`: sends from `first` every [`EVERY`], alternating echo and broadcast,
/// and measures what comes back from `measure_from` on.
async fn play(
    mut client: Client,
    room: String,
    origin: std::time::Instant,
    first: Instant,
    measure_from: Instant,
    deadline: Instant,
) -> Seen {
    let mut seen = Seen::new();
    let mut next = first;
    let mut echo = true;
    let mut last_tick = None;
    let stamped = |len: usize| {
        let mut payload = vec![0u8; len];
        let micros = u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX);
        payload[..8].copy_from_slice(&micros.to_le_bytes());
        payload
    };
    let age = |payload: &[u8]| -> Option<u64> {
        let sent = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
        Some(u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX).saturating_sub(sent).max(1))
    };
    loop {
        let sleep = tokio::time::sleep_until(next.min(deadline));
        tokio::select! {
            () = sleep => {
                if Instant::now() >= deadline {
                    break;
                }
                let sent = if echo {
                    let req = EchoReq { room_id: room.clone(), payload: stamped(ECHO_BYTES).into() };
                    client.send("arena", "echo", req.encode_to_vec().into()).await
                } else {
                    let req = BroadcastReq { room_id: room.clone(), payload: stamped(BROADCAST_BYTES).into() };
                    client.send("arena", "broadcast", req.encode_to_vec().into()).await
                };
                if sent.is_err() {
                    seen.errors += 1;
                    break;
                }
                seen.sent += 1;
                echo = !echo;
                next += EVERY;
            }
            msg = client.next() => {
                let Ok(msg) = msg else {
                    seen.errors += 1;
                    break;
                };
                let measuring = Instant::now() >= measure_from;
                if measuring {
                    seen.frames += 1;
                }
                if msg.seq != 0 {
                    if msg.code != 0 {
                        seen.errors += 1;
                    }
                    continue;
                }
                match (msg.main_type.as_str(), msg.sub_type.as_str()) {
                    ("arena", "echoed") if measuring => {
                        if let Some(micros) = Echoed::decode(msg.data).ok().and_then(|e| age(&e.payload)) {
                            let _ = seen.echo.record(micros);
                        }
                    }
                    ("arena", "broadcasted") if measuring => {
                        if let Some(micros) = Broadcasted::decode(msg.data).ok().and_then(|b| age(&b.payload)) {
                            let _ = seen.broadcast.record(micros);
                        }
                    }
                    ("arena", "state") => {
                        if let Ok(state) = State::decode(msg.data) {
                            if measuring {
                                seen.states += 1;
                            }
                            if let Some(last) = last_tick {
                                seen.max_gap = seen.max_gap.max(state.tick.saturating_sub(last));
                            }
                            last_tick = Some(state.tick);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    let _ = client.close().await;
    seen
}

/// The cumulative bucket counts of `mortar_room_tick_late_seconds` summed over the admin
/// listeners `addrs` (`HOST:PORT`), by bucket bound in seconds; `+Inf` as infinity.
async fn scrape(addrs: &[String]) -> Vec<(f64, u64)> {
    let mut buckets: Vec<(f64, u64)> = Vec::new();
    for addr in addrs {
        let Ok(text) = http_get(addr, "/metrics").await else {
            eprintln!("mortar bot: cannot read {addr}/metrics");
            continue;
        };
        add_buckets(&mut buckets, &text);
    }
    buckets
}

/// Adds the `mortar_room_tick_late_seconds` buckets of Prometheus text `text` into `buckets`,
/// kept sorted by bound.
fn add_buckets(buckets: &mut Vec<(f64, u64)>, text: &str) {
    for line in text.lines().filter(|line| line.starts_with("mortar_room_tick_late_seconds_bucket{")) {
        let Some((labels, count)) = line.rsplit_once(' ') else { continue };
        let Some(le) = labels.rsplit(",le=\"").next().and_then(|rest| rest.split('"').next()) else {
            continue;
        };
        let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::INFINITY) };
        let count: u64 = count.trim().parse().unwrap_or(0);
        match buckets.iter_mut().find(|(bound, _)| *bound == le) {
            Some((_, total)) => *total += count,
            None => buckets.push((le, count)),
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
}

/// The tick lateness between two scrapes.
fn lateness(before: &[(f64, u64)], after: &[(f64, u64)]) -> TickLateness {
    let count_at = |scrape: &[(f64, u64)], bound: f64| {
        scrape.iter().find(|(le, _)| *le == bound).map_or(0, |(_, count)| *count)
    };
    let delta: Vec<(f64, u64)> =
        after.iter().map(|(le, count)| (*le, count.saturating_sub(count_at(before, *le)))).collect();
    let ticks = delta.last().map_or(0, |(_, count)| *count);
    let within =
        delta.iter().filter(|(le, _)| *le <= 0.01 + 1e-9).map(|(_, count)| *count).max().unwrap_or(0);
    let p99 = delta
        .iter()
        .find(|(_, count)| *count as f64 >= 0.99 * ticks as f64)
        .map_or(f64::INFINITY, |(le, _)| le * 1000.0);
    TickLateness { ticks, within_10ms: within as f64 / (ticks.max(1)) as f64, p99_at_most_ms: p99 }
}

/// `GET path` on `addr` (`HOST:PORT`): the body.
async fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = addr.trim().trim_start_matches("http://").trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    Ok(text.split_once("\r\n\r\n").map_or(text.clone(), |(_, body)| body.to_owned()))
}

impl fmt::Display for MatchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = |l: &Latency| {
            format!("p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}", l.p50, l.p99, l.p999, l.max)
        };
        writeln!(
            f,
            "match over mortar: {}/{} clients playing in {} rooms (setup {:.1} s), {:.1} s",
            self.playing, self.clients, self.rooms, self.setup_s, self.duration_s
        )?;
        writeln!(f, "  sent {}, errors {}", self.sent, self.errors)?;
        writeln!(f, "  echo ms       {}", line(&self.echo_ms))?;
        writeln!(
            f,
            "  broadcast ms  {}  ({:.0} delivered/s)",
            line(&self.broadcast_ms),
            self.broadcasts_per_sec
        )?;
        write!(
            f,
            "  states/s      {:.0}  (largest tick gap {}); frames received/s {:.0}",
            self.states_per_sec, self.max_tick_gap, self.frames_per_sec
        )?;
        if let Some(servers) = &self.servers {
            write!(
                f,
                "\n  servers       {:.2} cores, {:.1} µs CPU per player-second, +{} KiB ({:.1} KiB per room with its players)",
                servers.cores, servers.cpu_us_per_player_s, servers.rss_growth_kib, servers.kib_per_room
            )?;
        }
        if let Some(ticks) = &self.ticks {
            write!(
                f,
                "\n  ticks         {} on the servers, {:.2}% within 10 ms of their time, p99 ≤ {} ms",
                ticks.ticks,
                ticks.within_10ms * 100.0,
                ticks.p99_at_most_ms
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_lateness_comes_from_the_bucket_deltas() {
        let text = |counts: [u64; 4]| {
            let mut text = String::from("# TYPE mortar_room_tick_late_seconds histogram\n");
            for (le, count) in ["0.001", "0.01", "0.1", "+Inf"].iter().zip(counts) {
                text += &format!(
                    "mortar_room_tick_late_seconds_bucket{{module=\"arena\",le=\"{le}\"}} {count}\n"
                );
            }
            text + &format!("mortar_room_tick_late_seconds_count{{module=\"arena\"}} {}\n", counts[3])
        };
        let (mut before, mut after) = (Vec::new(), Vec::new());
        add_buckets(&mut before, &text([10, 20, 20, 20]));
        add_buckets(&mut after, &text([900, 1009, 1020, 1020]));
        let ticks = lateness(&before, &after);
        assert_eq!(ticks.ticks, 1000);
        assert!((ticks.within_10ms - 0.989).abs() < 1e-9, "{ticks:?}");
        assert_eq!(ticks.p99_at_most_ms, 100.0);
    }
}
