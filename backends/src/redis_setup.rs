//! The one way mortar connects to Redis, shared by the registry and the cache: a multiplexed,
//! reconnecting connection (`redis::aio::ConnectionManager`) with a deadline on connecting and
//! on every command.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::{future::Future, time::Duration};

/// A connection to the server at `url`, and the client (for pub/sub connections).
///
/// # Errors
/// A URL that does not parse, or a server that does not answer within `timeout`.
pub async fn connect(url: &str, timeout: Duration) -> Result<(redis::Client, ConnectionManager), String> {
    let client = redis::Client::open(url).map_err(|error| error.to_string())?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1);
    let conn = tokio::time::timeout(timeout, client.get_connection_manager_with_config(config))
        .await
        .map_err(|_| format!("no answer within {} ms", timeout.as_millis()))?
        .map_err(|error| error.to_string())?;
    Ok((client, conn))
}

/// Runs one command with the deadline `timeout`; a failure as text.
///
/// # Errors
/// The server's error, or no answer in time.
pub async fn run<T>(
    timeout: Duration,
    command: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, command).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}
