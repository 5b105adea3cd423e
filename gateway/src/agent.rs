//! The agent: one task per client connection. It reads frames, checks them against the session's
//! limits, runs or relays requests, and writes replies and pushes through the connection's
//! outgoing queue ([`Socket`]).
//!
//! The agent's loop ends when:
//! 1. the client closes the connection (its close frame is echoed) or the socket fails;
//! 2. the client sends a frame that is not a binary `UserMessage`, or one over the size limit
//!    (closed with 1007, 1003 or 1009 and a reason);
//! 3. the client is silent for the read timeout (closed with 1000, "idle timeout");
//! 4. the client's outgoing queue stays full for the write timeout because it does not read
//!    (disconnected; while the queue is full the agent reads nothing from that client);
//! 5. the node shuts down (`sys.kick` with `SERVER_SHUTDOWN`, then closed with 1001);
//! 6. the session is kicked (a worker's `kick`: `sys.kick` with its reason, then closed with
//!    1008).
//!
//! In cases 2, 3, 5 and 6 every request already read gets its reply before the close frame (on
//! shutdown and kick, requests not yet started are answered `SERVER_SHUTDOWN` or the kick's
//! reason). In every case a request
//! already started runs to completion (or its deadline) before the session's task ends, so a
//! client that leaves mid-request never cuts a handler short between two writes; requests not
//! started yet are dropped. Only the node's shutdown grace period cuts them short.

use super::{
    Shared,
    envelope::{self, Envelope, Inbound},
    mailbox::{Delivery, Mailbox},
    running::{Local, PendingReply, Running},
    sessions,
    socket::{Close, Io, Outbound, ReadError, Socket},
    websocket::frame::{Frame, Violation, close_code},
};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use mortar_abi::Code;
use mortar_cluster::rpc::AgentMessage;
use mortar_pb::{Descriptors, Kick};
use mortar_telemetry::metrics as m;
use mortar_telemetry::trace;
use prost::Message as _;
use std::{
    collections::VecDeque,
    future::poll_fn,
    net::IpAddr,
    num::NonZeroU32,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};
use tokio::{
    net::TcpStream,
    time::{Instant, Sleep},
};
use tokio_util::sync::CancellationToken;

/// Why the agent's loop ended.
enum End {
    /// Nothing more can be sent: the client is gone, or does not read. The label is the reason.
    Gone(&'static str),
    /// Close with this frame after the pending replies. The label is the reason.
    Close(Close, &'static str),
    /// The node is shutting down.
    Shutdown,
    /// The session was kicked with this reason code.
    Kicked(i32),
    /// The client sent a close frame, with this code: it is echoed (RFC 6455 §5.5.1), nothing
    /// more is sent.
    ClientClosed(Option<u16>),
}

/// One session's request state.
struct Agent {
    shared: Arc<Shared>,
    session: u64,
    ip: IpAddr,
    socket: Socket,
    /// Requests read and admitted, not started yet, in arrival order.
    waiting: VecDeque<Envelope>,
    /// Requests started, yielding replies in arrival order.
    running: Running,
    limiter: Option<DefaultDirectRateLimiter>,
    /// The logged-in user (0: none), set through the session table by a worker's bind.
    user: Arc<AtomicU64>,
}

/// Runs one client's session until it ends (see the module docs).
///
/// Its log events carry `node`, `session` and `ip` as fields rather than through a span: entering
/// a span on every poll of every connection costs more than the few events it would label.
pub(super) async fn run(
    shared: Arc<Shared>,
    stream: TcpStream,
    read: BytesMut,
    session: u64,
    ip: IpAddr,
    shutdown: CancellationToken,
) {
    let owner = shared.clone();
    let config = &owner.config;
    let mailbox = Arc::new(Mailbox::new(config.outbound_queue));
    let user = Arc::new(AtomicU64::new(0));
    let registered = Registered::new(&owner, session, mailbox.clone(), user.clone(), ip);
    // The gateway kicks every session it knows when it shuts down (`sessions::SHUTDOWN`); one
    // registered after that sees the token cancelled.
    if shutdown.is_cancelled() {
        owner.sessions.kick(session, sessions::SHUTDOWN);
    }
    let limiter = NonZeroU32::new(config.rate_per_sec).map(|rate| {
        let burst = NonZeroU32::new(config.rate_burst).unwrap_or(rate);
        RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
    });
    let socket =
        Socket::new(stream, read, config.read_buffer_bytes, config.max_frame_bytes, config.outbound_queue);
    let mut agent = Agent {
        shared,
        session,
        ip,
        socket,
        waiting: VecDeque::new(),
        running: Running::new(config.session_concurrency),
        limiter,
        user,
    };
    // Re-armed only when it fires: resetting a timer on every frame costs more than reading the
    // clock. `active` is when the client last sent or got something.
    let idle = tokio::time::sleep(config.read_timeout());
    tokio::pin!(idle);
    let mut active = Instant::now();
    // Boxed and only while the outgoing queue is full: most connections never need it.
    let mut stalled: Option<Pin<Box<Sleep>>> = None;
    // When the pushes held back go (`push_flush_ms`): boxed, made at the first push held.
    let push_flush = config.push_flush();
    let mut flush: Option<Pin<Box<Sleep>>> = None;

    let end = loop {
        if agent.socket.has_room() {
            stalled = None;
        } else if stalled.is_none() {
            stalled = Some(Box::pin(tokio::time::sleep(config.write_timeout())));
        }
        tokio::select! {
            biased;
            Some(reply) = agent.running.next(), if !agent.running.is_empty() && agent.socket.has_room() => {
                agent.reply(reply);
                agent.start_ready();
                active = Instant::now();
            }
            // Before reading more requests: a kick ends the session before it reads another.
            delivery = mailbox.next(agent.socket.has_room()) => match delivery {
                Delivery::Kicked(sessions::SHUTDOWN) => break End::Shutdown,
                Delivery::Kicked(reason) => break End::Kicked(reason),
                Delivery::Push(push) => {
                    agent.socket.queue(Outbound::Frame(push));
                    if let Some(delay) = push_flush && !agent.socket.is_holding() {
                        agent.socket.hold();
                        let until = Instant::now() + delay;
                        match &mut flush {
                            Some(flush) => flush.as_mut().reset(until),
                            None => flush = Some(Box::pin(tokio::time::sleep_until(until))),
                        }
                    }
                }
            },
            io = agent.socket.io() => {
                let frame = match io {
                    Io::Read(frame) => frame,
                    // Take replies and pushes again (the loop re-checks the queue).
                    Io::Room => continue,
                    Io::WriteFailed => break End::Gone("error"),
                };
                active = Instant::now();
                let handled = match frame {
                    Some(Ok(Frame::Binary(data))) => agent.accept(data),
                    Some(Ok(Frame::Text)) => Err(End::Close(
                        close(close_code::UNSUPPORTED, "text frames are not supported: send binary UserMessage frames"),
                        "text_frame",
                    )),
                    Some(Ok(Frame::Ping(payload))) => {
                        // An answer, like a reply: it does not wait for held pushes.
                        agent.socket.queue(Outbound::Pong(payload));
                        agent.socket.release();
                        Ok(())
                    }
                    Some(Ok(Frame::Pong)) => Ok(()),
                    Some(Ok(Frame::Close(code))) => Err(End::ClientClosed(code)),
                    None => Err(End::Gone("client")),
                    Some(Err(ReadError::Violation(violation))) => {
                        let label = match violation {
                            Violation::TooLarge { .. } => "frame_too_large",
                            Violation::Protocol(_) | Violation::NotUtf8 => "protocol_error",
                        };
                        Err(End::Close(close(violation.close_code(), &violation.reason()), label))
                    }
                    Some(Err(ReadError::Io(error))) => {
                        tracing::debug!(node = %agent.shared.node_id, session, %ip, %error, "client connection failed");
                        Err(End::Gone("error"))
                    }
                };
                if let Err(end) = handled {
                    break end;
                }
            }
            () = &mut idle => {
                let until = active + config.read_timeout();
                if until <= Instant::now() {
                    break End::Close(close(close_code::NORMAL, "idle timeout"), "idle");
                }
                idle.as_mut().reset(until);
            }
            () = expired(&mut flush), if agent.socket.is_holding() => agent.socket.release(),
            () = expired(&mut stalled) => {
                agent.does_not_read();
                break End::Gone("queue_full");
            }
        }
    };

    // No more pushes: the session is ending.
    drop(registered);
    let user = agent.user.load(Ordering::Acquire);
    if user != 0 {
        agent.shared.unbind(user, session, ip);
    }
    let reason = match &end {
        End::Gone(reason) | End::Close(_, reason) => *reason,
        End::Shutdown => "shutdown",
        End::Kicked(_) => "kicked",
        End::ClientClosed(_) => "client",
    };
    metrics::counter!(m::SESSIONS_CLOSED, "reason" => reason).increment(1);
    tracing::debug!(node = %agent.shared.node_id, session, %ip, reason, "session ending");
    // Boxed: the goodbye runs once; its state need not be part of every idle connection's task.
    Box::pin(agent.finish(end)).await;
}

/// Completes when the timer is set and has fired.
async fn expired(timer: &mut Option<Pin<Box<Sleep>>>) {
    match timer {
        Some(timer) => timer.await,
        None => std::future::pending().await,
    }
}

impl Agent {
    /// Takes one binary frame: a request is queued (or refused at once with `RATE_LIMITED` /
    /// `BAD_REQUEST`), a malformed frame ends the session.
    fn accept(&mut self, frame: Bytes) -> Result<(), End> {
        let config = &self.shared.config;
        let checked = match envelope::inspect(frame, config.max_route_bytes) {
            Inbound::Request(msg) => Ok(msg),
            Inbound::Refuse(reply) => Err(reply),
            Inbound::Malformed(reason) => {
                return Err(End::Close(close(close_code::INVALID, &reason), "bad_envelope"));
            }
        };
        // Every frame counts against the rate, also one refused for its own fault: a client must
        // not get an answer per frame at any speed by sending bad ones.
        if self.limiter.as_ref().is_some_and(|limiter| limiter.check().is_err()) {
            let reason = format!("over the limit of {} requests per second", config.rate_per_sec);
            let (main_type, sub_type, seq) = match checked {
                Ok(msg) => (msg.main_type, msg.sub_type, msg.seq),
                Err(refusal) => (refusal.main_type, refusal.sub_type, refusal.seq),
            };
            self.reply(envelope::reply_because(main_type, sub_type, seq, Code::RATE_LIMITED, reason));
            return Ok(());
        }
        let msg = match checked {
            Ok(msg) => msg,
            Err(refusal) => {
                self.reply(refusal);
                return Ok(());
            }
        };
        if self.waiting.len() + self.running.len() >= config.max_in_flight {
            let reason = format!("over the limit of {} requests in flight", config.max_in_flight);
            self.reply(envelope::reply_because(
                msg.main_type,
                msg.sub_type,
                msg.seq,
                Code::RATE_LIMITED,
                reason,
            ));
            return Ok(());
        }
        self.waiting.push_back(msg);
        self.start_ready();
        Ok(())
    }

    /// Starts waiting requests while fewer than `session_concurrency` run.
    fn start_ready(&mut self) {
        while self.running.len() < self.shared.config.session_concurrency {
            let Some(msg) = self.waiting.pop_front() else { return };
            let reply = self.request(msg);
            self.running.push_back(reply);
        }
    }

    /// The reply to one request: answered here for `sys.*`, run on this task when the node's own
    /// worker serves it (no box around its handler's future, its deadline kept by [`Running`]),
    /// relayed to a worker otherwise.
    fn request(&self, msg: Envelope) -> PendingReply {
        let Envelope { main_type, sub_type, data, seq, .. } = msg;
        if main_type == "sys" {
            let reply = match &*sub_type {
                "ping" => Envelope {
                    main_type,
                    sub_type: ByteString::from_static("pong"),
                    seq,
                    ..Default::default()
                },
                "descriptors" if self.shared.config.serve_descriptors => {
                    let relay = self.shared.relay.clone();
                    return PendingReply::Future(Box::pin(async move {
                        match relay.descriptors().await {
                            Ok(set) => {
                                let body = Descriptors { file_descriptor_set: set };
                                Envelope {
                                    main_type,
                                    sub_type,
                                    seq,
                                    data: body.encode_to_vec().into(),
                                    ..Default::default()
                                }
                            }
                            Err(code) => envelope::reply_code(main_type, sub_type, seq, code),
                        }
                    }));
                }
                "descriptors" => {
                    let reason = "this gateway does not serve descriptors".into();
                    envelope::reply_because(main_type, sub_type, seq, Code::NO_ROUTE, reason)
                }
                _ => {
                    let served: &[&str] = if self.shared.config.serve_descriptors {
                        &["descriptors", "ping"]
                    } else {
                        &["ping"]
                    };
                    let reason =
                        mortar_cluster::suggest::no_route(&main_type, &sub_type, served.iter().copied());
                    envelope::reply_because(main_type, sub_type, seq, Code::NO_ROUTE, reason)
                }
            };
            return PendingReply::Ready(reply);
        }
        let msg = AgentMessage {
            main: main_type,
            sub: sub_type,
            seq,
            data,
            session: self.session,
            user: match self.user.load(Ordering::Acquire) {
                0 => None,
                user => Some(user),
            },
            client_ip: self.ip,
            gateway: self.shared.node_id.clone(),
            trace_id: trace::new_trace_id(),
        };
        let relay = &self.shared.relay;
        if let Some(worker) = relay.own_worker() {
            let deadline = std::time::Instant::now() + relay.timeout();
            let (main_type, sub_type, trace_id) = (msg.main.clone(), msg.sub.clone(), msg.trace_id);
            let reply = worker.handle(msg, deadline);
            return PendingReply::Local(Local {
                main_type,
                sub_type,
                seq,
                session: self.session,
                trace_id,
                reply,
                deadline,
            });
        }
        let relay = relay.clone();
        PendingReply::Future(Box::pin(async move {
            let reply = relay.relay(&msg).await;
            envelope::relayed(msg.main, msg.sub, seq, reply)
        }))
    }

    /// Queues a reply for the client, which takes the pushes held before it along.
    fn reply(&mut self, reply: Envelope) {
        self.shared.count_reply(reply.code);
        self.socket.queue(Outbound::Reply(reply));
        self.socket.release();
    }

    /// Counts and logs a client disconnected because it does not read.
    fn does_not_read(&self) {
        metrics::counter!(m::QUEUE_FULL).increment(1);
        tracing::info!(
            node = %self.shared.node_id,
            session = self.session,
            ip = %self.ip,
            "client does not read: outgoing queue full for the write timeout, disconnecting"
        );
    }

    /// Waits, writing, until the outgoing queue has room again.
    ///
    /// # Errors
    /// When the socket fails, or the queue stays full for the write timeout (the client does not
    /// read).
    async fn make_room(&mut self) -> Result<(), ()> {
        if self.socket.has_room() {
            return Ok(());
        }
        match tokio::time::timeout(self.shared.config.write_timeout(), self.socket.make_room()).await {
            Ok(written) => written.map_err(drop),
            Err(_) => {
                self.does_not_read();
                Err(())
            }
        }
    }

    /// The next reply of the requests started, writing what is queued meanwhile.
    async fn next_reply(&mut self) -> Option<Envelope> {
        poll_fn(|cx| {
            // Write errors surface at the next `make_room` or flush.
            let _ = self.socket.poll_write(cx);
            self.running.poll_next(cx)
        })
        .await
    }

    /// Answers every request read: running ones with their replies, waiting ones by running them,
    /// or with code `refuse` when given (the reason: the server shuts down, or the session was
    /// kicked). False when the client stopped taking replies.
    async fn drain(&mut self, refuse: Option<Code>) -> bool {
        if let Some(code) = refuse {
            let reason = match code {
                Code::SERVER_SHUTDOWN => "the server is shutting down",
                _ => "this session is being closed",
            };
            for msg in std::mem::take(&mut self.waiting) {
                let (main_type, sub_type, seq) = (msg.main_type, msg.sub_type, msg.seq);
                let reply = envelope::reply_because(main_type, sub_type, seq, code, reason.into());
                self.running.push_back(PendingReply::Ready(reply));
            }
        }
        loop {
            self.start_ready();
            let Some(reply) = self.next_reply().await else { return true };
            self.reply(reply);
            if self.make_room().await.is_err() {
                return false;
            }
        }
    }

    /// Lets every started request finish when its reply can no longer be sent; the replies are
    /// dropped.
    async fn abandon(&mut self) {
        self.waiting.clear();
        while self.running.next().await.is_some() {}
    }

    /// Says goodbye after the loop ended: answers what was read, pushes `sys.kick` on shutdown
    /// and kick, sends the close frame. Requests whose replies cannot be sent any more are left
    /// to finish.
    async fn finish(&mut self, end: End) {
        let (kick, frame) = match end {
            End::Gone(_) => return self.abandon().await,
            End::ClientClosed(code) => {
                let write_timeout = self.shared.config.write_timeout();
                let _ = tokio::time::timeout(write_timeout, self.socket.echo_close(code)).await;
                return self.abandon().await;
            }
            End::Close(frame, _) => (None, frame),
            End::Shutdown => (Some(Code::SERVER_SHUTDOWN), close(close_code::AWAY, "server shutdown")),
            End::Kicked(reason) => (Some(Code::from_wire(reason)), close(close_code::POLICY, "kicked")),
        };
        if !self.drain(kick).await {
            return self.abandon().await;
        }
        if let Some(reason) = kick {
            let kick = Kick { reason: reason.get() }.encode_to_vec();
            metrics::counter!(m::KICKS, "reason" => m::code_label(reason.get())).increment(1);
            metrics::counter!(m::PUSHES, "route" => "sys.kick").increment(1);
            self.socket.queue(Outbound::Frame(envelope::push("sys", "kick", &kick)));
        }
        self.socket.queue(Outbound::Close(frame));
        let write_timeout = self.shared.config.write_timeout();
        if !matches!(tokio::time::timeout(write_timeout, self.socket.flush()).await, Ok(Ok(()))) {
            tracing::debug!(node = %self.shared.node_id, session = self.session, "goodbye not delivered");
        }
    }
}

/// The session's entry in the gateway's session table, removed when dropped (also when the
/// session's task is aborted), so pushes never find a session that is gone.
struct Registered<'a> {
    shared: &'a Shared,
    session: u64,
}

impl<'a> Registered<'a> {
    fn new(
        shared: &'a Shared,
        session: u64,
        mailbox: Arc<Mailbox>,
        user: Arc<AtomicU64>,
        ip: IpAddr,
    ) -> Self {
        shared.sessions.insert(session, mailbox, user, ip);
        Self { shared, session }
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.shared.sessions.remove(self.session);
    }
}

/// A close frame (the socket cuts the reason to the 123 bytes the protocol allows).
fn close(code: u16, reason: &str) -> Close {
    Close { code, reason: reason.to_owned() }
}
