//! The user and pack modules across a cluster of processes: two gateways and two workers sharing
//! MongoDB (nx-27017) and Redis; and a worker killed with `kill -9` under load, restarted on its
//! embedded store, losing no acknowledged change.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod support;

use mortar_cli::client::{Client, ClientError};
use mortar_pack::pack::{Item, QueryReq, QueryResp, UseReq, UseResp};
use mortar_pb::{ErrorCode, Kick};
use mortar_user::user::{LoginReq, LoginResp, RegisterReq, RegisterResp, ResumeReq, ResumeResp};
use prost::Message;
use std::time::Duration;
use support::{Mongo, Node, Redis, TempDir, call, wait_live};

fn credentials(account: &str) -> (String, String) {
    (account.to_owned(), format!("{account}-password"))
}

async fn register(client: &mut Client, account: &str) -> Result<u64, i32> {
    let (account, password) = credentials(account);
    call::<_, RegisterResp>(client, "user.register", RegisterReq { account, password })
        .await
        .map(|r| r.user_id)
}

async fn login(url: &str, account: &str) -> (Client, LoginResp) {
    let mut client = Client::connect(url).await.unwrap();
    let (account, password) = credentials(account);
    let resp = call(&mut client, "user.login", LoginReq { account, password }).await.unwrap();
    (client, resp)
}

async fn items(client: &mut Client) -> Vec<Item> {
    call::<_, QueryResp>(client, "pack.query", QueryReq {}).await.unwrap().items
}

fn count(items: &[Item], item: u32) -> u32 {
    items.iter().find(|i| i.item_id == item).map_or(0, |i| i.count)
}

async fn kicked(client: &mut Client) {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), client.next()).await.expect("kicked in time") {
            Ok(msg) if msg.main_type == "sys" && msg.sub_type == "kick" => {
                assert_eq!(Kick::decode(msg.data).unwrap().reason, ErrorCode::LoggedInElsewhere as i32);
                return;
            }
            Ok(_) => {}
            Err(ClientError::Closed(close)) => panic!("closed without sys.kick: {close:?}"),
            Err(error) => panic!("{error}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_logins_and_packs_across_gateways_and_workers_on_mongodb() {
    let (redis, mongo, dir) = (Redis::start(), Mongo::start(), TempDir::new("players"));
    let (redis_url, mongo_url) = (redis.url(), mongo.url("game"));
    let env = [
        ("MORTAR_REGISTRY__URL", redis_url.as_str()),
        ("MORTAR_SESSION__URL", redis_url.as_str()),
        ("MORTAR_CACHE__URL", redis_url.as_str()),
        ("MORTAR_STORAGE__URL", mongo_url.as_str()),
        ("MORTAR_MODULES__USER__ARGON2_MEMORY_KIB", "1024"),
        ("MORTAR_MODULES__USER__ARGON2_ITERATIONS", "1"),
    ];
    let workers = [
        support::worker(&dir, "worker-1", "127.0.0.1:0", "", &env),
        support::worker(&dir, "worker-2", "127.0.0.1:0", "", &env),
    ];
    let gateways =
        [support::gateway(&dir, "gateway-1", "", &env), support::gateway(&dir, "gateway-2", "", &env)];
    gateways.iter().for_each(|gateway| wait_live(gateway, 2));
    let (url1, url2) = (gateways[0].addr.clone(), gateways[1].addr.clone());

    let mut guest = Client::connect(&url1).await.unwrap();
    let ana = register(&mut guest, "ana").await.unwrap();
    let mut other = Client::connect(&url2).await.unwrap();
    assert_eq!(
        register(&mut other, "ana").await,
        Err(ErrorCode::AlreadyExists as i32),
        "one account name, cluster-wide"
    );
    let wrong = LoginReq { account: "ana".into(), password: "not-the-password".into() };
    assert_eq!(
        call::<_, LoginResp>(&mut other, "user.login", wrong).await.map(|r| r.user_id),
        Err(ErrorCode::PermissionDenied as i32)
    );

    let (mut first, login1) = login(&url1, "ana").await;
    assert_eq!(login1.user_id, ana);
    let starter = items(&mut first).await;
    assert_eq!((count(&starter, 1), count(&starter, 100)), (500, 5), "the starter items: {starter:?}");
    let used: UseResp = call(&mut first, "pack.use", UseReq { item_id: 100, count: 2 }).await.unwrap();
    assert_eq!(used.remaining, 3);

    // A login through the other gateway kicks the first session; the starter items stay granted once.
    let (mut second, login2) = login(&url2, "ana").await;
    kicked(&mut first).await;
    assert_eq!(count(&items(&mut second).await, 100), 3);
    assert_eq!(count(&items(&mut second).await, 1), 500);

    // The old token was revoked; the new one resumes through gateway 1 and kicks gateway 2's session.
    let mut third = Client::connect(&url1).await.unwrap();
    let old = ResumeReq { token: login1.token };
    assert_eq!(
        call::<_, ResumeResp>(&mut third, "user.resume", old).await.map(|r| r.user_id),
        Err(ErrorCode::PermissionDenied as i32)
    );
    let resumed: ResumeResp =
        call(&mut third, "user.resume", ResumeReq { token: login2.token }).await.unwrap();
    assert_eq!(resumed.user_id, ana);
    kicked(&mut second).await;
    assert_eq!(count(&items(&mut third).await, 100), 3);
    drop((workers, gateways));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_under_load_loses_no_acknowledged_use() {
    let (redis, dir) = (Redis::start(), TempDir::new("players-kill"));
    let tables = dir.0.join("tables");
    std::fs::create_dir_all(&tables).unwrap();
    std::fs::write(tables.join("starter_items.json"), r#"[{"id": 1, "item_id": 100, "count": 900}]"#)
        .unwrap();
    let (redis_url, tables_path) = (redis.url(), tables.to_str().unwrap().to_owned());
    let env = [
        ("MORTAR_REGISTRY__URL", redis_url.as_str()),
        ("MORTAR_SESSION__URL", redis_url.as_str()),
        ("MORTAR_REGISTRY__TTL_MS", "1000"),
        ("MORTAR_REGISTRY__HEARTBEAT_MS", "200"),
        ("MORTAR_TABLES__PATH", tables_path.as_str()),
        ("MORTAR_MODULES__USER__ARGON2_MEMORY_KIB", "1024"),
        ("MORTAR_MODULES__USER__ARGON2_ITERATIONS", "1"),
    ];
    let worker = support::worker(&dir, "worker-1", "127.0.0.1:0", "", &env);
    let gateway = support::gateway(&dir, "gateway-1", "", &env);
    wait_live(&gateway, 1);
    let url = gateway.addr.clone();

    // Four players use one potion at a time until their worker dies.
    let mut players = Vec::new();
    for n in 0..4 {
        let account = format!("killed_{n}");
        register(&mut Client::connect(&url).await.unwrap(), &account).await.unwrap();
        let (client, _) = login(&url, &account).await;
        players.push(client);
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loads: Vec<_> = players
        .into_iter()
        .map(|mut client| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut acknowledged = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match call::<_, UseResp>(&mut client, "pack.use", UseReq { item_id: 100, count: 1 }).await
                    {
                        Ok(used) => {
                            acknowledged += 1;
                            assert_eq!(used.remaining, 900 - acknowledged, "one use at a time");
                        }
                        Err(code) => {
                            assert!(
                                code == ErrorCode::Unavailable as i32 || code == ErrorCode::Timeout as i32,
                                "{code}"
                            );
                            break;
                        }
                    }
                }
                (client, acknowledged)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    worker.signal("KILL");
    let addr = worker.addr.clone();
    drop(worker);
    let mut results = Vec::new();
    for load in loads {
        results.push(load.await.unwrap());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);

    // Restarted on the same data directory and address, the worker has every acknowledged use.
    let _worker = support::worker(&dir, "worker-1", &addr, "", &env);
    wait_live(&gateway, 1);
    for (mut client, acknowledged) in results {
        assert!(acknowledged > 0, "the load ran before the kill");
        let left = loop {
            match call::<_, QueryResp>(&mut client, "pack.query", QueryReq {}).await {
                Ok(resp) => break count(&resp.items, 100),
                Err(code) if code == ErrorCode::Unavailable as i32 => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(code) => panic!("pack.query answered {code}"),
            }
        };
        // The one use in flight when the worker died may or may not have been written.
        assert!(
            left == 900 - acknowledged || left == 900 - acknowledged - 1,
            "{acknowledged} acknowledged, {left} left"
        );
    }
}

#[test]
fn sighup_reloads_the_tables_and_a_refused_reload_keeps_the_loaded_ones() {
    let dir = TempDir::new("sighup");
    let tables = dir.0.join("tables");
    std::fs::create_dir_all(&tables).unwrap();
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../conf/tables/items.json");
    std::fs::copy(shipped, tables.join("items.json")).unwrap();
    let tables_path = tables.to_str().unwrap().to_owned();
    let env = [
        ("MORTAR_TABLES__PATH", tables_path.as_str()),
        ("MORTAR_TABLES__POLL_MS", "0"),
        ("MORTAR_ADMIN__ENABLED", "false"),
    ];
    let node = Node::start("dev", &dir, &["dev", "--listen", "127.0.0.1:0", "--data", "data"], &env);
    let wait_for = |text: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !node.log().contains(text) {
            assert!(std::time::Instant::now() < deadline, "no `{text}` in the log:\n{}", node.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    std::fs::write(
        tables.join("items.json"),
        r#"[{"id": 1, "name": "Gold", "kind": "gold", "max_stack": 9, "usable": false}]"#,
    )
    .unwrap();
    node.signal("HUP");
    wait_for("game config tables not reloaded: keeping the loaded ones");
    assert!(node.log().contains("items.json row 1: unknown variant `gold`"), "{}", node.log());
    std::fs::copy(shipped, tables.join("items.json")).unwrap();
    node.signal("HUP");
    wait_for("game config tables reloaded why=\"SIGHUP\"");
    let mut node = node;
    assert_eq!(node.child.try_wait().unwrap(), None, "SIGHUP does not stop the node");
}
