//! Hostile clients: every limit a client can hit is enforced with a code or a close, the node stays
//! up, and well-behaved clients on other sessions are not affected.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use mortar_cli::client::Client;
use mortar_echo::echo::EchoResp;
use mortar_pb::ErrorCode;
use mortar_tests::{DevNode, Received, admin_get, echo_body, raw, receive, request, send};
use prost::Message as _;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::{self, Message, protocol::frame::coding::CloseCode};

/// Fails the test instead of hanging when the server does not do what it must.
const GUARD: Duration = Duration::from_secs(20);

async fn echo_ok(client: &mut Client, text: &str) {
    let reply = client.request("echo", "say", echo_body(text), |_| {}).await.expect("reply");
    assert_eq!(reply.code, 0);
    assert_eq!(EchoResp::decode(reply.data).unwrap().text, text);
}

/// A WebSocket client whose socket has a 4 KiB receive buffer, so that what it does not read
/// soon backs up into the server.
async fn small_window_client(node: &DevNode) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(node.addr).await.unwrap();
    tokio_tungstenite::client_async(node.url(), stream).await.unwrap().0
}

/// Frames that are never a `UserMessage`: each starts with a field tag of wire type 6 or 7 (which
/// do not exist), or cuts a field short, followed by pseudo-random bytes.
fn garbage(n: u64) -> Bytes {
    let mut state = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let len = 1 + (state >> 33) as usize % 300;
    let mut frame = Vec::with_capacity(len + 2);
    frame.push(match n % 4 {
        0 => 0x0f, // field 1, wire type 7
        1 => 0x16, // field 2, wire type 6
        2 => 0x22, // field 4 (bytes), length below runs past the end
        _ => 0xff, // field 31, wire type 7
    });
    if n % 4 == 2 {
        frame.extend_from_slice(&[0xff, 0xff, 0x03]);
    }
    for _ in 0..len {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        frame.push((state >> 56) as u8);
    }
    frame.into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_flood_closes_every_sender_and_spares_the_others() {
    let node = DevNode::start().await;
    let mut bystander = Client::connect(&node.url()).await.unwrap();
    let flooders = (0..50u64).map(|c| {
        let url = node.url();
        tokio::spawn(async move {
            let mut socket = raw(&url).await;
            // 200 frames each, 10,000 in all, sent without waiting; sends after the server's close fail.
            for f in 0..200 {
                if socket.feed(Message::Binary(garbage(c * 200 + f))).await.is_err() {
                    break;
                }
            }
            let _ = socket.flush().await;
            tokio::time::timeout(GUARD, async {
                match receive(&mut socket).await {
                    Received::Closed(frame) => frame,
                    Received::Message(msg) => panic!("garbage got a reply: {msg:?}"),
                }
            })
            .await
            .expect("the server closes a garbage sender")
        })
    });
    let during = async {
        for i in 0..50 {
            echo_ok(&mut bystander, &format!("bystander {i}")).await;
        }
    };
    let (closes, ()) = tokio::join!(futures::future::join_all(flooders), during);
    let with_reason = closes.into_iter().filter_map(|close| close.expect("flooder task")).count();
    // A sender may see its connection reset before reading the close frame; most read it.
    assert!(with_reason > 0, "no flooder read a close frame");
    assert!(node.is_running());
    echo_ok(&mut bystander, "after the flood").await;
    let mut newcomer = Client::connect(&node.url()).await.unwrap();
    echo_ok(&mut newcomer, "newcomer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_over_the_rate_limit_gets_rate_limited_replies() {
    let node = DevNode::with_config(|config| {
        config.gateway.rate_per_sec = 50;
        config.gateway.rate_burst = 50;
        config.gateway.max_in_flight = 1000;
    })
    .await;
    let flooder = {
        let url = node.url();
        tokio::spawn(async move {
            let mut socket = raw(&url).await;
            for seq in 1..=500u32 {
                socket.feed(request("echo.say", seq, echo_body("flood"))).await.unwrap();
            }
            socket.flush().await.unwrap();
            let mut counts = [0usize; 2];
            let mut seen = std::collections::HashSet::new();
            while seen.len() < 500 {
                let Received::Message(reply) = receive(&mut socket).await else { panic!("closed") };
                assert!(seen.insert(reply.seq), "seq {} answered twice", reply.seq);
                match ErrorCode::try_from(reply.code) {
                    Ok(ErrorCode::Ok) => counts[0] += 1,
                    Ok(ErrorCode::RateLimited) => {
                        assert_eq!(reply.reason, "over the limit of 50 requests per second");
                        counts[1] += 1;
                    }
                    other => panic!("unexpected code {other:?}"),
                }
            }
            counts
        })
    };
    // A normal client on its own session keeps getting answers while the flood runs.
    let mut normal = Client::connect(&node.url()).await.unwrap();
    let mut latencies = Vec::new();
    for i in 0..40 {
        let started = Instant::now();
        echo_ok(&mut normal, &format!("normal {i}")).await;
        latencies.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let [ok, limited] = tokio::time::timeout(GUARD, flooder).await.expect("flood answered").unwrap();
    assert!(ok >= 50 && limited > 0, "ok {ok}, rate limited {limited}");
    latencies.sort();
    println!(
        "normal client during the flood: p50 {:?}, max {:?}",
        latencies[latencies.len() / 2],
        latencies.last()
    );
}

#[tokio::test]
async fn requests_over_the_in_flight_limit_are_refused_at_once() {
    let node = DevNode::with_config(|config| config.gateway.max_in_flight = 4).await;
    let mut socket = raw(&node.url()).await;
    for seq in 1..=10u32 {
        send(&mut socket, request("testkit.slow", seq, echo_body("200"))).await;
    }
    let mut replies = Vec::new();
    for _ in 0..10 {
        let Received::Message(reply) = receive(&mut socket).await else { panic!("closed") };
        if reply.code == ErrorCode::RateLimited as i32 {
            assert_eq!(reply.reason, "over the limit of 4 requests in flight");
        }
        replies.push((reply.seq, reply.code));
    }
    let limited: Vec<_> = replies.iter().filter(|(_, code)| *code == ErrorCode::RateLimited as i32).collect();
    let ok: Vec<_> = replies.iter().filter(|(_, code)| *code == 0).map(|(seq, _)| *seq).collect();
    assert_eq!(limited.len(), 6, "{replies:?}");
    assert_eq!(ok, [1, 2, 3, 4], "admitted requests are answered in order: {replies:?}");
}

#[tokio::test]
async fn overlong_route_is_a_bad_request() {
    let node = DevNode::start().await;
    let mut socket = raw(&node.url()).await;
    send(&mut socket, request(&format!("{}.say", "e".repeat(100)), 7, echo_body("x"))).await;
    let Received::Message(reply) = receive(&mut socket).await else { panic!("closed") };
    assert_eq!((reply.seq, reply.code), (7, ErrorCode::BadRequest as i32));
    assert!(reply.main_type.is_empty(), "the long route is not echoed");
    assert_eq!(reply.reason, "route longer than 64 bytes", "64: the default gateway.max_route_bytes");
}

#[tokio::test]
async fn refused_frames_count_against_the_rate_limit() {
    let node = DevNode::with_config(|config| {
        config.gateway.rate_per_sec = 1;
        config.gateway.rate_burst = 5;
    })
    .await;
    let mut socket = raw(&node.url()).await;
    let long = format!("{}.say", "e".repeat(100));
    for seq in 1..=20 {
        send(&mut socket, request(&long, seq, echo_body("x"))).await;
    }
    let mut codes = Vec::new();
    for _ in 0..20 {
        let Received::Message(reply) = receive(&mut socket).await else { panic!("closed") };
        codes.push(reply.code);
    }
    let bad = codes.iter().filter(|code| **code == ErrorCode::BadRequest as i32).count();
    let limited = codes.iter().filter(|code| **code == ErrorCode::RateLimited as i32).count();
    assert_eq!((bad, limited), (5, 15), "only the burst is looked at: {codes:?}");
}

#[tokio::test]
async fn a_client_close_frame_is_echoed() {
    let node = DevNode::start().await;
    let mut socket = raw(&node.url()).await;
    let bye = tungstenite::protocol::CloseFrame { code: CloseCode::Normal, reason: "bye".into() };
    send(&mut socket, tungstenite::Message::Close(Some(bye))).await;
    let Received::Closed(Some(echo)) = receive(&mut socket).await else { panic!("no close frame came back") };
    assert_eq!(echo.code, CloseCode::Normal);
}

#[tokio::test]
async fn idle_admin_connections_are_capped_and_timed_out() {
    let node = DevNode::with_config(|config| {
        config.admin.max_connections = 4;
        config.admin.request_timeout_ms = 300;
    })
    .await;
    // Half-sent requests that would each hold a descriptor.
    let mut idle = Vec::new();
    for _ in 0..10 {
        let mut stream = tokio::net::TcpStream::connect(node.admin).await.unwrap();
        stream.write_all(b"GET /metrics HTTP/1.1\r\n").await.unwrap();
        idle.push(stream);
    }
    // Every one of them is closed: the ones over the cap at once, the others at the timeout.
    for stream in &mut idle {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(GUARD, stream.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "an idle admin connection stayed open");
    }
    assert_eq!(admin_get(node.admin, "/healthz").await.0, 200);
}

async fn upgrade_status(url: &str) -> Option<u16> {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => None,
        Err(tungstenite::Error::Http(response)) => Some(response.status().as_u16()),
        Err(other) => panic!("unexpected error {other}"),
    }
}

#[tokio::test]
async fn connections_over_the_per_ip_limit_are_refused() {
    let node = DevNode::with_config(|config| config.gateway.max_connections_per_ip = 5).await;
    let mut open = Vec::new();
    for _ in 0..5 {
        open.push(Client::connect(&node.url()).await.expect("under the limit"));
    }
    assert_eq!(upgrade_status(&node.url()).await, Some(429));
    drop(open.pop());
    // The slot comes back once the server has seen the close.
    let deadline = Instant::now() + GUARD;
    loop {
        match Client::connect(&node.url()).await {
            Ok(mut client) => break echo_ok(&mut client, "back under the limit").await,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(error) => panic!("slot never came back: {error}"),
        }
    }
    for client in &mut open {
        echo_ok(client, "still served").await;
    }
}

#[tokio::test]
async fn connections_over_the_total_limit_are_refused() {
    let node = DevNode::with_config(|config| config.gateway.max_connections = 3).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(Client::connect(&node.url()).await.expect("under the limit"));
    }
    assert_eq!(upgrade_status(&node.url()).await, Some(503));
}

#[tokio::test]
async fn slowloris_is_closed_after_the_handshake_timeout() {
    let node = DevNode::with_config(|config| config.gateway.handshake_timeout_ms = 300).await;
    let mut silent = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let mut partial = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    partial.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    for stream in [&mut silent, &mut partial] {
        let started = Instant::now();
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(GUARD, stream.read(&mut buf)).await.expect("closed by the server");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert!(started.elapsed() < GUARD);
    }
    let mut client = Client::connect(&node.url()).await.unwrap();
    echo_ok(&mut client, "served").await;
}

#[tokio::test]
async fn connections_over_the_handshake_limit_are_closed_at_once() {
    let node = DevNode::with_config(|config| {
        config.gateway.max_handshakes = 2;
        config.gateway.handshake_timeout_ms = 2_000;
    })
    .await;
    let _first = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let _second = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut third = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let mut buf = [0u8; 8];
    let read = tokio::time::timeout(Duration::from_millis(1_500), third.read(&mut buf))
        .await
        .expect("closed before the handshake timeout");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_never_reads_is_disconnected_when_its_queue_is_full() {
    let node = DevNode::with_config(|config| {
        config.gateway.outbound_queue = 4;
        config.gateway.write_timeout_ms = 200;
        config.gateway.rate_per_sec = 0;
        config.gateway.max_in_flight = 65_536;
    })
    .await;
    let mut ws = small_window_client(&node).await;
    let text = "x".repeat(16 * 1024);
    let mut sent = 0u32;
    let send_all = async {
        for seq in 1..=4_000u32 {
            if ws.send(request("echo.say", seq, echo_body(&text))).await.is_err() {
                break;
            }
            sent = seq;
        }
    };
    tokio::time::timeout(GUARD, send_all).await.expect("sending ends");
    // Keep not reading for well past the write timeout: the sends above may all fit in socket
    // buffers before the server's patience runs out.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    // Whatever was delivered before the disconnect can still be read; then the stream ends.
    let mut replies = 0u32;
    tokio::time::timeout(GUARD, async {
        while let Some(Ok(message)) = ws.next().await {
            if message.is_binary() {
                replies += 1;
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!("the server never disconnected the client: sent {sent}, read {replies} replies")
    });
    assert!(replies < sent, "all {sent} requests were answered: the client was never disconnected");
    let (_, metrics) = admin_get(node.admin, "/metrics").await;
    assert!(metrics.contains("mortar_gateway_outbound_queue_full_total"), "{metrics}");
    let mut client = Client::connect(&node.url()).await.unwrap();
    echo_ok(&mut client, "served").await;
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_code() {
    let node = DevNode::start().await;
    let mut client = Client::connect(&node.url()).await.unwrap();
    echo_ok(&mut client, "count me").await;
    let reply = client.request("nothing", "here", Bytes::new(), |_| {}).await.unwrap();
    assert_eq!(reply.code, ErrorCode::NoRoute as i32);
    let (status, metrics) = admin_get(node.admin, "/metrics").await;
    assert_eq!(status, 200);
    for expected in [
        "mortar_requests_total{route=\"echo.say\",code=\"OK\"}",
        "mortar_requests_total{route=\"_unknown\",code=\"NO_ROUTE\"}",
        "mortar_request_duration_seconds_bucket{route=\"echo.say\",le=",
        "mortar_gateway_replies_total{code=\"OK\"}",
        "mortar_gateway_connections ",
    ] {
        assert!(metrics.contains(expected), "missing {expected} in:\n{metrics}");
    }
    assert_eq!(admin_get(node.admin, "/healthz").await.0, 200);
    assert_eq!(admin_get(node.admin, "/readyz").await.0, 200);
    assert_eq!(admin_get(node.admin, "/nothing").await.0, 404);
}

#[tokio::test]
async fn one_trace_id_follows_a_request_into_internal_calls() {
    let node = DevNode::start().await;
    let mut client = Client::connect(&node.url()).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let reply = client.request("testkit", "trace", echo_body(""), |_| {}).await.unwrap();
        let text = EchoResp::decode(reply.data).unwrap().text;
        let (own, inner) = text.split_once('|').expect("OWN|INNER");
        assert_eq!(own, inner, "the internal call sees the request's trace id");
        assert_ne!(own, format!("{:032x}", 0), "the gateway gave the request a trace id");
        ids.push(own.to_owned());
    }
    assert_ne!(ids[0], ids[1], "each request has its own trace id");
}

/// A client that stops reading for a moment (its queue fills) and then catches up is not a
/// client that does not read: it gets every reply and keeps its connection.
#[tokio::test]
async fn slow_reader_that_catches_up_gets_every_reply() {
    let node = DevNode::with_config(|config| {
        config.gateway.outbound_queue = 2;
        config.gateway.write_timeout_ms = 2_000;
        config.gateway.rate_per_sec = 0;
        config.gateway.session_concurrency = 16;
    })
    .await;
    let mut ws = small_window_client(&node).await;
    // Small requests, big late replies: all requests are read and running before the replies
    // (16 MiB) overflow the socket buffers and the session's queue.
    for seq in 1..=16u32 {
        ws.send(request("testkit.big", seq, echo_body("1048576"))).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for seq in 1..=16u32 {
        let next = tokio::time::timeout(GUARD, ws.next()).await.expect("a reply comes");
        let Some(Ok(Message::Binary(frame))) = next else { panic!("connection ended at {seq}: {next:?}") };
        let reply = mortar_pb::UserMessage::decode(frame).unwrap();
        assert_eq!((reply.seq, reply.code), (seq, 0));
    }
    ws.send(request("echo.say", 17, echo_body("still here"))).await.unwrap();
    let next = tokio::time::timeout(GUARD, ws.next()).await.expect("a reply comes");
    assert!(matches!(next, Some(Ok(Message::Binary(_)))), "{next:?}");
}

/// Ids a client sends above the largest storable one (`i64::MAX`) name nothing: `NOT_FOUND`, as
/// any other id without a document, never `INTERNAL`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_above_the_storable_range_are_not_found() {
    use mortar_friend::friend::{Done, Request, Target};
    use mortar_group::group::{Done as GroupDone, GroupReq, KickReq, MembersResp};
    let node = DevNode::start().await;
    let mut client = Client::connect(&node.url()).await.unwrap();
    assert_eq!(client.request("testkit", "login", echo_body("31"), |_| {}).await.unwrap().code, 0);
    let huge = mortar::store::MAX_ID + 6;
    let not_found = ErrorCode::NotFound as i32;
    let target = Target { user_id: huge };
    let requested: Result<Request, i32> = client.call("friend.request", &target).await.unwrap();
    assert_eq!(requested.err(), Some(not_found));
    for route in ["friend.accept", "friend.reject", "friend.remove", "friend.block", "friend.unblock"] {
        let answered: Result<Done, i32> = client.call(route, &target).await.unwrap();
        assert_eq!(answered.err(), Some(not_found), "{route}");
    }
    let group = GroupReq { group_id: huge };
    for route in ["group.join", "group.leave"] {
        let answered: Result<GroupDone, i32> = client.call(route, &group).await.unwrap();
        assert_eq!(answered.err(), Some(not_found), "{route}");
    }
    let members: Result<MembersResp, i32> = client.call("group.members", &group).await.unwrap();
    assert_eq!(members.err(), Some(not_found));
    let kick = KickReq { group_id: huge, user_id: huge };
    let kicked: Result<GroupDone, i32> = client.call("group.kick", &kick).await.unwrap();
    assert_eq!(kicked.err(), Some(not_found));
}
