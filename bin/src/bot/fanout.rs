//! The `push` scenario: how fast one handler's push reaches many online players.
//!
//! Every client connects (spread over the `--url` gateways) and logs in with the `--login`
//! requests as user `client + 1`; the first one also sends `--prepare` (say, create the group the
//! others join), and only then do the others connect. Then the first `--senders` clients send the `--fanout` request in turn,
//! again and again, each asking the server to push one message to every client; each push is one
//! *round*. Up to `--window` rounds are in flight: a new one starts when the oldest has reached
//! every client. (One session's requests run one after another, so rounds in flight from one
//! sender queue behind each other; several senders are several players' handlers at once.)
//!
//! Measured: pushes delivered per second (every client reading; pushes of the `--fanout` route's
//! module count, others are ignored), and per round the time from the request's send until the
//! last client has the push.
//!
//! The run ends at the deadline (`--duration` after every client logged in); a round that has
//! not reached every client by then is not counted, its pushes are.

use super::{BotError, BotOptions, report::Latency};
use crate::client::{self, Contract, ws_config};
use futures::{SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use mortar_pb::{ErrorCode, UserMessage};
use prost::Message as _;
use serde::Serialize;
use std::{
    collections::BTreeMap,
    fmt,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::{sync::Semaphore, time::Instant};
use tokio_tungstenite::tungstenite::Message;

/// A request given on the command line as `ROUTE JSON`.
#[derive(Clone, Debug)]
struct Request {
    main: String,
    sub: String,
    json: String,
}

impl Request {
    fn parse(option: &str, text: &str) -> Result<Self, BotError> {
        let (route, json) = text.trim().split_once(char::is_whitespace).unwrap_or((text.trim(), "{}"));
        let (main, sub) = client::split_route(route)
            .map_err(|error| BotError::Scenario(format!("{option} `{text}`: {error}")))?;
        Ok(Self { main: main.into(), sub: sub.into(), json: json.trim().into() })
    }

    /// Requests separated by ` ; `.
    fn parse_all(option: &str, text: &str) -> Result<Vec<Self>, BotError> {
        text.split(" ; ").map(|one| Self::parse(option, one)).collect()
    }

    /// The request encoded as a frame, `{user}`, `{users}` and `{prepared}` in its JSON replaced.
    fn frame(&self, contract: &Contract, seq: u32, user: u64, users: &str) -> Result<Message, String> {
        self.frame_with(contract, seq, user, users, "")
    }

    fn frame_with(
        &self,
        contract: &Contract,
        seq: u32,
        user: u64,
        users: &str,
        prepared: &str,
    ) -> Result<Message, String> {
        let json = self
            .json
            .replace("{users}", users)
            .replace("{user}", &user.to_string())
            .replace("{prepared}", prepared);
        let data = contract.encode_request(&self.main, &self.sub, &json).map_err(|e| e.to_string())?;
        let msg = UserMessage {
            main_type: self.main.clone(),
            sub_type: self.sub.clone(),
            data,
            seq,
            ..Default::default()
        };
        Ok(Message::Binary(msg.encode_to_vec().into()))
    }
}

/// What a push run measured; `--json` writes it as is.
#[derive(Debug, Serialize)]
pub struct FanoutReport {
    /// The gateways, comma-separated.
    pub url: String,
    /// Clients asked for.
    pub clients: usize,
    /// Clients that connected and logged in.
    pub connected: usize,
    /// Length of the measured run in seconds.
    pub duration_s: f64,
    /// Rounds that reached every client in time.
    pub rounds: u64,
    /// Pushes the clients received during the run.
    pub pushes: u64,
    /// Pushes received per second.
    pub pushes_per_sec: f64,
    /// Per round: from the request's send until the last client had the push.
    pub time_to_last_ms: Latency,
    /// Failures by code or kind.
    pub errors: BTreeMap<String, u64>,
}

impl fmt::Display for FanoutReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.time_to_last_ms;
        writeln!(
            f,
            "push to {} of {} clients over {}, {:.1} s",
            self.connected, self.clients, self.url, self.duration_s
        )?;
        writeln!(
            f,
            "  pushes/s    {:.0} delivered ({} rounds, {} pushes)",
            self.pushes_per_sec, self.rounds, self.pushes
        )?;
        let errors: Vec<_> = self.errors.iter().map(|(kind, n)| format!("{kind} {n}")).collect();
        writeln!(f, "  errors      {}", if errors.is_empty() { "none".into() } else { errors.join(", ") })?;
        write!(
            f,
            "  until the last client has it, ms  p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}  mean {:.3}",
            l.p50, l.p90, l.p99, l.max, l.mean
        )
    }
}

/// The rounds in flight, shared by the sender and every reader.
struct Rounds {
    /// Clients each push must reach.
    clients: u32,
    /// Per ring slot: clients that have the round's push.
    arrivals: Vec<AtomicU32>,
    /// Per ring slot: when the round's request was sent, µs after `base`.
    sent_us: Vec<AtomicU64>,
    base: Instant,
    /// Free places in the window; a round gives its place back when it has reached everyone.
    window: Semaphore,
    completed: AtomicU64,
    pushes: AtomicU64,
    time_to_last: Mutex<Histogram<u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Rounds {
    fn error(&self, kind: impl Into<String>) {
        *self.errors.lock().unwrap_or_else(PoisonError::into_inner).entry(kind.into()).or_default() += 1;
    }

    fn micros(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// A client received its push of round `round`.
    fn arrived(&self, round: u64) {
        self.pushes.fetch_add(1, Ordering::Relaxed);
        let slot = (round % self.arrivals.len() as u64) as usize;
        if self.arrivals[slot].fetch_add(1, Ordering::AcqRel) + 1 == self.clients {
            let took = self.micros().saturating_sub(self.sent_us[slot].load(Ordering::Acquire));
            let _ = self.time_to_last.lock().unwrap_or_else(PoisonError::into_inner).record(took.max(1));
            self.completed.fetch_add(1, Ordering::Relaxed);
            self.window.add_permits(1);
        }
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects client `client` to `url` and sends its `login` requests one after another: each must
/// answer OK. Without `prepared` (the first client, before it prepares), the requests that name
/// `{prepared}` are left out.
async fn connect(
    url: String,
    login: &[Request],
    contract: &Contract,
    client: usize,
    prepared: &str,
) -> Result<Socket, String> {
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url.as_str(), Some(ws_config()), true)
        .await
        .map_err(|e| e.to_string())?;
    // The first client prepared: it skips what names the preparation's answer.
    let login = login.iter().filter(|request| !(prepared.is_empty() && request.json.contains("{prepared}")));
    for (seq, request) in (1..).zip(login) {
        ws.send(request.frame_with(contract, seq, client as u64 + 1, "", prepared)?)
            .await
            .map_err(|e| e.to_string())?;
        let reply = reply_to(&mut ws, seq).await?;
        if reply.code != 0 {
            return Err(format!(
                "{}.{} answered {}",
                request.main,
                request.sub,
                ErrorCode::name_of(reply.code)
            ));
        }
    }
    Ok(ws)
}

/// Reads until the reply of `seq`.
async fn reply_to(ws: &mut Socket, seq: u32) -> Result<UserMessage, String> {
    loop {
        let frame = ws.next().await.ok_or("closed")?.map_err(|e| e.to_string())?;
        let msg = UserMessage::decode(frame.into_data()).map_err(|e| e.to_string())?;
        if msg.seq == seq {
            return Ok(msg);
        }
    }
}

/// Sends `prepare` and answers the first field of its reply as text.
async fn prepared(
    ws: &mut Socket,
    prepare: &Request,
    contract: &Contract,
    users: &str,
) -> Result<String, String> {
    const SEQ: u32 = 1000;
    ws.send(prepare.frame(contract, SEQ, 1, users)?).await.map_err(|e| e.to_string())?;
    let reply = reply_to(ws, SEQ).await?;
    if reply.code != 0 {
        return Err(format!("answered {}", ErrorCode::name_of(reply.code)));
    }
    let json = contract.reply_json(&reply, false);
    let first =
        json["data"].as_object().and_then(|data| data.values().next()).ok_or("an answer without fields")?;
    Ok(first.as_str().map_or_else(|| first.to_string(), str::to_owned))
}

/// Runs the `push` scenario (see the module docs).
///
/// # Errors
/// No `--fanout` request, a request that does not encode, or no client connecting.
pub async fn run(options: &BotOptions, contract: Arc<Contract>) -> Result<FanoutReport, BotError> {
    let fanout = options.fanout.as_deref().ok_or_else(|| {
        BotError::Scenario(
            "the push scenario needs --fanout 'ROUTE JSON', a request that pushes to the users in `{users}`"
                .into(),
        )
    })?;
    let fanout = Request::parse("--fanout", fanout)?;
    let users: Vec<String> = (1..=options.clients).map(|user| user.to_string()).collect();
    let users = users.join(",");

    // The first client logs in and prepares; then every other client connects and logs in.
    let login = options.login.as_deref().map(|text| Request::parse_all("--login", text)).transpose()?;
    let login = Arc::new(login.unwrap_or_default());
    let prepare = options.prepare.as_deref().map(|text| Request::parse("--prepare", text)).transpose()?;
    let url = options.url_for(0).to_owned();
    let mut first = connect(url, &login, &contract, 0, "")
        .await
        .map_err(|reason| BotError::NoConnection { url: options.url.clone(), reason })?;
    let prepared = match &prepare {
        None => String::new(),
        Some(prepare) => prepared(&mut first, prepare, &contract, &users)
            .await
            .map_err(|error| BotError::Scenario(format!("--prepare: {error}")))?,
    };
    let fanout = Request { json: fanout.json.replace("{prepared}", &prepared), ..fanout };
    fanout
        .frame(&contract, 1, 1, &users)
        .map_err(|error| BotError::Scenario(format!("--fanout: {error}")))?;
    let mut connecting = tokio::task::JoinSet::new();
    let limit = Arc::new(Semaphore::new(256));
    for client in 1..options.clients {
        let (url, login, contract, limit, prepared) = (
            options.url_for(client).to_owned(),
            login.clone(),
            contract.clone(),
            limit.clone(),
            prepared.clone(),
        );
        connecting.spawn(async move {
            let _permit = limit.acquire_owned().await;
            Ok::<_, String>((client, connect(url, &login, &contract, client, &prepared).await?))
        });
    }
    let mut conns = vec![(0, first)];
    let mut first_error = None;
    let mut failed = 0u64;
    while let Some(joined) = connecting.join_next().await {
        match joined {
            Ok(Ok(conn)) => conns.push(conn),
            Ok(Err(error)) => {
                failed += 1;
                first_error.get_or_insert(error);
            }
            Err(_) => failed += 1,
        }
    }
    if conns.is_empty() {
        let reason = first_error.unwrap_or_else(|| "no clients asked for".into());
        return Err(BotError::NoConnection { url: options.url.clone(), reason });
    }
    if let Some(error) = &first_error {
        eprintln!("mortar bot: {failed} clients did not connect or log in; the first said: {error}");
    }
    conns.sort_by_key(|(client, _)| *client);

    let window = options.window.max(1);
    let ring = 2 * window;
    let rounds = Arc::new(Rounds {
        clients: u32::try_from(conns.len()).unwrap_or(u32::MAX),
        arrivals: (0..ring).map(|_| AtomicU32::new(0)).collect(),
        sent_us: (0..ring).map(|_| AtomicU64::new(0)).collect(),
        base: Instant::now(),
        window: Semaphore::new(window),
        completed: AtomicU64::new(0),
        pushes: AtomicU64::new(0),
        time_to_last: Mutex::new(
            Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
        ),
        errors: Mutex::default(),
    });
    let measured_from = Instant::now();
    let deadline = measured_from + options.duration;
    let mut senders = Vec::new();
    let mut readers = tokio::task::JoinSet::new();
    for (client, ws) in conns {
        let (sink, mut stream) = ws.split();
        if senders.len() < options.senders.max(1) {
            senders.push((client, sink));
        }
        let (rounds, counted) = (rounds.clone(), fanout.main.clone());
        readers.spawn(async move {
            let mut round = 0u64;
            loop {
                let frame = match tokio::time::timeout_at(deadline, stream.next()).await {
                    Err(_) => return,
                    Ok(Some(Ok(frame))) => frame,
                    Ok(_) => return rounds.error("closed"),
                };
                let Message::Binary(data) = frame else { continue };
                let Ok(msg) = UserMessage::decode(data) else { return rounds.error("bad_frame") };
                match (msg.seq, msg.code) {
                    (0, _) if msg.main_type == "sys" => rounds.error(format!("sys.{}", msg.sub_type)),
                    (0, _) if msg.main_type == counted => {
                        rounds.arrived(round);
                        round += 1;
                    }
                    (0, _) | (_, 0) => {}
                    (_, code) => rounds.error(ErrorCode::name_of(code)),
                }
            }
        });
    }

    // The senders, in turn: a round whenever the window has room.
    let mut round = 0u64;
    let mut seq = 1u32;
    while let Ok(Ok(permit)) = tokio::time::timeout_at(deadline, rounds.window.acquire()).await {
        permit.forget();
        let slot = (round % ring as u64) as usize;
        rounds.arrivals[slot].store(0, Ordering::Release);
        rounds.sent_us[slot].store(rounds.micros(), Ordering::Release);
        seq = seq.wrapping_add(1).max(2);
        let turn = (round % senders.len() as u64) as usize;
        let (sender, sink) = &mut senders[turn];
        let frame = match fanout.frame(&contract, seq, *sender as u64 + 1, &users) {
            Ok(frame) => frame,
            Err(error) => return Err(BotError::Scenario(format!("--fanout: {error}"))),
        };
        if sink.send(frame).await.is_err() {
            rounds.error("send");
            break;
        }
        round += 1;
    }
    while readers.join_next().await.is_some() {}
    let elapsed = measured_from.elapsed().min(options.duration).max(Duration::from_millis(1));

    let time_to_last = Latency::of(&rounds.time_to_last.lock().unwrap_or_else(PoisonError::into_inner));
    let pushes = rounds.pushes.load(Ordering::Relaxed);
    let mut errors = std::mem::take(&mut *rounds.errors.lock().unwrap_or_else(PoisonError::into_inner));
    if failed > 0 {
        errors.insert("connect".into(), failed);
    }
    let report = FanoutReport {
        url: options.url.clone(),
        clients: options.clients,
        connected: rounds.clients as usize,
        duration_s: elapsed.as_secs_f64(),
        rounds: rounds.completed.load(Ordering::Relaxed),
        pushes,
        pushes_per_sec: pushes as f64 / elapsed.as_secs_f64(),
        time_to_last_ms: time_to_last,
        errors,
    };
    if let Some(path) = &options.json {
        let text = serde_json::to_string_pretty(&report).expect("the report serializes");
        std::fs::write(path, text + "\n")
            .map_err(|source| BotError::Report { path: path.clone(), source })?;
    }
    Ok(report)
}
