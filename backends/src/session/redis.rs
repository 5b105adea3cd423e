//! The session store in Redis (`session.url = "redis://HOST:PORT[/DB]"`), shared by the cluster.
//!
//! Keys: `mortar:CLUSTER:session:user:ID` holds a user's location as JSON (the session id as a
//! string: Lua numbers are doubles); `mortar:CLUSTER:session:gateway:ID` is the set of users bound
//! on a gateway, for purging it; `mortar:CLUSTER:session:generation` a random token set by the
//! first node that finds it missing: a server restarted empty (or flushed) lost it with the
//! logins, so a new token tells the gateways to restore theirs. Each operation is one Lua script, so it is atomic: a bind swaps
//! the location and moves the user between gateway sets in one step.

use super::{Location, SessionError, SessionStore};
use mortar_abi::future::BoxFuture;
use redis::{Script, aio::ConnectionManager};
use serde::{Deserialize, Serialize};
use std::{
    borrow::Cow,
    fmt::Write as _,
    sync::{Arc, LazyLock},
    time::Duration,
};

/// `KEYS[1]` user key, `KEYS[2]` its new gateway's set; `ARGV[1]` the location, `ARGV[2]` its
/// gateway, `ARGV[3]` the user id, `ARGV[4]` the gateway-set key prefix. Returns the old location.
static BIND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local old = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[3])
if old then
  local ok, previous = pcall(cjson.decode, old)
  if ok and previous.gateway ~= ARGV[2] then
    redis.call('SREM', ARGV[4] .. previous.gateway, ARGV[3])
  end
end
return old
",
    )
});

/// `KEYS[1]` user key, `KEYS[2]` the gateway's set; `ARGV[1]` gateway, `ARGV[2]` session, `ARGV[3]`
/// user id. Returns 1 when it removed the location.
static UNBIND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
local ok, location = pcall(cjson.decode, current)
if ok and location.gateway == ARGV[1] and location.session == ARGV[2] then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[3])
  return 1
end
return 0
",
    )
});

/// `KEYS[1]` the gateway's set, `KEYS[2]` the generation key; `ARGV[1]` the user-key prefix,
/// `ARGV[2]` the gateway, `ARGV[3]` the session id below which its locations go (decimal, compared
/// as strings by length first: exact for every u64). Returns how many locations it removed. Removing any also drops the
/// generation: a gateway taken for gone while it lives (its registry entry lost with a Redis
/// restarted empty) then restores its players' logins, as after any loss.
static PURGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local removed = 0
local below = ARGV[3]
for _, user in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[1] .. user
  local current = redis.call('GET', key)
  local keep = false
  if current then
    local ok, location = pcall(cjson.decode, current)
    if ok and location.gateway == ARGV[2] then
      local session = location.session
      if #session < #below or (#session == #below and session < below) then
        redis.call('DEL', key)
        removed = removed + 1
      else
        keep = true
      end
    end
  end
  if not keep then redis.call('SREM', KEYS[1], user) end
end
if removed > 0 then redis.call('DEL', KEYS[2]) end
return removed
",
    )
});

/// `KEYS[1]` user key, `KEYS[2]` the gateway's set; `ARGV[1]` the location, `ARGV[2]` its
/// gateway, `ARGV[3]` its session, `ARGV[4]` the user id. Sets the location only if the user has
/// none; returns the user's other location, or nothing.
static RESTORE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local current = redis.call('GET', KEYS[1])
if current then
  local ok, location = pcall(cjson.decode, current)
  if ok and location.gateway == ARGV[2] and location.session == ARGV[3] then
    redis.call('SADD', KEYS[2], ARGV[4])
    return false
  end
  return current
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[4])
return false
",
    )
});

/// `KEYS[1]` the generation key; `ARGV[1]` a new token. Returns the token, setting it if missing.
static GENERATION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local current = redis.call('GET', KEYS[1])
if current then return current end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
",
    )
});

/// A location as stored; read without copying its strings (a push reads a thousand at once).
#[derive(Serialize, Deserialize)]
struct Stored<'a> {
    #[serde(borrow)]
    gateway: Cow<'a, str>,
    #[serde(borrow)]
    session: Cow<'a, str>,
    login_at_ms: u64,
}

/// The session store in a Redis server; cheap to clone.
#[derive(Clone)]
pub struct RedisSessions {
    shared: Arc<Shared>,
}

struct Shared {
    conn: ConnectionManager,
    users: String,
    gateways: String,
    generation: String,
    timeout: Duration,
}

impl RedisSessions {
    /// Connects to `url` for cluster `cluster`, each command with the deadline `timeout`.
    ///
    /// # Errors
    /// `Unavailable` when the server cannot be reached.
    pub async fn connect(url: &str, cluster: &str, timeout: Duration) -> Result<Self, SessionError> {
        let (_, conn) = crate::redis_setup::connect(url, timeout)
            .await
            .map_err(|reason| SessionError::Unavailable(format!("session store {url}: {reason}")))?;
        let prefix = format!("mortar:{cluster}:session:");
        let shared = Shared {
            conn,
            users: format!("{prefix}user:"),
            gateways: format!("{prefix}gateway:"),
            generation: format!("{prefix}generation"),
            timeout,
        };
        Ok(Self { shared: Arc::new(shared) })
    }

    fn run<T: Send + 'static>(
        &self,
        invocation: impl FnOnce(&Shared, ConnectionManager) -> BoxFuture<redis::RedisResult<T>>,
    ) -> BoxFuture<Result<T, SessionError>> {
        let shared = self.shared.clone();
        let call = invocation(&shared, shared.conn.clone());
        Box::pin(async move {
            crate::redis_setup::run(shared.timeout, call).await.map_err(SessionError::Unavailable)
        })
    }
}

fn encode(location: &Location) -> String {
    let stored = Stored {
        gateway: Cow::Borrowed(&location.gateway),
        session: Cow::Owned(location.session.to_string()),
        login_at_ms: location.login_at_ms,
    };
    serde_json::to_string(&stored).unwrap_or_default()
}

fn decode(text: &[u8]) -> Result<Location, SessionError> {
    let stored: Stored =
        serde_json::from_slice(text).map_err(|error| SessionError::Corrupt(error.to_string()))?;
    let session =
        stored.session.parse().map_err(|_| SessionError::Corrupt(format!("session {:?}", stored.session)))?;
    Ok(Location { gateway: stored.gateway.into_owned(), session, login_at_ms: stored.login_at_ms })
}

impl SessionStore for RedisSessions {
    fn bind(&self, user: u64, location: Location) -> BoxFuture<Result<Option<Location>, SessionError>> {
        let call = self.run(move |shared, mut conn| {
            let mut invocation = BIND.prepare_invoke();
            invocation
                .key(format!("{}{user}", shared.users))
                .key(format!("{}{}", shared.gateways, location.gateway))
                .arg(encode(&location))
                .arg(&location.gateway)
                .arg(user)
                .arg(&shared.gateways);
            Box::pin(async move { invocation.invoke_async::<Option<Vec<u8>>>(&mut conn).await })
        });
        Box::pin(async move { call.await?.map(|old: Vec<u8>| decode(&old)).transpose() })
    }

    fn unbind(&self, user: u64, gateway: String, session: u64) -> BoxFuture<Result<bool, SessionError>> {
        self.run(move |shared, mut conn| {
            let mut invocation = UNBIND.prepare_invoke();
            invocation
                .key(format!("{}{user}", shared.users))
                .key(format!("{}{gateway}", shared.gateways))
                .arg(&gateway)
                .arg(session.to_string())
                .arg(user);
            Box::pin(
                async move { invocation.invoke_async::<i64>(&mut conn).await.map(|removed| removed == 1) },
            )
        })
    }

    fn locate(&self, users: Vec<u64>) -> BoxFuture<Result<Vec<Option<Location>>, SessionError>> {
        if users.is_empty() {
            return Box::pin(std::future::ready(Ok(Vec::new())));
        }
        let call = self.run(move |shared, mut conn| {
            // The command keeps its arguments in one buffer: one key buffer reused, not a String
            // per user.
            let mut mget = redis::cmd("MGET");
            let mut key = shared.users.clone();
            for user in &users {
                key.truncate(shared.users.len());
                let _ = write!(key, "{user}");
                mget.arg(key.as_str());
            }
            Box::pin(async move { mget.query_async::<Vec<Option<Vec<u8>>>>(&mut conn).await })
        });
        Box::pin(async move {
            call.await?.into_iter().map(|found| found.map(|text| decode(&text)).transpose()).collect()
        })
    }

    fn restore(&self, user: u64, location: Location) -> BoxFuture<Result<Option<Location>, SessionError>> {
        let call = self.run(move |shared, mut conn| {
            let mut invocation = RESTORE.prepare_invoke();
            invocation
                .key(format!("{}{user}", shared.users))
                .key(format!("{}{}", shared.gateways, location.gateway))
                .arg(encode(&location))
                .arg(&location.gateway)
                .arg(location.session.to_string())
                .arg(user);
            Box::pin(async move { invocation.invoke_async::<Option<Vec<u8>>>(&mut conn).await })
        });
        Box::pin(async move { call.await?.map(|held: Vec<u8>| decode(&held)).transpose() })
    }

    fn generation(&self) -> BoxFuture<Result<String, SessionError>> {
        self.run(move |shared, mut conn| {
            // A fresh RandomState's keys: a random token without a dependency (as `jitter`).
            let random =
                std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8);
            let token = format!("{random:016x}");
            let mut invocation = GENERATION.prepare_invoke();
            invocation.key(&shared.generation).arg(token);
            Box::pin(async move { invocation.invoke_async::<String>(&mut conn).await })
        })
    }

    fn purge_gateway(&self, gateway: String, below: u64) -> BoxFuture<Result<usize, SessionError>> {
        self.run(move |shared, mut conn| {
            let mut invocation = PURGE.prepare_invoke();
            invocation
                .key(format!("{}{gateway}", shared.gateways))
                .key(&shared.generation)
                .arg(&shared.users)
                .arg(&gateway)
                .arg(below.to_string());
            Box::pin(async move { invocation.invoke_async::<usize>(&mut conn).await })
        })
    }
}
