//! The `mortar` command, whole: `mortar dev` runs a whole node in one process; `mortar gateway`
//! and `mortar worker` run the nodes of a cluster; `mortar client` sends one request and prints
//! the reply; `mortar bot` loads a gateway; `mortar version` names the ABI fingerprint.

use crate::client::{self, Client, Contract};
use anyhow::Context as _;
use clap::{Parser, Subcommand};
use mortar_node::NodeConfig;
use mortar_node::{Listeners, gateway::GatewayListeners, worker::WorkerListeners};
use std::{
    io::IsTerminal as _, io::Write as _, net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration,
};
use tokio::net::TcpListener;

/// Log filter when `RUST_LOG` is unset. tarpc opens an info-level span for every RPC (formatting
/// its fields costs about as much as a small request), warns when an in-process client hangs up at
/// shutdown, which is expected, and logs every missed deadline as an error; mortar logs each
/// failed relay itself, with the session and trace id, so tarpc's own lines are off.
const DEFAULT_LOG: &str = "info,tarpc=off";

#[derive(Parser)]
#[command(name = "mortar", version, about = "A game-server host made of modules")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a gateway and a worker with every module in one process (no external servers).
    Dev {
        /// Node config file (TOML); every key has a default, so none is needed.
        #[arg(long)]
        conf: Option<PathBuf>,
        /// Address for WebSocket clients, overriding `gateway.listen` (port 0 picks a free port).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Directory of the embedded store, overriding `storage.path`.
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Send one request and print the reply as JSON (exits 1 when the reply's code is not OK);
    /// with `--session`, send the `ROUTE JSON` lines of stdin in order on one connection and print
    /// every reply and push as a JSON line (a prompt when stdin is a terminal).
    Client {
        /// The gateway's WebSocket URL.
        #[arg(long, default_value = "ws://127.0.0.1:4000/ws")]
        url: String,
        /// Seconds to wait for the reply (more than 0, at most 86400).
        #[arg(long, default_value_t = 10.0, value_parser = parse_timeout)]
        timeout: f64,
        /// Print pushes that arrive before the reply (to stderr).
        #[arg(long)]
        show_pushes: bool,
        /// Read `ROUTE JSON` lines from stdin and send them in order on one connection; each reply
        /// and push is printed as `{"route":…,"seq":…,"code":…,"data":…}`. Exits 0 at the end of
        /// the input, 2 when the server closed the connection, 1 on an error.
        #[arg(long, conflicts_with_all = ["route", "show_pushes"])]
        session: bool,
        /// With `--session`: seconds to keep printing pushes after the last line's reply.
        #[arg(long, default_value_t = 0.0, value_parser = parse_linger, requires = "session")]
        linger: f64,
        /// The route, `main.sub` (e.g. `echo.say`).
        #[arg(required_unless_present = "session")]
        route: Option<String>,
        /// The request as JSON, in the proto3 JSON mapping of the route's request type.
        #[arg(default_value = "{}")]
        json: String,
    },
    /// Load a gateway with N WebSocket clients running a scenario; report throughput, errors by
    /// code and latency percentiles.
    Bot(Box<crate::bot::BotOptions>),
    /// Run a gateway node of a cluster: holds clients, relays to workers found in the registry.
    Gateway {
        /// Node config file (TOML).
        #[arg(long)]
        conf: Option<PathBuf>,
        /// Address for WebSocket clients, overriding `gateway.listen` (port 0 picks a free port).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Run a worker node of a cluster: serves the modules its config enables to gateways.
    Worker {
        /// Node config file (TOML).
        #[arg(long)]
        conf: Option<PathBuf>,
        /// Address of the worker's RPC service, overriding `worker.listen` (port 0 picks a free
        /// port).
        #[arg(long)]
        rpc_listen: Option<SocketAddr>,
        /// Directory of the embedded store, overriding `storage.path`.
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Print the version, the ABI fingerprint a module library must carry to be loaded by this
    /// binary, and the modules linked into it.
    Version,
    /// Print the routes of the modules linked into this binary as one JSON document, for client
    /// generators (clients/ts): `{"routes":[{"route","access","request","reply","key"?}]}`, sorted
    /// by route; `access` is `client` (logged-in players), `public` or `internal` (modules only);
    /// `key`, the request field a route is routed by (`#[handler(…, key = field)]`).
    Routes,
}

/// Runs the `mortar` command with this process's arguments, and every module linked into the
/// program: the stock `mortar` binary is this and the repository's modules. A game's own binary
/// links its module crates beside `mortar-cli` and calls it (docs/writing-a-module.md, "Linked into
/// a binary of your own"):
///
/// ```no_run
/// use greet as _; // linked: its module, routes and protos register themselves
///
/// fn main() -> std::process::ExitCode {
///     mortar_cli::main()
/// }
/// # mod greet {}
/// ```
pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in files or CI logs.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("mortar: {}", describe(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each said once: libraries often repeat their source's
/// text in their own message ("IO error: Connection refused", then "Connection refused").
fn describe(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// `--timeout`: a finite number of seconds, more than 0 and at most a day.
fn parse_timeout(text: &str) -> Result<f64, String> {
    let seconds: f64 = text.parse().map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if seconds.is_finite() && seconds > 0.0 && seconds <= 86_400.0 {
        Ok(seconds)
    } else {
        Err(format!("{text} is out of range: give more than 0 and at most 86400 seconds"))
    }
}

/// `--linger`: a finite number of seconds, 0 to an hour.
fn parse_linger(text: &str) -> Result<f64, String> {
    let seconds: f64 = text.parse().map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if seconds.is_finite() && (0.0..=3_600.0).contains(&seconds) {
        Ok(seconds)
    } else {
        Err(format!("{text} is out of range: give 0 to 3600 seconds"))
    }
}

/// How often the runtime threads of `mortar bot` and `mortar client` take a task from the shared
/// queue; see `node.global_queue_interval` (the bot measures latency, so it must serve its
/// clients fairly).
const CLIENT_GLOBAL_QUEUE_INTERVAL: u32 = 2;

/// A multi-thread runtime with `threads` workers (0: one per CPU core), each taking a task from
/// the shared queue every `global_queue_interval` tasks.
fn runtime(threads: usize, global_queue_interval: u32) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if threads > 0 {
        builder.worker_threads(threads);
    }
    builder.global_queue_interval(global_queue_interval);
    builder.enable_all().build().context("cannot start the async runtime")
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Dev { conf, listen, data } => {
            let mut config = NodeConfig::load(conf.as_deref())?;
            if let Some(listen) = listen {
                config.gateway.listen = listen;
            }
            if let Some(data) = data {
                config.storage.path = data;
            }
            runtime(config.node.worker_threads, config.node.global_queue_interval)?.block_on(dev(config))
        }
        Command::Client { url, timeout, session: true, linger, .. } => {
            let (lines, prompt) = crate::session::stdin_lines();
            let timeout = Duration::from_secs_f64(timeout);
            let linger = Duration::from_secs_f64(linger);
            let print = |line: serde_json::Value| println!("{line}");
            let ended = runtime(1, CLIENT_GLOBAL_QUEUE_INTERVAL)?
                .block_on(crate::session::run(&url, lines, timeout, linger, prompt, print))?;
            if prompt {
                eprintln!();
            }
            match ended {
                crate::session::Ended::Input => Ok(ExitCode::SUCCESS),
                crate::session::Ended::Closed(reason) => {
                    eprintln!("mortar: the server closed the connection: {}", reason.unwrap_or_default());
                    Ok(ExitCode::from(2))
                }
            }
        }
        Command::Client { url, timeout, show_pushes, route, json, .. } => {
            let route = route.unwrap_or_default();
            let (main, sub) = client::split_route(&route)?;
            let mut contract = Contract::linked();
            // A route this binary knows is checked before connecting; others are looked up in
            // the protos the gateway serves.
            let known =
                contract.knows(main, sub).then(|| contract.encode_request(main, sub, &json)).transpose()?;
            let exchange = async {
                let mut client =
                    Client::connect(&url).await.with_context(|| format!("cannot connect to {url}"))?;
                let body = match known {
                    Some(body) => body,
                    None => {
                        contract.add_from_gateway(&mut client).await?;
                        contract.encode_request(main, sub, &json)?
                    }
                };
                let reply = client
                    .request(main, sub, body, |push| {
                        if show_pushes {
                            eprintln!("{}", contract.reply_json(&push, true));
                        }
                    })
                    .await?;
                client.close().await?;
                anyhow::Ok((reply, contract))
            };
            let (reply, contract) = runtime(1, CLIENT_GLOBAL_QUEUE_INTERVAL)?
                .block_on(async { tokio::time::timeout(Duration::from_secs_f64(timeout), exchange).await })
                .with_context(|| format!("no reply within {timeout} s"))??;
            println!("{}", contract.reply_json(&reply, false));
            Ok(if reply.code == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Version => {
            println!("mortar {}", env!("CARGO_PKG_VERSION"));
            println!("ABI fingerprint: {}", mortar::abi::dynamic::FINGERPRINT);
            println!(
                "A module library (worker.dynamic_modules) loads only when its fingerprint is this one: built against the same mortar-abi source (this mortar's checkout or release, with its Cargo.lock), by the same rustc, for the same target. See docs/dynamic-modules.md."
            );
            println!("Linked modules: {}", crate::modules::names().join(", "));
            Ok(ExitCode::SUCCESS)
        }
        Command::Routes => {
            println!("{}", crate::modules::routes_json());
            Ok(ExitCode::SUCCESS)
        }
        Command::Bot(options) => {
            let options = *options;
            let runtime = runtime(options.threads, CLIENT_GLOBAL_QUEUE_INTERVAL)?;
            match options.scenario.as_str() {
                "push" => println!("{}", runtime.block_on(crate::bot::run_push(options))?),
                "match" => println!("{}", runtime.block_on(crate::bot::run_match(options))?),
                _ => println!("{}", runtime.block_on(crate::bot::run(options))?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Gateway { conf, listen } => {
            let mut config = NodeConfig::load(conf.as_deref())?;
            if let Some(listen) = listen {
                config.gateway.listen = listen;
            }
            runtime(config.node.worker_threads, config.node.global_queue_interval)?.block_on(gateway(config))
        }
        Command::Worker { conf, rpc_listen, data } => {
            let mut config = NodeConfig::load(conf.as_deref())?;
            if let Some(rpc_listen) = rpc_listen {
                config.worker.listen = rpc_listen;
            }
            if let Some(data) = data {
                config.storage.path = data;
            }
            runtime(config.node.worker_threads, config.node.global_queue_interval)?.block_on(worker(config))
        }
    }
}

/// Binds `addr` for `what`, saying which key sets it when that fails.
async fn bind(addr: SocketAddr, what: &str, key: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("cannot listen for {what} on {addr} (set {key})"))
}

/// The admin listener, when enabled; logs its address. Installs the metrics recorder only then:
/// `/metrics` is the one way to read what it records, and the admin server is what drains its
/// histograms (with nobody draining them, every request's latency sample would be kept).
async fn admin_listener(config: &NodeConfig) -> anyhow::Result<Option<TcpListener>> {
    if !config.admin.enabled {
        return Ok(None);
    }
    mortar_telemetry::metrics::install();
    let admin = bind(config.admin.listen, "admin", "admin.listen or admin.enabled = false").await?;
    tracing::info!("admin listening on http://{}/metrics", admin.local_addr()?);
    Ok(Some(admin))
}

/// Prints a readiness line on stdout, at once.
fn ready_line(line: String) {
    println!("{line}");
    let _ = std::io::stdout().flush();
}

/// `mortar gateway`: binds the listeners, prints the readiness line once it serves, runs until
/// Ctrl-C/SIGTERM.
async fn gateway(config: NodeConfig) -> anyhow::Result<ExitCode> {
    let clients = bind(config.gateway.listen, "clients", "gateway.listen or --listen").await?;
    let rpc = bind(config.gateway.rpc_listen, "workers", "gateway.rpc_listen").await?;
    let admin = admin_listener(&config).await?;
    let line = format!("mortar: gateway listening on ws://{}/ws", clients.local_addr()?);
    let listeners = GatewayListeners { clients, rpc, admin };
    mortar_node::gateway::run(config, listeners, || ready_line(line), shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// `mortar worker`: binds the listeners, prints the readiness line once registered, runs until
/// Ctrl-C/SIGTERM.
async fn worker(config: NodeConfig) -> anyhow::Result<ExitCode> {
    let rpc = bind(config.worker.listen, "gateways", "worker.listen or --rpc-listen").await?;
    let admin = admin_listener(&config).await?;
    let line = format!("mortar: worker {} listening on tcp://{}", config.node.id, rpc.local_addr()?);
    let listeners = WorkerListeners { rpc, admin };
    mortar_node::worker::run(config, listeners, || ready_line(line), shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// `mortar dev`: binds the listeners, prints the readiness line and runs until Ctrl-C/SIGTERM.
async fn dev(config: NodeConfig) -> anyhow::Result<ExitCode> {
    let gateway = bind(config.gateway.listen, "clients", "gateway.listen or --listen").await?;
    let admin = admin_listener(&config).await?;
    let line = format!("mortar: gateway listening on ws://{}/ws", gateway.local_addr()?);
    let listeners = Listeners { gateway, admin };
    mortar_node::dev::run(config, listeners, || ready_line(line), shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
