//! The admin HTTP listener: `/metrics` (Prometheus text), `/healthz` (the process answers),
//! `/readyz` (the node serves clients, is not shutting down, and its store can write), and on worker and dev nodes the
//! admin API under `/v1/` ([`api`]).

pub mod api;

use crate::config::AdminConfig;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header};
use mortar_telemetry::metrics;
use std::{
    convert::Infallible,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};
use tokio::{net::TcpListener, sync::Semaphore};

/// Whether the node is ready to serve; shared by the node and its admin listener.
#[derive(Clone)]
pub struct Health {
    ready: Arc<AtomicBool>,
    peers_ok: Arc<AtomicBool>,
    store_ok: Arc<AtomicBool>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            ready: Arc::default(),
            peers_ok: Arc::new(AtomicBool::new(true)),
            store_ok: Arc::new(AtomicBool::new(true)),
        }
    }
}

impl Health {
    /// Marks the node ready (serving) or not (starting, or shutting down).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Says whether the peers the node needs are there (a gateway: at least one live worker).
    pub fn set_peers_ok(&self, ok: bool) {
        self.peers_ok.store(ok, Ordering::Release);
    }

    /// A node whose readiness also needs `store_writable` (its store can write; the embedded
    /// store's flag, see `storage::embedded`).
    pub fn with_store(store_writable: Arc<AtomicBool>) -> Self {
        Self { store_ok: store_writable, ..Self::default() }
    }

    /// Whether the node is ready: serving, its peers are there, and its store can write.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
            && self.peers_ok.load(Ordering::Acquire)
            && self.store_ok.load(Ordering::Acquire)
    }
}

/// Serves the admin endpoints (and `api`, if any) on `listener` until `shutdown` completes.
///
/// Also runs the Prometheus recorder's upkeep every few seconds. Each HTTP connection answers
/// one request and closes; at most `admin.max_connections` are open at once (more are closed at
/// once), and each gets `admin.request_timeout_ms` in all.
pub async fn serve(
    listener: TcpListener,
    health: Health,
    config: AdminConfig,
    api: Option<api::Api>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let timeout = config.request_timeout();
    let mut upkeep = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = upkeep.tick() => {
                if let Some(handle) = metrics::handle() {
                    handle.run_upkeep();
                }
            }
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::debug!("admin connection refused: admin.max_connections reached");
                    continue;
                };
                let (health, api) = (health.clone(), api.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let (health, api) = (health.clone(), api.clone());
                        async move {
                            let response = match &api {
                                Some(api) if request.uri().path().starts_with("/v1/") => {
                                    api.answer(request, peer.ip()).await
                                }
                                _ => answer(&request, &health),
                            };
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let connection = hyper::server::conn::http1::Builder::new()
                        .keep_alive(false)
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                    let _ = tokio::time::timeout(timeout, connection).await;
                });
            }
        }
    }
}

fn answer(request: &Request<Incoming>, health: &Health) -> Response<Full<Bytes>> {
    if request.uri().path().starts_with("/v1/") {
        return text(
            StatusCode::NOT_FOUND,
            "the admin API is off: worker and dev nodes serve it once admin.token is set\n".into(),
        );
    }
    if request.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
    }
    match request.uri().path() {
        "/metrics" => match metrics::handle() {
            Some(handle) => text(StatusCode::OK, handle.render()),
            None => text(StatusCode::SERVICE_UNAVAILABLE, "metrics recorder not installed\n".into()),
        },
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" if health.is_ready() => text(StatusCode::OK, "ready\n".into()),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into()),
        _ => text(StatusCode::NOT_FOUND, "admin endpoints: /metrics /healthz /readyz /v1/\n".into()),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; version=0.0.4"));
    response
}
