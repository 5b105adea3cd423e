//! Metrics: names, labels and the Prometheus recorder. Everything is recorded through the
//! `metrics` facade; [`install`] puts a Prometheus recorder behind it, rendered by the admin
//! listener at `/metrics`. `docs/operations.md` lists every metric.

use metrics::SharedString;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use mortar_pb::ErrorCode;
use std::sync::OnceLock;

/// Gauge: client connections open now.
pub const CONNECTIONS: &str = "mortar_gateway_connections";
/// Counter: client connections accepted (upgraded to WebSocket).
pub const CONNECTIONS_ACCEPTED: &str = "mortar_gateway_connections_accepted_total";
/// Counter: connections refused, by `reason` (`handshakes`, `total`, `per_ip`, `handshake_timeout`,
/// `handshake_failed`).
pub const CONNECTIONS_REFUSED: &str = "mortar_gateway_connections_refused_total";
/// Counter: sessions closed, by `reason` (see `docs/operations.md`).
pub const SESSIONS_CLOSED: &str = "mortar_gateway_sessions_closed_total";
/// Counter: replies the gateway sent to clients, by `code`.
pub const GATEWAY_REPLIES: &str = "mortar_gateway_replies_total";
/// Counter: clients disconnected because their outgoing queue was full (they stopped reading).
pub const QUEUE_FULL: &str = "mortar_gateway_outbound_queue_full_total";
/// Counter: pushes sent to clients, by `route`.
pub const PUSHES: &str = "mortar_gateway_pushes_total";
/// Counter: pushes not sent because the client's outgoing queue was full, by `route`.
pub const PUSHES_DROPPED: &str = "mortar_gateway_pushes_dropped_total";
/// Counter: logins a gateway put back into a session store that lost them (a Redis server
/// restarted empty): see `gateway::resync`.
pub const SESSIONS_RESTORED: &str = "mortar_gateway_sessions_restored_total";
/// Counter: sessions kicked, by `reason` code.
pub const KICKS: &str = "mortar_gateway_kicks_total";
/// Histogram: seconds from relaying a request to its reply, by worker `peer`.
pub const RPC_DURATION: &str = "mortar_rpc_duration_seconds";
/// Counter: relays that failed at the RPC layer, by `peer` and `code`.
pub const RPC_ERRORS: &str = "mortar_rpc_errors_total";
/// Counter: peer connections refused at the handshake or over the connection cap, by `reason`.
pub const RPC_REFUSED: &str = "mortar_rpc_refused_total";
/// Counter: admin API requests refused for a missing or wrong token.
pub const ADMIN_UNAUTHORIZED: &str = "mortar_admin_unauthorized_total";
/// Gauge: workers a gateway is connected to now (the ones requests can go to).
pub const WORKERS_LIVE: &str = "mortar_gateway_workers_live";
/// Gauge: nodes the registry lists, by `kind` (`gateway`, `worker`).
pub const REGISTRY_NODES: &str = "mortar_registry_nodes";
/// Gauge: 1 while the registry's backend answers, 0 while the node serves from its last list.
pub const REGISTRY_UP: &str = "mortar_registry_up";
/// Counter: registry commands that failed (backend unreachable or erroring).
pub const REGISTRY_ERRORS: &str = "mortar_registry_errors_total";
/// Histogram: seconds per store operation, by `backend` and `op`.
pub const STORE_DURATION: &str = "mortar_store_duration_seconds";
/// Counter: store operations that failed, by `backend`, `op` and `error`.
pub const STORE_ERRORS: &str = "mortar_store_errors_total";
/// Histogram: seconds per embedded-store commit (its fsync included).
pub const STORE_COMMIT_DURATION: &str = "mortar_store_commit_duration_seconds";
/// Histogram: writes per embedded-store commit (group commit at work).
pub const STORE_COMMIT_BATCH: &str = "mortar_store_commit_writes";
/// Gauge: 1 while the store can write, 0 from a failed commit (a full disk, an I/O error) until it
/// has recovered by itself, by `backend` (the embedded store's; `/readyz` is 503 meanwhile).
pub const STORE_WRITABLE: &str = "mortar_store_writable";
/// Counter: commits (and recovery tries) of the store that failed, by `backend`: each failed
/// commit failed every write it carried with `UNAVAILABLE`.
pub const STORE_WRITE_FAILURES: &str = "mortar_store_write_failures_total";
/// Histogram: seconds per cache operation, by `backend` and `op`.
pub const CACHE_DURATION: &str = "mortar_cache_duration_seconds";
/// Counter: cache operations that failed, by `backend` and `op`.
pub const CACHE_ERRORS: &str = "mortar_cache_errors_total";
/// Counter: requests handled by a worker, by `route` and `code`.
pub const REQUESTS: &str = "mortar_requests_total";
/// Histogram: seconds a worker spent handling a request, by `route`.
pub const REQUEST_DURATION: &str = "mortar_request_duration_seconds";
/// Counter: handlers (or tasks they spawned) that panicked, by `route`.
pub const HANDLER_PANICS: &str = "mortar_handler_panics_total";
/// Histogram, seconds: how late a room's tick ran after its time, by `module`.
pub const ROOM_TICK_LATE: &str = "mortar_room_tick_late_seconds";
/// Counter: ticks whose work took longer than the room's period, by `module`.
pub const ROOM_TICK_OVERRUNS: &str = "mortar_room_tick_overruns_total";
/// Counter: runs of scheduled jobs on this node, by `job` and `code` (`OK`, or `INTERNAL` for a
/// failed run).
pub const JOB_RUNS: &str = "mortar_job_runs_total";
/// Histogram: seconds a run of a scheduled job took, by `job`.
pub const JOB_DURATION: &str = "mortar_job_duration_seconds";

/// Histogram buckets in seconds: 50 µs to 10 s.
const BUCKETS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder as the process's metrics recorder, once; later calls return
/// the same handle. If another recorder was installed first, metrics go there and `/metrics`
/// renders nothing.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&BUCKETS)
            .and_then(|builder| {
                builder.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(STORE_COMMIT_BATCH.into()),
                    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0],
                )
            })
            .map(PrometheusBuilder::build_recorder)
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was installed before mortar's; /metrics will be empty");
        }
        handle
    })
}

/// The Prometheus handle, if [`install`] ran.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE.get()
}

/// A code as a label: its name (`NO_ROUTE`) or, for module codes, its number.
pub fn code_label(code: i32) -> SharedString {
    match ErrorCode::try_from(code) {
        Ok(known) => SharedString::const_str(known.as_str_name()),
        Err(_) => SharedString::from(code.to_string()),
    }
}
