//! What we ship is what we test: the README's cluster commands, run as written on the example
//! files of `conf/`, in a copy of the repository's `conf/` where `target/release/mortar` is the
//! binary under test. The only changes to the lines: the addresses of Redis and MongoDB are the
//! test's own servers (nx-27017 as MongoDB), and the two limits a load from one address needs
//! are off (`MORTAR_GATEWAY__MAX_CONNECTIONS_PER_IP=0`, `MORTAR_GATEWAY__RATE_PER_SEC=0`).
//!
//! Then players do what players do: register, log in, see their starter items, befriend, chat in
//! a group, log in twice; with a worker killed, they log in again and find the same pack. And a
//! cluster that would split a module's documents over two embedded stores refuses.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod support;

use mortar_cli::client::Client;
use mortar_friend::friend::{self, Target};
use mortar_group::group::{CreateReq, CreateResp, Done, GroupReq, Said, SayReq};
use mortar_pack::pack::{QueryReq, QueryResp};
use mortar_pb::{ErrorCode, Kick};
use mortar_user::user::{LoginReq, LoginResp, RegisterReq, RegisterResp};
use prost::Message as _;
use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};
use support::{Mongo, Node, Redis, TempDir, call, push_of};

/// The example files bind fixed ports: their tests take turns.
static EXAMPLE_PORTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Where the example gateway serves clients (`conf/gateway_1.toml`).
const URL: &str = "ws://127.0.0.1:4000/ws";

/// The limits a test from one address switches off, as the contract allows.
const NO_LIMITS: [(&str, &str); 2] =
    [("MORTAR_GATEWAY__MAX_CONNECTIONS_PER_IP", "0"), ("MORTAR_GATEWAY__RATE_PER_SEC", "0")];

/// The ```sh blocks of the README.
fn readme_blocks() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let mut blocks = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "```sh" {
            let block: Vec<&str> = lines.by_ref().take_while(|line| line.trim() != "```").collect();
            blocks.push(block.join("\n"));
        }
    }
    blocks
}

/// The README block that starts the example cluster with (`shared`) or without MongoDB.
fn cluster_block(shared: bool) -> String {
    readme_blocks()
        .into_iter()
        .find(|block| block.contains("conf/worker_1.toml") && block.contains("MORTAR_STORAGE__URL") == shared)
        .expect("the README shows the example cluster")
}

/// A copy of `conf/`, with `target/release/mortar` the binary under test.
fn example_dir() -> TempDir {
    let dir = TempDir::new("example");
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf");
    copy_dir(&conf, &dir.0.join("conf"));
    std::fs::create_dir_all(dir.0.join("target/release")).unwrap();
    std::os::unix::fs::symlink(support::MORTAR, dir.0.join("target/release/mortar")).unwrap();
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// One `mortar` command line of a block: its environment, program and arguments, and whether
/// it runs in the background (`&`).
struct Line {
    env: Vec<(String, String)>,
    program: String,
    args: Vec<String>,
    background: bool,
}

/// The `mortar` command lines of `block`, with `replace` applied (other lines, such as `cargo
/// build` and `redis-server`, are what the test does itself).
fn mortar_lines(block: &str, replace: &[(&str, &str)]) -> Vec<Line> {
    block
        .lines()
        .map(|line| line.split(" #").next().unwrap_or("").trim())
        .filter(|line| line.contains("target/release/mortar ") && !line.starts_with('#'))
        .map(|line| {
            let line = replace.iter().fold(line.to_owned(), |line, (from, to)| line.replace(from, to));
            assert!(!line.contains(['\'', '"', '$']), "a plain command line: {line}");
            let background = line.ends_with('&');
            let mut words = line.trim_end_matches('&').split_whitespace().map(str::to_owned).peekable();
            let mut env = Vec::new();
            while let Some((key, value)) = words.peek().and_then(|word| word.split_once('=')) {
                env.push((key.to_owned(), value.to_owned()));
                words.next();
            }
            let program = words.next().unwrap();
            Line { env, program, args: words.collect(), background }
        })
        .collect()
}

/// Runs `lines` in `dir`, each background one with `extra` in its environment too: the nodes,
/// and what the foreground lines printed.
fn run(dir: &TempDir, lines: &[Line], extra: &[(&str, &str)]) -> (Vec<Node>, Vec<String>) {
    let (mut nodes, mut printed) = (Vec::new(), Vec::new());
    for line in lines {
        let env: Vec<(&str, &str)> = line
            .env
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .chain(NO_LIMITS)
            .chain(extra.iter().copied())
            .collect();
        let args: Vec<&str> = line.args.iter().map(String::as_str).collect();
        if line.background {
            let name = args
                .iter()
                .find(|arg| arg.ends_with(".toml"))
                .map_or("node", |conf| conf.trim_start_matches("conf/").trim_end_matches(".toml"));
            nodes.push(Node::try_start_program(&line.program, name, dir, &args, &env).unwrap());
        } else {
            let output = Command::new(dir.0.join(&line.program))
                .args(&args)
                .current_dir(&dir.0)
                .envs(env.iter().copied())
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            assert!(
                output.status.success(),
                "{} {args:?}: {stdout}{}",
                line.program,
                String::from_utf8_lossy(&output.stderr)
            );
            printed.push(stdout);
        }
    }
    (nodes, printed)
}

fn password(account: &str) -> String {
    format!("{account}-password")
}

async fn register(account: &str) -> u64 {
    let mut client = Client::connect(URL).await.unwrap();
    let req = RegisterReq { account: account.into(), password: password(account) };
    call::<_, RegisterResp>(&mut client, "user.register", req).await.unwrap().user_id
}

async fn login(account: &str) -> Client {
    let mut client = Client::connect(URL).await.unwrap();
    let req = LoginReq { account: account.into(), password: password(account) };
    let reply = call::<_, LoginResp>(&mut client, "user.login", req).await;
    assert!(reply.is_ok(), "{account} logs in: {reply:?}");
    client
}

async fn starter_items(client: &mut Client) -> Vec<(u32, u32)> {
    let pack: QueryResp = call(client, "pack.query", QueryReq {}).await.unwrap();
    pack.items.iter().map(|item| (item.item_id, item.count)).collect()
}

/// Counts the pushes of `route` that arrive within `wait`.
async fn pushes_of(client: &mut Client, route: &str, wait: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + wait;
    let mut count = 0;
    while let Ok(Ok(msg)) = tokio::time::timeout_at(deadline, client.next()).await {
        count += usize::from(msg.seq == 0 && format!("{}.{}", msg.main_type, msg.sub_type) == route);
    }
    count
}

/// What the contract says players see in the example cluster: 20 players register and log in,
/// each sees their starter items, a friend request reaches its player, a group message reaches
/// each member once, a second login kicks the first, and a new connection logs in with the
/// password registered, whichever worker served the registration. Returns each player's items.
async fn players_play(tag: &str) -> Vec<(String, Vec<(u32, u32)>)> {
    let accounts: Vec<String> = (0..20).map(|n| format!("{tag}{n:02}")).collect();
    let mut ids = Vec::new();
    for account in &accounts {
        ids.push(register(account).await);
    }
    let mut players = Vec::new();
    let mut packs = Vec::new();
    for account in &accounts {
        let mut client = login(account).await;
        let items = starter_items(&mut client).await;
        assert!(!items.is_empty(), "{account} has starter items");
        packs.push((account.clone(), items));
        players.push(client);
    }

    // A friend request from A reaches B.
    let (a, b) = (ids[0], ids[1]);
    let _: friend::Request = call(&mut players[0], "friend.request", Target { user_id: b }).await.unwrap();
    let asked = friend::Request::decode(push_of(&mut players[1], "friend.request").await.data).unwrap();
    assert_eq!(asked.user_id, a);
    assert!(asked.name.starts_with("Player"), "a default display name, not the account: {}", asked.name);

    // A group of five: a message reaches every member once, the sender included.
    let created: CreateResp =
        call(&mut players[2], "group.create", CreateReq { name: "Raid".into() }).await.unwrap();
    for member in &mut players[3..7] {
        let _: Done = call(member, "group.join", GroupReq { group_id: created.group_id }).await.unwrap();
    }
    let body = SayReq { group_id: created.group_id, text: "go".into() }.encode_to_vec();
    let mut before_reply = 0;
    let reply = players[2]
        .request("group", "say", body.into(), |push| {
            before_reply += usize::from(push.main_type == "group" && push.sub_type == "message");
        })
        .await
        .unwrap();
    assert_eq!(reply.code, 0);
    let wait = Duration::from_millis(1500);
    assert_eq!(
        before_reply + pushes_of(&mut players[2], "group.message", wait).await,
        1,
        "the sender hears it once"
    );
    for member in &mut players[3..7] {
        let said = Said::decode(push_of(member, "group.message").await.data).unwrap();
        assert_eq!(said.text, "go");
        assert_eq!(pushes_of(member, "group.message", Duration::from_millis(300)).await, 0, "once");
    }

    // A second login of A kicks the first.
    let _again = login(&accounts[0]).await;
    let kick = push_of(&mut players[0], "sys.kick").await;
    assert_eq!(Kick::decode(kick.data).unwrap().reason, ErrorCode::LoggedInElsewhere as i32);

    // Every player logs in on a new connection with the password registered.
    drop(players);
    for account in &accounts {
        drop(login(account).await);
    }
    packs
}

/// Waits (at most 20 s) until the example gateway's `/readyz` says a worker is connected and its
/// metrics say `live` are.
fn wait_workers(live: usize) {
    let admin = "127.0.0.1:9100".parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let want = format!("mortar_gateway_workers_live {live}\n");
    while !support::http_get(admin, "/metrics").1.contains(&want) {
        assert!(Instant::now() < deadline, "the gateway never had {live} live workers");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_example_cluster_serves_players_with_no_other_server() {
    let _ports = EXAMPLE_PORTS.lock().await;
    let dir = example_dir();
    let (nodes, printed) = run(&dir, &mortar_lines(&cluster_block(false), &[]), &[]);
    assert_eq!(nodes.len(), 3, "two workers and a gateway");
    assert!(printed.iter().all(|out| out.contains("\"code\":\"OK\"")), "{printed:?}");
    wait_workers(2);
    players_play("ex").await;
    for node in &nodes {
        let log = node.log();
        assert!(!log.contains(" ERROR "), "{} logged an error:\n{log}", node.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_replicated_cluster_keeps_players_through_a_dead_worker() {
    let _ports = EXAMPLE_PORTS.lock().await;
    let (redis, mongo, dir) = (Redis::start(), Mongo::start(), example_dir());
    let (redis_url, mongo_url) = (redis.url(), mongo.url("game"));
    let replace = [
        ("redis://127.0.0.1:6379", redis_url.as_str()),
        ("mongodb://127.0.0.1:27017/game", mongo_url.as_str()),
    ];
    let lines = mortar_lines(&cluster_block(true), &replace);
    let (mut nodes, _) = run(&dir, &lines, &[]);
    assert_eq!(nodes.len(), 3, "two workers and a gateway");
    wait_workers(2);
    let packs = players_play("rep").await;

    // Worker 1 dies: every player logs in again and finds the same pack, on worker 2.
    let worker_1 = nodes.iter_mut().find(|node| node.name == "worker_1").unwrap();
    worker_1.signal("KILL");
    assert!(worker_1.wait_exit(Duration::from_secs(5)).is_some());
    wait_workers(1);
    for (account, items) in &packs {
        let mut client = login(account).await;
        assert_eq!(&starter_items(&mut client).await, items, "{account}'s pack");
    }
}

/// Two workers from the example files told to serve `user` both, each with its embedded store,
/// and the gateway: within 15 s of the gateway's start one worker exits 1 naming `storage.url`,
/// and every `user.register` and `user.login` lands on the other. `env` is given to all three.
async fn a_split_module_is_refused(env: &[(&str, &str)]) {
    let dir = example_dir();
    let lines = mortar_lines(&cluster_block(false), &[]);
    let user_only = [("MORTAR_WORKER__MODULES", "[\"user\"]")];
    let worker_env: Vec<(&str, &str)> = env.iter().chain(&user_only).copied().collect();
    let (mut workers, _) = run(&dir, &lines[..2], &worker_env);
    let (gateway, _) = run(&dir, &lines[2..3], env);
    let started = Instant::now();
    let refused = loop {
        if let Some(index) =
            workers.iter_mut().position(|worker| worker.wait_exit(Duration::from_millis(50)).is_some())
        {
            break index;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "no worker refused to split `user`");
    };
    let code = workers[refused].wait_exit(Duration::from_secs(1));
    assert_eq!(code, Some(1));
    assert!(workers[refused].log().contains("storage.url"), "{}", workers[refused].log());
    wait_workers(1);
    assert!(workers[1 - refused].wait_exit(Duration::ZERO).is_none(), "the other worker serves on");
    for n in 0..10 {
        let account = format!("split{n}");
        register(&account).await;
        drop(login(&account).await);
    }
    drop(gateway);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_embedded_workers_of_one_module_are_refused_with_the_static_registry() {
    let _ports = EXAMPLE_PORTS.lock().await;
    a_split_module_is_refused(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_embedded_workers_of_one_module_are_refused_with_the_redis_registry() {
    let _ports = EXAMPLE_PORTS.lock().await;
    let redis = Redis::start();
    let url = redis.url();
    a_split_module_is_refused(&[("MORTAR_REGISTRY__URL", url.as_str())]).await;
}
