//! A game client in a few lines: connect, send requests, read replies and pushes. Requests and
//! replies can be written as JSON: a [`Contract`] (the envelope's protos, the linked modules'
//! and those a gateway gives through `sys.descriptors`) says how each route's messages encode, so
//! no code is written per module.

use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use mortar_pb::UserMessage;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, MethodDescriptor};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, protocol::WebSocketConfig},
};

/// What went wrong talking to a node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Connecting or the WebSocket itself failed.
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    /// The server closed the connection.
    #[error("the server closed the connection{}", .0.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Closed(Option<String>),
    /// The server sent a frame that is not a `UserMessage`.
    #[error("the server sent an undecodable frame: {0}")]
    BadFrame(#[from] prost::DecodeError),
    /// The route is `main.sub`-shaped but not in the contract, so JSON cannot be encoded for it.
    #[error(
        "route `{0}` is not in the proto contract (not linked into this binary, and the gateway does not serve it through sys.descriptors); only an empty body (`{{}}`) can be sent to it"
    )]
    UnknownRoute(String),
    /// The gateway's `sys.descriptors` reply does not load.
    #[error("the gateway's descriptors do not load: {0}")]
    Descriptors(String),
    /// The route is not `main.sub`.
    #[error("route `{0}` must be `main.sub`")]
    BadRoute(String),
    /// The JSON does not fit the route's request type.
    #[error("request JSON does not fit {message}")]
    Json {
        /// The request type's full name.
        message: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
}

/// The WebSocket settings of every client connection this crate makes (the client, the bot):
/// tungstenite zero-fills its whole read buffer before each read, 128 KiB by default, which cost
/// the bot a third of its CPU reading 68,000 small frames a second (docs/benchmarks.md); frames
/// larger than the buffer still arrive whole, over several reads.
pub(crate) fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096)
}

/// One WebSocket connection to a gateway.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_seq: u32,
}

impl Client {
    /// Connects to `url` (`ws://HOST:PORT/ws`).
    ///
    /// # Errors
    /// When the TCP connection or the WebSocket upgrade fails.
    pub async fn connect(url: &str) -> Result<Self, ClientError> {
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(ws_config()), true).await?;
        Ok(Self { ws, next_seq: 1 })
    }

    /// Connects to `url` (`ws://HOST:PORT/ws`) from local address `from` (e.g. `127.0.0.2`: on
    /// Linux every `127.x.y.z` is loopback), so that one machine can be several clients'
    /// addresses.
    ///
    /// # Errors
    /// When `url` has no `HOST:PORT`, binding `from` fails, or the TCP connection or the WebSocket
    /// upgrade fails.
    pub async fn connect_from(url: &str, from: std::net::IpAddr) -> Result<Self, ClientError> {
        use tokio_tungstenite::tungstenite::{Error, error::UrlError};
        let target = url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .ok_or(Error::Url(UrlError::UnsupportedUrlScheme))?;
        let addr = tokio::net::lookup_host(target)
            .await
            .map_err(Error::Io)?
            .find(|addr| addr.is_ipv4() == from.is_ipv4())
            .ok_or(Error::Url(UrlError::NoHostName))?;
        let socket =
            if from.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() };
        let socket = socket.map_err(Error::Io)?;
        socket.bind(std::net::SocketAddr::new(from, 0)).map_err(Error::Io)?;
        let stream = socket.connect(addr).await.map_err(Error::Io)?;
        let (ws, _) = tokio_tungstenite::client_async_with_config(
            url,
            MaybeTlsStream::Plain(stream),
            Some(ws_config()),
        )
        .await?;
        Ok(Self { ws, next_seq: 1 })
    }

    /// Sends a request with a fresh seq and returns that seq.
    ///
    /// # Errors
    /// When the connection fails.
    pub async fn send(&mut self, main: &str, sub: &str, data: Bytes) -> Result<u32, ClientError> {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1).max(1);
        let msg =
            UserMessage { main_type: main.into(), sub_type: sub.into(), data, seq, ..Default::default() };
        self.ws.send(Message::Binary(msg.encode_to_vec().into())).await?;
        Ok(seq)
    }

    /// The next message from the server: a reply or a push (`seq` 0).
    ///
    /// # Errors
    /// When the server closes the connection (with its close reason) or sends a bad frame.
    pub async fn next(&mut self) -> Result<UserMessage, ClientError> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Binary(frame))) => return Ok(UserMessage::decode(frame)?),
                Some(Ok(Message::Close(frame))) => {
                    return Err(ClientError::Closed(
                        frame.map(|f| format!("{} {}", u16::from(f.code), f.reason)),
                    ));
                }
                Some(Ok(_)) => continue,
                Some(Err(error)) => return Err(error.into()),
                None => return Err(ClientError::Closed(None)),
            }
        }
    }

    /// Sends one request and waits for its reply; pushes that arrive meanwhile are passed to
    /// `on_push`.
    ///
    /// # Errors
    /// As [`Client::send`] and [`Client::next`].
    pub async fn request(
        &mut self,
        main: &str,
        sub: &str,
        data: Bytes,
        mut on_push: impl FnMut(UserMessage),
    ) -> Result<UserMessage, ClientError> {
        let seq = self.send(main, sub, data).await?;
        loop {
            let msg = self.next().await?;
            if msg.seq == seq {
                return Ok(msg);
            }
            on_push(msg);
        }
    }

    /// Sends `req` to `route` (`main.sub`) and decodes the reply as `Resp`: `Ok(Err(code))` for
    /// a reply that is not OK. Pushes that arrive meanwhile are dropped.
    ///
    /// # Errors
    /// A route that is not `main.sub`, a failed connection, or an OK reply that does not decode.
    pub async fn call<Req: prost::Message, Resp: prost::Message + Default>(
        &mut self,
        route: &str,
        req: &Req,
    ) -> Result<Result<Resp, i32>, ClientError> {
        let (main, sub) = split_route(route)?;
        let reply = self.request(main, sub, req.encode_to_vec().into(), |_| {}).await?;
        match reply.code {
            0 => Ok(Ok(Resp::decode(reply.data)?)),
            code => Ok(Err(code)),
        }
    }
}

impl Client {
    /// Closes the connection with a normal close handshake.
    ///
    /// # Errors
    /// When the connection already failed.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.ws.close(None).await?;
        // Read until the server's close frame, so the server sees a clean close.
        while let Some(Ok(_)) = self.ws.next().await {}
        Ok(())
    }
}

/// Splits `main.sub`.
///
/// # Errors
/// [`ClientError::BadRoute`] when there is no dot.
pub fn split_route(route: &str) -> Result<(&str, &str), ClientError> {
    route.split_once('.').ok_or_else(|| ClientError::BadRoute(route.into()))
}

/// The protos a client encodes and decodes JSON with.
#[derive(Clone, Debug)]
pub struct Contract {
    pool: DescriptorPool,
}

impl Contract {
    /// The envelope's protos and those of every module linked into this binary.
    ///
    /// # Panics
    /// When the linked modules' protos conflict, which a linked binary's own tests rule out.
    pub fn linked() -> Self {
        let sets = mortar::module::protos().map(|protos| protos.descriptors);
        Self { pool: mortar_pb::contract(sets).expect("the linked modules' protos form one contract") }
    }

    /// Adds the protos `client`'s gateway serves (`sys.descriptors`). A gateway that does not
    /// serve them (`gateway.serve_descriptors = false`) adds nothing.
    ///
    /// # Errors
    /// When the connection fails, or the reply does not load.
    pub async fn add_from_gateway(&mut self, client: &mut Client) -> Result<(), ClientError> {
        let reply = client.request("sys", "descriptors", Bytes::new(), |_| {}).await?;
        if reply.code != 0 {
            return Ok(());
        }
        let body = mortar_pb::Descriptors::decode(reply.data)?;
        let mut pool = self.pool.clone();
        pool.decode_file_descriptor_set(body.file_descriptor_set)
            .map_err(|error| ClientError::Descriptors(error.to_string()))?;
        self.pool = pool;
        Ok(())
    }

    /// Whether the contract declares route `main.sub`.
    pub fn knows(&self, main: &str, sub: &str) -> bool {
        self.method(main, sub).is_some()
    }

    fn method(&self, main: &str, sub: &str) -> Option<MethodDescriptor> {
        mortar_pb::route_method(&self.pool, main, sub)
    }

    /// Encodes a request given as JSON for `main.sub`, using the route's request type.
    ///
    /// # Errors
    /// When the route is not in the contract (unless `json` is an empty object), or the JSON does
    /// not fit the request type.
    pub fn encode_request(&self, main: &str, sub: &str, json: &str) -> Result<Bytes, ClientError> {
        let Some(method) = self.method(main, sub) else {
            return match serde_json::from_str::<serde_json::Value>(json) {
                Ok(serde_json::Value::Object(map)) if map.is_empty() => Ok(Bytes::new()),
                _ => Err(ClientError::UnknownRoute(format!("{main}.{sub}"))),
            };
        };
        from_json(&method.input(), json)
    }

    /// A reply or push as JSON: `{"route":"main.sub","seq":N,"code":"OK","data":{…}}`, or
    /// `{"code":"BAD_REQUEST","reason":"account must be 3–32 characters"}` for a failure.
    ///
    /// `route` and `seq` are left out when `with_route` is false. `data` is decoded with the
    /// route's reply type (or push type); it is left out when empty on an error, and given as
    /// `{"hex": "…"}` when the route is not in the contract or the bytes do not decode. `reason`
    /// is there only when the reply is not OK and the server gave one.
    pub fn reply_json(&self, msg: &UserMessage, with_route: bool) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        if with_route {
            out.insert("route".into(), format!("{}.{}", msg.main_type, msg.sub_type).into());
            out.insert("seq".into(), msg.seq.into());
        }
        out.insert("code".into(), mortar_pb::ErrorCode::name_of(msg.code).into());
        if msg.code != 0 && !msg.reason.is_empty() {
            out.insert("reason".into(), msg.reason.clone().into());
        }
        let known = self
            .method(&msg.main_type, &msg.sub_type)
            // A reply's route is the request's; `sys.pong` answers `sys.ping`.
            .or_else(|| {
                (msg.main_type == "sys" && msg.sub_type == "pong")
                    .then(|| self.method("sys", "ping"))
                    .flatten()
            });
        if msg.code == 0 || !msg.data.is_empty() {
            let data = known
                .and_then(|method| DynamicMessage::decode(method.output(), msg.data.clone()).ok())
                .and_then(|message| serde_json::to_value(&message).ok())
                .unwrap_or_else(|| serde_json::json!({ "hex": hex(&msg.data) }));
            out.insert("data".into(), data);
        }
        serde_json::Value::Object(out)
    }
}

fn from_json(desc: &MessageDescriptor, json: &str) -> Result<Bytes, ClientError> {
    let mut de = serde_json::Deserializer::from_str(json);
    let message = DynamicMessage::deserialize(desc.clone(), &mut de)
        .and_then(|message| de.end().map(|()| message))
        .map_err(|source| ClientError::Json { message: desc.full_name().into(), source })?;
    Ok(message.encode_to_vec().into())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
