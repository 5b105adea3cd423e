//! Helpers for tests that run the real `mortar` binary: node processes, a cluster of them, and a
//! Redis server. Everything started here is killed when its handle drops, also when a test fails.
#![allow(dead_code, clippy::unwrap_used)] // each test file uses its own part

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// The binary under test.
pub(crate) const MORTAR: &str = env!("CARGO_BIN_EXE_mortar");

/// The secret of the test clusters.
pub(crate) const SECRET: &str = "test-cluster-secret";

/// A directory of its own under the temp dir, removed on drop.
pub(crate) struct TempDir(pub PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("mortar-{name}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub(crate) fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `mortar` process, killed on drop. Its stderr goes to a file, shown when a test fails.
pub(crate) struct Node {
    pub child: Child,
    /// The readiness line's address: `ws://…/ws` of a gateway, `HOST:PORT` of a worker.
    pub addr: String,
    /// The admin listener, when the log said where it is.
    pub admin: Option<SocketAddr>,
    pub name: String,
    log: PathBuf,
}

impl Node {
    /// Starts `mortar ARGS` with `env`, and waits (at most 20 s) for its readiness line.
    pub(crate) fn start(name: &str, dir: &TempDir, args: &[&str], env: &[(&str, &str)]) -> Node {
        Self::try_start(name, dir, args, env).unwrap_or_else(|error| panic!("{error}"))
    }

    /// Like [`Node::start`], but a node that exits before its readiness line is an error carrying
    /// its exit code and stderr.
    pub(crate) fn try_start(
        name: &str,
        dir: &TempDir,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Node, String> {
        Self::try_start_program(MORTAR, name, dir, args, env)
    }

    /// Like [`Node::try_start`], running `program` (a path relative to `dir` works) instead of
    /// the binary under test.
    pub(crate) fn try_start_program(
        program: &str,
        name: &str,
        dir: &TempDir,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Node, String> {
        let log = dir.0.join(format!("{name}.log"));
        let program = if program.contains('/') && !program.starts_with('/') {
            dir.0.join(program).to_string_lossy().into_owned()
        } else {
            program.to_owned()
        };
        let mut child = Command::new(program)
            .args(args)
            .current_dir(&dir.0)
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
        let addr = if let Some(url) = line.trim().strip_prefix("mortar: gateway listening on ") {
            url.to_owned()
        } else if let Some(rest) = line.trim().strip_prefix("mortar: worker ") {
            rest.split_once(" listening on tcp://").map(|(_, addr)| addr.to_owned()).unwrap_or_default()
        } else {
            let _ = child.kill();
            let status = child.wait().ok().and_then(|status| status.code());
            return Err(format!("{name} did not start (exit {status:?}, line {line:?}):\n{}", read_log()));
        };
        let admin = read_log().lines().find_map(|line| {
            line.split("admin listening on http://").nth(1)?.strip_suffix("/metrics")?.parse().ok()
        });
        Ok(Node { child, addr, admin, name: name.to_owned(), log })
    }

    /// Sends `signal` (`TERM`, `KILL`, `STOP`, `CONT`).
    pub(crate) fn signal(&self, signal: &str) {
        let status =
            Command::new("kill").args([&format!("-{signal}"), &self.child.id().to_string()]).status();
        assert!(status.unwrap().success(), "kill -{signal} {}", self.name);
    }

    /// Waits (at most `within`) for the process to exit; its exit code.
    pub(crate) fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident memory now, in KiB (Linux).
    pub(crate) fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|line| line.starts_with("VmRSS:")).expect("VmRSS in /proc/PID/status");
        line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("VmRSS in KiB")
    }

    /// What the node has logged so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path` on the admin listener: status and body.
    pub(crate) fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin.expect("the node logged its admin address"), path)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // A stopped process must be continued to die from anything but SIGKILL; KILL works.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- log of {} ----\n{}", self.name, self.log());
        }
    }
}

/// `GET path` over plain HTTP/1.1: status and body.
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}

/// `METHOD path` with `body` (JSON) and, when given, `Authorization: Bearer TOKEN`, over plain
/// HTTP/1.1: status and body.
pub(crate) fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let auth = token.map(|token| format!("Authorization: Bearer {token}\r\n")).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}

/// A free loopback port (bound, then released: good enough for a test's own servers).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A config file for a cluster node `id`: the test secret and `extra` TOML.
pub(crate) fn node_conf(dir: &TempDir, id: &str, extra: &str) -> PathBuf {
    let text =
        format!("[node]\nid = \"{id}\"\nworker_threads = 2\n[cluster]\nsecret = \"{SECRET}\"\n{extra}");
    dir.file(&format!("{id}.toml"), &text)
}

/// Every listener on a free port, and no per-client limits (the tests are one IP sending fast).
const TEST_ENV: [(&str, &str); 5] = [
    ("MORTAR_GATEWAY__LISTEN", "127.0.0.1:0"),
    ("MORTAR_GATEWAY__RPC_LISTEN", "127.0.0.1:0"),
    ("MORTAR_GATEWAY__RATE_PER_SEC", "0"),
    ("MORTAR_GATEWAY__MAX_CONNECTIONS_PER_IP", "0"),
    ("MORTAR_ADMIN__LISTEN", "127.0.0.1:0"),
];

/// A worker process `id` with `extra` config, its RPC on `rpc` (`127.0.0.1:0` for any port).
pub(crate) fn worker(dir: &TempDir, id: &str, rpc: &str, extra: &str, env: &[(&str, &str)]) -> Node {
    let conf = node_conf(dir, id, extra);
    let env: Vec<_> = TEST_ENV.iter().chain(env).copied().collect();
    let data = dir.0.join(format!("{id}-data"));
    let args =
        ["worker", "--conf", conf.to_str().unwrap(), "--rpc-listen", rpc, "--data", data.to_str().unwrap()];
    Node::start(id, dir, &args, &env)
}

/// A gateway process `id` with `extra` config.
pub(crate) fn gateway(dir: &TempDir, id: &str, extra: &str, env: &[(&str, &str)]) -> Node {
    let conf = node_conf(dir, id, extra);
    let env: Vec<_> = TEST_ENV.iter().chain(env).copied().collect();
    Node::start(id, dir, &["gateway", "--conf", conf.to_str().unwrap()], &env)
}

/// The `[registry]` section listing `workers` statically.
pub(crate) fn static_registry(workers: &[&Node]) -> String {
    let nodes: Vec<String> =
        workers.iter().map(|w| format!("{{ id = \"{}\", addr = \"{}\" }}", w.name, w.addr)).collect();
    format!("[registry]\nurl = \"static\"\nnodes = [{}]\n", nodes.join(", "))
}

/// A Redis server of the test's own on a free loopback port, killed on drop.
pub(crate) struct Redis {
    child: Option<Child>,
    pub port: u16,
}

impl Redis {
    /// Starts `redis-server` (scripts/test.sh installs it) and waits until it answers.
    pub(crate) fn start() -> Redis {
        let mut redis = Redis { child: None, port: free_port() };
        redis.restart();
        redis
    }

    /// `redis://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (its data is gone: nothing is saved).
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty.
    pub(crate) fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.command("PING").as_deref() != Some("+PONG") {
            assert!(Instant::now() < deadline, "redis-server did not answer on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends one inline command; the first line of the answer.
    pub(crate) fn command(&self, command: &str) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(stream, "{command}\r\n").ok()?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).ok()?;
        Some(line.trim_end().to_owned())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A MongoDB wire-protocol server of the test's own, `nx-27017` (scripts/test.sh installs it into
/// a virtual environment and names it in `MORTAR_TEST_NX_27017`), in memory, on a free port;
/// killed on drop.
pub(crate) struct Mongo {
    child: Child,
    pub port: u16,
    _dir: TempDir,
}

impl Mongo {
    /// Starts the server and waits until it accepts connections.
    pub(crate) fn start() -> Mongo {
        let program = std::env::var("MORTAR_TEST_NX_27017").unwrap_or_else(|_| "nx-27017".into());
        let dir = TempDir::new("nx");
        let port = free_port();
        let child = Command::new(&program)
            .args(["--db", "memory", "--host", "127.0.0.1", "-p", &port.to_string()])
            .arg("--pid-file")
            .arg(dir.0.join("nx.pid"))
            .arg("--log-file")
            .arg(dir.0.join("nx.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("{program} runs (scripts/test.sh installs nx-27017): {error}"));
        let mongo = Mongo { child, port, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nx-27017 did not listen on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        mongo
    }

    /// A URI naming database `db`.
    pub(crate) fn url(&self, db: &str) -> String {
        format!("mongodb://127.0.0.1:{}/{db}?directConnection=true", self.port)
    }
}

impl Drop for Mongo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test module's library (`tests/dynamic`, a dev-dependency of `bin`), as cargo built it for
/// this test run, beside the test binary.
pub(crate) fn library() -> PathBuf {
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_owned();
    let name = format!("{}mortar_dynamic_test{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
    let path = deps.join(&name);
    assert!(
        path.is_file(),
        "{} was not built (is mortar-dynamic-test a dev-dependency of bin?)",
        path.display()
    );
    path
}

/// Waits (at most 20 s) until the gateway's metrics say it has `live` workers connected.
pub(crate) fn wait_live(gateway: &Node, live: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let want = format!("mortar_gateway_workers_live {live}\n");
    loop {
        let (_, metrics) = gateway.admin_get("/metrics");
        if metrics.contains(&want) {
            return;
        }
        assert!(Instant::now() < deadline, "{} never had {live} live workers:\n{metrics}", gateway.name);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `client.call(route, req)` within 15 s: the reply, or its code.
pub(crate) async fn call<Req: prost::Message, Resp: prost::Message + Default>(
    client: &mut mortar_cli::client::Client,
    route: &str,
    req: Req,
) -> Result<Resp, i32> {
    tokio::time::timeout(Duration::from_secs(15), client.call(route, &req))
        .await
        .expect("a reply in time")
        .unwrap()
}

/// Reads until a push of `route` arrives on `client` (within 10 s); other messages are dropped.
pub(crate) async fn push_of(client: &mut mortar_cli::client::Client, route: &str) -> mortar_pb::UserMessage {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let msg = tokio::time::timeout_at(deadline, client.next()).await.expect("the push in time").unwrap();
        if msg.seq == 0 && format!("{}.{}", msg.main_type, msg.sub_type) == route {
            return msg;
        }
    }
}

/// The remote ports of process `pid`'s established TCP connections over IPv4 (its sockets, found
/// through /proc/PID/fd, looked up in /proc/net/tcp).
pub(crate) fn established_remote_ports(pid: u32) -> Vec<u16> {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
                .filter_map(|target| {
                    let target = target.to_string_lossy().into_owned();
                    Some(target.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (remote, state, inode) = (fields.get(2)?, fields.get(3)?, fields.get(9)?);
            let established = *state == "01";
            let port = u16::from_str_radix(remote.rsplit(':').next()?, 16).ok()?;
            (established && inodes.contains(*inode)).then_some(port)
        })
        .collect()
}
