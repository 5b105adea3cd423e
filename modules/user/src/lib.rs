//! The user module: accounts, logins, resume tokens, profiles.
//!
//! - `user.register {account, password}` → `{userId}`, then the starter items of the game table
//!   `starter_items.json`, once, through `pack.add_items`;
//! - `user.login {account, password}` → `{userId, token, name}`, binding the session;
//! - `user.resume {token}` → `{userId, name}`, binding the session without the password;
//! - `user.profile {}`, `user.rename {name}` for a logged-in player;
//! - internal `user.lookup {userIds}` → `{users: [{userId, name}]}`, for other modules.
//!
//! Layout: `password` (argon2id behind a bounded queue that serves logins first, with reused
//! memory), `limits` (registrations per address and in all; failed logins throttled per
//! address, pair and account), `names` (display names: normalized, no invisible characters,
//! unique by a case-insensitive key); this file: config, accounts and the handlers.
//!
//! Tokens are `USERID.SECRET`: 32 random bytes, of which only a BLAKE2s hash is stored; a login
//! replaces it. A new account's display name is `Player` and 8 random digits, never its account
//! name (which, shown to others, would say whose password to guess).

mod limits;
mod names;
mod password;

use blake2::Digest as _;
use mortar::{
    prelude::*,
    store::{StoreError, UpdateError},
};
use serde::{Deserialize, Serialize};
use std::time::UNIX_EPOCH;

/// The messages of `proto/user.proto`.
pub mod user {
    mortar::include_proto!("user");
}

/// The pack module's messages and typed client (`pack.add_items`).
pub mod pack {
    mortar::import_proto!("pack");
}

use user::{
    LoginReq, LoginResp, LookupReq, LookupResp, Player, ProfileReq, ProfileResp, RegisterReq, RegisterResp,
    RenameReq, RenameResp, ResumeReq, ResumeResp,
};

mortar::module!(User);
mortar::export_module!();

/// The module on a node: its password hashing (slots, queues, buffers; see `password`).
#[derive(Default)]
pub struct User {
    hashing: password::Hashing,
}

impl Module for User {
    fn name(&self) -> &'static str {
        "user"
    }
}

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
    /// Failed logins of one account from one address within the window before that address's
    /// logins of it answer `RATE_LIMITED`; also the failures of one account from all addresses
    /// after which each address that failed on it at all is refused it (the owner, from an address
    /// that has not failed, still logs in).
    pub failures_per_account: u32,
    /// Failed logins and resumes from one IP address within the window before they answer
    /// `RATE_LIMITED`.
    pub failures_per_ip: u32,
    /// The window failures are counted in, in seconds (from the first failure).
    pub failure_window_s: u64,
    /// Registrations from one IP address within `register_ip_window_s` before further ones
    /// answer `RATE_LIMITED` (0: no limit).
    pub register_per_ip: u32,
    /// The window of `register_per_ip`, in seconds (from the first registration).
    pub register_ip_window_s: u64,
    /// Registrations per second from everyone, counted in the cache (the cluster's, when it is
    /// shared), before further ones answer `RATE_LIMITED` (0: no limit).
    pub register_per_sec: u32,
    /// Password hashes that run at once on a node (0: one per CPU core); registrations may hold
    /// at most half of them (at least one), and a waiting login goes before a waiting
    /// registration. Each running hash holds argon2's memory (`argon2_memory_kib`), kept for the
    /// next hash.
    pub hash_slots: u32,
    /// Logins waiting for a hash slot; one more answers `RATE_LIMITED` at once.
    pub login_queue: u32,
    /// Registrations waiting for a hash slot; one more answers `RATE_LIMITED` at once.
    pub register_queue: u32,
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
            register_per_ip: 30,
            register_ip_window_s: 3600,
            register_per_sec: 50,
            hash_slots: 0,
            login_queue: 128,
            register_queue: 32,
        }
    }
}

fn check_config(config: &UserConfig) -> Result<(), String> {
    config.params().map(drop)?;
    if config.token_ttl_s == 0 || config.failure_window_s == 0 {
        return Err("token_ttl_s and failure_window_s must be at least 1".into());
    }
    if config.failures_per_account == 0 || config.failures_per_ip == 0 {
        return Err("failures_per_account and failures_per_ip must be at least 1".into());
    }
    if config.register_ip_window_s == 0 {
        return Err("register_ip_window_s must be at least 1".into());
    }
    if config.hash_slots > 1024 {
        return Err("hash_slots must be 0–1024".into());
    }
    if !(1..=100_000).contains(&config.login_queue) || !(1..=100_000).contains(&config.register_queue) {
        return Err("login_queue and register_queue must be 1–100000".into());
    }
    Ok(())
}

mortar::config!(UserConfig, section = "user", check = check_config);

impl UserConfig {
    fn params(&self) -> Result<argon2::Params, String> {
        argon2::Params::new(self.argon2_memory_kib, self.argon2_iterations, self.argon2_parallelism, None)
            .map_err(|error| format!("argon2 parameters: {error}"))
    }

    #[cfg(test)]
    fn hasher(&self) -> Result<argon2::Argon2<'static>, String> {
        Ok(argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, self.params()?))
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
#[document(collection = "user", index(unique = "account"), index(unique = "name_key"))]
pub struct Account {
    /// The login name, unique.
    pub account: String,
    /// The display name (see the module `names`).
    pub name: String,
    /// The display name's key (lower case, NFKC), unique; none on accounts made before names
    /// were keyed, until their next login gives them one.
    #[serde(default)]
    pub name_key: Option<String>,
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

/// Why every failed login fails, whether the account exists or not.
const WRONG_LOGIN: &str = "wrong account or password";

fn now_ms(ctx: &Ctx) -> i64 {
    ctx.now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

/// Grants the starter items once (grant id `starter`), and marks the account when done.
async fn grant_starter(ctx: &Ctx, user: u64) -> Result<(), Code> {
    let items: Vec<pack::Item> = ctx
        .table::<StarterRow>()
        .iter()
        .map(|row| pack::Item { item_id: row.item_id, count: row.count })
        .collect();
    if !items.is_empty() {
        let grant = pack::AddItemsReq { grant_id: "starter".into(), items, user_id: user };
        pack::PackClient(ctx).add_items(&grant).await?;
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

/// Whether `error` is a clash on unique field `field`.
fn clashes(error: &StoreError, field: &str) -> bool {
    matches!(error, StoreError::AlreadyExists { index: Some(index) } if index == field)
}

/// The name others see: an account named before names were keyed, whose name is still its
/// account name (the default then), shows the default name it gets at its next login instead.
fn display_name(user: u64, account: &Account) -> String {
    if account.name_key.is_none() && account.name == account.account {
        names::default_name(user)
    } else {
        account.name.clone()
    }
}

/// Gives an account named before names were keyed a key: at `attempt` 0 its own name,
/// normalized, unless that is invalid or its account name (shown as [`display_name`] says);
/// when that name is held by another player (a later attempt), a random default name.
fn key_legacy_name(user: u64, account: &mut Account, attempt: u32) {
    let own = (attempt == 0 && account.name != account.account)
        .then(|| names::normalize(&account.name).ok())
        .flatten();
    let name = own.unwrap_or_else(|| names::default_name(if attempt == 0 { user } else { rand::random() }));
    account.name_key = Some(names::key(&name));
    account.name = name;
}

/// Creates an account; `ALREADY_EXISTS` when the name is taken, `BAD_REQUEST` for a name or
/// password out of bounds, `RATE_LIMITED` past the registrations allowed from the address or in
/// all, or when too many wait for a password hash. The display name is a default one
/// ([`names::default_name`]). The starter items follow; if the pack module cannot be reached
/// they are granted at the first login instead.
#[mortar::handler("user.register", public)]
async fn register(ctx: Ctx, req: RegisterReq) -> Result<RegisterResp, Failure> {
    check_account(&req.account)?;
    check_password(&req.password)?;
    limits::admit_register(&ctx).await?;
    let store = ctx.store::<Account>();
    let taken = || Code::ALREADY_EXISTS.because("account is taken");
    if store.find_one("account", &req.account).await?.is_some() {
        return Err(taken());
    }
    let password = password::hash(&ctx, req.password).await?;
    let mut account =
        Account { account: req.account, password, created_at_ms: now_ms(&ctx), ..Account::default() };
    // Ids are random below 2^53, so JavaScript clients hold them exactly; a taken id or default
    // name is drawn again.
    let mut user = 0;
    for _ in 0..8 {
        let id = rand::random::<u64>() % (1 << 53) + 1;
        account.name = names::default_name(rand::random());
        account.name_key = Some(names::key(&account.name));
        match store.insert(id, account.clone()).await {
            Ok(_) => {
                user = id;
                break;
            }
            Err(StoreError::AlreadyExists { index: None }) => continue,
            Err(error) if clashes(&error, "name_key") => continue,
            Err(error) if clashes(&error, "account") => return Err(taken()),
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
/// the same time; `RATE_LIMITED` when the address failed too often ([`limits`]) or too many
/// logins wait for a password check. A session of the same user elsewhere is kicked with
/// `LOGGED_IN_ELSEWHERE`.
#[mortar::handler("user.login", public)]
async fn login(ctx: Ctx, req: LoginReq) -> Result<LoginResp, Failure> {
    if check_account(&req.account).is_err() || req.password.len() > 128 {
        return Err(Code::PERMISSION_DENIED.because(WRONG_LOGIN));
    }
    limits::check_failures(&ctx, Some(&req.account)).await?;
    let store = ctx.store::<Account>();
    let found = store.find_one("account", &req.account).await?;
    let stored = found.as_ref().map(|account| account.doc.password.clone());
    let matches = password::verify(&ctx, req.password, stored).await?;
    let Some(found) = found.filter(|_| matches) else {
        limits::count_failure(&ctx, Some(&req.account)).await;
        return Err(Code::PERMISSION_DENIED.because(WRONG_LOGIN));
    };
    let user = found.id;
    let secret: [u8; 32] = rand::random();
    let token_hash = hex(&blake2::Blake2s256::digest(secret));
    let ttl_ms =
        i64::try_from(ctx.config::<UserConfig>().token_ttl_s.saturating_mul(1000)).unwrap_or(i64::MAX);
    let expires = now_ms(&ctx).saturating_add(ttl_ms);
    let mut attempt = 0;
    let saved = loop {
        let updated = store
            .update(user, |account| {
                account.token_hash.clone_from(&token_hash);
                account.token_expires_ms = expires;
                if account.name_key.is_none() {
                    key_legacy_name(user, account, attempt);
                }
                Ok(())
            })
            .await;
        match updated {
            Err(UpdateError::Store(error)) if clashes(&error, "name_key") && attempt < 5 => attempt += 1,
            updated => break updated?.0,
        }
    };
    ctx.bind_user(user).await?;
    limits::forgive(&ctx, &req.account).await;
    if saved.doc.starter_granted_ms == 0 {
        let _ = grant_starter(&ctx, user).await;
    }
    Ok(LoginResp { user_id: user, token: format!("{user}.{}", hex(&secret)), name: saved.doc.name })
}

/// Logs in again with the token of the last login, until it expires or the next login replaces
/// it; `PERMISSION_DENIED` otherwise.
#[mortar::handler("user.resume", public)]
async fn resume(ctx: Ctx, req: ResumeReq) -> Result<ResumeResp, Failure> {
    limits::check_failures(&ctx, None).await?;
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
        limits::count_failure(&ctx, None).await;
        return Err(Code::PERMISSION_DENIED.because("token unknown or expired; log in again"));
    };
    ctx.bind_user(account.id).await?;
    Ok(ResumeResp { user_id: account.id, name: display_name(account.id, &account.doc) })
}

/// The logged-in player's account.
#[mortar::handler("user.profile")]
async fn profile(ctx: Ctx, _req: ProfileReq) -> Result<ProfileResp, Code> {
    let user = ctx.user_id().ok_or(Code::NOT_LOGGED_IN)?;
    let account = ctx.store::<Account>().get(user).await?;
    Ok(ProfileResp {
        user_id: user,
        name: display_name(user, &account.doc),
        account: account.doc.account,
        created_at: account.doc.created_at_ms,
    })
}

/// Changes the display name, normalized ([`names::normalize`]); `BAD_REQUEST` saying which rule
/// it breaks, `ALREADY_EXISTS` when another player's name has the same key (differs only in
/// case or compatibility forms).
#[mortar::handler("user.rename")]
async fn rename(ctx: Ctx, req: RenameReq) -> Result<RenameResp, Failure> {
    let user = ctx.user_id().ok_or(Code::NOT_LOGGED_IN)?;
    let name = names::normalize(&req.name)?;
    let key = names::key(&name);
    if names::is_default(&key) {
        // Else anyone could take the look of a new player's name, or the name itself.
        return Err(Code::BAD_REQUEST
            .because("names of the form Player and 8 digits are given to new players; choose another"));
    }
    let updated = ctx
        .store::<Account>()
        .update(user, |account| {
            account.name.clone_from(&name);
            account.name_key = Some(key.clone());
            Ok(())
        })
        .await;
    match updated {
        Ok((saved, ())) => Ok(RenameResp { name: saved.doc.name }),
        Err(UpdateError::Store(error)) if clashes(&error, "name_key") => {
            Err(Code::ALREADY_EXISTS.because("name is taken by another player"))
        }
        Err(error) => Err(error.into()),
    }
}

/// The most ids one `user.lookup` takes.
pub const MAX_LOOKUP: usize = 1000;

/// Who the players of `user_ids` are (ids without an account are left out), read 32 at a time;
/// `BAD_REQUEST` past [`MAX_LOOKUP`] ids.
#[mortar::handler("user.lookup", internal)]
async fn lookup(ctx: Ctx, req: LookupReq) -> Result<LookupResp, Code> {
    if req.user_ids.len() > MAX_LOOKUP {
        return Err(Code::BAD_REQUEST);
    }
    // One read of the store for the whole list, in the order asked (each id once).
    let ids: Vec<u64> = req.user_ids.into_iter().filter(|&user| user != 0).collect();
    let accounts = ctx.store::<Account>().get_many(&ids).await?;
    let users = accounts
        .into_iter()
        .map(|account| Player { user_id: account.id, name: display_name(account.id, &account.doc) })
        .collect();
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
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
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
    fn accounts_and_passwords_have_bounds_and_say_which() {
        assert_eq!(why(check_account("ana_01")), None);
        assert_eq!(why(check_account("an")).as_deref(), Some("account must be 3–32 characters"));
        assert_eq!(why(check_account(&"a".repeat(33))).as_deref(), Some("account must be 3–32 characters"));
        assert_eq!(why(check_account("Ana")).as_deref(), Some("account may hold only a–z, 0–9 and _"));
        assert_eq!(why(check_password("12345678")), None);
        assert_eq!(why(check_password("1234567")).as_deref(), Some("password must be 8–128 bytes"));
        assert!(why(check_password(&"x".repeat(129))).is_some());
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
