//! `testkit`: a module for testing the host, linked only into the tests. Every route takes and
//! answers a `testkit.Text` (`proto/testkit.proto`), which encodes like the echo messages.

use mortar::{
    layer::{Bytes, Next},
    prelude::*,
    prost::Message as _,
};

/// The messages of `proto/testkit.proto`.
pub mod proto {
    mortar::include_proto!("testkit");
}

use proto::Text as EchoReq;
use proto::Text as EchoResp;
use std::{
    collections::HashSet,
    sync::{LazyLock, Mutex},
    time::Duration,
};

mortar::module!(Testkit, on_online = came_online, on_offline = went_offline);

/// The module on a node: how many times `testkit.count` ran there.
#[derive(Default)]
pub struct Testkit {
    counted: std::sync::atomic::AtomicU64,
}

impl Module for Testkit {
    fn name(&self) -> &'static str {
        "testkit"
    }
}

/// Counts in the node's own module instance and answers the count: module state per node.
#[mortar::handler("testkit.count", public)]
async fn count(ctx: Ctx, _req: EchoReq) -> Result<EchoResp, Code> {
    let kit = ctx.module::<Testkit>().ok_or(Code::INTERNAL)?;
    let counted = kit.counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    Ok(EchoResp { text: counted.to_string() })
}

/// Counts the player's logins in the module's cache, checking the hook's context is theirs.
async fn came_online(ctx: Ctx, user: u64) {
    if ctx.user_id() == Some(user) {
        let _ = ctx.cache().incr(&format!("online:{user}"), 1, Some(Duration::from_secs(600))).await;
    }
}

/// Where `went_offline` leaves its late mark: the stored counter `OFFLINE_MARKS + user`.
pub const OFFLINE_MARKS: u64 = 1_000_000;

/// Counts the player's departures in the module's cache at once; then, slowly (100 ms in the hook
/// and 100 ms in a task it spawns), bumps the stored counter `OFFLINE_MARKS + user`: work a
/// stopping node must finish before it lets go of its store.
async fn went_offline(ctx: Ctx, user: u64) {
    let _ = ctx.cache().incr(&format!("offline:{user}"), 1, Some(Duration::from_secs(600))).await;
    ctx.sleep(Duration::from_millis(100)).await;
    let later = ctx.clone();
    ctx.spawn(async move {
        later.sleep(Duration::from_millis(100)).await;
        let _ = later
            .store::<Counter>()
            .upsert(OFFLINE_MARKS + user, |counter| {
                counter.n += 1;
                Ok(())
            })
            .await;
    });
}

/// Answers how many times `went_offline` ran for the user id in `text`.
#[mortar::handler("testkit.offline_count", public)]
async fn offline_count(ctx: Ctx, req: EchoReq) -> Result<EchoResp, Code> {
    presence_count(&ctx, "offline", &req.text).await
}

/// Answers how many times `came_online` ran for the user id in `text`.
#[mortar::handler("testkit.online_count", public)]
async fn online_count(ctx: Ctx, req: EchoReq) -> Result<EchoResp, Code> {
    presence_count(&ctx, "online", &req.text).await
}

async fn presence_count(ctx: &Ctx, status: &str, user: &str) -> Result<EchoResp, Code> {
    let user: u64 = user.parse().map_err(|_| Code::BAD_REQUEST)?;
    let count = ctx.cache().incr(&format!("{status}:{user}"), 0, Some(Duration::from_secs(600))).await?;
    Ok(EchoResp { text: count.to_string() })
}

/// Panics: the host must answer `INTERNAL` and keep running.
#[mortar::handler("testkit.panic", public)]
async fn panic(_ctx: Ctx, req: EchoReq) -> Result<EchoResp, Code> {
    panic!("testkit.panic was asked to panic: {}", req.text);
}

/// Sleeps for the number of milliseconds in `text`, then echoes it.
#[mortar::handler("testkit.slow", public)]
async fn slow(_ctx: Ctx, req: EchoReq) -> Result<EchoResp, Code> {
    let millis = req.text.parse().map_err(|_| Code::BAD_REQUEST)?;
    tokio::time::sleep(Duration::from_millis(millis)).await;
    Ok(EchoResp { text: req.text })
}

/// Calls the internal `testkit.double` and returns its answer.
#[mortar::handler("testkit.relay", public)]
async fn relay(ctx: Ctx, req: EchoReq) -> Result<EchoResp, Code> {
    ctx.call("testkit.double", &req).await
}

/// Internal: repeats the text twice, and says which session asked.
#[mortar::handler("testkit.double", internal)]
async fn double(ctx: Ctx, req: EchoReq) -> Result<EchoResp, Code> {
    Ok(EchoResp { text: format!("{0}{0} from session {1}", req.text, ctx.session_id()) })
}

/// Calls itself until the host refuses the depth.
#[mortar::handler("testkit.recurse", public)]
async fn recurse(ctx: Ctx, req: EchoReq) -> Result<EchoResp, Code> {
    ctx.call("testkit.recurse", &req).await
}

/// Answers a module code.
#[mortar::handler("testkit.fail", public)]
async fn fail(_ctx: Ctx, _req: EchoReq) -> Result<EchoResp, Code> {
    Err(Code::module(1001))
}

/// Answers its own trace id and the one an internal call sees, as `OWN|INNER` in hex.
#[mortar::handler("testkit.trace", public)]
async fn trace(ctx: Ctx, _req: EchoReq) -> Result<EchoResp, Code> {
    let inner: EchoResp = ctx.call("testkit.trace_inner", &EchoReq::default()).await?;
    Ok(EchoResp { text: format!("{:032x}|{}", ctx.request().trace_id, inner.text) })
}

/// Internal: answers the trace id it sees, in hex.
#[mortar::handler("testkit.trace_inner", internal)]
async fn trace_inner(ctx: Ctx, _req: EchoReq) -> Result<EchoResp, Code> {
    Ok(EchoResp { text: format!("{:032x}", ctx.request().trace_id) })
}

/// Texts of the `testkit.finish` requests whose handlers ran to their end.
static FINISHED: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Mutex::default);

/// Whether a `testkit.finish` request with `text` ran to its end.
pub fn finished(text: &str) -> bool {
    FINISHED.lock().is_ok_and(|finished| finished.contains(text))
}

/// Sleeps 300 ms, then records `text` as finished (see [`finished`]) and echoes it.
#[mortar::handler("testkit.finish", public)]
async fn finish(_ctx: Ctx, req: EchoReq) -> Result<EchoResp, Code> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    FINISHED.lock().map_err(|_| Code::INTERNAL)?.insert(req.text.clone());
    Ok(EchoResp { text: req.text })
}

/// Answers the session id the worker sees for this client, in decimal.
#[mortar::handler("testkit.whoami", public)]
async fn whoami(ctx: Ctx, _req: EchoReq) -> Result<EchoResp, Code> {
    Ok(EchoResp { text: ctx.session_id().to_string() })
}

/// Sleeps 50 ms, then answers a text of as many bytes as the number in `text` (at most 1 MiB):
/// big, late replies to small requests.
#[mortar::handler("testkit.big", public)]
async fn big(_ctx: Ctx, req: EchoReq) -> Result<EchoResp, Code> {
    let len: usize = req.text.parse().map_err(|_| Code::BAD_REQUEST)?;
    if len > 1 << 20 {
        return Err(Code::BAD_REQUEST);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(EchoResp { text: "z".repeat(len) })
}

/// A counter kept in the node's store.
#[derive(Default, serde::Serialize, serde::Deserialize, mortar::Document)]
#[document(collection = "testkit_counter")]
struct Counter {
    n: u64,
}

/// Adds one to the stored counter whose id is in `text` and answers its new value: a module
/// using the store through `Ctx`.
#[mortar::handler("testkit.bump", public)]
async fn bump(ctx: Ctx, req: EchoReq) -> Result<EchoResp, Code> {
    let id: u64 = req.text.parse().map_err(|_| Code::BAD_REQUEST)?;
    let (_, n) = ctx
        .store::<Counter>()
        .upsert(id, |counter| {
            counter.n += 1;
            Ok(counter.n)
        })
        .await?;
    Ok(EchoResp { text: n.to_string() })
}

/// Counts calls in the module's cache under the key in `text` and answers the count: a module
/// using the cache through `Ctx`.
#[mortar::handler("testkit.hits", public)]
async fn hits(ctx: Ctx, req: EchoReq) -> Result<EchoResp, Code> {
    let n = ctx.cache().incr(&req.text, 1, Some(Duration::from_secs(60))).await?;
    Ok(EchoResp { text: n.to_string() })
}

fn user_ids(text: &str) -> Result<Vec<u64>, Code> {
    text.split(',')
        .filter(|id| !id.is_empty())
        .map(|id| id.trim().parse().map_err(|_| Code::BAD_REQUEST))
        .collect()
}

/// Logs the session in as the user id in `text`, giving that player an account (`testkit_ID`)
/// first if it has none, as the user module would: other modules find it (`user.lookup`).
#[mortar::handler("testkit.login", public)]
async fn login(ctx: Ctx, req: EchoReq) -> Result<EchoResp, Code> {
    let user = req.text.parse().map_err(|_| Code::BAD_REQUEST)?;
    ctx.store::<mortar_user::Account>()
        .upsert(user, |account| {
            if account.account.is_empty() {
                account.account = format!("testkit_{user}");
                account.name = format!("testkit {user}");
            }
            Ok(())
        })
        .await
        .map_err(|error| error.code())?;
    ctx.bind_user(user).await?;
    Ok(EchoResp { text: format!("logged in as {user}") })
}

/// Answers the session's user id, or `none`.
#[mortar::handler("testkit.me", public)]
async fn me(ctx: Ctx, _req: EchoReq) -> Result<EchoResp, Code> {
    Ok(EchoResp { text: ctx.user_id().map_or_else(|| "none".into(), |user| user.to_string()) })
}

/// Pushes `testkit.note` ("from USER") to the comma-separated users in `text`; answers
/// `delivered=D offline=[…] undelivered=U`.
#[mortar::handler("testkit.push")]
async fn push(ctx: Ctx, req: EchoReq) -> Result<EchoResp, Code> {
    let users = user_ids(&req.text)?;
    let from = ctx.user_id().map_or_else(|| "nobody".into(), |user| user.to_string());
    let pushed = ctx.push(&users, "testkit.note", &EchoResp { text: format!("from {from}") }).await?;
    Ok(EchoResp {
        text: format!(
            "delivered={} offline={:?} undelivered={}",
            pushed.delivered, pushed.offline, pushed.undelivered
        ),
    })
}

/// Kicks the user in `text` with `PERMISSION_DENIED`; answers whether they were online.
#[mortar::handler("testkit.kick")]
async fn kick(ctx: Ctx, req: EchoReq) -> Result<EchoResp, Code> {
    let user = req.text.parse().map_err(|_| Code::BAD_REQUEST)?;
    Ok(EchoResp { text: ctx.kick(user, Code::PERMISSION_DENIED).await?.to_string() })
}

/// Answers, for the comma-separated users in `text`, which are online (`true,false,…`).
#[mortar::handler("testkit.online")]
async fn online(ctx: Ctx, req: EchoReq) -> Result<EchoResp, Code> {
    let online = ctx.online(&user_ids(&req.text)?).await?;
    Ok(EchoResp { text: online.iter().map(ToString::to_string).collect::<Vec<_>>().join(",") })
}

/// Pushes `testkit.note` with `text` to the asking session, logged in or not; answers whether it
/// was queued.
#[mortar::handler("testkit.tell", public)]
async fn tell(ctx: Ctx, req: EchoReq) -> Result<EchoResp, Code> {
    Ok(EchoResp { text: ctx.push_session("testkit.note", &req).await?.to_string() })
}

/// Pushes the text to the asking session under the route it names: a module pushing a route its
/// protos do not declare, or with another message, is refused.
#[mortar::handler("testkit.push_as", public)]
async fn push_as(ctx: Ctx, req: EchoReq) -> Result<EchoResp, Code> {
    Ok(EchoResp { text: ctx.push_session(&req.text.clone(), &req).await?.to_string() })
}

mortar::layer!(name = "testkit_outer", routes = ["testkit.layered"], order = 0, run = outer);
mortar::layer!(name = "testkit_inner", routes = ["testkit.layered"], order = 1, run = inner);
mortar::layer!(name = "testkit_panics", routes = ["testkit.layer_panic"], order = 0, run = panics);

/// Refuses the text `deny` with `PERMISSION_DENIED` and a reason; otherwise marks the request and
/// the reply.
async fn outer(ctx: Ctx, body: Bytes, next: Next) -> Result<Bytes, Failure> {
    mark(ctx, body, next, "outer").await
}

/// Marks the request and the reply.
async fn inner(ctx: Ctx, body: Bytes, next: Next) -> Result<Bytes, Failure> {
    mark(ctx, body, next, "inner").await
}

/// Appends `>NAME` to the request's text on the way in and `<NAME` to the reply's on the way out;
/// a failure of the chain passes through unchanged.
async fn mark(ctx: Ctx, body: Bytes, next: Next, name: &str) -> Result<Bytes, Failure> {
    let req = EchoReq::decode(body).map_err(|_| Code::BAD_REQUEST)?;
    if name == "outer" && req.text == "deny" {
        return Err(Code::PERMISSION_DENIED.because("the outer layer denies \"deny\""));
    }
    let body = EchoReq { text: format!("{}>{name}", req.text) }.encode_to_vec().into();
    let reply = EchoResp::decode(next.run(ctx, body).await?).map_err(|_| Code::INTERNAL)?;
    Ok(EchoResp { text: format!("{}<{name}", reply.text) }.encode_to_vec().into())
}

/// Panics: the request is answered `INTERNAL`. A layer that never passes on the chain's failure
/// may still answer a bare `Code`.
async fn panics(_ctx: Ctx, _body: Bytes, _next: Next) -> Result<Bytes, Code> {
    panic!("testkit_panics was asked to panic")
}

/// Answers the text it got (after the layers) followed by `>handler`; refuses a text that ends
/// in `fail` (after the layers) with `CONFLICT` and a reason, which the layers pass through.
#[mortar::handler("testkit.layered", public)]
async fn layered(_ctx: Ctx, req: EchoReq) -> Result<EchoResp, Failure> {
    if req.text.starts_with("fail>") {
        return Err(Code::CONFLICT.because("the handler refuses \"fail\""));
    }
    Ok(EchoResp { text: format!("{}>handler", req.text) })
}

/// Answers the text; its layer panics first.
#[mortar::handler("testkit.layer_panic", public)]
async fn layer_panic(_ctx: Ctx, req: EchoReq) -> Result<EchoResp, Code> {
    Ok(EchoResp { text: req.text })
}

/// Calls the pack module's internal `pack.add_items`: `text` is `USER|GRANT_ID|ITEM:COUNT,…`
/// (USER 0: the session's user); answers `granted=BOOL`.
#[mortar::handler("testkit.grant", public)]
async fn grant(ctx: Ctx, req: EchoReq) -> Result<EchoResp, Code> {
    use mortar_pack::pack::{AddItemsReq, AddItemsResp, Item};
    let mut parts = req.text.splitn(3, '|');
    let (Some(user), Some(grant_id), Some(items)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Code::BAD_REQUEST);
    };
    let items = items
        .split(',')
        .map(|entry| {
            let (item, count) = entry.split_once(':').ok_or(Code::BAD_REQUEST)?;
            Ok(Item {
                item_id: item.parse().map_err(|_| Code::BAD_REQUEST)?,
                count: count.parse().map_err(|_| Code::BAD_REQUEST)?,
            })
        })
        .collect::<Result<_, Code>>()?;
    let user_id = user.parse().map_err(|_| Code::BAD_REQUEST)?;
    let resp: AddItemsResp =
        ctx.call("pack.add_items", &AddItemsReq { grant_id: grant_id.into(), items, user_id }).await?;
    Ok(EchoResp { text: format!("granted={}", resp.granted) })
}
