//! One bot client's connection: the client side of a wire protocol (mortar or Pinus), and the
//! request loop that measures it.

use super::{
    BotOptions, Progress, Protocol, pinus, record, report::ClientStats, scenario::Scenario, scenario::Step,
};
use crate::client::{self, Contract, ws_config};
use bytes::Bytes;
use futures::{
    SinkExt as _, StreamExt as _,
    stream::{SplitSink, SplitStream},
};
use mortar_pb::{ErrorCode, UserMessage};
use prost::Message as _;
use std::{collections::VecDeque, sync::Arc, time::Duration};
use tokio::{net::TcpStream, time::Instant};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How often an idle mortar client pings (the gateway closes connections silent for 60 s).
const IDLE_PING: Duration = Duration::from_secs(20);

/// What happened in a client's run, for its stats.
pub(super) enum Event {
    /// A request went out.
    Sent,
    /// A reply came back after `latency`; `error` names its code when it is not OK.
    Reply {
        /// Time from the (scheduled) send to the reply.
        latency: Duration,
        /// The code's name, when not OK.
        error: Option<String>,
    },
    /// The connection failed: `send`, `closed`, `bad_frame`.
    Failed(&'static str),
}

/// A connected, set-up bot client.
pub(super) struct Conn {
    protocol: Protocol,
    contract: Arc<Contract>,
    sink: SplitSink<Ws, Message>,
    stream: SplitStream<Ws>,
    next_id: u32,
}

/// One request, encoded for the connection's protocol except for its id.
enum Prepared {
    Mortar { main: String, sub: String, data: Bytes },
    Pinus { route: String, body: Vec<u8> },
}

/// A reply as the protocols share it: the request id it answers and its error, if any.
struct Answer {
    id: u32,
    error: Option<String>,
}

impl Conn {
    /// Connects, does the protocol's handshake and the scenario's setup requests.
    ///
    /// # Errors
    /// A failed connection or handshake, or a setup request that is not answered OK.
    pub(super) async fn connect(
        options: &BotOptions,
        scenario: &dyn Scenario,
        contract: Arc<Contract>,
        client: usize,
    ) -> Result<Self, String> {
        let (ws, _) =
            tokio_tungstenite::connect_async_with_config(options.url_for(client), Some(ws_config()), true)
                .await
                .map_err(|error| error.to_string())?;
        let (sink, stream) = ws.split();
        let mut conn = Conn { protocol: options.protocol, contract, sink, stream, next_id: 1 };
        if conn.protocol == Protocol::Pinus {
            conn.pinus_handshake().await?;
        }
        for step in scenario.setup(client) {
            let prepared = conn.prepare(&step)?;
            let id = conn.send(&prepared).await.map_err(|e| e.to_string())?;
            loop {
                let frame =
                    conn.stream.next().await.ok_or("closed during setup")?.map_err(|e| e.to_string())?;
                let answers = conn.answers(frame).await.map_err(|kind| kind.to_owned())?;
                if let Some(answer) = answers.into_iter().find(|answer| answer.id == id) {
                    match answer.error {
                        None => break,
                        Some(code) if step.also_ok.contains(&code.as_str()) => break,
                        Some(code) => return Err(format!("setup request {} answered {code}", step.route)),
                    }
                }
            }
        }
        Ok(conn)
    }

    async fn pinus_handshake(&mut self) -> Result<(), String> {
        self.sink.send(Message::Binary(pinus::handshake().into())).await.map_err(|e| e.to_string())?;
        let frame = self
            .stream
            .next()
            .await
            .ok_or("closed during the Pinus handshake")?
            .map_err(|e| e.to_string())?;
        let packages = pinus::packages(frame.into_data().as_ref())
            .map(|p| p.into_iter().map(|(kind, body)| (kind, body.to_vec())).collect::<Vec<_>>());
        let Some((pinus::HANDSHAKE, body)) = packages.and_then(|p| p.into_iter().next()) else {
            return Err("no Pinus handshake reply".into());
        };
        let reply: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        if reply["code"] != 200 {
            return Err(format!("Pinus handshake refused: {reply}"));
        }
        self.sink
            .send(Message::Binary(pinus::package(pinus::HANDSHAKE_ACK, &[]).into()))
            .await
            .map_err(|e| e.to_string())
    }

    fn prepare(&self, step: &Step) -> Result<Prepared, String> {
        match self.protocol {
            Protocol::Mortar => {
                let (main, sub) = client::split_route(&step.route).map_err(|e| e.to_string())?;
                let data = self.contract.encode_request(main, sub, &step.json).map_err(|e| e.to_string())?;
                Ok(Prepared::Mortar { main: main.into(), sub: sub.into(), data })
            }
            Protocol::Pinus => {
                Ok(Prepared::Pinus { route: step.route.clone(), body: step.json.clone().into_bytes() })
            }
        }
    }

    /// Sends one request with a fresh id and returns the id.
    async fn send(&mut self, prepared: &Prepared) -> Result<u32, tokio_tungstenite::tungstenite::Error> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let frame = match prepared {
            Prepared::Mortar { main, sub, data } => {
                let msg = UserMessage {
                    main_type: main.clone(),
                    sub_type: sub.clone(),
                    data: data.clone(),
                    seq: id,
                    ..Default::default()
                };
                msg.encode_to_vec()
            }
            Prepared::Pinus { route, body } => pinus::request(id, route, body),
        };
        self.sink.send(Message::Binary(frame.into())).await?;
        Ok(id)
    }

    /// The replies in one frame; answers Pinus heartbeats on the way.
    async fn answers(&mut self, frame: Message) -> Result<Vec<Answer>, &'static str> {
        let data = match frame {
            Message::Binary(data) => data,
            Message::Close(_) => return Err("closed"),
            _ => return Ok(Vec::new()),
        };
        match self.protocol {
            Protocol::Mortar => {
                let msg = UserMessage::decode(data).map_err(|_| "bad_frame")?;
                if msg.seq == 0 {
                    return Ok(Vec::new()); // a push
                }
                let error = (msg.code != 0).then(|| ErrorCode::name_of(msg.code));
                Ok(vec![Answer { id: msg.seq, error }])
            }
            Protocol::Pinus => {
                let mut answers = Vec::new();
                let mut heartbeat = false;
                for (kind, body) in pinus::packages(&data).ok_or("bad_frame")? {
                    match kind {
                        pinus::HEARTBEAT => heartbeat = true,
                        pinus::KICK => return Err("closed"),
                        pinus::DATA => {
                            if let Some((id, json)) = pinus::response(body) {
                                answers.push(Answer { id, error: pinus_error(json) });
                            }
                        }
                        _ => {}
                    }
                }
                if heartbeat {
                    let beat = pinus::package(pinus::HEARTBEAT, &[]);
                    self.sink.send(Message::Binary(beat.into())).await.map_err(|_| "send")?;
                }
                Ok(answers)
            }
        }
    }

    /// Runs `step` again and again until `deadline`: closed loop when `rate` is 0, otherwise
    /// `rate` requests per second regardless of replies (latency counted from the scheduled send).
    /// With no step, holds the connection, sending only heartbeats.
    pub(super) async fn run(
        mut self,
        step: Option<Step>,
        rate: f64,
        deadline: Instant,
        progress: Arc<Progress>,
    ) -> ClientStats {
        let mut stats = ClientStats::new();
        let prepared = match step.as_ref().map(|step| self.prepare(step)).transpose() {
            Ok(prepared) => prepared,
            Err(_) => {
                stats.error("bad_step");
                return stats;
            }
        };
        let interval = match (&prepared, rate > 0.0) {
            (None, _) => IDLE_PING,
            (Some(_), true) => Duration::from_secs_f64(1.0 / rate),
            (Some(_), false) => Duration::MAX,
        };
        let ping = Prepared::Mortar { main: "sys".into(), sub: "ping".into(), data: Bytes::new() };
        let closed_loop = prepared.is_some() && rate <= 0.0;
        let mut pending: VecDeque<(u32, Instant)> = VecDeque::new();
        let mut next_send = Instant::now();
        loop {
            if closed_loop && pending.is_empty() {
                let Some(request) = &prepared else { break };
                match self.send(request).await {
                    Ok(id) => {
                        pending.push_back((id, Instant::now()));
                        record(&mut stats, &progress, Event::Sent);
                    }
                    Err(_) => {
                        record(&mut stats, &progress, Event::Failed("send"));
                        break;
                    }
                }
            }
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(deadline) => break,
                frame = self.stream.next() => {
                    let frame = match frame {
                        Some(Ok(frame)) => frame,
                        Some(Err(_)) | None => {
                            record(&mut stats, &progress, Event::Failed("closed"));
                            break;
                        }
                    };
                    match self.answers(frame).await {
                        Ok(answers) => {
                            for answer in answers {
                                if let Some(at) = pending.iter().position(|(id, _)| *id == answer.id) {
                                    let (_, sent) = pending.remove(at).unwrap_or((0, Instant::now()));
                                    record(&mut stats, &progress, Event::Reply { latency: sent.elapsed(), error: answer.error });
                                }
                            }
                        }
                        Err(kind) => {
                            record(&mut stats, &progress, Event::Failed(kind));
                            break;
                        }
                    }
                }
                () = tokio::time::sleep_until(next_send), if !closed_loop => {
                    let scheduled = next_send;
                    next_send += interval;
                    let (request, tracked) = match &prepared {
                        Some(request) => (request, true),
                        None if self.protocol == Protocol::Mortar => (&ping, false),
                        None => continue,
                    };
                    match self.send(request).await {
                        Ok(id) if tracked => {
                            pending.push_back((id, scheduled));
                            record(&mut stats, &progress, Event::Sent);
                        }
                        Ok(_) => {}
                        Err(_) => {
                            record(&mut stats, &progress, Event::Failed("send"));
                            break;
                        }
                    }
                }
            }
        }
        let _ = self.sink.close().await;
        stats
    }
}

/// A Pinus reply's error: its JSON `code` when present and not 200.
fn pinus_error(json: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(json).ok()?;
    let code = value.get("code")?.as_i64()?;
    (code != 200).then(|| format!("PINUS_{code}"))
}
