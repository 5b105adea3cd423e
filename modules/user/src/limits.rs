//! How often a client may register, and how often it may guess passwords. Counters live in the
//! node's cache (shared by the cluster when it is Redis), each a window from its first count.
//!
//! **Guessing throttles the guesser, not the account.** A failed login counts against the pair
//! (account, address), the address and the account:
//! 1. an address that failed `failures_per_ip` times (any accounts) is refused every login and
//!    resume;
//! 2. an address that failed `failures_per_account` times on one account is refused that account;
//! 3. an account that failed `failures_per_account` times in all is *guarded*: an address that
//!    failed on it even once is refused it, so each further address gets one guess.
//!
//! None of these stops the owner: from an address that has not failed on the account, the right
//! password always logs in, whatever others did. A login clears its address's count on that
//! account; the account's own count runs out with its window.

use crate::UserConfig;
use mortar::prelude::*;
use std::time::Duration;

/// The cache keys of failures: of the pair (account, address), the address and the account.
struct FailureKeys {
    pair: String,
    ip: String,
    account: String,
}

fn failure_keys(ctx: &Ctx, account: &str) -> FailureKeys {
    let ip = ctx.client_ip();
    FailureKeys {
        pair: format!("fail:pair:{account}:{ip}"),
        ip: format!("fail:ip:{ip}"),
        account: format!("fail:account:{account}"),
    }
}

fn limited() -> Failure {
    Code::RATE_LIMITED.because("too many failed logins from your address; retry later")
}

/// `RATE_LIMITED` when the request's address may not try `account` (none: a resume) now.
pub(crate) async fn check_failures(ctx: &Ctx, account: Option<&str>) -> Result<(), Failure> {
    let config = ctx.config::<UserConfig>();
    let keys = failure_keys(ctx, account.unwrap_or(""));
    let (cache, window) = (ctx.cache(), Some(Duration::from_secs(config.failure_window_s)));
    // Adding 0 reads a counter (and makes a missing one 0).
    if cache.incr(&keys.ip, 0, window).await? >= i64::from(config.failures_per_ip) {
        return Err(limited());
    }
    if account.is_none() {
        return Ok(());
    }
    let pair = cache.incr(&keys.pair, 0, window).await?;
    if pair >= i64::from(config.failures_per_account) {
        return Err(limited());
    }
    if pair > 0 && cache.incr(&keys.account, 0, window).await? >= i64::from(config.failures_per_account) {
        return Err(limited());
    }
    Ok(())
}

/// Counts one failure of the request's address, and of `account` (none: a resume).
pub(crate) async fn count_failure(ctx: &Ctx, account: Option<&str>) {
    let window = Some(Duration::from_secs(ctx.config::<UserConfig>().failure_window_s));
    let keys = failure_keys(ctx, account.unwrap_or(""));
    let cache = ctx.cache();
    let _ = cache.incr(&keys.ip, 1, window).await;
    if account.is_some() {
        let _ = cache.incr(&keys.pair, 1, window).await;
        let _ = cache.incr(&keys.account, 1, window).await;
    }
}

/// After a login: the address's failures on `account` are forgiven.
pub(crate) async fn forgive(ctx: &Ctx, account: &str) {
    let _ = ctx.cache().delete(&failure_keys(ctx, account).pair).await;
}

/// Counts a registration from the request's address and in all; `RATE_LIMITED` past
/// `register_per_ip` per `register_ip_window_s`, or past `register_per_sec` in the cache's whole
/// cluster. Refused attempts count too: a flood does not get faster by being refused.
pub(crate) async fn admit_register(ctx: &Ctx) -> Result<(), Failure> {
    let config = ctx.config::<UserConfig>();
    let cache = ctx.cache();
    // The address's own limit first: an address past it no longer counts against everyone's.
    if config.register_per_ip > 0 {
        let key = format!("register:ip:{}", ctx.client_ip());
        let window = Some(Duration::from_secs(config.register_ip_window_s));
        if cache.incr(&key, 1, window).await? > i64::from(config.register_per_ip) {
            return Err(Code::RATE_LIMITED.because(format!(
                "over the limit of {} registrations from your address in {} s; retry later",
                config.register_per_ip, config.register_ip_window_s
            )));
        }
    }
    if config.register_per_sec > 0 {
        let all = cache.incr("register:all", 1, Some(Duration::from_secs(1))).await?;
        if all > i64::from(config.register_per_sec) {
            return Err(Code::RATE_LIMITED.because(format!(
                "over the limit of {} registrations per second; retry later",
                config.register_per_sec
            )));
        }
    }
    Ok(())
}
