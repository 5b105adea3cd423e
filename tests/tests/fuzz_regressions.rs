//! Replays `fuzz/regressions/<target>/*` (inputs that crashed a fuzz target once, and hand-made edge
//! cases) through the same code and checks as the targets in `fuzz/fuzz_targets/`, on every test run.

use mortar_cluster::rpc::AgentMessage;
use mortar_gateway::envelope::{Inbound, inspect};
use mortar_runtime::Backends;
use mortar_runtime::{Worker, routes::RouteTable};
use prost::Message as _;
use std::path::PathBuf;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions").join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| {
            let path = entry.expect("directory entry").path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            (name, std::fs::read(&path).expect("regression input"))
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no inputs in {}", dir.display());
    inputs
}

#[test]
fn envelope_regressions() {
    for (name, frame) in inputs("envelope") {
        match inspect(frame.into(), 64) {
            Inbound::Request(msg) => assert!(msg.main_type.len() + msg.sub_type.len() <= 64, "{name}"),
            Inbound::Refuse(reply) => assert!(reply.main_type.is_empty() && reply.code != 0, "{name}"),
            Inbound::Malformed(reason) => assert!(reason.starts_with("bad envelope"), "{name}: {reason}"),
        }
    }
}

#[tokio::test]
async fn dispatch_regressions() {
    let worker =
        Worker::new("fuzz".into(), RouteTable::from_registry(&[]).expect("route table"), Backends::none());
    for (name, input) in inputs("dispatch") {
        let Ok(msg) = mortar_pb::UserMessage::decode(input.as_slice()) else { continue };
        let agent_message = AgentMessage {
            main: msg.main_type.into(),
            sub: msg.sub_type.into(),
            seq: msg.seq,
            data: msg.data,
            session: 1,
            user: None,
            client_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            gateway: "fuzz".into(),
            trace_id: 1,
        };
        let reply = worker
            .handle(agent_message, std::time::Instant::now() + std::time::Duration::from_secs(10))
            .await;
        assert!(reply.code == 0 || reply.data.is_empty(), "{name}: {reply:?}");
    }
}
