//! The user module: accounts, logins, resume tokens, profiles.
//!
//! - `user.register {account, password}` → `{userId}`, then the starter items of the game table
//!   `starter_items.json`, once, through `pack.add_items`;
//! - `user.login {account, password}` → `{userId, token, name}`, binding the session;
//! - `user.resume {token}` → `{userId, name}`, binding the session without the password;
//! - `user.profile {}`, `user.rename {name}` for a logged-in player;
//! - internal `user.lookup {userIds}` → `{users: [{userId, name}]}`, for other modules.
//!
//! Passwords are hashed with argon2id (parameters in `[modules.user]`) on the host's blocking
//! threads. Tokens are `USERID.SECRET`: 32 random bytes, of which only a BLAKE2s hash is stored;
//! a login replaces it. Failed logins are counted per account and per client IP in the cache;
//! past `failures_per_account` / `failures_per_ip` within `failure_window_s` they answer
//! `RATE_LIMITED` without looking at the password.

use argon2::{Argon2, PasswordHasher as _, PasswordVerifier as _};
use blake2::Digest as _;
use mortar::{prelude::*, store::StoreError};
use serde::{Deserialize, Serialize};
use std::{
    sync::OnceLock,
    time::{Duration, UNIX_EPOCH},
};

/// The messages of `proto/user.proto`.
pub mod user {
    mortar::include_proto!("user");
}

use user::{
    LoginReq, LoginResp, LookupReq, LookupResp, Player, ProfileReq, ProfileResp, RegisterReq, RegisterResp,
    RenameReq, RenameResp, ResumeReq, ResumeResp, StarterGrant, StarterGranted, StarterItem,
};

mortar::module!("user");
mortar::export_module!();

/// `[modules.user]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UserConfig {
    /// How long a login's resume token is valid, in seconds.
    pub token_ttl_s: u64,
    /// argon2id memory per hash, KiB (OWASP's minimum: 19,456).
    pub argon2_memory_kib: u32,
    /// argon2id passes.
    pub argon2_iterations: u32,
    /// argon2id lanes.
    pub argon2_parallelism: u32,
    /// Failed logins of one account within the window before its logins answer `RATE_LIMITED`.
    pub failures_per_account: u32,
    /// Failed logins and resumes from one IP address within the window before they answer
    /// `RATE_LIMITED`.
    pub failures_per_ip: u32,
    /// The window failures are counted in, in seconds (from the first failure).
    pub failure_window_s: u64,
}

impl Default for UserConfig {
    fn default() -> Self {
        Self {
            token_ttl_s: 7 * 24 * 3600,
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            failures_per_account: 5,
            failures_per_ip: 50,
            failure_window_s: 300,
        }
    }
}

fn check_config(config: &UserConfig) -> Result<(), String> {
    config.hasher().map(drop)?;
    if config.token_ttl_s == 0 || config.failure_window_s == 0 {
        return Err("token_ttl_s and failure_window_s must be at least 1".into());
    }
    if config.failures_per_account == 0 || config.failures_per_ip == 0 {
        return Err("failures_per_account and failures_per_ip must be at least 1".into());
    }
    Ok(())
}

mortar::config!(UserConfig, section = "user", check = check_config);

impl UserConfig {
    fn hasher(&self) -> Result<Argon2<'static>, String> {
        let params = argon2::Params::new(
            self.argon2_memory_kib,
            self.argon2_iterations,
            self.argon2_parallelism,
            None,
        )
        .map_err(|error| format!("argon2 parameters: {error}"))?;
        Ok(Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params))
    }
}

/// One row of the game table `starter_items.json`: what a new player gets.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StarterRow {
    /// The row's id.
    pub id: u32,
    /// An item of `items.json`.
    pub item_id: u32,
    /// How many (at least 1).
    pub count: u32,
}

fn check_starter(row: &StarterRow) -> Result<(), String> {
    if row.count == 0 { Err("count must be at least 1".into()) } else { Ok(()) }
}

mortar::table!(
    StarterRow,
    file = "starter_items",
    id = id,
    default = include_str!("../tables/starter_items.json"),
    check = check_starter,
    refs = [item_id => "items"]
);

/// An account: document id = user id.
#[derive(Clone, Debug, Default, Serialize, Deserialize, mortar::Document)]
#[document(collection = "user", index(unique = "account"))]
pub struct Account {
    /// The login name, unique.
    pub account: String,
    /// The display name.
    pub name: String,
    /// The argon2id hash of the password (PHC string).
    pub password: String,
    /// When it was registered, ms since the Unix epoch.
    pub created_at_ms: i64,
    /// The BLAKE2s hash of the current resume token's secret, hex; empty: none.
    pub token_hash: String,
    /// When that token expires, ms since the Unix epoch.
    pub token_expires_ms: i64,
    /// When the starter items were granted, ms since the Unix epoch; 0: not yet (retried at
    /// login until they were). A time rather than a flag: the MongoDB emulator the tests use
    /// turns booleans written by an update into 0 and 1.
    pub starter_granted_ms: i64,
}

/// Account names: 3-32 characters of `[a-z0-9_]`; `BAD_REQUEST` saying which rule it breaks.
fn check_account(account: &str) -> Result<(), Failure> {
    if !(3..=32).contains(&account.len()) {
        return Err(Code::BAD_REQUEST.because("account must be 3–32 characters"));
    }
    if !account.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(Code::BAD_REQUEST.because("account may hold only a–z, 0–9 and _"));
    }
    Ok(())
}

/// Passwords: 8-128 bytes; `BAD_REQUEST` with the bounds.
fn check_password(password: &str) -> Result<(), Failure> {
    if !(8..=128).contains(&password.len()) {
        return Err(Code::BAD_REQUEST.because("password must be 8–128 bytes"));
    }
    Ok(())
}

/// Display names: 1-24 characters, not only spaces, no control characters; `BAD_REQUEST` saying
/// which rule it breaks.
fn check_name(name: &str) -> Result<(), Failure> {
    if !(1..=24).contains(&name.chars().count()) || name.trim().is_empty() {
        return Err(Code::BAD_REQUEST.because("name must be 1–24 characters, not only spaces"));
    }
    if name.chars().any(char::is_control) {
        return Err(Code::BAD_REQUEST.because("name must not hold control characters"));
    }
    Ok(())
}

/// Why every failed login fails, whether the account exists or not.
const WRONG_LOGIN: &str = "wrong account or password";

fn now_ms(ctx: &Ctx) -> i64 {
    ctx.now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

/// Hashes `password` on the host's blocking threads.
async fn hash(ctx: &Ctx, password: String) -> Result<String, Code> {
    let hasher = ctx.config::<UserConfig>().hasher().map_err(|_| Code::INTERNAL)?;
    ctx.blocking(move || hasher.hash_password(password.as_bytes()).map(|hash| hash.to_string()))
        .await?
        .map_err(|_| Code::INTERNAL)
}

/// Whether `password` matches `stored` (a PHC string), checked on the blocking threads. Without
/// an account a hash made at start is checked instead, so both take about the same time.
async fn verify(ctx: &Ctx, password: String, stored: Option<String>) -> Result<bool, Code> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let config = ctx.config::<UserConfig>();
    let hasher = config.hasher().map_err(|_| Code::INTERNAL)?;
    let exists = stored.is_some();
    let stored = match stored {
        Some(stored) => stored,
        None => match DUMMY.get() {
            Some(dummy) => dummy.clone(),
            None => {
                let dummy = hash(ctx, "not a password of anyone".into()).await?;
                DUMMY.get_or_init(|| dummy).clone()
            }
        },
    };
    let matches =
        ctx.blocking(move || hasher.verify_password(password.as_bytes(), stored.as_str()).is_ok()).await?;
    Ok(exists && matches)
}

/// The cache keys counting failures of `account` and of the request's IP.
fn failure_keys(ctx: &Ctx, account: &str) -> [String; 2] {
    [format!("fail:account:{account}"), format!("fail:ip:{}", ctx.client_ip())]
}

/// `RATE_LIMITED` when the account or the IP has failed too often lately.
async fn check_failures(ctx: &Ctx, account: Option<&str>) -> Result<(), Failure> {
    let config = ctx.config::<UserConfig>();
    let [by_account, by_ip] = failure_keys(ctx, account.unwrap_or(""));
    let (cache, window) = (ctx.cache(), Some(Duration::from_secs(config.failure_window_s)));
    // Adding 0 reads a counter (and makes a missing one 0).
    let limited = || Code::RATE_LIMITED.because("too many failed logins; retry later");
    if cache.incr(&by_ip, 0, window).await? >= i64::from(config.failures_per_ip) {
        return Err(limited());
    }
    if account.is_some()
        && cache.incr(&by_account, 0, window).await? >= i64::from(config.failures_per_account)
    {
        return Err(limited());
    }
    Ok(())
}

/// Counts one failure of `account` (when given) and of the request's IP.
async fn count_failure(ctx: &Ctx, account: Option<&str>) {
    let window = Some(Duration::from_secs(ctx.config::<UserConfig>().failure_window_s));
    let [by_account, by_ip] = failure_keys(ctx, account.unwrap_or(""));
    let cache = ctx.cache();
    let _ = cache.incr(&by_ip, 1, window).await;
    if account.is_some() {
        let _ = cache.incr(&by_account, 1, window).await;
    }
}

/// Grants the starter items once (grant id `starter`), and marks the account when done.
async fn grant_starter(ctx: &Ctx, user: u64) -> Result<(), Code> {
    let items: Vec<StarterItem> = ctx
        .table::<StarterRow>()
        .iter()
        .map(|row| StarterItem { item_id: row.item_id, count: row.count })
        .collect();
    if !items.is_empty() {
        let grant = StarterGrant { grant_id: "starter".into(), items, user_id: user };
        let _: StarterGranted = ctx.call("pack.add_items", &grant).await?;
    }
    let now = now_ms(ctx);
    ctx.store::<Account>()
        .update(user, |account| {
            account.starter_granted_ms = now;
            Ok(())
        })
        .await?;
    Ok(())
}

/// Creates an account; `ALREADY_EXISTS` when the name is taken, `BAD_REQUEST` for a name or
/// password out of bounds. The starter items follow; if the pack module cannot be reached they
/// are granted at the first login instead.
#[mortar::handler("user.register", public)]
async fn register(ctx: Ctx, req: RegisterReq) -> Result<RegisterResp, Failure> {
    check_account(&req.account)?;
    check_password(&req.password)?;
    let store = ctx.store::<Account>();
    if store.find_one("account", &req.account).await?.is_some() {
        return Err(Code::ALREADY_EXISTS.because("account is taken"));
    }
    let password = hash(&ctx, req.password).await?;
    let account = Account {
        name: req.account.clone(),
        account: req.account,
        password,
        created_at_ms: now_ms(&ctx),
        ..Account::default()
    };
    // Ids are random below 2^53, so JavaScript clients hold them exactly; a taken one is drawn
    // again.
    let mut user = 0;
    for _ in 0..5 {
        let id = rand::random::<u64>() % (1 << 53) + 1;
        match store.insert(id, account.clone()).await {
            Ok(_) => {
                user = id;
                break;
            }
            Err(StoreError::AlreadyExists { index: None }) => continue,
            Err(error) => return Err(error.into()),
        }
    }
    if user == 0 {
        return Err(Code::INTERNAL.into());
    }
    let _ = grant_starter(&ctx, user).await;
    Ok(RegisterResp { user_id: user })
}

/// Logs in; unknown accounts and wrong passwords both answer `PERMISSION_DENIED`, after about
/// the same time. A session of the same user elsewhere is kicked with `LOGGED_IN_ELSEWHERE`.
#[mortar::handler("user.login", public)]
async fn login(ctx: Ctx, req: LoginReq) -> Result<LoginResp, Failure> {
    if check_account(&req.account).is_err() || req.password.len() > 128 {
        return Err(Code::PERMISSION_DENIED.because(WRONG_LOGIN));
    }
    check_failures(&ctx, Some(&req.account)).await?;
    let store = ctx.store::<Account>();
    let found = store.find_one("account", &req.account).await?;
    let stored = found.as_ref().map(|account| account.doc.password.clone());
    let matches = verify(&ctx, req.password, stored).await?;
    let Some(found) = found.filter(|_| matches) else {
        count_failure(&ctx, Some(&req.account)).await;
        return Err(Code::PERMISSION_DENIED.because(WRONG_LOGIN));
    };
    let user = found.id;
    let secret: [u8; 32] = rand::random();
    let token_hash = hex(&blake2::Blake2s256::digest(secret));
    let ttl_ms =
        i64::try_from(ctx.config::<UserConfig>().token_ttl_s.saturating_mul(1000)).unwrap_or(i64::MAX);
    let expires = now_ms(&ctx).saturating_add(ttl_ms);
    let (saved, ()) = store
        .update(user, |account| {
            account.token_hash.clone_from(&token_hash);
            account.token_expires_ms = expires;
            Ok(())
        })
        .await?;
    ctx.bind_user(user).await?;
    let _ = ctx.cache().delete(&failure_keys(&ctx, &req.account)[0]).await;
    if saved.doc.starter_granted_ms == 0 {
        let _ = grant_starter(&ctx, user).await;
    }
    Ok(LoginResp { user_id: user, token: format!("{user}.{}", hex(&secret)), name: saved.doc.name })
}

/// Logs in again with the token of the last login, until it expires or the next login replaces
/// it; `PERMISSION_DENIED` otherwise.
#[mortar::handler("user.resume", public)]
async fn resume(ctx: Ctx, req: ResumeReq) -> Result<ResumeResp, Failure> {
    check_failures(&ctx, None).await?;
    let parsed = req
        .token
        .split_once('.')
        .and_then(|(user, secret)| Some((user.parse::<u64>().ok()?, unhex(secret)?)));
    let account = match parsed {
        Some((user, _)) if user != 0 => ctx.store::<Account>().try_get(user).await?,
        _ => None,
    };
    let valid = match (&parsed, &account) {
        (Some((_, secret)), Some(account)) => {
            let presented = hex(&blake2::Blake2s256::digest(secret));
            !account.doc.token_hash.is_empty()
                && same(presented.as_bytes(), account.doc.token_hash.as_bytes())
                && account.doc.token_expires_ms > now_ms(&ctx)
        }
        _ => false,
    };
    let Some(account) = account.filter(|_| valid) else {
        count_failure(&ctx, None).await;
        return Err(Code::PERMISSION_DENIED.because("token unknown or expired; log in again"));
    };
    ctx.bind_user(account.id).await?;
    Ok(ResumeResp { user_id: account.id, name: account.doc.name })
}

/// The logged-in player's account.
#[mortar::handler("user.profile")]
async fn profile(ctx: Ctx, _req: ProfileReq) -> Result<ProfileResp, Code> {
    let user = ctx.user_id().ok_or(Code::NOT_LOGGED_IN)?;
    let account = ctx.store::<Account>().get(user).await?;
    Ok(ProfileResp {
        user_id: user,
        account: account.doc.account,
        name: account.doc.name,
        created_at: account.doc.created_at_ms,
    })
}

/// Changes the display name: 1-24 characters, no control characters, else `BAD_REQUEST`.
#[mortar::handler("user.rename")]
async fn rename(ctx: Ctx, req: RenameReq) -> Result<RenameResp, Failure> {
    let user = ctx.user_id().ok_or(Code::NOT_LOGGED_IN)?;
    let name = req.name;
    check_name(&name)?;
    let (saved, ()) = ctx
        .store::<Account>()
        .update(user, |account| {
            account.name.clone_from(&name);
            Ok(())
        })
        .await?;
    Ok(RenameResp { name: saved.doc.name })
}

/// The most ids one `user.lookup` takes.
pub const MAX_LOOKUP: usize = 1000;

/// Who the players of `user_ids` are (ids without an account are left out), read 32 at a time;
/// `BAD_REQUEST` past [`MAX_LOOKUP`] ids.
#[mortar::handler("user.lookup", internal)]
async fn lookup(ctx: Ctx, req: LookupReq) -> Result<LookupResp, Code> {
    use futures::StreamExt as _;
    if req.user_ids.len() > MAX_LOOKUP {
        return Err(Code::BAD_REQUEST);
    }
    let store = ctx.store::<Account>();
    let found: Vec<Result<Option<Player>, Code>> = futures::stream::iter(req.user_ids)
        .map(|user| {
            let store = store.clone();
            async move {
                if user == 0 {
                    return Ok(None);
                }
                let account = store.try_get(user).await.map_err(|error| error.code())?;
                Ok(account.map(|account| Player { user_id: user, name: account.doc.name }))
            }
        })
        .buffered(32)
        .collect()
        .await;
    let users = found.into_iter().filter_map(Result::transpose).collect::<Result<_, _>>()?;
    Ok(LookupResp { users })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    (0..text.len()).step_by(2).map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok()).collect()
}

/// Compares in time that depends on the length only.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reason of a refusal.
    fn why(checked: Result<(), Failure>) -> Option<String> {
        checked.err().map(|failure| {
            assert_eq!(failure.code(), Code::BAD_REQUEST);
            failure.reason().unwrap_or_default().to_owned()
        })
    }

    #[test]
    fn accounts_passwords_and_names_have_bounds_and_say_which() {
        assert_eq!(why(check_account("ana_01")), None);
        assert_eq!(why(check_account("an")).as_deref(), Some("account must be 3–32 characters"));
        assert_eq!(why(check_account(&"a".repeat(33))).as_deref(), Some("account must be 3–32 characters"));
        assert_eq!(why(check_account("Ana")).as_deref(), Some("account may hold only a–z, 0–9 and _"));
        assert_eq!(why(check_password("12345678")), None);
        assert_eq!(why(check_password("1234567")).as_deref(), Some("password must be 8–128 bytes"));
        assert!(why(check_password(&"x".repeat(129))).is_some());
        assert_eq!(why(check_name("Ana the Bold")), None);
        assert!(why(check_name("")).is_some() && why(check_name("   ")).is_some());
        assert!(why(check_name(&"é".repeat(25))).is_some() && why(check_name(&"é".repeat(24))).is_none());
        assert_eq!(why(check_name("a\u{7}b")).as_deref(), Some("name must not hold control characters"));
    }

    #[test]
    fn tokens_round_trip_through_hex() {
        let secret = [7u8; 32];
        assert_eq!(unhex(&hex(&secret)), Some(secret.to_vec()));
        assert_eq!(unhex("zz"), None);
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"ab", b"abc"));
    }

    #[test]
    fn the_default_argon2_parameters_are_valid() {
        check_config(&UserConfig::default()).unwrap();
        let bad = UserConfig { argon2_memory_kib: 1, ..UserConfig::default() };
        assert!(check_config(&bad).unwrap_err().starts_with("argon2 parameters"));
    }
}
