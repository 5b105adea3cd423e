//! The store's conformance suite against a MongoDB wire-protocol server started by the test
//! (nx-27017; see docs/storage.md for what it does and does not do like `mongod`), and a worker
//! node on it.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod support;

use mortar_node::config::StorageConfig;

use mortar_backends::storage;
use support::Mongo;

fn config(url: String) -> StorageConfig {
    StorageConfig { url, ..StorageConfig::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_store_conforms() {
    let mongo = Mongo::start();
    let store = storage::open(&config(mongo.url("conformance"))).await.unwrap();
    storage::conformance::run(store).await;
}

#[tokio::test]
async fn an_unreachable_server_or_a_uri_without_database_stops_the_start() {
    let port = support::free_port();
    let mut unreachable =
        config(format!("mongodb://user:hunter2@127.0.0.1:{port}/game?directConnection=true"));
    unreachable.timeout_ms = 300;
    let error = storage::open(&unreachable).await.err().expect("nothing listens there").to_string();
    assert!(error.contains(&port.to_string()) && !error.contains("hunter2"), "{error}");

    let mongo = Mongo::start();
    let error = storage::open(&config(format!("mongodb://127.0.0.1:{}/?directConnection=true", mongo.port)))
        .await
        .err()
        .expect("no database named")
        .to_string();
    assert!(error.contains("names no database"), "{error}");
}

#[test]
fn a_worker_runs_on_mongodb_and_refuses_to_start_without_it() {
    let mongo = Mongo::start();
    let dir = support::TempDir::new("mongo-worker");
    let url = mongo.url("game");
    let worker =
        support::worker(&dir, "worker-1", "127.0.0.1:0", "", &[("MORTAR_STORAGE__URL", url.as_str())]);
    assert!(worker.addr.starts_with("127.0.0.1:"), "the readiness line came: {}", worker.addr);
    drop(worker);

    let gone = format!("mongodb://127.0.0.1:{}/game?directConnection=true", support::free_port());
    let conf = support::node_conf(&dir, "worker-2", "[storage]\ntimeout_ms = 300\n");
    let env = [("MORTAR_STORAGE__URL", gone.as_str()), ("MORTAR_ADMIN__ENABLED", "false")];
    let args = ["worker", "--conf", conf.to_str().unwrap(), "--rpc-listen", "127.0.0.1:0"];
    let error =
        support::Node::try_start("worker-2", &dir, &args, &env).err().expect("the worker refuses to start");
    assert!(error.contains("exit Some(1)") && error.contains("storage.url"), "{error}");
}

/// Registered by its derive, so the store creates its unique index when it opens.
#[derive(serde::Serialize, serde::Deserialize, mortar::Document)]
#[document(collection = "registered_account", index(unique = "name"))]
struct RegisteredAccount {
    name: String,
}

#[tokio::test]
async fn declared_indexes_exist_from_the_start() {
    let mongo = Mongo::start();
    let backend = storage::open(&config(mongo.url("declared"))).await.unwrap();
    // Before any use of the collection, the server has its index: asked with pymongo, which
    // nx-27017's virtual environment has.
    let nx = std::env::var("MORTAR_TEST_NX_27017").unwrap_or_else(|_| "nx-27017".into());
    let python = std::path::Path::new(&nx).with_file_name("python");
    let script = format!(
        "import pymongo; c = pymongo.MongoClient('127.0.0.1', {}, directConnection=True); \
         print([list(i['key'].keys()) for i in c['declared']['registered_account'].list_indexes()])",
        mongo.port
    );
    let out = std::process::Command::new(&python).args(["-c", &script]).output().expect("python runs");
    let indexes = String::from_utf8_lossy(&out.stdout);
    assert!(indexes.contains("'name'"), "indexes: {indexes} {}", String::from_utf8_lossy(&out.stderr));
    let accounts = mortar::store::Store::<RegisteredAccount>::new(backend);
    accounts.insert(1, RegisteredAccount { name: "ann".into() }).await.unwrap();
    let clash = accounts.insert(2, RegisteredAccount { name: "ann".into() }).await;
    assert_eq!(clash.err(), Some(mortar::store::StoreError::AlreadyExists { index: Some("name".into()) }));
}

/// Display names on MongoDB: unique by their case-insensitive key through the store's partial
/// unique index, and accounts written before names had keys (no `name_key`, several at once)
/// neither clash with each other nor keep their account name as their name after a login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn display_names_are_unique_case_insensitively_on_mongodb() {
    use mortar_cli::client::Client;
    use mortar_user::{
        Account,
        user::{LoginReq, LoginResp, RegisterReq, RegisterResp, RenameReq, RenameResp},
    };
    let mongo = Mongo::start();
    let dir = support::TempDir::new("mongo-names");
    let url = mongo.url("game");
    let env = [("MORTAR_STORAGE__URL", url.as_str()), ("MORTAR_ADMIN__ENABLED", "false")];
    let node = support::Node::start("dev", &dir, &["dev", "--listen", "127.0.0.1:0"], &env);
    let login = |account: &'static str| {
        let url = node.addr.clone();
        async move {
            let mut client = Client::connect(&url).await.unwrap();
            let req = LoginReq { account: account.into(), password: "password1".into() };
            let resp: LoginResp = support::call(&mut client, "user.login", req).await.unwrap();
            (client, resp)
        }
    };
    let mut guest = Client::connect(&node.addr).await.unwrap();
    for account in ["ana", "bob"] {
        let req = RegisterReq { account: account.into(), password: "password1".into() };
        let _: RegisterResp = support::call(&mut guest, "user.register", req).await.unwrap();
    }
    let (mut ana, _) = login("ana").await;
    let (mut bob, _) = login("bob").await;
    let rename = |name: &str| RenameReq { name: name.into() };
    let _: RenameResp = support::call(&mut ana, "user.rename", rename("Ana")).await.unwrap();
    let clash = support::call::<_, RenameResp>(&mut bob, "user.rename", rename("ＡＮＡ")).await;
    assert_eq!(clash.err(), Some(mortar_pb::ErrorCode::AlreadyExists as i32));

    // Both accounts as an older version wrote them: no key, the account name as the name.
    let store = mortar::store::Store::<Account>::new(storage::open(&config(url.clone())).await.unwrap());
    for account in ["ana", "bob"] {
        let found = store.find_one("account", account).await.unwrap().unwrap();
        store
            .update(found.id, |doc| {
                doc.name = account.into();
                doc.name_key = None;
                Ok(())
            })
            .await
            .unwrap();
    }
    let (_ana, ana_again) = login("ana").await;
    let (mut bob, bob_again) = login("bob").await;
    assert_eq!(ana_again.name, format!("Player{:08}", ana_again.user_id % 100_000_000));
    assert_eq!(bob_again.name, format!("Player{:08}", bob_again.user_id % 100_000_000));
    // Ana's new default name has its key in the unique index; Bob cannot take hers.
    let holder =
        store.find_one("name_key", &ana_again.name.to_lowercase()).await.unwrap().map(|found| found.id);
    assert_eq!(holder, Some(ana_again.user_id));
    let renamed: RenameResp = support::call(&mut bob, "user.rename", rename("Ana")).await.unwrap();
    assert_eq!(renamed.name, "Ana");
    let (mut ana, _) = login("ana").await;
    let clash = support::call::<_, RenameResp>(&mut ana, "user.rename", rename("ANA")).await;
    assert_eq!(clash.err(), Some(mortar_pb::ErrorCode::AlreadyExists as i32));
}
