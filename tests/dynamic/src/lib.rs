//! `dyntest`: a module loaded from a shared library, doing what a library may do only through
//! `Ctx`: sleep, spawn, read the time, call another module, log players in, push, count their
//! departures in an `on_offline` hook.

use mortar::prelude::*;
use std::{
    sync::Mutex,
    time::{Duration, UNIX_EPOCH},
};

/// The messages of `proto/dyntest.proto`.
pub mod dyntest {
    mortar::include_proto!("dyntest");
}

use dyntest::{CalleeContext, Empty, Nap, Napped, Text};

mortar::module!(Dyntest, on_start = started, on_offline = went_offline);
mortar::export_module!();

/// The module, for its start hook and the count `dyntest.count` keeps in it.
#[derive(Default)]
struct Dyntest {
    counted: std::sync::atomic::AtomicU64,
}

impl Module for Dyntest {
    fn name(&self) -> &'static str {
        "dyntest"
    }
}

/// Refuses to start when `DYNTEST_FAIL_START` is set: how the tests make a library module's
/// start fail. Logs through the host otherwise.
async fn started(ctx: Ctx) -> Result<(), String> {
    match std::env::var("DYNTEST_FAIL_START") {
        Ok(reason) => Err(reason),
        Err(_) => {
            ctx.info(format_args!("dyntest started on {}", ctx.node_id()));
            Ok(())
        }
    }
}

/// Texts the spawned tasks have recorded: a static of the library's own.
static SPAWNED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Counts in the node's instance of the module, through `ctx.module` across the library
/// boundary; answers the count.
#[mortar::handler("dyntest.count", public)]
async fn count(ctx: Ctx, _req: Text) -> Result<Text, Code> {
    let module = ctx.module::<Dyntest>().ok_or(Code::INTERNAL)?;
    let counted = module.counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    Ok(Text { text: counted.to_string() })
}

/// Answers "hello TEXT from a library".
#[mortar::handler("dyntest.hello", public)]
async fn hello(_ctx: Ctx, req: Text) -> Result<Text, Code> {
    Ok(Text { text: format!("hello {} from a library", req.text) })
}

/// Sleeps `millis` through the host's timer and says how long that took by `ctx.now()`.
#[mortar::handler("dyntest.nap", public)]
async fn nap(ctx: Ctx, req: Nap) -> Result<Napped, Code> {
    let millis = |ctx: &Ctx| ctx.now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let before = millis(&ctx);
    ctx.sleep(Duration::from_millis(u64::from(req.millis.min(5_000)))).await;
    Ok(Napped { slept_ms: millis(&ctx).saturating_sub(before) })
}

/// Spawns a task that sleeps, then records the text; answers once it is recorded.
#[mortar::handler("dyntest.spawn", public)]
async fn spawn(ctx: Ctx, req: Text) -> Result<Text, Code> {
    let task_ctx = ctx.clone();
    let text = req.text.clone();
    ctx.spawn(async move {
        task_ctx.sleep(Duration::from_millis(5)).await;
        SPAWNED.lock().unwrap_or_else(|e| e.into_inner()).push(text);
    });
    for _ in 0..200 {
        if SPAWNED.lock().unwrap_or_else(|e| e.into_inner()).contains(&req.text) {
            return Ok(Text { text: format!("a spawned task recorded {}", req.text) });
        }
        ctx.sleep(Duration::from_millis(5)).await;
    }
    Err(Code::TIMEOUT)
}

/// Answers the text in upper case, by calling the linked echo module's internal route.
#[mortar::handler("dyntest.shout", public)]
async fn shout(ctx: Ctx, req: Text) -> Result<Text, Code> {
    let upper: Text = ctx.call("echo.upper", &req).await?;
    Ok(Text { text: format!("{}!", upper.text) })
}

/// Spawns a task that panics: the task ends, the node stays up.
#[mortar::handler("dyntest.spawn_panic", public)]
async fn spawn_panic(ctx: Ctx, req: Text) -> Result<Text, Code> {
    let text = req.text.clone();
    ctx.spawn(async move { panic!("a dyntest task was asked to panic: {text}") });
    Ok(req)
}

/// Panics: the node answers INTERNAL and stays up.
#[mortar::handler("dyntest.panic", public)]
async fn panic(_ctx: Ctx, req: Text) -> Result<Text, Code> {
    panic!("dyntest.panic was asked to panic: {}", req.text)
}

/// Logs the session in as the user id in the text.
#[mortar::handler("dyntest.login", public)]
async fn login(ctx: Ctx, req: Text) -> Result<Text, Code> {
    let user = req.text.parse().map_err(|_| Code::BAD_REQUEST)?;
    ctx.bind_user(user).await?;
    Ok(Text { text: format!("logged in as {user}") })
}

/// Pushes `dyntest.note` to the comma-separated users in the text; answers
/// `delivered=D offline=[…]`.
#[mortar::handler("dyntest.push")]
async fn push(ctx: Ctx, req: Text) -> Result<Text, Code> {
    let users: Vec<u64> = req
        .text
        .split(',')
        .map(|id| id.trim().parse().map_err(|_| Code::BAD_REQUEST))
        .collect::<Result<_, _>>()?;
    let from = ctx.user_id().map_or_else(|| "nobody".into(), |user| user.to_string());
    let pushed = ctx.push(&users, "dyntest.note", &Text { text: format!("from {from}") }).await?;
    Ok(Text { text: format!("delivered={} offline={:?}", pushed.delivered, pushed.offline) })
}

/// Answers "user=USER node=NODE" (USER is `none` before login).
#[mortar::handler("dyntest.whoami", public)]
async fn whoami(ctx: Ctx, _req: Text) -> Result<Text, Code> {
    let user = ctx.user_id().map_or_else(|| "none".into(), |user| user.to_string());
    Ok(Text { text: format!("user={user} node={}", ctx.node_id()) })
}

/// Calls echo's internal `echo.context` (on whichever worker serves echo) and answers what it
/// saw as `node=… user=… session=… gateway=… remaining_ms=… trace=… caller_node=… caller_trace=…`.
#[mortar::handler("dyntest.context", public)]
async fn context(ctx: Ctx, _req: Text) -> Result<Text, Code> {
    let seen: CalleeContext = ctx.call("echo.context", &Empty {}).await?;
    Ok(Text {
        text: format!(
            "node={} user={} session={} gateway={} remaining_ms={} trace={} caller_node={} caller_trace={:032x}",
            seen.node,
            seen.user,
            seen.session,
            seen.gateway,
            seen.remaining_ms,
            seen.trace_id,
            ctx.node_id(),
            ctx.request().trace_id
        ),
    })
}

/// The cache key counting the user's departures.
fn offline_key(user: u64) -> String {
    format!("offline:{user}")
}

/// Counts the player's departure in the cache (shared by the workers when it is Redis).
async fn went_offline(ctx: Ctx, user: u64) {
    let _ = ctx.cache().incr(&offline_key(user), 1, Some(Duration::from_secs(600))).await;
}

/// Answers how many times `went_offline` ran for the user id in the text.
#[mortar::handler("dyntest.offline_count", public)]
async fn offline_count(ctx: Ctx, req: Text) -> Result<Text, Code> {
    let user: u64 = req.text.parse().map_err(|_| Code::BAD_REQUEST)?;
    let count = ctx.cache().incr(&offline_key(user), 0, Some(Duration::from_secs(600))).await?;
    Ok(Text { text: count.to_string() })
}
