//! The gateway's tarpc service: what workers ask of the gateway holding a player's session.

use super::Gateway;
use bytes::Bytes;
use futures::StreamExt as _;
use mortar_abi::Code;
use mortar_backends::session::Location;
use mortar_cluster::rpc::{
    Claim, GatewayRpc, GatewayRpcRequest, GatewayRpcResponse, Login, PushBatch, PushReport, UsersPushed,
    Wills,
};
use tarpc::server::{BaseChannel, Channel as _};

/// The tarpc face of a [`Gateway`].
#[derive(Clone)]
pub struct GatewayServer(pub Gateway);

impl GatewayRpc for GatewayServer {
    async fn push(self, _: tarpc::context::Context, batch: PushBatch) -> PushReport {
        self.0.push(&batch.sessions, &batch.main, &batch.sub, batch.data)
    }

    async fn kick(self, _: tarpc::context::Context, session: u64, reason: i32) -> bool {
        self.0.kick(session, Code::from_wire(reason))
    }

    async fn bind(self, _: tarpc::context::Context, session: u64, user: u64) -> bool {
        self.0.bind(session, user)
    }

    async fn claim(self, _: tarpc::context::Context, session: u64, user: u64, at_ms: u64) -> Claim {
        self.0.claim(session, user, at_ms)
    }

    async fn evict(self, _: tarpc::context::Context, user: u64, login: Login) -> bool {
        self.0.evict(user, login)
    }

    async fn push_users(
        self,
        _: tarpc::context::Context,
        users: Vec<u64>,
        main: String,
        sub: String,
        data: Bytes,
    ) -> UsersPushed {
        self.0.push_users(&users, &main, &sub, data)
    }

    async fn kick_user(self, _: tarpc::context::Context, user: u64, reason: i32) -> bool {
        self.0.kick_user(user, Code::from_wire(reason))
    }

    async fn locate(self, _: tarpc::context::Context, users: Vec<u64>) -> Vec<Option<Location>> {
        self.0.locate(&users)
    }

    async fn wills(self, _: tarpc::context::Context, wills: Wills) -> usize {
        self.0.wills(wills)
    }

    async fn ping(self, _: tarpc::context::Context) {}
}

impl Gateway {
    /// Serves the gateway's tarpc service on one transport until the peer hangs up.
    pub async fn serve_rpc<T>(self, transport: T)
    where
        T: tarpc::Transport<tarpc::Response<GatewayRpcResponse>, tarpc::ClientMessage<GatewayRpcRequest>>
            + Send
            + 'static,
    {
        BaseChannel::with_defaults(transport)
            .execute(GatewayServer(self).serve())
            .for_each(|request| async {
                tokio::spawn(request);
            })
            .await;
    }
}
