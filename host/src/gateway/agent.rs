//! The agent: one per client connection. Its task reads frames and relays requests; a writer task
//! fed by a bounded channel sends replies and pushes.
//!
//! The agent's loop ends when:
//! 1. the client closes the connection or the socket fails;
//! 2. the client sends a frame that is not a binary `UserMessage`, or one over the size limit
//!    (closed with 1007, 1003 or 1009 and a reason);
//! 3. the client is silent for the read timeout (closed with 1000, "idle timeout");
//! 4. the client stops reading and its outgoing queue stays full for the read timeout;
//! 5. the node shuts down (`sys.kick` with `SERVER_SHUTDOWN`, then closed with 1001).
//!
//! In every case but 1 and 4, requests already read get their replies before the close frame.

use super::Shared;
use crate::rpc::{AgentMessage, Reply};
use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _, stream::FuturesOrdered};
use mortar::Code;
use mortar_pb::{Kick, UserMessage};
use prost::Message as _;
use std::{future::Future, net::IpAddr, pin::Pin, sync::Arc};
use tokio::{net::TcpStream, sync::mpsc, time::Instant};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        self, Message,
        error::CapacityError,
        protocol::{CloseFrame, frame::coding::CloseCode},
    },
};
use tokio_util::sync::CancellationToken;

type PendingReply = Pin<Box<dyn Future<Output = UserMessage> + Send>>;

/// What the writer task sends to the client.
enum Outbound {
    Frame(Message),
    Close(CloseFrame),
}

/// Why the agent's loop ended.
enum End {
    /// The client is gone, or will not read: nothing more can be sent.
    Gone,
    /// Close with this frame after the pending replies.
    Close(CloseFrame),
    /// The node is shutting down.
    Shutdown,
}

/// Runs one client's session until it ends (see the module docs).
pub(super) async fn run(
    shared: Arc<Shared>,
    ws: WebSocketStream<TcpStream>,
    session: u64,
    ip: IpAddr,
    shutdown: CancellationToken,
) {
    let config = &shared.config;
    let (sink, mut frames) = ws.split();
    let (out, out_rx) = mpsc::channel(config.outbound_queue);
    let writer = tokio::spawn(write(sink, out_rx));
    let mut pending: FuturesOrdered<PendingReply> = FuturesOrdered::new();
    let idle = tokio::time::sleep(config.read_timeout());
    tokio::pin!(idle);

    let end = loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break End::Shutdown,
            Some(reply) = pending.next(), if !pending.is_empty() => {
                if !send(&out, Outbound::Frame(encode(&reply)), config.read_timeout()).await {
                    break End::Gone;
                }
                idle.as_mut().reset(Instant::now() + config.read_timeout());
            }
            frame = frames.next(), if pending.len() < config.max_in_flight => {
                idle.as_mut().reset(Instant::now() + config.read_timeout());
                match frame {
                    Some(Ok(Message::Binary(data))) => match UserMessage::decode(data) {
                        Ok(msg) => pending.push_back(request(&shared, msg, session, ip)),
                        Err(error) => break End::Close(close(CloseCode::Invalid, &format!("bad envelope: {error}"))),
                    },
                    Some(Ok(Message::Text(_))) => {
                        break End::Close(close(CloseCode::Unsupported, "text frames are not supported: send binary UserMessage frames"));
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Close(_))) | None => break End::Gone,
                    Some(Err(tungstenite::Error::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                        break End::Close(close(CloseCode::Size, &format!("frame of {size} bytes exceeds the limit of {max_size}")));
                    }
                    Some(Err(error)) => {
                        tracing::debug!(session, %error, "client connection failed");
                        break End::Gone;
                    }
                }
            }
            () = &mut idle => break End::Close(close(CloseCode::Normal, "idle timeout")),
        }
    };

    let gone = matches!(end, End::Gone);
    if !gone {
        // Every request read gets its reply, also when the session is being closed.
        while let Some(reply) = pending.next().await {
            if !send(&out, Outbound::Frame(encode(&reply)), config.read_timeout()).await {
                break;
            }
        }
        let frame = match end {
            End::Close(frame) => frame,
            _ => {
                let kick = push(
                    "sys",
                    "kick",
                    Kick {
                        reason: Code::SERVER_SHUTDOWN.get(),
                    }
                    .encode_to_vec(),
                );
                send(&out, Outbound::Frame(encode(&kick)), config.read_timeout()).await;
                close(CloseCode::Away, "server shutdown")
            }
        };
        send(&out, Outbound::Close(frame), config.read_timeout()).await;
    }
    drop(out);
    if gone {
        writer.abort();
    }
    let _ = writer.await;
}

/// The reply to one request: answered here for `sys.*`, relayed to a worker otherwise.
fn request(shared: &Arc<Shared>, msg: UserMessage, session: u64, ip: IpAddr) -> PendingReply {
    let UserMessage {
        main_type,
        sub_type,
        data,
        seq,
        ..
    } = msg;
    if main_type == "sys" {
        let reply = match sub_type.as_str() {
            "ping" => UserMessage {
                main_type,
                sub_type: "pong".into(),
                seq,
                ..Default::default()
            },
            _ => UserMessage {
                main_type,
                sub_type,
                seq,
                code: Code::NO_ROUTE.get(),
                ..Default::default()
            },
        };
        return Box::pin(std::future::ready(reply));
    }
    let relay = shared.relay.clone();
    let agent_message = AgentMessage {
        main: main_type.clone(),
        sub: sub_type.clone(),
        seq,
        data,
        session,
        user: None,
        client_ip: ip,
        gateway: shared.node_id.clone(),
    };
    Box::pin(async move {
        let Reply { code, data } = relay.relay(agent_message).await;
        UserMessage {
            main_type,
            sub_type,
            code,
            data,
            seq,
        }
    })
}

/// A server push: `seq` 0.
fn push(main: &str, sub: &str, data: Vec<u8>) -> UserMessage {
    UserMessage {
        main_type: main.into(),
        sub_type: sub.into(),
        data: data.into(),
        ..Default::default()
    }
}

fn encode(msg: &UserMessage) -> Message {
    Message::Binary(Bytes::from(msg.encode_to_vec()))
}

/// A close frame; the reason is cut to the 123 bytes the protocol allows.
fn close(code: CloseCode, reason: &str) -> CloseFrame {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame {
        code,
        reason: reason[..end].to_owned().into(),
    }
}

/// Queues `item` for the writer; false when the writer is gone or the queue stayed full for
/// `patience` (the client is not reading).
async fn send(out: &mpsc::Sender<Outbound>, item: Outbound, patience: std::time::Duration) -> bool {
    matches!(
        tokio::time::timeout(patience, out.send(item)).await,
        Ok(Ok(()))
    )
}

/// The writer task: sends what is queued, flushing once per batch, until the queue closes, a
/// close frame is sent, or the socket fails.
async fn write<S>(mut sink: S, mut queue: mpsc::Receiver<Outbound>)
where
    S: futures::Sink<Message, Error = tungstenite::Error> + Unpin,
{
    while let Some(first) = queue.recv().await {
        let mut next = Some(first);
        while let Some(item) = next {
            let fed = match item {
                Outbound::Frame(message) => sink.feed(message).await,
                Outbound::Close(frame) => {
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    return;
                }
            };
            if fed.is_err() {
                return;
            }
            next = queue.try_recv().ok();
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reason_is_cut_to_the_protocol_limit_on_a_char_boundary() {
        let reason = "é".repeat(100); // 200 bytes
        let frame = close(CloseCode::Invalid, &reason);
        assert!(frame.reason.len() <= 123);
        assert_eq!(frame.reason.len(), 122);
        assert_eq!(
            close(CloseCode::Normal, "idle timeout").reason.as_str(),
            "idle timeout"
        );
    }

    #[test]
    fn frames_encode_as_user_messages() {
        let kick = push(
            "sys",
            "kick",
            Kick {
                reason: Code::SERVER_SHUTDOWN.get(),
            }
            .encode_to_vec(),
        );
        let Message::Binary(frame) = encode(&kick) else {
            panic!("binary frame")
        };
        let decoded = UserMessage::decode(frame).unwrap();
        assert_eq!((decoded.seq, decoded.code), (0, 0));
        assert_eq!(Kick::decode(decoded.data).unwrap().reason, 13);
    }
}
