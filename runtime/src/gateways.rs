//! How a worker reaches the gateway holding a player's session: to mark a session logged in, to
//! kick it, to push to it.
//!
//! - [`NoGateways`]: none (a bare worker in tests); `mortar dev` joins its own gateway in
//!   `node::local`.
//! - [`GatewayPool`]: a cluster's gateways, found through the registry (with the static registry:
//!   learnt from each gateway's own handshake when it dials this worker) and dialled on first use
//!   (one multiplexed tarpc connection each, with the cluster handshake). A connection that
//!   closes is dropped at once, and a gateway whose address changes (restarted on another port)
//!   is dialled again at the new one. With a shared session store, a gateway that leaves the
//!   registry has its players' logins purged from it, so they can log in again at once.

use mortar_abi::{Code, future::BoxFuture};
use mortar_backends::session::{Location, SessionStore};
use mortar_cluster::config::RpcConfig;
use mortar_cluster::registry::{Change, NodeKind, Registry};
use mortar_cluster::rpc::workers::code_of;
use mortar_cluster::rpc::{
    Claim, GatewayRpcClient, Login, PushBatch, PushReport, UsersPushed, Wills, codec, handshake,
    handshake::Identity,
};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};
use tarpc::client::RpcError;

/// What a worker asks of gateways. Every call names the gateway by node id.
pub trait Gateways: Send + Sync + 'static {
    /// Marks session `session` of `gateway` as logged in as `user`; false when it is gone.
    fn bind(&self, gateway: &str, session: u64, user: u64) -> BoxFuture<Result<bool, Code>>;
    /// Kicks session `session` of `gateway` with `reason`; false when it is gone.
    fn kick(&self, gateway: &str, session: u64, reason: Code) -> BoxFuture<Result<bool, Code>>;
    /// Pushes `batch` to its sessions on `gateway`.
    fn push(&self, gateway: &str, batch: PushBatch) -> BoxFuture<Result<PushReport, Code>>;
    /// Has `gateway` hold (or drop) `wills` for its sessions.
    fn wills(&self, gateway: &str, wills: Wills) -> BoxFuture<Result<usize, Code>>;
}

/// No gateway at all (tests and benches of a bare worker): every call is `UNAVAILABLE`.
pub struct NoGateways;

impl Gateways for NoGateways {
    fn bind(&self, _: &str, _: u64, _: u64) -> BoxFuture<Result<bool, Code>> {
        Box::pin(std::future::ready(Err(Code::UNAVAILABLE)))
    }

    fn kick(&self, _: &str, _: u64, _: Code) -> BoxFuture<Result<bool, Code>> {
        Box::pin(std::future::ready(Err(Code::UNAVAILABLE)))
    }

    fn push(&self, _: &str, _: PushBatch) -> BoxFuture<Result<PushReport, Code>> {
        Box::pin(std::future::ready(Err(Code::UNAVAILABLE)))
    }

    fn wills(&self, _: &str, _: Wills) -> BoxFuture<Result<usize, Code>> {
        Box::pin(std::future::ready(Err(Code::UNAVAILABLE)))
    }
}

/// A cluster's gateways. Cheap to clone.
#[derive(Clone)]
pub struct GatewayPool {
    inner: Arc<Inner>,
}

struct Inner {
    me: Arc<Identity>,
    config: RpcConfig,
    registry: Arc<dyn Registry>,
    /// The connection to each gateway, by id; one whose connection broke is dropped and dialled
    /// again next time. The map's lock is held only to find a slot: a gateway being dialled
    /// (slow, or dead until its registry entry expires) holds up only its own callers.
    clients: Mutex<HashMap<String, Arc<Slot>>>,
    /// Gateways whose last dial failed: until when calls to them fail at once, and the next wait.
    down: Mutex<HashMap<String, (Instant, std::time::Duration)>>,
    follower: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// One gateway's connection, once dialled, with the generation that tells a replaced one apart.
#[derive(Default)]
struct Slot {
    client: tokio::sync::Mutex<Option<(u64, GatewayRpcClient)>>,
}

impl GatewayPool {
    /// Gateways of `registry`, reached as `me`. Follows the registry from now on: a gateway that
    /// leaves it has its players' logins removed from `sessions` (a shared session store; none
    /// when the gateways are the directory), and one whose address changed is dialled again.
    pub fn start(
        me: Arc<Identity>,
        config: RpcConfig,
        registry: Arc<dyn Registry>,
        sessions: Option<Arc<dyn SessionStore>>,
    ) -> Self {
        let inner = Arc::new(Inner {
            me,
            config,
            registry: registry.clone(),
            clients: Mutex::default(),
            down: Mutex::default(),
            follower: Mutex::default(),
        });
        let mut watcher = registry.watch();
        let follower = tokio::spawn({
            let inner = inner.clone();
            async move {
                let mut gateways = HashMap::new();
                while let Some(changes) = watcher.changed().await {
                    for change in changes {
                        match change {
                            Change::Added(entry) | Change::Updated(entry)
                                if entry.kind == NodeKind::Gateway =>
                            {
                                // It (re)started, or said hello again: worth dialling at once.
                                inner.down.lock().unwrap_or_else(PoisonError::into_inner).remove(&entry.id);
                                if let Some(before) = gateways.insert(entry.id.clone(), entry.addr.clone())
                                    && before != entry.addr
                                {
                                    tracing::info!(gateway = %entry.id, addr = %entry.addr, "gateway moved: dialling its new address");
                                    inner
                                        .clients
                                        .lock()
                                        .unwrap_or_else(PoisonError::into_inner)
                                        .remove(&entry.id);
                                }
                            }
                            Change::Removed(id) if gateways.remove(&id).is_some() => {
                                inner.clients.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
                                let Some(sessions) = &sessions else { continue };
                                match sessions.purge_gateway(id.clone(), u64::MAX).await {
                                    Ok(purged) => {
                                        tracing::info!(gateway = %id, purged, "gateway left: its players' logins removed")
                                    }
                                    Err(error) => {
                                        tracing::warn!(gateway = %id, %error, "gateway left: cannot purge its logins")
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
        });
        *inner.follower.lock().unwrap_or_else(PoisonError::into_inner) = Some(follower);
        Self { inner }
    }

    /// Stops following the registry.
    pub fn close(&self) {
        if let Some(follower) = self.inner.follower.lock().unwrap_or_else(PoisonError::into_inner).take() {
            follower.abort();
        }
    }

    /// The connection to gateway `id` and its generation, dialled when there is none (callers of
    /// one gateway wait for one dial).
    async fn client(&self, id: &str) -> Result<(u64, GatewayRpcClient), Code> {
        let slot = self
            .inner
            .clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id.to_owned())
            .or_default()
            .clone();
        let mut client = slot.client.lock().await;
        if let Some(client) = client.as_ref() {
            return Ok(client.clone());
        }
        let nodes = self.inner.registry.snapshot();
        let Some(entry) = nodes.get(id).filter(|entry| entry.kind == NodeKind::Gateway) else {
            tracing::warn!(gateway = %id, "no such gateway in the registry: it never connected to this worker, or left");
            return Err(Code::UNAVAILABLE);
        };
        if self.is_down(id) {
            return Err(Code::UNAVAILABLE);
        }
        let known = nodes.values().cloned().collect();
        let dialled = handshake::dial(&entry.addr, id, &self.inner.me, known, &self.inner.config).await;
        let frames = match dialled {
            Ok((_, frames)) => {
                self.inner.down.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
                frames
            }
            Err(error) => {
                let config = &self.inner.config;
                let mut down = self.inner.down.lock().unwrap_or_else(PoisonError::into_inner);
                let wait = down
                    .get(id)
                    .map_or(config.backoff_min(), |(_, wait)| (*wait * 2).min(config.backoff_max()));
                down.insert(
                    id.to_owned(),
                    (Instant::now() + mortar_backends::jitter::jitter(wait, 0.25), wait),
                );
                tracing::warn!(gateway = %id, addr = %entry.addr, %error, retry_in_ms = wait.as_millis() as u64, "cannot reach gateway");
                return Err(Code::UNAVAILABLE);
            }
        };
        let new = GatewayRpcClient::new(tarpc::client::Config::default(), codec::transport(frames));
        static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let generation = GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // A connection that closes (the gateway stopped, or restarted) is dropped at once, so the
        // next call dials again instead of failing on it.
        let (pool, gateway, dispatch) = (self.clone(), id.to_owned(), new.dispatch);
        tokio::spawn(async move {
            let _ = dispatch.await;
            pool.drop_connection(&gateway, generation).await;
        });
        *client = Some((generation, new.client.clone()));
        Ok((generation, new.client))
    }

    /// Whether gateway `id`'s last dial failed and its backoff has not passed.
    fn is_down(&self, id: &str) -> bool {
        let down = self.inner.down.lock().unwrap_or_else(PoisonError::into_inner);
        down.get(id).is_some_and(|(until, _)| Instant::now() < *until)
    }

    /// The ids of the gateways the registry knows now, sorted, but for those whose last dial
    /// failed less than their backoff ago (`rpc.backoff_min_ms`, doubling to
    /// `rpc.backoff_max_ms`): a gateway that is gone costs one failed dial per backoff, not one
    /// per call.
    pub fn gateway_ids(&self) -> Vec<String> {
        let nodes = self.inner.registry.snapshot();
        nodes
            .into_values()
            .filter(|entry| entry.kind == NodeKind::Gateway && !self.is_down(&entry.id))
            .map(|entry| entry.id)
            .collect()
    }

    /// Session directory: logs session `session` of `gateway` in as `user`, at `at_ms`.
    ///
    /// # Errors
    /// `UNAVAILABLE` or `TIMEOUT` when the gateway cannot be reached.
    pub async fn claim(&self, gateway: &str, session: u64, user: u64, at_ms: u64) -> Result<Claim, Code> {
        self.call(gateway, async |client, cx| client.claim(cx, session, user, at_ms).await).await
    }

    /// Session directory: tells `gateway` that `user` logged in with `login` elsewhere.
    ///
    /// # Errors
    /// `UNAVAILABLE` or `TIMEOUT` when the gateway cannot be reached.
    pub async fn evict(&self, gateway: &str, user: u64, login: Login) -> Result<bool, Code> {
        self.call(gateway, async |client, cx| client.evict(cx, user, login).await).await
    }

    /// Session directory: pushes to those of `users` logged in on `gateway`.
    ///
    /// # Errors
    /// `UNAVAILABLE` or `TIMEOUT` when the gateway cannot be reached.
    pub async fn push_users(
        &self,
        gateway: &str,
        users: Vec<u64>,
        main: String,
        sub: String,
        data: bytes::Bytes,
    ) -> Result<UsersPushed, Code> {
        self.call(gateway, async |client, cx| client.push_users(cx, users, main, sub, data).await).await
    }

    /// Session directory: kicks `user`'s session on `gateway`, if any.
    ///
    /// # Errors
    /// `UNAVAILABLE` or `TIMEOUT` when the gateway cannot be reached.
    pub async fn kick_user(&self, gateway: &str, user: u64, reason: Code) -> Result<bool, Code> {
        self.call(gateway, async |client, cx| client.kick_user(cx, user, reason.get()).await).await
    }

    /// Session directory: where each of `users` is logged in on `gateway`.
    ///
    /// # Errors
    /// `UNAVAILABLE` or `TIMEOUT` when the gateway cannot be reached.
    pub async fn locate(&self, gateway: &str, users: Vec<u64>) -> Result<Vec<Option<Location>>, Code> {
        self.call(gateway, async |client, cx| client.locate(cx, users).await).await
    }

    /// Drops gateway `id`'s connection of `generation`, unless it has been replaced already.
    async fn drop_connection(&self, id: &str, generation: u64) {
        let slot = self.inner.clients.lock().unwrap_or_else(PoisonError::into_inner).get(id).cloned();
        if let Some(slot) = slot {
            let mut client = slot.client.lock().await;
            if client.as_ref().is_some_and(|(current, _)| *current == generation) {
                *client = None;
            }
        }
    }

    /// Runs `call` on gateway `id`'s connection, dropping the connection when it broke (not when
    /// the call only timed out: other calls on it may be fine).
    async fn call<T>(
        &self,
        id: &str,
        call: impl AsyncFnOnce(GatewayRpcClient, tarpc::context::Context) -> Result<T, RpcError>,
    ) -> Result<T, Code> {
        let (generation, client) = self.client(id).await?;
        let mut cx = tarpc::context::current();
        cx.deadline = Instant::now() + self.inner.config.ping_timeout();
        match call(client, cx).await {
            Ok(answer) => Ok(answer),
            Err(error) => {
                tracing::warn!(gateway = %id, %error, "call to gateway failed");
                metrics::counter!(mortar_telemetry::metrics::RPC_ERRORS, "peer" => id.to_owned(), "code" => mortar_telemetry::metrics::code_label(code_of(&error).get()))
                    .increment(1);
                let code = code_of(&error);
                if code == Code::UNAVAILABLE {
                    self.drop_connection(id, generation).await;
                }
                Err(code)
            }
        }
    }
}

impl Gateways for GatewayPool {
    fn bind(&self, gateway: &str, session: u64, user: u64) -> BoxFuture<Result<bool, Code>> {
        let (pool, gateway) = (self.clone(), gateway.to_owned());
        Box::pin(
            async move { pool.call(&gateway, async |client, cx| client.bind(cx, session, user).await).await },
        )
    }

    fn kick(&self, gateway: &str, session: u64, reason: Code) -> BoxFuture<Result<bool, Code>> {
        let (pool, gateway) = (self.clone(), gateway.to_owned());
        Box::pin(async move {
            pool.call(&gateway, async |client, cx| client.kick(cx, session, reason.get()).await).await
        })
    }

    fn push(&self, gateway: &str, batch: PushBatch) -> BoxFuture<Result<PushReport, Code>> {
        let (pool, gateway) = (self.clone(), gateway.to_owned());
        Box::pin(async move { pool.call(&gateway, async |client, cx| client.push(cx, batch).await).await })
    }

    fn wills(&self, gateway: &str, wills: Wills) -> BoxFuture<Result<usize, Code>> {
        let (pool, gateway) = (self.clone(), gateway.to_owned());
        Box::pin(async move { pool.call(&gateway, async |client, cx| client.wills(cx, wills).await).await })
    }
}
