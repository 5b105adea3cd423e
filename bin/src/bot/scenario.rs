//! Scenarios: what each bot client does. A scenario is a small type: the requests a client sends
//! once after connecting, and the request it then repeats. Requests are routes with JSON bodies,
//! so one scenario serves every wire protocol.

use super::BotError;

/// One request of a scenario.
#[derive(Clone, Debug)]
pub struct Step {
    /// The route (`main.sub` for mortar; Pinus routes are `server.handler.method`).
    pub route: String,
    /// The body as JSON (the proto3 JSON mapping of the route's request type for mortar).
    pub json: String,
}

/// What one bot client does.
pub trait Scenario: Send + Sync {
    /// The scenario's name, as given to `--scenario`.
    fn name(&self) -> &'static str;

    /// Requests sent once, in order, after connecting and before the measured run (e.g. login).
    fn setup(&self, _client: usize) -> Vec<Step> {
        Vec::new()
    }

    /// The request the client repeats during the run; None holds the connection idle (only
    /// heartbeats are sent).
    fn step(&self, client: usize) -> Option<Step>;
}

/// `echo`: `echo.say` with a text of `payload` bytes, again and again.
pub struct Echo {
    /// Bytes of text per request.
    pub payload: usize,
}

impl Scenario for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }

    fn step(&self, _client: usize) -> Option<Step> {
        let json = serde_json::json!({ "text": "x".repeat(self.payload) }).to_string();
        Some(Step { route: "echo.say".into(), json })
    }
}

/// `idle`: connect and hold, sending only heartbeats (for memory measurements).
pub struct Idle;

impl Scenario for Idle {
    fn name(&self) -> &'static str {
        "idle"
    }

    fn step(&self, _client: usize) -> Option<Step> {
        None
    }
}

/// The scenario called `name`.
///
/// # Errors
/// An unknown name, listing the known ones.
pub fn by_name(name: &str, payload: usize) -> Result<Box<dyn Scenario>, BotError> {
    match name {
        "echo" => Ok(Box::new(Echo { payload })),
        "idle" => Ok(Box::new(Idle)),
        "login" => Err(BotError::Scenario(
            "the `login` scenario arrives with the user and pack modules; available: echo, idle, push".into(),
        )),
        "push" => Err(BotError::Scenario("the push scenario runs through `bot::run_push`".into())),
        other => Err(BotError::Scenario(format!("unknown scenario `{other}`; available: echo, idle, push"))),
    }
}
