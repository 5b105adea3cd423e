//! The worker's dispatch of a relayed request: any route and body (the input is a `UserMessage`)
//! must give a reply with a code, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mortar_echo as _;
use mortar_cluster::rpc::AgentMessage;
use mortar_runtime::{Worker, routes::RouteTable};
use prost::Message as _;
use std::sync::LazyLock;

static WORKER: LazyLock<(tokio::runtime::Runtime, Worker)> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let routes = RouteTable::from_registry(&[]).expect("route table");
    (runtime, Worker::new("fuzz".into(), routes, mortar_runtime::Backends::none()))
});

fuzz_target!(|input: &[u8]| {
    let Ok(msg) = mortar_pb::UserMessage::decode(input) else { return };
    let (runtime, worker) = &*WORKER;
    let agent_message = AgentMessage {
        main: msg.main_type,
        sub: msg.sub_type,
        seq: msg.seq,
        data: msg.data,
        session: 1,
        user: None,
        client_ip: std::net::Ipv4Addr::LOCALHOST.into(),
        gateway: "fuzz".into(),
        trace_id: 1,
    };
    let reply = runtime.block_on(worker.handle(agent_message, std::time::Instant::now() + std::time::Duration::from_secs(10)));
    assert!(reply.code == 0 || reply.data.is_empty());
});
