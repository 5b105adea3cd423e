//! A module's documents (`Ctx::store`) and cache (`Ctx::cache`) on a dev node: concurrent
//! updates from many clients lose nothing, and the data is there after the node restarts on the
//! same directory.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use mortar_cli::client::Client;
use mortar_echo::echo::EchoResp;
use mortar_tests::{DevNode, echo_body, temp_dir};
use prost::Message as _;

async fn bump(client: &mut Client, id: u64) -> u64 {
    let reply = client.request("testkit", "bump", echo_body(&id.to_string()), |_| {}).await.unwrap();
    assert_eq!(reply.code, 0);
    EchoResp::decode(reply.data).unwrap().text.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_survive_a_restart_and_concurrent_updates_lose_nothing() {
    let data = temp_dir("storage-restart");
    let node = DevNode::with_config(|config| config.storage.path = data.clone()).await;
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let url = node.url();
            tokio::spawn(async move {
                let mut client = Client::connect(&url).await.unwrap();
                for _ in 0..5 {
                    bump(&mut client, 1).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let mut client = Client::connect(&node.url()).await.unwrap();
    assert_eq!(bump(&mut client, 1).await, 51, "50 concurrent bumps, then this one");
    drop(client);
    node.stop().await.unwrap();

    let again = DevNode::with_config(|config| config.storage.path = data.clone()).await;
    let mut client = Client::connect(&again.url()).await.unwrap();
    assert_eq!(bump(&mut client, 1).await, 52, "the count survived the restart");
    assert_eq!(bump(&mut client, 2).await, 1);
    drop(client);
    again.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test]
async fn a_module_counts_in_its_cache() {
    let node = DevNode::start().await;
    let mut client = Client::connect(&node.url()).await.unwrap();
    let mut hits = Vec::new();
    for _ in 0..3 {
        let reply = client.request("testkit", "hits", echo_body("door"), |_| {}).await.unwrap();
        hits.push(EchoResp::decode(reply.data).unwrap().text);
    }
    assert_eq!(hits, ["1", "2", "3"]);
}

/// A unique index on a field serde renames holds on the stored name: the second document with
/// the same value is refused (the index used to name the Rust field, which no stored document
/// has, so it was never enforced).
#[tokio::test]
async fn a_unique_index_on_a_renamed_field_is_enforced() {
    use mortar::store::{Store, StoreError};
    #[derive(Default, serde::Serialize, serde::Deserialize, mortar::Document)]
    #[serde(rename_all = "camelCase")]
    #[document(collection = "renamed_fields", index(unique = "display_name"), index(unique = "tag"))]
    struct Renamed {
        display_name: String,
        #[serde(rename = "t")]
        tag: String,
    }
    let dir = temp_dir("renamed-index");
    let backend = mortar_backends::storage::embedded::EmbeddedStore::open(&dir).unwrap();
    let store = Store::<Renamed>::new(std::sync::Arc::new(backend));
    let doc = |name: &str, tag: &str| Renamed { display_name: name.into(), tag: tag.into() };
    store.insert(1, doc("ana", "a")).await.unwrap();
    let name_taken = store.insert(2, doc("ana", "b")).await.err();
    assert!(matches!(name_taken, Some(StoreError::AlreadyExists { .. })), "{name_taken:?}");
    let tag_taken = store.insert(3, doc("bo", "a")).await.err();
    assert!(matches!(tag_taken, Some(StoreError::AlreadyExists { .. })), "{tag_taken:?}");
    store.insert(4, doc("bo", "b")).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
