//! Helpers for mortar's end-to-end tests: a dev node on a real socket and a module made for
//! testing the host (panics, slow handlers, internal calls).
//!
//! The helpers start what they need and stop it on drop.

pub mod testkit;

use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use mortar_echo::echo::EchoReq;
use mortar_node::NodeConfig;
use mortar_node::{Listeners, NodeError};
use mortar_pb::UserMessage;
use prost::Message as _;
use std::net::SocketAddr;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::oneshot,
    task::JoinHandle,
};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, protocol::CloseFrame},
};

/// Links the module crates of the `mortar` binary, so the dev node here has the same modules.
pub use mortar_cli::modules;

/// A dev node (gateway + worker + every linked module) serving on `127.0.0.1:0`, with its admin
/// endpoints on another port of `127.0.0.1`.
pub struct DevNode {
    /// The bound client address.
    pub addr: SocketAddr,
    /// The node's embedded store directory; removed on drop when the helper chose it.
    pub data: std::path::PathBuf,
    owns_data: bool,
    /// The bound admin address.
    pub admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), NodeError>>>,
}

impl DevNode {
    /// Starts a node with the default config.
    pub async fn start() -> Self {
        Self::with_config(|_| {}).await
    }

    /// Starts a node with the default config changed by `change`.
    pub async fn with_config(change: impl FnOnce(&mut NodeConfig)) -> Self {
        let mut config = NodeConfig::default();
        let own = temp_dir("dev-data");
        config.storage.path = own.clone();
        change(&mut config);
        let data = config.storage.path.clone();
        let owns_data = data == own;
        config.validate().expect("test config is valid");
        mortar_telemetry::metrics::install();
        let gateway = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let (addr, admin_addr) = (gateway.local_addr().expect("bound"), admin.local_addr().expect("bound"));
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let listeners = Listeners { gateway, admin: Some(admin) };
        let task = tokio::spawn(mortar_node::dev::run(config, listeners, || {}, shutdown));
        Self { addr, data, owns_data, admin: admin_addr, stop: Some(stop), task: Some(task) }
    }

    /// `ws://ADDR/ws`.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Shuts the node down and waits until it has stopped.
    ///
    /// # Panics
    /// When the node's task panicked.
    pub async fn stop(mut self) -> Result<(), NodeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("not stopped twice");
        task.await.expect("the node's task does not panic")
    }

    /// Whether the node's task is still running.
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|task| !task.is_finished())
    }
}

impl Drop for DevNode {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if self.owns_data {
            let _ = std::fs::remove_dir_all(&self.data);
        }
    }
}

/// A fresh path under the temp dir (not created), unique in this process and across processes.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("mortar-{name}-{}-{n}", std::process::id()))
}

/// A fresh [`temp_dir`] path, removed with whatever is in it when this is dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    /// A fresh path named after `name` (not created).
    pub fn new(name: &str) -> Self {
        Self(temp_dir(name))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A raw WebSocket connection, for sending what a well-behaved client would not.
pub type RawSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a raw WebSocket connection.
pub async fn raw(url: &str) -> RawSocket {
    tokio_tungstenite::connect_async(url).await.expect("websocket connects").0
}

/// A request envelope.
pub fn request(route: &str, seq: u32, data: impl Into<Bytes>) -> Message {
    let (main, sub) = route.split_once('.').unwrap_or((route, ""));
    let msg = UserMessage {
        main_type: main.into(),
        sub_type: sub.into(),
        seq,
        data: data.into(),
        ..Default::default()
    };
    Message::Binary(msg.encode_to_vec().into())
}

/// An encoded `EchoReq`.
pub fn echo_body(text: &str) -> Bytes {
    EchoReq { text: text.into() }.encode_to_vec().into()
}

/// What the server sent next on a raw socket: a message, or the close frame that ended it.
#[derive(Debug)]
pub enum Received {
    /// A reply or push.
    Message(UserMessage),
    /// The server closed the connection (with its close frame, if any).
    Closed(Option<CloseFrame>),
}

/// Reads the next message or the close from a raw socket, skipping control frames.
pub async fn receive(socket: &mut RawSocket) -> Received {
    loop {
        match socket.next().await {
            Some(Ok(Message::Binary(frame))) => {
                return Received::Message(UserMessage::decode(frame).expect("server frames decode"));
            }
            Some(Ok(Message::Close(frame))) => return Received::Closed(frame),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Received::Closed(None),
        }
    }
}

/// Sends one frame on a raw socket.
pub async fn send(socket: &mut RawSocket, message: Message) {
    socket.send(message).await.expect("send to the server");
}

/// `GET path` on the admin listener: the status code and body.
pub async fn admin_get(admin: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(admin).await.expect("admin listener accepts");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send the request");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read the response");
    let status = response.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status line");
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}

/// `METHOD path` on the admin listener with `Authorization: Bearer TOKEN` when `token` is given
/// and `body`: the status code and the body as JSON (`null` when it is not JSON).
pub async fn admin_request(
    admin: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let mut stream = TcpStream::connect(admin).await.expect("admin listener accepts");
    let auth = token.map(|token| format!("Authorization: Bearer {token}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("send the request");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read the response");
    let status = response.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status line");
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, serde_json::from_str(&body).unwrap_or(serde_json::Value::Null))
}

/// `user.register` with `account` and `password` through `client`: the new user id, or the
/// reply's code.
///
/// # Panics
/// When the connection fails.
pub async fn register(
    client: &mut mortar_cli::client::Client,
    account: &str,
    password: &str,
) -> Result<u64, i32> {
    use mortar_user::user::{RegisterReq, RegisterResp};
    let req = RegisterReq { account: account.into(), password: password.into() };
    let resp: Result<RegisterResp, i32> =
        client.call("user.register", &req).await.expect("the connection holds");
    resp.map(|resp| resp.user_id)
}

/// `user.login` with `account` and `password` through `client`: the reply, or its code.
///
/// # Panics
/// When the connection fails.
pub async fn login(
    client: &mut mortar_cli::client::Client,
    account: &str,
    password: &str,
) -> Result<mortar_user::user::LoginResp, i32> {
    let req = mortar_user::user::LoginReq { account: account.into(), password: password.into() };
    client.call("user.login", &req).await.expect("the connection holds")
}

/// Reads from `client` until a push (`seq` 0) of `route` arrives, within 5 s; other messages
/// are dropped.
///
/// # Panics
/// When none arrives in time, or the connection fails.
pub async fn push_of(client: &mut mortar_cli::client::Client, route: &str) -> mortar_pb::UserMessage {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let msg = tokio::time::timeout_at(deadline, client.next())
            .await
            .unwrap_or_else(|_| panic!("no {route} push within 5 s"))
            .expect("the connection holds");
        if msg.seq == 0 && format!("{}.{}", msg.main_type, msg.sub_type) == route {
            return msg;
        }
    }
}

/// Reads from `client` for `wait`, and fails on a push of `route`; other messages are dropped.
///
/// # Panics
/// On such a push, or when the connection fails.
pub async fn no_push(client: &mut mortar_cli::client::Client, route: &str, wait: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(msg) = tokio::time::timeout_at(deadline, client.next()).await {
        let msg = msg.expect("the connection holds");
        assert!(
            !(msg.seq == 0 && format!("{}.{}", msg.main_type, msg.sub_type) == route),
            "an unexpected {route} push"
        );
    }
}

/// Registers the account `name` (password `NAME-password`), logs in on a new connection to
/// `url` and renames the player `name` (a new account's display name is a default one, never the
/// account name): the client and the user id.
///
/// # Panics
/// When the connection, the registration, the login or the rename fails.
pub async fn signed_up(url: &str, name: &str) -> (mortar_cli::client::Client, u64) {
    use mortar_user::user::{RenameReq, RenameResp};
    let mut client = mortar_cli::client::Client::connect(url).await.expect("connects");
    let password = format!("{name}-password");
    let user = register(&mut client, name, &password).await.expect("registered");
    login(&mut client, name, &password).await.expect("logged in");
    let renamed: Result<RenameResp, i32> =
        client.call("user.rename", &RenameReq { name: name.into() }).await.expect("the connection holds");
    renamed.expect("renamed");
    (client, user)
}
