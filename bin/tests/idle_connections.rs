//! 5,000 idle WebSocket connections to a `mortar dev` process: they all hold and still answer, and
//! the gateway's resident memory per idle connection is printed (a measurement for
//! `docs/limits.md`, not an assertion). For the documented number run it on the release build:
//! `cargo test --release -p mortar-cli --test idle_connections -- --nocapture`.

use futures::{SinkExt as _, StreamExt as _, stream};
use mortar_pb::UserMessage;
use prost::Message as _;
use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    time::Duration,
};
use tokio_tungstenite::tungstenite::{Message, protocol::WebSocketConfig};

const CONNECTIONS: usize = 5_000;

/// The `mortar dev` process and its data directory, killed and removed on drop.
struct Node(Child, std::path::PathBuf);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

/// Resident memory of a process in KiB, from `/proc`.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).expect("VmRSS line");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("VmRSS value")
}

fn ping(seq: u32) -> Message {
    let msg = UserMessage { main_type: "sys".into(), sub_type: "ping".into(), seq, ..Default::default() };
    Message::Binary(msg.encode_to_vec().into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_idle_connections_hold() {
    let data = std::env::temp_dir().join(format!("mortar-idle-data-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_mortar"))
        .args(["dev", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .env("MORTAR_ADMIN__ENABLED", "false")
        .env("MORTAR_GATEWAY__MAX_CONNECTIONS_PER_IP", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("mortar dev starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line).expect("readiness line");
    let url = line.trim().rsplit(' ').next().expect("url").to_owned();
    let node = Node(child, data);
    let pid = node.0.id();

    // Small client buffers so 5,000 clients fit in this test process too.
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let connect = |url: String| async move {
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
            .await
            .expect("connection accepted");
        ws
    };
    let mut warm = connect(url.clone()).await;
    warm.send(ping(1)).await.expect("ping");
    let _ = warm.next().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(pid);

    let mut sockets: Vec<_> =
        stream::iter(0..CONNECTIONS).map(|_| connect(url.clone())).buffer_unordered(200).collect().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(pid);
    let per_connection = (after.saturating_sub(before)) as f64 / CONNECTIONS as f64;
    println!(
        "gateway RSS: {before} KiB with 1 connection, {after} KiB with {} idle connections: {per_connection:.1} KiB per idle connection",
        CONNECTIONS + 1
    );

    // Every connection is still open and answered.
    for (seq, socket) in (1u32..).zip(sockets.iter_mut()) {
        socket.send(ping(seq)).await.expect("connection still open");
        let Some(Ok(Message::Binary(frame))) = socket.next().await else { panic!("connection {seq} lost") };
        let pong = UserMessage::decode(frame).expect("pong decodes");
        assert_eq!((pong.sub_type.as_str(), pong.seq), ("pong", seq));
    }
}
