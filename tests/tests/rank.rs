//! The rank module in `mortar dev` (embedded store, memory cache), through real WebSocket clients:
//! exact ranks with ties to who came first, pages that resume, the players around me, friends, bad
//! input; a period that closes, mails its rewards once (also when the close runs again after a
//! crash) and keeps its final standings; a sorted set rebuilt from the store after a restart.
#![allow(clippy::unwrap_used)]

use mortar::store::{Store, StoreBackend};
use mortar_cli::client::Client;
use mortar_friend::friend::{Done, Request, Target};
use mortar_mail::mail::{ListReq, ListResp};
use mortar_rank::rank::{
    AroundReq, AroundResp, Entry, FriendsReq, FriendsResp, MeReq, MeResp, SubmitReq, SubmitResp, TopReq,
    TopResp,
};
use mortar_tests::{DevNode, signed_up, temp_dir};
use serde_json::json;
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// A board of 2-second periods rewarding ranks 1 and 2, beside the shipped ones.
const FAST_BOARDS: &str = r#"[
  { "id": "fast", "reset_every_s": 2, "rewards": [
    { "fromRank": 1, "toRank": 1, "items": [{ "itemId": 2, "count": 5 }] },
    { "fromRank": 2, "toRank": 2, "items": [{ "itemId": 1, "count": 7 }] } ] },
  { "id": "alltime" },
  { "id": "golf", "order": "asc", "operator": "set" },
  { "id": "coins", "operator": "incr" }
]"#;

async fn node(data: Option<PathBuf>, tables: &Path) -> DevNode {
    let tables = tables.to_owned();
    DevNode::with_config(move |config| {
        config.modules.insert(
            "user".into(),
            json!({ "argon2_memory_kib": 1024, "argon2_iterations": 1, "register_per_ip": 0, "register_per_sec": 0 }),
        );
        config.modules.insert("rank".into(), json!({ "close_grace_ms": 300 }));
        config.tables.path = tables;
        if let Some(data) = data {
            config.storage.path = data;
        }
    })
    .await
}

fn tables() -> PathBuf {
    let dir = temp_dir("rank-tables");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("boards.json"), FAST_BOARDS).unwrap();
    dir
}

/// `route` with `req`: the reply, or its code and reason.
async fn ask<Req: prost::Message, Resp: prost::Message + Default>(
    client: &mut Client,
    route: &str,
    req: &Req,
) -> Result<Resp, (i32, String)> {
    let (main, sub) = route.split_once('.').unwrap();
    let reply = client.request(main, sub, req.encode_to_vec().into(), |_| {}).await.unwrap();
    match reply.code {
        0 => Ok(Resp::decode(reply.data).unwrap()),
        code => Err((code, reply.reason)),
    }
}

async fn submit(client: &mut Client, board: &str, score: i64) -> SubmitResp {
    ask(client, "rank.submit", &SubmitReq { board_id: board.into(), score }).await.unwrap()
}

async fn top(client: &mut Client, board: &str, limit: u32, cursor: &str, period: Option<u64>) -> TopResp {
    let req = TopReq { board_id: board.into(), limit, cursor: cursor.into(), period };
    ask(client, "rank.top", &req).await.unwrap()
}

fn rows(entries: &[Entry]) -> Vec<(u32, String, i64)> {
    entries.iter().map(|e| (e.rank, e.name.clone(), e.score)).collect()
}

fn row(rank: u32, name: &str, score: i64) -> (u32, String, i64) {
    (rank, name.into(), score)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranks_are_exact_ties_go_to_who_came_first_and_pages_resume() {
    let tables = tables();
    let node = node(None, &tables).await;
    let mut players = Vec::new();
    for name in ["ann", "bob", "cat", "dan", "eve"] {
        players.push(signed_up(&node.url(), name).await);
    }
    let [ann, bob, cat, dan, eve] = &mut players[..] else { unreachable!() };
    let (ann, bob, cat, dan, eve) = (&mut ann.0, &mut bob.0, &mut cat.0, &mut dan.0, &mut eve.0);

    let none: Result<MeResp, _> = ask(ann, "rank.me", &MeReq { board_id: "alltime".into() }).await;
    assert_eq!(none.unwrap_err().0, 9, "no score yet: NOT_FOUND");
    let unknown: Result<SubmitResp, _> =
        ask(ann, "rank.submit", &SubmitReq { board_id: "nope".into(), score: 1 }).await;
    assert_eq!(unknown.unwrap_err(), (9, "boardId: no board \"nope\"".into()));
    let huge: Result<SubmitResp, _> =
        ask(ann, "rank.submit", &SubmitReq { board_id: "alltime".into(), score: 1 << 53 }).await;
    let (code, reason) = huge.unwrap_err();
    assert_eq!(code, 2);
    assert!(reason.starts_with("score:"), "{reason}");

    assert_eq!(submit(ann, "alltime", 100).await, SubmitResp { score: 100, rank: 1 });
    assert_eq!(submit(bob, "alltime", 300).await, SubmitResp { score: 300, rank: 1 });
    assert_eq!(submit(cat, "alltime", 200).await, SubmitResp { score: 200, rank: 2 });
    // Equal to cat's, later: below cat.
    assert_eq!(submit(dan, "alltime", 200).await, SubmitResp { score: 200, rank: 3 });
    assert_eq!(submit(eve, "alltime", 50).await, SubmitResp { score: 50, rank: 5 });
    // "best" keeps the better score.
    assert_eq!(submit(ann, "alltime", 90).await, SubmitResp { score: 100, rank: 4 });

    let first = top(ann, "alltime", 2, "", None).await;
    assert_eq!(rows(&first.entries), [row(1, "bob", 300), row(2, "cat", 200)]);
    let second = top(ann, "alltime", 2, &first.next_cursor, None).await;
    assert_eq!(rows(&second.entries), [row(3, "dan", 200), row(4, "ann", 100)]);
    let last = top(ann, "alltime", 2, &second.next_cursor, None).await;
    assert_eq!((rows(&last.entries), last.next_cursor.as_str()), (vec![row(5, "eve", 50)], ""));

    let around: AroundResp =
        ask(dan, "rank.around", &AroundReq { board_id: "alltime".into(), limit: 3 }).await.unwrap();
    assert_eq!(rows(&around.entries), [row(2, "cat", 200), row(3, "dan", 200), row(4, "ann", 100)]);
    let me: MeResp = ask(eve, "rank.me", &MeReq { board_id: "alltime".into() }).await.unwrap();
    assert_eq!(me, MeResp { rank: 5, score: 50 });

    for (limit, cursor) in [(0, ""), (101, ""), (10, "not-a-cursor")] {
        let req = TopReq { board_id: "alltime".into(), limit, cursor: cursor.into(), period: None };
        let bad: Result<TopResp, _> = ask(ann, "rank.top", &req).await;
        assert_eq!(bad.unwrap_err().0, 2, "limit {limit} cursor {cursor:?}");
    }

    // Ascending with "set", and "incr".
    assert_eq!(submit(ann, "golf", 72).await.rank, 1);
    assert_eq!(submit(bob, "golf", 68).await.rank, 1);
    assert_eq!(submit(bob, "golf", 75).await, SubmitResp { score: 75, rank: 2 }, "set keeps the last");
    assert_eq!(submit(cat, "coins", 5).await.score, 5);
    assert_eq!(submit(cat, "coins", 7).await, SubmitResp { score: 12, rank: 1 });

    // Friends: ann and cat are friends; eve is not on ann's list.
    let (ann_id, cat_id) = (players[0].1, players[2].1);
    let _: Request = ask(&mut players[0].0, "friend.request", &Target { user_id: cat_id }).await.unwrap();
    let _: Done = ask(&mut players[2].0, "friend.accept", &Target { user_id: ann_id }).await.unwrap();
    let ann = &mut players[0].0;
    let friends: FriendsResp =
        ask(ann, "rank.friends", &FriendsReq { board_id: "alltime".into() }).await.unwrap();
    assert_eq!(rows(&friends.entries), [row(2, "cat", 200), row(4, "ann", 100)]);
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

async fn mails(client: &mut Client) -> Vec<String> {
    let listed: ListResp = ask(client, "mail.list", &ListReq {}).await.unwrap();
    listed.mails.into_iter().map(|mail| mail.title).collect()
}

/// Waits (at most 10 s) until `client` has a mail titled `title`.
async fn mail_titled(client: &mut Client, title: &str) {
    for _ in 0..100 {
        if mails(client).await.iter().any(|t| t == title) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no mail {title:?} within 10 s: {:?}", mails(client).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_period_closes_once_mails_its_rewards_once_and_keeps_its_standings() {
    let tables = tables();
    let data = temp_dir("rank-close");
    let node = node(Some(data.clone()), &tables).await;
    let (mut ann, _) = signed_up(&node.url(), "ann").await;
    let (mut bob, _) = signed_up(&node.url(), "bob").await;
    // Both submits in one 2-second period.
    if now_ms() % 2_000 > 1_200 {
        tokio::time::sleep(Duration::from_millis(2_000 - now_ms() % 2_000 + 50)).await;
    }
    let period = now_ms() / 2_000;
    submit(&mut ann, "fast", 10).await;
    submit(&mut bob, "fast", 5).await;
    submit(&mut ann, "alltime", 10).await;
    submit(&mut bob, "alltime", 5).await;
    assert_eq!(period, now_ms() / 2_000, "the test's submits took over a second");

    mail_titled(&mut ann, "fast: rank 1").await;
    mail_titled(&mut bob, "fast: rank 2").await;
    let standings = top(&mut ann, "fast", 10, "", Some(period)).await;
    assert_eq!(
        (rows(&standings.entries), standings.period),
        (vec![row(1, "ann", 10), row(2, "bob", 5)], period)
    );
    let me: Result<MeResp, _> = ask(&mut ann, "rank.me", &MeReq { board_id: "fast".into() }).await;
    assert_eq!(me.unwrap_err().0, 9, "the new period starts empty");
    let future =
        TopReq { board_id: "fast".into(), limit: 10, cursor: String::new(), period: Some(period + 100) };
    let future: Result<TopResp, _> = ask(&mut ann, "rank.top", &future).await;
    assert_eq!(future.unwrap_err().0, 2);

    // The node stops after the close; its record says the period is not closed, as if the node
    // had died after mailing, before recording it. The close runs again: no second mail.
    drop((ann, bob));
    node.stop().await.unwrap();
    let store: Arc<dyn StoreBackend> =
        Arc::new(mortar_backends::storage::embedded::EmbeddedStore::open(&data).unwrap());
    Store::<mortar_rank::Closed>::new(store.clone())
        .update(mortar_rank::board_key("fast"), |closed| {
            closed.through = Some(period - 1);
            Ok(())
        })
        .await
        .unwrap();
    drop(store);
    let node = node_again(&data, &tables).await;
    let mut ann = Client::connect(&node.url()).await.unwrap();
    mortar_tests::login(&mut ann, "ann", "ann-password").await.unwrap();
    // The memory cache started empty: the first rank is counted in the store while the sorted set
    // is rebuilt, then read from the set.
    let me: MeResp = ask(&mut ann, "rank.me", &MeReq { board_id: "alltime".into() }).await.unwrap();
    assert_eq!(me, MeResp { rank: 1, score: 10 });
    let mut around = Err((0, String::new()));
    for _ in 0..50 {
        around = ask(&mut ann, "rank.around", &AroundReq { board_id: "alltime".into(), limit: 5 }).await;
        match &around {
            Err((4, reason)) if reason.contains("rebuilt") => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            _ => break,
        }
    }
    let around: AroundResp = around.unwrap();
    assert_eq!(rows(&around.entries), [row(1, "ann", 10), row(2, "bob", 5)]);
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let titles = mails(&mut ann).await;
    assert_eq!(titles.iter().filter(|t| *t == "fast: rank 1").count(), 1, "{titles:?}");
    node.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(data);
    let _ = std::fs::remove_dir_all(tables);
}

async fn node_again(data: &Path, tables: &Path) -> DevNode {
    node(Some(data.to_owned()), tables).await
}
