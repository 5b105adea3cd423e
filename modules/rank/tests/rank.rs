//! The rank module on a test node (`mortar_testing`: embedded store, memory cache) with the modules
//! it calls, through WebSocket clients and the typed clients of the modules' protos: exact ranks
//! with ties to who came first, pages that resume, the players around me, friends, bad input; a
//! period that closes, mails its rewards once (also when the close runs again after a crash) and
//! keeps its final standings; a sorted set rebuilt from the store after a restart.
#![allow(clippy::unwrap_used)]

use mortar::{Code, Failure};
use mortar_rank::{
    friend::{FriendClient, Request, Target},
    mail::{ListReq, MailClient},
    rank::{
        AroundReq, AroundResp, Entry, FriendsReq, MeReq, MeResp, RankClient, SubmitReq, SubmitResp, TopReq,
        TopResp,
    },
    user::{LoginReq, RegisterReq, RenameReq, UserClient},
};
use mortar_testing::{Player, TestNode, scratch_dir};
use serde_json::json;
use std::{
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};
// The modules rank calls, served beside it.
use {mortar_friend as _, mortar_mail as _, mortar_pack as _, mortar_user as _};

/// A board of 2-second periods rewarding ranks 1 and 2, beside the shipped ones.
const FAST_BOARDS: &str = r#"[
  { "id": "fast", "reset_every_s": 2, "rewards": [
    { "fromRank": 1, "toRank": 1, "items": [{ "itemId": 2, "count": 5 }] },
    { "fromRank": 2, "toRank": 2, "items": [{ "itemId": 1, "count": 7 }] } ] },
  { "id": "alltime" },
  { "id": "golf", "order": "asc", "operator": "set" },
  { "id": "coins", "operator": "incr" }
]"#;

async fn node(data: Option<&Path>) -> TestNode {
    let user = json!({ "argon2_memory_kib": 1024, "argon2_iterations": 1, "register_per_ip": 0, "register_per_sec": 0 });
    let builder = TestNode::builder()
        .modules(["rank", "user", "friend", "mail", "pack"])
        .module_config("user", user)
        .module_config("rank", json!({ "close_grace_ms": 300 }))
        .table("boards.json", FAST_BOARDS);
    match data {
        Some(data) => builder.data_dir(data).start().await,
        None => builder.start().await,
    }
}

/// A player with an account named `name` (password `NAME-password`), logged in.
async fn signed_up(node: &TestNode, name: &str) -> Player {
    let player = node.client().await;
    let (account, password) = (name.to_owned(), format!("{name}-password"));
    UserClient(&player)
        .register(&RegisterReq { account: account.clone(), password: password.clone() })
        .await
        .unwrap();
    UserClient(&player).login(&LoginReq { account, password }).await.unwrap();
    UserClient(&player).rename(&RenameReq { name: name.into() }).await.unwrap();
    player
}

async fn submit(player: &Player, board: &str, score: i64) -> SubmitResp {
    RankClient(player).submit(&SubmitReq { board_id: board.into(), score }).await.unwrap()
}

async fn top(player: &Player, board: &str, limit: u32, cursor: &str, period: Option<u64>) -> TopResp {
    let req = TopReq { board_id: board.into(), limit, cursor: cursor.into(), period };
    RankClient(player).top(&req).await.unwrap()
}

fn rows(entries: &[Entry]) -> Vec<(u32, String, i64)> {
    entries.iter().map(|e| (e.rank, e.name.clone(), e.score)).collect()
}

fn code<T: std::fmt::Debug>(result: Result<T, Failure>) -> Code {
    result.unwrap_err().code()
}

fn row(rank: u32, name: &str, score: i64) -> (u32, String, i64) {
    (rank, name.into(), score)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranks_are_exact_ties_go_to_who_came_first_and_pages_resume() {
    let node = node(None).await;
    let mut players = Vec::new();
    for name in ["ann", "bob", "cat", "dan", "eve"] {
        players.push(signed_up(&node, name).await);
    }
    let [ann, bob, cat, dan, eve] = &players[..] else { unreachable!() };

    assert_eq!(code(RankClient(ann).me(&MeReq { board_id: "alltime".into() }).await), Code::NOT_FOUND);
    let unknown = RankClient(ann).submit(&SubmitReq { board_id: "nope".into(), score: 1 }).await.unwrap_err();
    assert_eq!((unknown.code(), unknown.reason()), (Code::NOT_FOUND, Some("boardId: no board \"nope\"")));
    let huge =
        RankClient(ann).submit(&SubmitReq { board_id: "alltime".into(), score: 1 << 53 }).await.unwrap_err();
    assert_eq!(huge.code(), Code::BAD_REQUEST);
    assert!(huge.reason().unwrap().starts_with("score:"), "{huge}");

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

    let around = RankClient(dan).around(&AroundReq { board_id: "alltime".into(), limit: 3 }).await.unwrap();
    assert_eq!(rows(&around.entries), [row(2, "cat", 200), row(3, "dan", 200), row(4, "ann", 100)]);
    let me = RankClient(eve).me(&MeReq { board_id: "alltime".into() }).await.unwrap();
    assert_eq!(me, MeResp { rank: 5, score: 50 });

    for (limit, cursor) in [(0, ""), (101, ""), (10, "not-a-cursor")] {
        let req = TopReq { board_id: "alltime".into(), limit, cursor: cursor.into(), period: None };
        assert_eq!(
            code(RankClient(ann).top(&req).await),
            Code::BAD_REQUEST,
            "limit {limit} cursor {cursor:?}"
        );
    }

    // Ascending with "set", and "incr".
    assert_eq!(submit(ann, "golf", 72).await.rank, 1);
    assert_eq!(submit(bob, "golf", 68).await.rank, 1);
    assert_eq!(submit(bob, "golf", 75).await, SubmitResp { score: 75, rank: 2 }, "set keeps the last");
    assert_eq!(submit(cat, "coins", 5).await.score, 5);
    assert_eq!(submit(cat, "coins", 7).await, SubmitResp { score: 12, rank: 1 });

    // Friends: ann and cat are friends; eve is not on ann's list.
    let (ann_id, cat_id) = (user_id(ann).await, user_id(cat).await);
    FriendClient(ann).request(&Target { user_id: cat_id }).await.unwrap();
    let asked: Request = cat.push("friend.request").await.unwrap();
    assert_eq!((asked.user_id, asked.name.as_str()), (ann_id, "ann"));
    FriendClient(cat).accept(&Target { user_id: ann_id }).await.unwrap();
    let friends = RankClient(ann).friends(&FriendsReq { board_id: "alltime".into() }).await.unwrap();
    assert_eq!(rows(&friends.entries), [row(2, "cat", 200), row(4, "ann", 100)]);
}

async fn user_id(player: &Player) -> u64 {
    UserClient(player).profile(&mortar_rank::user::ProfileReq {}).await.unwrap().user_id
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

async fn mails(player: &Player) -> Vec<String> {
    let listed = MailClient(player).list(&ListReq {}).await.unwrap();
    listed.mails.into_iter().map(|mail| mail.title).collect()
}

/// Waits (at most 10 s) until `player` has a mail titled `title`.
async fn mail_titled(player: &Player, title: &str) {
    for _ in 0..100 {
        if mails(player).await.iter().any(|t| t == title) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no mail {title:?} within 10 s: {:?}", mails(player).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_period_closes_once_mails_its_rewards_once_and_keeps_its_standings() {
    let data = scratch_dir();
    let node = node(Some(&data)).await;
    let ann = signed_up(&node, "ann").await;
    let bob = signed_up(&node, "bob").await;
    // Both submits in one 2-second period.
    if now_ms() % 2_000 > 1_200 {
        tokio::time::sleep(Duration::from_millis(2_000 - now_ms() % 2_000 + 50)).await;
    }
    let period = now_ms() / 2_000;
    submit(&ann, "fast", 10).await;
    submit(&bob, "fast", 5).await;
    submit(&ann, "alltime", 10).await;
    submit(&bob, "alltime", 5).await;
    assert_eq!(period, now_ms() / 2_000, "the test's submits took over a second");

    mail_titled(&ann, "fast: rank 1").await;
    mail_titled(&bob, "fast: rank 2").await;
    let standings = top(&ann, "fast", 10, "", Some(period)).await;
    assert_eq!(
        (rows(&standings.entries), standings.period),
        (vec![row(1, "ann", 10), row(2, "bob", 5)], period)
    );
    let me = RankClient(&ann).me(&MeReq { board_id: "fast".into() }).await;
    assert_eq!(code(me), Code::NOT_FOUND, "the new period starts empty");
    let future =
        TopReq { board_id: "fast".into(), limit: 10, cursor: String::new(), period: Some(period + 100) };
    assert_eq!(code(RankClient(&ann).top(&future).await), Code::BAD_REQUEST);

    // The node stops after the close; its record says the period is not closed, as if the node
    // had died after mailing, before recording it. The close runs again: no second mail.
    drop((ann, bob));
    node.stop().await.unwrap();
    mortar_testing::stored::<mortar_rank::Closed>(&data)
        .update(mortar_rank::board_key("fast"), |closed| {
            closed.through = Some(period - 1);
            Ok(())
        })
        .await
        .unwrap();
    let node = self::node(Some(&data)).await;
    let ann = node.client().await;
    let login = LoginReq { account: "ann".into(), password: "ann-password".into() };
    UserClient(&ann).login(&login).await.unwrap();
    // The memory cache started empty: the first rank is counted in the store while the sorted set
    // is rebuilt, then read from the set.
    let me = RankClient(&ann).me(&MeReq { board_id: "alltime".into() }).await.unwrap();
    assert_eq!(me, MeResp { rank: 1, score: 10 });
    let mut around: Result<AroundResp, Failure> = Err(Code::INTERNAL.into());
    for _ in 0..50 {
        around = RankClient(&ann).around(&AroundReq { board_id: "alltime".into(), limit: 5 }).await;
        match &around {
            Err(failure)
                if failure.code() == Code::UNAVAILABLE && failure.to_string().contains("rebuilt") =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            _ => break,
        }
    }
    assert_eq!(rows(&around.unwrap().entries), [row(1, "ann", 10), row(2, "bob", 5)]);
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let titles = mails(&ann).await;
    assert_eq!(titles.iter().filter(|t| *t == "fast: rank 1").count(), 1, "{titles:?}");
    node.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(data);
}
