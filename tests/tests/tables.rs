//! Game config tables through the pack module's `items.json`, in `mortar dev`: a changed file is
//! reloaded, a refused one keeps the loaded table, and each node has its own rows.
#![allow(clippy::unwrap_used)]

use mortar_cli::client::Client;
use mortar_pack::pack::{UseReq, UseResp};
use mortar_pb::ErrorCode;
use mortar_tests::{DevNode, echo_body};
use std::time::Duration;

async fn player(node: &DevNode, user: u64) -> Client {
    let mut client = Client::connect(&node.url()).await.unwrap();
    let reply = client.request("testkit", "login", echo_body(&user.to_string()), |_| {}).await.unwrap();
    assert_eq!(reply.code, 0);
    client
}

async fn grant(client: &mut Client, text: &str) -> i32 {
    client.request("testkit", "grant", echo_body(text), |_| {}).await.unwrap().code
}

async fn use_item(client: &mut Client, item_id: u32, count: u32) -> Result<u32, i32> {
    let used: Result<UseResp, i32> = client.call("pack.use", &UseReq { item_id, count }).await.unwrap();
    used.map(|used| used.remaining)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_items_table_is_reloaded_and_a_refused_one_keeps_the_old() {
    let tables = mortar_tests::temp_dir("tables");
    std::fs::create_dir_all(&tables).unwrap();
    let file = tables.join("items.json");
    let items = |usable: bool| {
        format!(
            r#"[{{"id": 100, "name": "Small Potion", "kind": "consumable", "max_stack": 999, "usable": {usable}}}]"#
        )
    };
    std::fs::write(&file, items(true)).unwrap();
    // The user module's starter items may name only items of this table.
    std::fs::write(tables.join("starter_items.json"), r#"[{"id": 1, "item_id": 100, "count": 1}]"#).unwrap();
    let node = DevNode::with_config(|config| {
        config.tables.path = tables.clone();
        config.tables.poll_ms = 100;
    })
    .await;
    let mut player = player(&node, 11).await;
    assert_eq!(grant(&mut player, "0|start|100:10").await, 0);
    assert_eq!(use_item(&mut player, 100, 1).await, Ok(9));
    // Only the node's own file counts: the built-in table's other items are not there.
    assert_eq!(grant(&mut player, "0|gold|1:1").await, ErrorCode::BadRequest as i32);

    // A file with an unknown field is refused: the loaded table stays.
    std::fs::write(
        &file,
        r#"[{"id": 100, "name": "x", "kind": "consumable", "max_stack": 9, "usable": false, "colour": 1}]"#,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(use_item(&mut player, 100, 1).await, Ok(8), "the old table stays");

    // A valid change is picked up.
    std::fs::write(&file, items(false)).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while use_item(&mut player, 100, 1).await != Err(ErrorCode::BadRequest as i32) {
        assert!(tokio::time::Instant::now() < deadline, "the new table was not loaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(node);
    let _ = std::fs::remove_dir_all(&tables);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_naming_an_item_no_table_has_stops_the_start() {
    let tables = mortar_tests::temp_dir("tables-refs");
    std::fs::create_dir_all(&tables).unwrap();
    std::fs::write(
        tables.join("starter_items.json"),
        r#"[{"id": 1, "item_id": 100, "count": 1}, {"id": 2, "item_id": 999, "count": 1}]"#,
    )
    .unwrap();
    let mut config = mortar_node::NodeConfig::default();
    config.storage.path = mortar_tests::temp_dir("tables-refs-data");
    config.tables.path = tables.clone();
    let listeners = mortar_node::Listeners {
        gateway: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        admin: None,
    };
    let error = mortar_node::dev::run(config, listeners, || {}, std::future::pending()).await.unwrap_err();
    let _ = std::fs::remove_dir_all(&tables);
    assert!(
        error.to_string().contains("starter_items.json row 2: item_id 999 is not in items.json"),
        "{error}"
    );
}

/// Table rows belong to the node: two nodes in one process, one reading a folder where potions
/// cannot be used, each answer `pack.use` by their own `items.json`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_in_one_process_each_read_their_own_tables() {
    let tables = mortar_tests::temp_dir("tables-own");
    std::fs::create_dir_all(&tables).unwrap();
    std::fs::write(
        tables.join("items.json"),
        r#"[{"id": 100, "name": "Small Potion", "kind": "consumable", "max_stack": 999, "usable": false}]"#,
    )
    .unwrap();
    std::fs::write(tables.join("starter_items.json"), r#"[{"id": 1, "item_id": 100, "count": 1}]"#).unwrap();
    let own = DevNode::with_config(|config| config.tables.path = tables.clone()).await;
    let built_in = DevNode::start().await;
    for (node, expected) in [(&own, Err(ErrorCode::BadRequest as i32)), (&built_in, Ok(9))] {
        let mut player = player(node, 12).await;
        assert_eq!(grant(&mut player, "0|start|100:10").await, 0);
        assert_eq!(use_item(&mut player, 100, 1).await, expected);
    }
    drop((own, built_in));
    let _ = std::fs::remove_dir_all(&tables);
}
