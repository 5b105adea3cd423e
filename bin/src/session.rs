//! `mortar client --session`: one player's connection driven line by line, from a script or a
//! prompt.
//!
//! Each input line is `ROUTE JSON` (`user.login {"account":"ana","password":"…"}`; the JSON may
//! be left out for `{}`); empty lines and lines starting with `#` are skipped. The requests are
//! sent in order on one connection, each after the previous one's reply. Every reply and every
//! push is printed as one JSON line, `{"route":…,"seq":…,"code":…,"data":…}` (a push has seq
//! 0; a failed reply may add the server's `"reason":…`), so a shell script can log in and act as
//! one player. A line that cannot be sent (an
//! unknown route, JSON that does not fit) prints `{"line":…,"error":…}` and the session goes on.
//! When stdin is a terminal a `mortar> ` prompt is shown on stderr and pushes are printed as they
//! arrive, also while the prompt waits.
//!
//! The session ends:
//! 1. at the end of the input, after `linger` more time for pushes;
//! 2. when the server closes the connection (a kick, a shutdown: its `sys.kick` is printed first);
//! 3. when a reply does not come within `timeout` (an error).

use crate::client::{self, Client, ClientError, Contract};
use std::{io::IsTerminal as _, time::Duration};
use tokio::sync::mpsc;

/// How a session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The input ended.
    Input,
    /// The server closed the connection, with this close reason.
    Closed(Option<String>),
}

/// Why a session failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The connection could not be made or failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A reply did not come in time.
    #[error("no reply to `{0}` within the timeout")]
    Timeout(String),
}

/// Runs a session on `url` with lines from `input`, printing each reply and push through
/// `print` (see the module docs).
///
/// # Errors
/// When the connection fails, or a reply does not come within `timeout`.
pub async fn run(
    url: &str,
    mut input: mpsc::Receiver<String>,
    timeout: Duration,
    linger: Duration,
    prompt: bool,
    mut print: impl FnMut(serde_json::Value),
) -> Result<Ended, SessionError> {
    let mut client = Client::connect(url).await?;
    let mut contract = Contract::linked();
    contract.add_from_gateway(&mut client).await?;
    loop {
        if prompt {
            eprint!("mortar> ");
        }
        let line = tokio::select! {
            line = input.recv() => line,
            msg = client.next() => match msg {
                Ok(msg) => {
                    print(contract.reply_json(&msg, true));
                    continue;
                }
                Err(ClientError::Closed(reason)) => return Ok(Ended::Closed(reason)),
                Err(error) => return Err(error.into()),
            },
        };
        let Some(line) = line else { break };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (route, json) = line.split_once(char::is_whitespace).unwrap_or((line, "{}"));
        let prepared = client::split_route(route)
            .and_then(|(main, sub)| Ok((main, sub, contract.encode_request(main, sub, json.trim())?)));
        let (main, sub, body) = match prepared {
            Ok(prepared) => prepared,
            Err(error) => {
                print(serde_json::json!({ "line": line, "error": with_causes(&error) }));
                continue;
            }
        };
        let seq = client.send(main, sub, body).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let msg = match tokio::time::timeout_at(deadline, client.next()).await {
                Err(_) => return Err(SessionError::Timeout(route.to_owned())),
                Ok(Err(ClientError::Closed(reason))) => return Ok(Ended::Closed(reason)),
                Ok(msg) => msg?,
            };
            print(contract.reply_json(&msg, true));
            if msg.seq == seq {
                break;
            }
        }
    }
    // The input ended: pushes that come within `linger` are still printed.
    let until = tokio::time::Instant::now() + linger;
    while let Ok(msg) = tokio::time::timeout_at(until, client.next()).await {
        match msg {
            Ok(msg) => print(contract.reply_json(&msg, true)),
            Err(ClientError::Closed(reason)) => return Ok(Ended::Closed(reason)),
            Err(error) => return Err(error.into()),
        }
    }
    let _ = client.close().await;
    Ok(Ended::Input)
}

/// `error` and its causes, `: `-separated.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

/// The lines of stdin, read on a thread of their own; and whether stdin is a terminal.
pub fn stdin_lines() -> (mpsc::Receiver<String>, bool) {
    let (lines, receiver) = mpsc::channel(64);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if lines.blocking_send(line).is_err() {
                break;
            }
        }
    });
    (receiver, std::io::stdin().is_terminal())
}
