//! The admin API (`/v1/…`), for game-master tools: call any route as the system, find a player,
//! kick one. Served by worker and dev nodes, on the admin listener, once `admin.token` is set;
//! every request must carry `Authorization: Bearer TOKEN` (401 otherwise).
//!
//! - `POST /v1/call/{route}`, a JSON body (the route's request in proto3 JSON; empty: `{}`) →
//!   `{"code": N, "data": {…}}` (the reply in proto3 JSON), plus `"error": "NAME"` (and
//!   `"reason"` when the route gave one) when `code` is not 0. 400 for a body that is not the
//!   route's request, 404 for a route no proto declares, 200 for everything the route answered.
//! - `GET /v1/online/{userId}` → `{"userId", "gateway", "session", "loginAtMs"}`, 404 when the
//!   player is offline.
//! - `POST /v1/kick/{userId}` → `{"kicked": true}`, 404 (`{"kicked": false}`) when offline; the
//!   player gets `sys.kick` with `PERMISSION_DENIED`.

use crate::config::AdminConfig;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header};
use mortar_abi::Code;
use mortar_pb::ErrorCode;
use mortar_runtime::Worker;
use mortar_telemetry::log_limit::LogLimit;
use mortar_telemetry::metrics as m;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor};
use serde_json::{Value, json};
use std::{
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

/// The admin API of one node. Cheap to clone.
#[derive(Clone)]
pub struct Api {
    inner: Arc<Inner>,
}

struct Inner {
    worker: Worker,
    /// `Bearer TOKEN`, as the header must read.
    expected: String,
    timeout: Duration,
    max_body: usize,
    /// The protos of the cluster's routes, fetched at the first call and again when a call names
    /// a route they lack (a worker that joined since).
    contract: Mutex<Option<DescriptorPool>>,
}

impl Api {
    /// The API over `worker`, if `config` sets a token.
    pub fn new(worker: Worker, config: &AdminConfig) -> Option<Self> {
        (!config.token.is_empty()).then(|| Self {
            inner: Arc::new(Inner {
                worker,
                expected: format!("Bearer {}", config.token),
                timeout: config.request_timeout(),
                max_body: config.max_body_bytes,
                contract: Mutex::new(None),
            }),
        })
    }

    /// Answers one `/v1/…` request from `client`.
    pub async fn answer(&self, request: Request<Incoming>, client: IpAddr) -> Response<Full<Bytes>> {
        let presented = request.headers().get(header::AUTHORIZATION).map(|value| value.as_bytes());
        let expected = self.inner.expected.as_bytes();
        if !presented.is_some_and(|presented| bool::from(subtle::ConstantTimeEq::ct_eq(presented, expected)))
        {
            // Guessers send many: one line per second, with how many were not logged.
            static LOGGED: LogLimit = LogLimit::new(Duration::from_secs(1));
            if let Some(held) = LOGGED.allow() {
                tracing::warn!(%client, path = request.uri().path(), not_logged_since = held, "admin API request without the right token");
            }
            metrics::counter!(m::ADMIN_UNAUTHORIZED).increment(1);
            let mut response =
                reply(StatusCode::UNAUTHORIZED, &json!({ "error": "missing or wrong bearer token" }));
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            return response;
        }
        let path = request.uri().path().to_owned();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let deadline = Instant::now() + self.inner.timeout;
        match (request.method(), parts.as_slice()) {
            (&Method::POST, ["v1", "call", route]) => {
                let route = (*route).to_owned();
                match self.body(request).await {
                    Ok(body) => self.call(&route, &body, client, deadline).await,
                    Err(response) => response,
                }
            }
            (&Method::GET, ["v1", "online", user]) => match user.parse::<u64>() {
                Ok(user) => self.online(user).await,
                Err(_) => reply(StatusCode::BAD_REQUEST, &json!({ "error": "the user id is not a number" })),
            },
            (&Method::POST, ["v1", "kick", user]) => match user.parse::<u64>() {
                Ok(user) => self.kick(user).await,
                Err(_) => reply(StatusCode::BAD_REQUEST, &json!({ "error": "the user id is not a number" })),
            },
            _ => reply(
                StatusCode::NOT_FOUND,
                &json!({ "error": "admin API: POST /v1/call/{route}, GET /v1/online/{userId}, POST /v1/kick/{userId}" }),
            ),
        }
    }

    /// The request body, at most `admin.max_body_bytes`.
    async fn body(&self, request: Request<Incoming>) -> Result<Bytes, Response<Full<Bytes>>> {
        match Limited::new(request.into_body(), self.inner.max_body).collect().await {
            Ok(body) => Ok(body.to_bytes()),
            Err(error) if error.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                &json!({ "error": "body larger than admin.max_body_bytes" }),
            )),
            Err(_) => Err(reply(StatusCode::BAD_REQUEST, &json!({ "error": "the body did not arrive" }))),
        }
    }

    async fn call(
        &self,
        route: &str,
        body: &[u8],
        client: IpAddr,
        deadline: Instant,
    ) -> Response<Full<Bytes>> {
        let Some(method) = self.method(route).await else {
            let code = Code::NO_ROUTE;
            return reply(StatusCode::NOT_FOUND, &json!({ "code": code.get(), "error": name(code) }));
        };
        let text = match std::str::from_utf8(body).map(str::trim) {
            Ok("") => "{}",
            Ok(text) => text,
            Err(_) => return bad_request("the body is not UTF-8"),
        };
        let mut json = serde_json::Deserializer::from_str(text);
        let decoded =
            DynamicMessage::deserialize(method.input(), &mut json).and_then(|msg| json.end().map(|()| msg));
        let request = match decoded {
            Ok(request) => request,
            Err(error) => return bad_request(&format!("not a {}: {error}", method.input().full_name())),
        };
        let encoded = Bytes::from(request.encode_to_vec());
        match self.inner.worker.call_as_system(route, encoded, client, deadline).await {
            Ok(data) => {
                match DynamicMessage::decode(method.output(), data).map(|data| serde_json::to_value(&data)) {
                    Ok(Ok(data)) => reply(StatusCode::OK, &json!({ "code": 0, "data": data })),
                    Ok(Err(error)) => {
                        tracing::error!(route, %error, "admin API: the reply does not convert to JSON");
                        let code = Code::INTERNAL;
                        reply(StatusCode::OK, &json!({ "code": code.get(), "error": name(code) }))
                    }
                    Err(error) => {
                        tracing::error!(route, %error, "admin API: the reply does not decode as its proto says");
                        let code = Code::INTERNAL;
                        reply(StatusCode::OK, &json!({ "code": code.get(), "error": name(code) }))
                    }
                }
            }
            Err(failure) => {
                let code = failure.code();
                let mut body = json!({ "code": code.get(), "error": name(code) });
                if let Some(reason) = failure.reason() {
                    body["reason"] = reason.into();
                }
                reply(StatusCode::OK, &body)
            }
        }
    }

    /// The proto method of `route`, fetching the cluster's protos again when the ones held lack it.
    async fn method(&self, route: &str) -> Option<MethodDescriptor> {
        let (main, sub) = route.split_once('.')?;
        let held = self.inner.contract.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(method) = held.and_then(|pool| mortar_pb::route_method(&pool, main, sub)) {
            return Some(method);
        }
        let sets = self.inner.worker.cluster_descriptors(main, self.inner.timeout).await;
        let pool = match mortar_pb::contract([&mortar_pb::merge_descriptor_sets(&sets)[..]]) {
            Ok(pool) => pool,
            Err(error) => {
                tracing::error!(%error, "admin API: the cluster's protos do not load");
                return None;
            }
        };
        let method = mortar_pb::route_method(&pool, main, sub);
        *self.inner.contract.lock().unwrap_or_else(PoisonError::into_inner) = Some(pool);
        method
    }

    async fn online(&self, user: u64) -> Response<Full<Bytes>> {
        match self.inner.worker.locate(user).await {
            Ok(Some(at)) => reply(
                StatusCode::OK,
                &json!({ "userId": user, "gateway": at.gateway, "session": at.session, "loginAtMs": at.login_at_ms }),
            ),
            Ok(None) => reply(StatusCode::NOT_FOUND, &json!({ "userId": user, "error": "offline" })),
            Err(code) => unavailable(code),
        }
    }

    async fn kick(&self, user: u64) -> Response<Full<Bytes>> {
        match self.inner.worker.kick(user, Code::PERMISSION_DENIED).await {
            Ok(true) => {
                tracing::info!(user, "admin API: player kicked");
                reply(StatusCode::OK, &json!({ "kicked": true }))
            }
            Ok(false) => reply(StatusCode::NOT_FOUND, &json!({ "kicked": false, "error": "offline" })),
            Err(code) => unavailable(code),
        }
    }
}

fn name(code: Code) -> String {
    ErrorCode::name_of(code.get())
}

fn bad_request(why: &str) -> Response<Full<Bytes>> {
    let code = Code::BAD_REQUEST;
    reply(StatusCode::BAD_REQUEST, &json!({ "code": code.get(), "error": name(code), "detail": why }))
}

fn unavailable(code: Code) -> Response<Full<Bytes>> {
    reply(StatusCode::SERVICE_UNAVAILABLE, &json!({ "code": code.get(), "error": name(code) }))
}

fn reply(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    response
}
