//! Tests for module crates: [`TestNode`] starts an in-process `mortar dev` node (embedded store in
//! a temporary folder, memory cache) serving the modules linked into the test, on a real loopback
//! socket; [`Player`]s connect to it over WebSocket and call routes with their types, through the
//! typed clients generated from the modules' protos.
//!
//! ```ignore
//! // greet/tests/greet.rs; greet's Cargo.toml has mortar-testing and tokio as dev-dependencies.
//! use greet::greet::{GreetClient, HelloReq};
//! use mortar_testing::TestNode;
//!
//! #[tokio::test]
//! async fn hello_names_the_player() {
//!     let node = TestNode::builder().modules(["greet"]).start().await;
//!     let ann = node.player(1).await; // logged in as user 1
//!     let resp = GreetClient(&ann).hello(&HelloReq { name: "ann".into() }).await.unwrap();
//!     assert!(resp.greeting.starts_with("hello ann"));
//!     let empty = GreetClient(&ann).hello(&HelloReq::default()).await.unwrap_err();
//!     assert_eq!(empty.code(), mortar::Code::BAD_REQUEST);
//! }
//! ```
//!
//! The node serves every module the test binary links (the crate under test, and the module
//! crates among its dev-dependencies that the test names, e.g. `use mortar_user as _;`), or those
//! [`Builder::modules`] lists. It also serves this crate's module, `testing`, whose public route
//! `testing.login` logs a session in as any user id: [`TestNode::player`] uses it, so a module is
//! tested without an accounts module.
//!
//! Everything the node writes is under a temporary folder removed when the node is dropped
//! (unless [`Builder::data_dir`] names one, to restart a node on the same data).

use futures::{SinkExt as _, StreamExt as _};
use mortar::{Caller, Code, Failure, prelude::*};
use mortar_node::{Listeners, NodeConfig, NodeError};
use mortar_pb::UserMessage;
use prost::Message;
use std::{
    collections::VecDeque,
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};
use tokio::{net::TcpStream, sync::oneshot, task::JoinHandle};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message as Frame};

/// The messages of `proto/testing.proto`.
pub mod testing {
    mortar::include_proto!("testing");
}

mortar::module!("testing");

/// Logs the session in as `user_id` (any id but 0), as an accounts module would after checking a
/// password.
#[mortar::handler("testing.login", public)]
async fn login(ctx: Ctx, req: testing::LoginReq) -> Result<testing::LoginResp, Failure> {
    if req.user_id == 0 {
        return Err(Code::BAD_REQUEST.because("userId: 0 is no user's id"));
    }
    ctx.bind_user(req.user_id).await?;
    Ok(testing::LoginResp {})
}

/// How long a [`Player`] waits for a reply or a push before it gives up with `TIMEOUT`.
pub const WAIT: Duration = Duration::from_secs(10);

/// A `mortar dev` node in this process, stopped when dropped.
#[derive(Debug)]
pub struct TestNode {
    addr: SocketAddr,
    data: PathBuf,
    scratch: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), NodeError>>>,
}

/// How a [`TestNode`] starts: [`TestNode::builder`], then [`Builder::start`].
pub struct Builder {
    config: NodeConfig,
    modules: Option<Vec<String>>,
    tables: Vec<(String, String)>,
    data: Option<PathBuf>,
}

impl Builder {
    /// Serves only these modules (and `testing`), of those the test binary links.
    #[must_use]
    pub fn modules(mut self, names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.modules = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// The module's config section, as `[modules.NAME]` of a node's file would hold it.
    #[must_use]
    pub fn module_config(mut self, module: &str, section: serde_json::Value) -> Self {
        self.config.modules.insert(module.to_owned(), section);
        self
    }

    /// A game config table, `file` (e.g. `boards.json`) holding `json`. A table not given uses its
    /// module's built-in rows.
    #[must_use]
    pub fn table(mut self, file: &str, json: &str) -> Self {
        self.tables.push((file.to_owned(), json.to_owned()));
        self
    }

    /// Keeps the node's store in `dir` (created when missing, never removed): a node started
    /// again on it finds what the last one wrote.
    #[must_use]
    pub fn data_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.data = Some(dir.as_ref().to_owned());
        self
    }

    /// Any other change to the node's config (its defaults are `mortar dev`'s).
    #[must_use]
    pub fn config(mut self, change: impl FnOnce(&mut NodeConfig)) -> Self {
        change(&mut self.config);
        self
    }

    /// Starts the node and returns once it serves.
    ///
    /// # Panics
    /// When the node does not start (a bad config, a module's `on_start` failing, a table that
    /// does not load), with the node's error.
    pub async fn start(self) -> TestNode {
        let scratch = scratch_dir();
        let tables = scratch.join("tables");
        std::fs::create_dir_all(&tables).expect("the scratch folder is writable");
        for (file, json) in &self.tables {
            std::fs::write(tables.join(file), json).expect("the scratch folder is writable");
        }
        let mut config = self.config;
        config.tables.path = tables;
        config.storage.path = self.data.unwrap_or_else(|| scratch.join("data"));
        if let Some(mut modules) = self.modules {
            modules.push("testing".into());
            config.worker.modules = modules;
        }
        if let Err(error) = config.validate() {
            let _ = std::fs::remove_dir_all(&scratch);
            panic!("the test node's config is not valid: {error}");
        }
        let gateway = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds 127.0.0.1:0");
        let addr = gateway.local_addr().expect("a bound listener has an address");
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready, serving) = oneshot::channel::<()>();
        let data = config.storage.path.clone();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let listeners = Listeners { gateway, admin: None };
        let mut task = tokio::spawn(mortar_node::dev::run(
            config,
            listeners,
            move || {
                let _ = ready.send(());
            },
            shutdown,
        ));
        // A dropped `ready` (the node ended before serving) is not serving: the task's end says why.
        let ended = tokio::select! {
            Ok(()) = serving => return TestNode { addr, data, scratch, stop: Some(stop), task: Some(task) },
            ended = &mut task => ended,
        };
        let _ = std::fs::remove_dir_all(&scratch);
        match ended {
            Ok(Err(error)) => panic!("the test node did not start: {error}"),
            Ok(Ok(())) => panic!("the test node stopped before it served"),
            Err(error) => panic!("the test node's task failed: {error}"),
        }
    }
}

impl TestNode {
    /// A node of `mortar dev`'s defaults, serving every linked module.
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    /// A node to configure before it starts.
    pub fn builder() -> Builder {
        Builder { config: NodeConfig::default(), modules: None, tables: Vec::new(), data: None }
    }

    /// `ws://127.0.0.1:PORT/ws`, where clients connect.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Where the node's store is.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// A client connected and not logged in.
    ///
    /// # Panics
    /// When it cannot connect.
    pub async fn client(&self) -> Player {
        Player::connect(&self.url()).await.expect("connects to the test node")
    }

    /// A client connected and logged in as `user_id` (through `testing.login`: the session is
    /// bound as an accounts module binds it, and the modules' `on_online` hooks run).
    ///
    /// # Panics
    /// When it cannot connect or `user_id` is 0.
    pub async fn player(&self, user_id: u64) -> Player {
        let mut player = self.client().await;
        if let Err(failure) = player.login(user_id).await {
            panic!("testing.login as {user_id}: {failure}");
        }
        player
    }

    /// Stops the node (as on `SIGTERM`: requests finish, players go offline) and waits for it.
    ///
    /// # Errors
    /// What the node ended with.
    pub async fn stop(mut self) -> Result<(), NodeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.unwrap_or_else(|error| panic!("the test node's task failed: {error}")),
            None => Ok(()),
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// The documents of type `T` that a stopped node left in `dir` (its [`TestNode::data_dir`]), to
/// read or change them between two starts: e.g. to put back what a crash between two writes
/// would have left. Drop it before a node starts on `dir` again.
///
/// # Panics
/// When the store in `dir` does not open (a node still has it open).
pub fn stored<T: mortar::store::Document>(dir: &Path) -> mortar::store::Store<T> {
    let backend = mortar_backends::storage::embedded::EmbeddedStore::open(dir)
        .unwrap_or_else(|error| panic!("the store in {} does not open: {error}", dir.display()));
    mortar::store::Store::new(std::sync::Arc::new(backend))
}

/// A fresh path under the system's temp folder (not created), unique across processes: e.g. a
/// [`Builder::data_dir`] that outlives one node. The caller removes it.
pub fn scratch_dir() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("mortar-testing-{}-{n}", std::process::id()))
}

/// A WebSocket client of a [`TestNode`]. It is a [`Caller`]: the typed clients generated from a
/// module's protos call through it (`rank::RankClient(&player).submit(&req)`), answering the
/// reply or a [`Failure`] with the reply's code and reason. Pushes that arrive meanwhile wait
/// for [`Player::push`].
pub struct Player {
    conn: tokio::sync::Mutex<Connection>,
    user_id: Option<u64>,
}

struct Connection {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_seq: u32,
    pushes: VecDeque<UserMessage>,
}

impl Connection {
    /// The next envelope from the node; `UNAVAILABLE` with the close reason when it closed.
    async fn next(&mut self) -> Result<UserMessage, Failure> {
        loop {
            let frame = match self.ws.next().await {
                Some(Ok(frame)) => frame,
                Some(Err(error)) => {
                    return Err(Code::UNAVAILABLE.because(format!("the connection failed: {error}")));
                }
                None => return Err(Code::UNAVAILABLE.because("the node closed the connection")),
            };
            match frame {
                Frame::Binary(bytes) => {
                    return UserMessage::decode(bytes)
                        .map_err(|error| Code::INTERNAL.because(format!("an undecodable frame: {error}")));
                }
                Frame::Close(close) => {
                    let why = close.map(|close| format!("{} {}", u16::from(close.code), close.reason));
                    return Err(Code::UNAVAILABLE
                        .because(format!("the node closed the connection: {}", why.unwrap_or_default())));
                }
                _ => {}
            }
        }
    }
}

impl Player {
    /// Connects to `url` (`ws://HOST:PORT/ws`), not logged in.
    ///
    /// # Errors
    /// `UNAVAILABLE` when the connection fails.
    pub async fn connect(url: &str) -> Result<Self, Failure> {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .map_err(|error| Code::UNAVAILABLE.because(format!("cannot connect to {url}: {error}")))?;
        let conn = Connection { ws, next_seq: 1, pushes: VecDeque::new() };
        Ok(Self { conn: tokio::sync::Mutex::new(conn), user_id: None })
    }

    /// The user this client logged in as through [`Player::login`].
    pub fn user_id(&self) -> Option<u64> {
        self.user_id
    }

    /// Logs this session in as `user_id` through `testing.login`.
    ///
    /// # Errors
    /// As [`Caller::call`].
    pub async fn login(&mut self, user_id: u64) -> Result<(), Failure> {
        let _: testing::LoginResp = self.call("testing.login", &testing::LoginReq { user_id }).await?;
        self.user_id = Some(user_id);
        Ok(())
    }

    /// Sends `data` to `route` as it is (any bytes) and waits for the reply's envelope, whatever
    /// its code.
    ///
    /// # Errors
    /// `BAD_REQUEST` for a route that is not `main.sub`; `UNAVAILABLE` when the connection
    /// closes; `TIMEOUT` after [`WAIT`] without a reply.
    pub async fn request(&self, route: &str, data: Vec<u8>) -> Result<UserMessage, Failure> {
        let (main, sub) = route
            .split_once('.')
            .ok_or_else(|| Code::BAD_REQUEST.because(format!("route {route:?} is not main.sub")))?;
        let mut conn = self.conn.lock().await;
        let seq = conn.next_seq;
        conn.next_seq = conn.next_seq.wrapping_add(1).max(1);
        let msg = UserMessage {
            main_type: main.into(),
            sub_type: sub.into(),
            data: data.into(),
            seq,
            ..Default::default()
        };
        conn.ws
            .send(Frame::Binary(msg.encode_to_vec().into()))
            .await
            .map_err(|error| Code::UNAVAILABLE.because(format!("the connection failed: {error}")))?;
        let reply = async {
            loop {
                let msg = conn.next().await?;
                if msg.seq == seq {
                    return Ok(msg);
                }
                if msg.seq == 0 {
                    conn.pushes.push_back(msg);
                }
            }
        };
        tokio::time::timeout(WAIT, reply)
            .await
            .unwrap_or_else(|_| Err(Code::TIMEOUT.because(format!("no reply to {route} within {WAIT:?}"))))
    }

    /// The next push of `route` (`main.sub`) to this player, decoded: one that arrived already,
    /// or the first to arrive within [`WAIT`]. Pushes of other routes stay for their turn.
    ///
    /// # Errors
    /// `TIMEOUT` when none arrives; `UNAVAILABLE` when the connection closes; `INTERNAL` when it
    /// does not decode as `T`.
    pub async fn push<T: Message + Default>(&self, route: &str) -> Result<T, Failure> {
        let is_route = |msg: &UserMessage| route.split_once('.') == Some((&msg.main_type, &msg.sub_type));
        let mut conn = self.conn.lock().await;
        let found = match conn.pushes.iter().position(is_route) {
            Some(at) => conn.pushes.remove(at).ok_or(Code::INTERNAL)?,
            None => {
                let arrival = async {
                    loop {
                        let msg = conn.next().await?;
                        if is_route(&msg) && msg.seq == 0 {
                            return Ok::<_, Failure>(msg);
                        }
                        if msg.seq == 0 {
                            conn.pushes.push_back(msg);
                        }
                    }
                };
                tokio::time::timeout(WAIT, arrival).await.unwrap_or_else(|_| {
                    Err(Code::TIMEOUT.because(format!("no push {route} within {WAIT:?}")))
                })?
            }
        };
        T::decode(found.data)
            .map_err(|error| Code::INTERNAL.because(format!("push {route} does not decode: {error}")))
    }

    /// Closes the connection (the node sees the player leave).
    pub async fn close(self) {
        let mut conn = self.conn.into_inner();
        let _ = conn.ws.close(None).await;
        while let Some(Ok(_)) = conn.ws.next().await {}
    }
}

impl Caller for Player {
    type Error = Failure;

    fn call<Req, Resp>(&self, route: &str, req: &Req) -> impl Future<Output = Result<Resp, Failure>> + Send
    where
        Req: Message,
        Resp: Message + Default,
    {
        let data = req.encode_to_vec();
        async move {
            let reply = self.request(route, data).await?;
            if reply.code != 0 {
                return Err(Code::from_wire(reply.code).because(reply.reason));
            }
            Resp::decode(reply.data).map_err(|error| {
                Code::INTERNAL.because(format!("the reply of {route} does not decode: {error}"))
            })
        }
    }
}
