//! The walking skeleton end to end: a dev node on a real socket, driven by real WebSocket clients.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use bytes::Bytes;
use mortar_cli::client::Client;
use mortar_echo::echo::EchoResp;
use mortar_pb::{ErrorCode, Kick, UserMessage};
use mortar_tests::{DevNode, Received, echo_body, raw, receive, request, send};
use prost::Message as _;
use tokio_tungstenite::tungstenite::{Message, protocol::frame::coding::CloseCode};

fn text_of(reply: &UserMessage) -> String {
    EchoResp::decode(reply.data.clone()).expect("reply decodes as EchoResp").text
}

async fn echo(client: &mut Client, text: &str) -> UserMessage {
    client.request("echo", "say", echo_body(text), |_| {}).await.expect("echo reply")
}

#[tokio::test]
async fn echo_round_trip() {
    let node = DevNode::start().await;
    let mut client = Client::connect(&node.url()).await.unwrap();
    let reply = echo(&mut client, "hi").await;
    assert_eq!((reply.main_type.as_str(), reply.sub_type.as_str()), ("echo", "say"));
    assert_eq!(reply.code, ErrorCode::Ok as i32);
    assert_eq!(reply.seq, 1);
    assert_eq!(text_of(&reply), "hi");
    assert_eq!(reply.reason, "", "an OK reply carries no reason");
    node.stop().await.unwrap();
}

#[tokio::test]
async fn pipelined_requests_come_back_in_order() {
    let node = DevNode::start().await;
    let mut socket = raw(&node.url()).await;
    for seq in 1..=100u32 {
        send(&mut socket, request("echo.say", seq, echo_body(&format!("n{seq}")))).await;
    }
    for seq in 1..=100u32 {
        let Received::Message(reply) = receive(&mut socket).await else { panic!("closed at {seq}") };
        assert_eq!(reply.seq, seq);
        assert_eq!(text_of(&reply), format!("n{seq}"));
    }
}

#[tokio::test]
async fn replies_keep_request_order_with_several_in_flight() {
    let node = DevNode::with_config(|config| config.gateway.session_concurrency = 8).await;
    let mut socket = raw(&node.url()).await;
    // Later requests finish first; replies must still come back in request order.
    let delays = [80, 40, 0, 60, 20, 0, 10, 0, 30, 0];
    for (seq, delay) in (1u32..).zip(delays) {
        send(&mut socket, request("testkit.slow", seq, echo_body(&delay.to_string()))).await;
    }
    for (seq, delay) in (1u32..).zip(delays) {
        let Received::Message(reply) = receive(&mut socket).await else { panic!("closed at {seq}") };
        assert_eq!((reply.seq, reply.code), (seq, 0));
        assert_eq!(text_of(&reply), delay.to_string());
    }
}

#[tokio::test]
async fn ping_is_answered_with_pong() {
    let node = DevNode::start().await;
    let mut client = Client::connect(&node.url()).await.unwrap();
    let reply = client.request("sys", "ping", Bytes::new(), |_| {}).await.unwrap();
    assert_eq!((reply.main_type.as_str(), reply.sub_type.as_str()), ("sys", "pong"));
    assert_eq!((reply.code, reply.seq), (0, 1));
}

#[tokio::test]
async fn unknown_and_internal_routes_get_no_route_with_their_seq_and_a_reason() {
    let node = DevNode::start().await;
    let mut client = Client::connect(&node.url()).await.unwrap();
    for (main, sub, reason) in [
        ("nothing", "here", r#"no worker serves module "nothing""#),
        ("ecoh", "say", r#"no worker serves module "ecoh" (did you mean "echo"?)"#),
        ("echo", "shout", r#"module "echo" has no route "shout""#),
        ("echo", "sya", r#"module "echo" has no route "sya" (did you mean "say"?)"#),
        // An internal route is not there for clients, and never suggested to them.
        ("echo", "upper", r#"module "echo" has no route "upper""#),
        ("sys", "reboot", r#"module "sys" has no route "reboot""#),
        ("sys", "pign", r#"module "sys" has no route "pign" (did you mean "ping"?)"#),
        ("", "", r#"no worker serves module """#),
        ("testkit", "double", r#"module "testkit" has no route "double""#),
    ] {
        let reply = client.request(main, sub, echo_body("x"), |_| {}).await.unwrap();
        assert_eq!(reply.code, ErrorCode::NoRoute as i32, "{main}.{sub}");
        assert_eq!((reply.main_type.as_str(), reply.sub_type.as_str()), (main, sub));
        assert!(reply.data.is_empty());
        assert_eq!(reply.reason, reason, "{main}.{sub}");
    }
    // The connection is still usable.
    assert_eq!(text_of(&echo(&mut client, "still here").await), "still here");
}

#[tokio::test]
async fn undecodable_body_gets_bad_request() {
    let node = DevNode::start().await;
    let mut client = Client::connect(&node.url()).await.unwrap();
    // Field 1 as a varint: EchoReq.text is a string, so this does not decode.
    let reply = client.request("echo", "say", Bytes::from_static(&[0x08, 0x01, 0xff]), |_| {}).await.unwrap();
    assert_eq!(reply.code, ErrorCode::BadRequest as i32);
    assert_eq!(reply.seq, 1);
    assert_eq!(reply.reason, "body does not decode as echo.EchoReq");
}

#[tokio::test]
async fn module_codes_and_panics_are_replies() {
    let node = DevNode::start().await;
    let mut client = Client::connect(&node.url()).await.unwrap();
    let reply = client.request("testkit", "fail", echo_body(""), |_| {}).await.unwrap();
    assert_eq!(reply.code, 1001);
    let reply = client.request("testkit", "panic", echo_body("boom"), |_| {}).await.unwrap();
    assert_eq!(reply.code, ErrorCode::Internal as i32);
    // Neither the session nor the node noticed.
    assert_eq!(text_of(&echo(&mut client, "after panic").await), "after panic");
    assert!(node.is_running());
}

#[tokio::test]
async fn modules_call_internal_routes() {
    let node = DevNode::start().await;
    let mut client = Client::connect(&node.url()).await.unwrap();
    let reply = client.request("testkit", "relay", echo_body("ab"), |_| {}).await.unwrap();
    assert_eq!(reply.code, 0);
    assert!(text_of(&reply).starts_with("abab from session "), "{}", text_of(&reply));
    let reply = client.request("testkit", "recurse", echo_body(""), |_| {}).await.unwrap();
    assert_eq!(reply.code, ErrorCode::Internal as i32);
}

#[tokio::test]
async fn slow_handler_times_out() {
    let node = DevNode::with_config(|config| config.gateway.request_timeout_ms = 100).await;
    let mut client = Client::connect(&node.url()).await.unwrap();
    let reply = client.request("testkit", "slow", echo_body("2000"), |_| {}).await.unwrap();
    assert_eq!((reply.code, reply.seq), (ErrorCode::Timeout as i32, 1));
    assert_eq!(text_of(&echo(&mut client, "next").await), "next");
}

async fn expect_close(socket: &mut mortar_tests::RawSocket, code: CloseCode, reason_part: &str) {
    match receive(socket).await {
        Received::Closed(Some(frame)) => {
            assert_eq!(frame.code, code, "{frame:?}");
            assert!(frame.reason.contains(reason_part), "{frame:?}");
        }
        other => panic!("expected a close with {code:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn garbage_frame_closes_only_that_connection() {
    let node = DevNode::start().await;
    let mut bystander = Client::connect(&node.url()).await.unwrap();
    let mut socket = raw(&node.url()).await;
    send(&mut socket, Message::Binary(Bytes::from_static(&[0xff, 0xff, 0xff, 0xff]))).await;
    expect_close(&mut socket, CloseCode::Invalid, "bad envelope").await;
    assert_eq!(text_of(&echo(&mut bystander, "fine").await), "fine");
    let mut newcomer = Client::connect(&node.url()).await.unwrap();
    assert_eq!(text_of(&echo(&mut newcomer, "also fine").await), "also fine");
}

#[tokio::test]
async fn text_frame_closes_the_connection_with_a_reason() {
    let node = DevNode::start().await;
    let mut socket = raw(&node.url()).await;
    send(&mut socket, Message::text("{\"main_type\":\"echo\"}")).await;
    expect_close(&mut socket, CloseCode::Unsupported, "text frames").await;
    let mut client = Client::connect(&node.url()).await.unwrap();
    assert_eq!(text_of(&echo(&mut client, "ok").await), "ok");
}

#[tokio::test]
async fn oversize_frame_closes_the_connection() {
    let node = DevNode::with_config(|config| config.gateway.max_frame_bytes = 1024).await;
    let mut socket = raw(&node.url()).await;
    send(&mut socket, request("echo.say", 1, echo_body(&"x".repeat(4096)))).await;
    expect_close(&mut socket, CloseCode::Size, "exceeds the limit of 1024").await;
    let mut client = Client::connect(&node.url()).await.unwrap();
    assert_eq!(text_of(&echo(&mut client, "small").await), "small");
}

#[tokio::test]
async fn requests_read_before_a_bad_frame_still_get_replies() {
    let node = DevNode::start().await;
    let mut socket = raw(&node.url()).await;
    send(&mut socket, request("testkit.slow", 1, echo_body("50"))).await;
    send(&mut socket, request("echo.say", 2, echo_body("two"))).await;
    send(&mut socket, Message::text("nope")).await;
    for seq in [1, 2] {
        let Received::Message(reply) = receive(&mut socket).await else {
            panic!("closed before reply {seq}")
        };
        assert_eq!((reply.seq, reply.code), (seq, 0));
    }
    expect_close(&mut socket, CloseCode::Unsupported, "text frames").await;
}

#[tokio::test]
async fn wrong_path_is_refused() {
    let node = DevNode::start().await;
    let error = tokio_tungstenite::connect_async(format!("ws://{}/other", node.addr)).await.err();
    match error {
        Some(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 404)
        }
        other => panic!("expected a 404, got {other:?}"),
    }
}

#[tokio::test]
async fn idle_connection_is_closed() {
    let node = DevNode::with_config(|config| config.gateway.read_timeout_ms = 200).await;
    let mut socket = raw(&node.url()).await;
    expect_close(&mut socket, CloseCode::Normal, "idle timeout").await;
}

#[tokio::test]
async fn many_concurrent_connections() {
    let node = DevNode::start().await;
    let url = node.url();
    let clients = (0..200).map(|n| {
        let url = url.clone();
        tokio::spawn(async move {
            let mut client = Client::connect(&url).await.unwrap();
            for i in 0..20 {
                let text = format!("client {n} message {i}");
                let reply = echo(&mut client, &text).await;
                assert_eq!((reply.code, reply.seq), (0, i + 1));
                assert_eq!(text_of(&reply), text);
            }
        })
    });
    for client in futures::future::join_all(clients).await {
        client.expect("client task succeeds");
    }
}

#[tokio::test]
async fn shutdown_kicks_sessions_and_stops() {
    let node = DevNode::start().await;
    let mut socket = raw(&node.url()).await;
    send(&mut socket, request("echo.say", 1, echo_body("before"))).await;
    let Received::Message(reply) = receive(&mut socket).await else { panic!("closed too early") };
    assert_eq!(reply.seq, 1);
    let stopping = tokio::spawn(node.stop());
    let Received::Message(kick) = receive(&mut socket).await else { panic!("no kick before close") };
    assert_eq!((kick.main_type.as_str(), kick.sub_type.as_str(), kick.seq), ("sys", "kick", 0));
    assert_eq!(Kick::decode(kick.data).unwrap().reason, ErrorCode::ServerShutdown as i32);
    expect_close(&mut socket, CloseCode::Away, "server shutdown").await;
    stopping.await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_aborts_sessions_still_busy_after_the_grace_period() {
    let node = DevNode::with_config(|config| {
        config.gateway.shutdown_grace_ms = 200;
        config.gateway.request_timeout_ms = 60_000;
    })
    .await;
    let mut socket = raw(&node.url()).await;
    send(&mut socket, request("testkit.slow", 1, echo_body("30000"))).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(10), node.stop()).await;
    stopped.expect("the node stops soon after the grace period").unwrap();
}

#[tokio::test]
async fn websocket_ping_frames_are_answered_and_keep_the_connection_alive() {
    let node = DevNode::with_config(|config| config.gateway.read_timeout_ms = 300).await;
    let mut socket = raw(&node.url()).await;
    for round in 0..4u8 {
        send(&mut socket, Message::Ping(vec![round].into())).await;
        let pong = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                match futures::StreamExt::next(&mut socket).await {
                    Some(Ok(Message::Pong(data))) => break data,
                    Some(Ok(_)) => continue,
                    other => panic!("connection ended: {other:?}"),
                }
            }
        })
        .await
        .expect("a pong");
        assert_eq!(pong.as_ref(), &[round]);
        // Pings alone keep a connection with a 300 ms read timeout open past it.
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    }
    send(&mut socket, request("echo.say", 1, echo_body("still open"))).await;
    let Received::Message(reply) = receive(&mut socket).await else { panic!("closed") };
    assert_eq!(text_of(&reply), "still open");
}

/// A node that stops runs its players' offline hooks, and the tasks they spawn, to the end before
/// it returns: nothing they write is cut, and the next node opens the same store at once (it
/// could not while the old node's work still held it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_finishes_its_offline_hooks_before_it_lets_go_of_the_store() {
    let data = mortar_tests::temp_dir("offline-hooks");
    let with_data = |config: &mut mortar_node::NodeConfig| config.storage.path = data.clone();
    let node = DevNode::with_config(with_data).await;
    let mut player = Client::connect(&node.url()).await.unwrap();
    assert_eq!(player.request("testkit", "login", echo_body("5"), |_| {}).await.unwrap().code, 0);
    // Stopping closes the session: its hook runs, and its spawned task writes after 200 ms.
    node.stop().await.unwrap();
    drop(player);

    let node = DevNode::with_config(with_data).await;
    let mut client = Client::connect(&node.url()).await.unwrap();
    let mark = (mortar_tests::testkit::OFFLINE_MARKS + 5).to_string();
    let bumped = client.request("testkit", "bump", echo_body(&mark), |_| {}).await.unwrap();
    assert_eq!(text_of(&bumped), "2", "the first node's late write landed before it stopped");
    node.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&data);
}

/// A push goes out only under a route a proto declares with the message sent as its rpc's output
/// (a server-streaming rpc, here): any other is refused `BAD_REQUEST` and logged, never sent to a
/// client that could not decode it.
#[tokio::test]
async fn pushes_are_checked_against_the_protos() {
    let node = DevNode::start().await;
    let mut client = Client::connect(&node.url()).await.unwrap();
    let mut pushed = Vec::new();
    let reply = client
        .request("testkit", "push_as", echo_body("testkit.note"), |push| pushed.push(push))
        .await
        .unwrap();
    assert_eq!((reply.code, text_of(&reply)), (0, "true".to_owned()));
    for route in ["testkit.nope", "pack.changed", "nodot", "pack.query"] {
        let reply =
            client.request("testkit", "push_as", echo_body(route), |push| pushed.push(push)).await.unwrap();
        assert_eq!(reply.code, ErrorCode::BadRequest as i32, "{route}");
    }
    let reply = client.request("echo", "say", echo_body("last"), |push| pushed.push(push)).await.unwrap();
    assert_eq!(text_of(&reply), "last");
    let routes: Vec<String> =
        pushed.iter().map(|push| format!("{}.{}", push.main_type, push.sub_type)).collect();
    assert_eq!(routes, ["testkit.note"], "only the declared push went out");
}

/// Module config belongs to the node: two nodes in one process, one whose groups may have names
/// of 4 characters at most, each answer by their own `[modules.group]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_in_one_process_each_read_their_own_module_config() {
    use mortar_group::group::{CreateReq, CreateResp};
    let strict = DevNode::with_config(|config| {
        config.modules.insert("group".into(), serde_json::json!({ "max_name_chars": 4 }));
    })
    .await;
    let lenient = DevNode::start().await;
    for (node, expected) in [(&strict, Err(ErrorCode::BadRequest as i32)), (&lenient, Ok(()))] {
        let mut client = Client::connect(&node.url()).await.unwrap();
        assert_eq!(client.request("testkit", "login", echo_body("41"), |_| {}).await.unwrap().code, 0);
        let created: Result<CreateResp, i32> =
            client.call("group.create", &CreateReq { name: "Raiders".into() }).await.unwrap();
        assert_eq!(created.map(|_| ()), expected);
    }
}

/// A module's instance belongs to the node: two nodes in one process count apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_has_its_own_module_instance() {
    let (first, second) = (DevNode::start().await, DevNode::start().await);
    let mut counts = Vec::new();
    for node in [&first, &first, &first, &second] {
        let mut client = Client::connect(&node.url()).await.unwrap();
        counts.push(text_of(&request_text(&mut client, "testkit", "count", "").await));
    }
    assert_eq!(counts, ["1", "2", "3", "1"]);
}

async fn request_text(client: &mut Client, main: &str, sub: &str, text: &str) -> UserMessage {
    client.request(main, sub, echo_body(text), |_| {}).await.unwrap()
}

/// A client frame as bytes on the wire: `first` byte (FIN, opcode), masked with a fixed key.
fn wire_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x11, 0x22, 0x33, 0x44];
    assert!(payload.len() < 126, "short frames only");
    let mut frame = vec![first, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, byte)| byte ^ mask[i % 4]));
    frame
}

/// A server frame: its first byte (FIN, opcode) and its payload (unmasked, under 126 bytes here).
async fn read_frame(stream: &mut tokio::net::TcpStream) -> (u8, Vec<u8>) {
    use tokio::io::AsyncReadExt as _;
    let (first, len) = (stream.read_u8().await.unwrap(), stream.read_u8().await.unwrap());
    let mut payload = vec![0; usize::from(len)];
    stream.read_exact(&mut payload).await.unwrap();
    (first, payload)
}

/// The gateway's WebSocket over a bare TCP connection: the upgrade by hand, a request in two
/// fragments with a ping between them (answered with a pong, then the reply), then a frame no
/// client may send (unmasked), closed with 1002 and a reason.
#[tokio::test]
async fn fragments_pings_and_protocol_violations_on_the_wire() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let node = DevNode::start().await;
    let mut stream = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let upgrade = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    stream.write_all(upgrade.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.unwrap());
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");

    let Message::Binary(body) = request("echo.say", 7, echo_body("in two parts")) else { unreachable!() };
    let (first, second) = body.split_at(body.len() / 2);
    let mut wire = wire_frame(0x02, first);
    wire.extend(wire_frame(0x89, b"are you there"));
    wire.extend(wire_frame(0x80, second));
    stream.write_all(&wire).await.unwrap();
    assert_eq!(read_frame(&mut stream).await, (0x8A, b"are you there".to_vec()));
    let (first, reply) = read_frame(&mut stream).await;
    assert_eq!(first, 0x82);
    let reply = UserMessage::decode(&reply[..]).unwrap();
    assert_eq!((reply.seq, reply.code, text_of(&reply)), (7, 0, "in two parts".to_owned()));

    stream.write_all(&[0x82, 0x02, 0x08, 0x01]).await.unwrap();
    let (first, close) = read_frame(&mut stream).await;
    assert_eq!(first, 0x88);
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1002);
    assert_eq!(std::str::from_utf8(&close[2..]).unwrap(), "client frames must be masked");
}
