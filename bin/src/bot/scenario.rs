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
    /// Codes besides OK that a setup step may get and go on (`ALREADY_EXISTS` for a register
    /// on a second run).
    pub also_ok: &'static [&'static str],
}

impl Step {
    /// `route` with the body `json`.
    pub fn new(route: &str, json: String) -> Self {
        Self { route: route.into(), json, also_ok: &[] }
    }
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
        Some(Step::new("echo.say", json))
    }
}

/// The account and password of bot client `client`.
fn account(client: usize) -> serde_json::Value {
    serde_json::json!({ "account": format!("bot_{client}"), "password": format!("bot-password-{client}") })
}

/// The steps that give bot client `client` its account (kept from an earlier run) and log it in.
fn registered_and_logged_in(client: usize) -> Vec<Step> {
    let register =
        Step { also_ok: &["ALREADY_EXISTS"], ..Step::new("user.register", account(client).to_string()) };
    vec![register, Step::new("user.login", account(client).to_string())]
}

/// `login`: registers once (an account kept from an earlier run is fine), then `user.login` again
/// and again: what a login costs (argon2 sets the pace).
pub struct Login;

impl Scenario for Login {
    fn name(&self) -> &'static str {
        "login"
    }

    fn setup(&self, client: usize) -> Vec<Step> {
        registered_and_logged_in(client)
    }

    fn step(&self, client: usize) -> Option<Step> {
        Some(Step::new("user.login", account(client).to_string()))
    }
}

/// `pack`: registers and logs in once, then `pack.use` of one item (`--item`: one the table
/// marks usable, whose starter count lasts the run) again and again: a compare-and-set write of
/// the player's pack per request.
pub struct Pack {
    /// The item to use.
    pub item: u32,
}

impl Scenario for Pack {
    fn name(&self) -> &'static str {
        "pack"
    }

    fn setup(&self, client: usize) -> Vec<Step> {
        registered_and_logged_in(client)
    }

    fn step(&self, _client: usize) -> Option<Step> {
        Some(Step::new("pack.use", serde_json::json!({ "itemId": self.item, "count": 1 }).to_string()))
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
pub fn by_name(name: &str, payload: usize, item: u32) -> Result<Box<dyn Scenario>, BotError> {
    match name {
        "echo" => Ok(Box::new(Echo { payload })),
        "idle" => Ok(Box::new(Idle)),
        "login" => Ok(Box::new(Login)),
        "pack" => Ok(Box::new(Pack { item })),
        "push" => Err(BotError::Scenario("the push scenario runs through `bot::run_push`".into())),
        "match" => Err(BotError::Scenario("the match scenario runs through `bot::run_match`".into())),
        other => Err(BotError::Scenario(format!(
            "unknown scenario `{other}`; available: echo, idle, login, pack, push, match"
        ))),
    }
}
