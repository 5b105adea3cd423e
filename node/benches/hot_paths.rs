//! The per-request hot paths: envelope decode/encode, route lookup, handler dispatch, a push
//! fanned out to 1,000 sessions, and the RPC frames of one relayed request.
//! Run with `cargo bench -p mortar-node --bench hot_paths`; numbers are in docs/benchmarks.md.
#![allow(missing_docs)]

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use mortar::{
    Code,
    ctx::Invocation,
    module::{ModuleDecl, Named},
    route::{Access, HandlerFuture, Route},
};
use mortar_cluster::rpc::AgentMessage;
use mortar_echo as _;
use mortar_echo::echo::EchoReq;
use mortar_gateway::{
    envelope::{Inbound, inspect},
    mailbox::Mailbox,
    sessions::SessionTable,
};
use mortar_pb::UserMessage;
use mortar_runtime::{
    Worker,
    routes::{self, ModuleSource, Origin, RouteTable},
};
use prost::Message as _;
use std::hint::black_box;

fn echo_frame() -> Bytes {
    let body = EchoReq { text: "0123456789abcdef".into() }.encode_to_vec();
    let msg = UserMessage {
        main_type: "echo".into(),
        sub_type: "say".into(),
        seq: 42,
        data: body.into(),
        ..Default::default()
    };
    msg.encode_to_vec().into()
}

fn envelope(c: &mut Criterion) {
    let frame = echo_frame();
    c.bench_function("envelope/decode+check", |b| {
        b.iter(|| match inspect(black_box(frame.clone()), 64) {
            Inbound::Request(msg) => msg.seq,
            _ => unreachable!("a valid frame"),
        })
    });
    let reply = UserMessage::decode(frame.clone()).expect("valid");
    c.bench_function("envelope/encode reply", |b| b.iter(|| Bytes::from(black_box(&reply).encode_to_vec())));
}

fn synthetic() -> (String, String) {
    ("synthetic.Msg".into(), "synthetic.Msg".into())
}

fn noop(_: Invocation, _: Bytes) -> HandlerFuture {
    Box::pin(async { Err(Code::INTERNAL.into()) })
}

/// Twenty modules, `module0` to `module19`: `ModuleDecl::build` is a plain fn, so one per name.
macro_rules! modules {
    ($($n:literal),*) => { [$(ModuleDecl { build: || Box::new(Named(concat!("module", $n))), defined_at: "bench", on_online: None, on_offline: None, on_start: None }),*] };
}
static MODULES: [ModuleDecl; 20] =
    modules!(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19);

fn route_lookup(c: &mut Criterion) {
    // 10 routes per module, 200 in all; routes are 'static, as the registry's are.
    let routes: Vec<&'static Route> = (0..20)
        .flat_map(|m| (0..10).map(move |r| (m, r)))
        .map(|(m, r)| {
            let path: &'static str = format!("module{m}.route{r}").leak();
            let route = Route {
                path,
                access: Access::Client,
                handler: noop,
                types: synthetic,
                defined_at: "bench",
                key: None,
            };
            &*Box::leak(Box::new(route))
        })
        .collect();
    let paths: Vec<&str> = routes.iter().map(|route| route.path).collect();
    let protos: &'static [u8] = routes::synthetic_protos(&paths).leak();
    let source = ModuleSource {
        origin: Origin::Linked,
        modules: MODULES.iter().collect(),
        build: mortar::module::build,
        routes,
        protos: vec![protos],
        layers: Vec::new(),
        tables: Vec::new(),
        configs: Vec::new(),
        documents: Vec::new(),
        jobs: Vec::new(),
    };
    let table = RouteTable::build(vec![source], &[]).expect("route table");
    c.bench_function("route lookup (200 routes)", |b| {
        b.iter(|| table.get_for_client(black_box("module19"), black_box("route9")).is_some())
    });
}

fn dispatch(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let worker = Worker::new(
        "bench".into(),
        RouteTable::from_registry(&[]).expect("route table"),
        mortar_runtime::Backends::none(),
    );
    let body: Bytes = EchoReq { text: "0123456789abcdef".into() }.encode_to_vec().into();
    let message = AgentMessage {
        main: "echo".into(),
        sub: "say".into(),
        seq: 1,
        data: body,
        session: 1,
        user: None,
        client_ip: std::net::Ipv4Addr::LOCALHOST.into(),
        gateway: "bench".into(),
        trace_id: 1,
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3600);
    c.bench_function("dispatch echo.say (worker)", |b| {
        b.iter(|| runtime.block_on(worker.handle(black_box(message.clone()), deadline)).code)
    });
}

/// One push to 1,000 sessions: encode once, queue the shared bytes for each session (the gateway's
/// work; the writers' socket writes are not included), then the writers take their frames.
fn push_fan_out(c: &mut Criterion) {
    let table = SessionTable::default();
    let mut mailboxes = Vec::new();
    for session in 1..=1_000u64 {
        let mailbox = std::sync::Arc::new(Mailbox::new(4));
        table.insert(session, mailbox.clone(), Default::default(), std::net::Ipv4Addr::LOCALHOST.into());
        mailboxes.push(mailbox);
    }
    let sessions: Vec<u64> = (1..=1_000).collect();
    let body: Bytes = EchoReq { text: "0123456789abcdef".into() }.encode_to_vec().into();
    c.bench_function("push fan-out to 1,000 sessions", |b| {
        b.iter(|| {
            let msg = UserMessage {
                main_type: "chat".into(),
                sub_type: "message".into(),
                data: body.clone(),
                ..Default::default()
            };
            let frame = Bytes::from(msg.encode_to_vec());
            let report = table.push(black_box(&sessions), &frame);
            for mailbox in &mailboxes {
                let Some(frame) = mailbox.try_next() else { unreachable!("queued") };
                black_box(frame);
            }
            report.delivered
        })
    });
}

/// The RPC frames of one relayed echo request and its reply, as the gateway and the worker encode
/// and decode them (tarpc's envelope with its context, in mortar's postcard codec), beside the
/// same with serde_json, tarpc's other maintained format.
fn rpc_codec(c: &mut Criterion) {
    use bytes::BytesMut;
    use mortar_cluster::rpc::{Handled, Reply, WorkerRpcRequest, WorkerRpcResponse, codec};
    type Request = tarpc::ClientMessage<WorkerRpcRequest>;
    type Response = tarpc::Response<WorkerRpcResponse>;
    let msg = AgentMessage {
        main: "echo".into(),
        sub: "say".into(),
        seq: 42,
        data: EchoReq { text: "0123456789abcdef".into() }.encode_to_vec().into(),
        session: 9_876,
        user: None,
        client_ip: std::net::Ipv4Addr::LOCALHOST.into(),
        gateway: "gateway-1".into(),
        trace_id: 0x1234_5678_9abc_def0_0000_0000_0000_0001,
    };
    let request = Request::Request(tarpc::Request {
        context: tarpc::context::current(),
        id: 12_345,
        message: WorkerRpcRequest::Handle { msg },
    });
    let reply = Reply::ok(EchoReq { text: "0123456789abcdef".into() }.encode_to_vec().into());
    let response =
        Response { request_id: 12_345, message: Ok(WorkerRpcResponse::Handle(Handled::Reply(reply))) };
    c.bench_function("rpc frames of one relayed request + reply, postcard", |b| {
        b.iter(|| {
            // Each frame is read into a buffer of its own, as a connection's frames are.
            let sent = codec::encode(black_box(&request)).expect("encodes");
            let received: Request = codec::decode(&BytesMut::from(&sent[..])).expect("decodes");
            let answer = codec::encode(black_box(&response)).expect("encodes");
            let answered: Response = codec::decode(&BytesMut::from(&answer[..])).expect("decodes");
            black_box((received, answered, sent.len() + answer.len()))
        })
    });
    c.bench_function("rpc frames of one relayed request + reply, serde_json", |b| {
        b.iter(|| {
            let sent = serde_json::to_vec(black_box(&request)).expect("encodes");
            let received: Request = serde_json::from_slice(&sent).expect("decodes");
            let answer = serde_json::to_vec(black_box(&response)).expect("encodes");
            let answered: Response = serde_json::from_slice(&answer).expect("decodes");
            black_box((received, answered, sent.len() + answer.len()))
        })
    });
}

criterion_group!(benches, envelope, route_lookup, dispatch, push_fan_out, rpc_codec);
criterion_main!(benches);
