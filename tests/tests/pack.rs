//! The pack module in `mortar dev` (embedded store), through a real WebSocket client: query, use,
//! grants once per grant id, stack limits, concurrent use while grants arrive, and a restart.
#![allow(clippy::unwrap_used)]

use mortar_cli::client::Client;
use mortar_echo::echo::EchoResp;
use mortar_pack::pack::{Changed, Item, QueryReq, QueryResp, UseReq, UseResp};
use mortar_pb::{ErrorCode, UserMessage};
use mortar_tests::{DevNode, echo_body};
use prost::Message as _;
use std::time::Duration;

const NOT_ENOUGH_ITEMS: i32 = 1001;
const PACK_FULL: i32 = 1002;

async fn player(node: &DevNode, user: u64) -> Client {
    let mut client = Client::connect(&node.url()).await.unwrap();
    let reply = client.request("testkit", "login", echo_body(&user.to_string()), |_| {}).await.unwrap();
    assert_eq!(reply.code, 0);
    client
}

/// `testkit.grant`, which calls `pack.add_items`; the code and `granted=…`, pushes kept.
async fn grant(client: &mut Client, text: &str, pushes: &mut Vec<UserMessage>) -> (i32, String) {
    let reply = client.request("testkit", "grant", echo_body(text), |push| pushes.push(push)).await.unwrap();
    (reply.code, EchoResp::decode(reply.data).map(|r| r.text).unwrap_or_default())
}

async fn query(client: &mut Client) -> QueryResp {
    let reply = client.request("pack", "query", QueryReq {}.encode_to_vec().into(), |_| {}).await.unwrap();
    assert_eq!(reply.code, 0);
    QueryResp::decode(reply.data).unwrap()
}

async fn use_item(client: &mut Client, item_id: u32, count: u32) -> Result<u32, i32> {
    let used: Result<UseResp, i32> = client.call("pack.use", &UseReq { item_id, count }).await.unwrap();
    used.map(|used| used.remaining)
}

fn items(pairs: &[(u32, u32)]) -> Vec<Item> {
    pairs.iter().map(|&(item_id, count)| Item { item_id, count }).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_add_once_uses_take_and_limits_hold() {
    let node = DevNode::start().await;
    let mut guest = Client::connect(&node.url()).await.unwrap();
    let reply = guest.request("pack", "query", Default::default(), |_| {}).await.unwrap();
    assert_eq!(reply.code, ErrorCode::NotLoggedIn as i32);
    let reply = guest.request("pack", "add_items", Default::default(), |_| {}).await.unwrap();
    assert_eq!(reply.code, ErrorCode::NoRoute as i32, "internal");

    let mut alice = player(&node, 7).await;
    assert_eq!(query(&mut alice).await, QueryResp { items: vec![], version: 0 });
    let mut pushes = Vec::new();
    assert_eq!(grant(&mut alice, "0|mail-1|100:5,1:50,100:1", &mut pushes).await, (0, "granted=true".into()));
    let changed = match pushes.pop() {
        Some(push) => push,
        None => tokio::time::timeout(Duration::from_secs(5), alice.next()).await.unwrap().unwrap(),
    };
    assert_eq!((changed.main_type.as_str(), changed.sub_type.as_str(), changed.seq), ("pack", "changed", 0));
    assert_eq!(Changed::decode(changed.data).unwrap().items, items(&[(1, 50), (100, 6)]));
    assert_eq!(query(&mut alice).await, QueryResp { items: items(&[(1, 50), (100, 6)]), version: 1 });

    // The same grant again adds nothing.
    assert_eq!(grant(&mut alice, "0|mail-1|100:5", &mut pushes).await, (0, "granted=false".into()));
    assert_eq!(query(&mut alice).await.items, items(&[(1, 50), (100, 6)]));

    assert_eq!(use_item(&mut alice, 100, 2).await, Ok(4));
    assert_eq!(use_item(&mut alice, 100, 10).await, Err(NOT_ENOUGH_ITEMS));
    assert_eq!(use_item(&mut alice, 1, 1).await, Err(ErrorCode::BadRequest as i32), "gold is not usable");
    assert_eq!(use_item(&mut alice, 999, 1).await, Err(ErrorCode::BadRequest as i32), "no such item");
    assert_eq!(use_item(&mut alice, 100, 0).await, Err(ErrorCode::BadRequest as i32));
    assert_eq!(use_item(&mut alice, 101, 1).await, Err(NOT_ENOUGH_ITEMS), "none of it");

    // Past an item's max stack the whole grant is refused.
    assert_eq!(grant(&mut alice, "0|g-2|100:1,300:2", &mut pushes).await.0, PACK_FULL);
    assert_eq!(grant(&mut alice, "0|g-3|999:1", &mut pushes).await.0, ErrorCode::BadRequest as i32);
    assert_eq!(grant(&mut alice, "0|g-4|100:0", &mut pushes).await.0, ErrorCode::BadRequest as i32);
    assert_eq!(grant(&mut alice, "0||100:1", &mut pushes).await.0, ErrorCode::BadRequest as i32);
    assert_eq!(query(&mut alice).await.items, items(&[(1, 50), (100, 4)]));
    // A grant for another player goes to theirs.
    assert_eq!(grant(&mut alice, "8|g-5|101:3", &mut pushes).await.0, 0);
    let mut bob = player(&node, 8).await;
    assert_eq!(query(&mut bob).await.items, items(&[(101, 3)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uses_and_grants_lose_no_update_and_survive_a_restart() {
    let data = mortar_tests::temp_dir("pack-data");
    let with_data = |config: &mut mortar_node::NodeConfig| {
        config.storage.path = data.clone();
        config.gateway.session_concurrency = 8;
        config.gateway.rate_per_sec = 0;
    };
    let node = DevNode::with_config(with_data).await;
    let mut player = player(&node, 9).await;
    assert_eq!(grant(&mut player, "0|start|100:30", &mut Vec::new()).await.0, 0);

    // 20 uses of 2 on one session (8 at once) while another session grants 5 x 4.
    let mut granter = self::player(&node, 10).await;
    let grants = tokio::spawn(async move {
        for n in 0..5 {
            let (code, _) = grant(&mut granter, &format!("9|extra-{n}|100:4"), &mut Vec::new()).await;
            assert_eq!(code, 0);
        }
    });
    for _ in 0..20 {
        player.send("pack", "use", UseReq { item_id: 100, count: 2 }.encode_to_vec().into()).await.unwrap();
    }
    let (mut used, mut short) = (0, 0);
    while used + short < 20 {
        let reply = tokio::time::timeout(Duration::from_secs(10), player.next()).await.unwrap().unwrap();
        match reply.code {
            _ if reply.seq == 0 => continue, // pack.changed
            0 => used += 1,
            NOT_ENOUGH_ITEMS => short += 1,
            code => panic!("pack.use answered {code}"),
        }
    }
    grants.await.unwrap();
    let left = query(&mut player).await.items.first().map_or(0, |item| item.count);
    assert_eq!(left, 30 + 5 * 4 - 2 * used, "{used} uses went through, {short} found too few");
    drop(player);

    node.stop().await.unwrap();
    let node = DevNode::with_config(with_data).await;
    let mut player = self::player(&node, 9).await;
    assert_eq!(query(&mut player).await.items.first().map_or(0, |item| item.count), left);
    node.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&data);
}
