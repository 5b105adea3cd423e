//! The rank module in the replicated cluster: two workers sharing MongoDB (nx-27017) and Redis
//! (cache, registry, sessions) behind one gateway. Both workers answer the same ranks; the close
//! job runs on one of them per period; after the worker that closed a period is killed with
//! `kill -9`, the other closes the next periods, and every reward arrives once.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod support;

use mortar_cli::client::Client;
use mortar_mail::mail::{ListReq, ListResp};
use mortar_rank::rank::{MeReq, MeResp, SubmitReq, SubmitResp, TopReq, TopResp};
use mortar_user::user::{LoginReq, LoginResp, RegisterReq, RegisterResp};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::{Mongo, Redis, TempDir, call, wait_live};

/// 2-second periods, the best two rewarded.
const BOARDS: &str = r#"[
  { "id": "fast", "reset_every_s": 2, "rewards": [
    { "fromRank": 1, "toRank": 2, "items": [{ "itemId": 2, "count": 1 }] } ] },
  { "id": "alltime" }
]"#;

async fn signed_up(url: &str, account: &str) -> Client {
    let mut client = Client::connect(url).await.unwrap();
    let password = format!("{account}-password");
    let req = RegisterReq { account: account.into(), password: password.clone() };
    call::<_, RegisterResp>(&mut client, "user.register", req).await.unwrap();
    call::<_, LoginResp>(&mut client, "user.login", LoginReq { account: account.into(), password })
        .await
        .unwrap();
    client
}

async fn mail_titles(client: &mut Client) -> Vec<String> {
    let listed: ListResp = call(client, "mail.list", ListReq {}).await.unwrap();
    listed.mails.into_iter().map(|mail| mail.title).collect()
}

fn period_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64 / 2_000
}

/// The periods of board `fast` that `log` says were closed.
fn closed_in(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|line| line.split("board fast closed period ").nth(1)?.split(':').next()?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_rank_alike_and_a_killed_closer_loses_no_period() {
    let (redis, mongo, dir) = (Redis::start(), Mongo::start(), TempDir::new("rank-cluster"));
    let tables = dir.0.join("tables");
    std::fs::create_dir_all(&tables).unwrap();
    std::fs::write(tables.join("boards.json"), BOARDS).unwrap();
    let env = [
        ("MORTAR_REGISTRY__URL", redis.url()),
        ("MORTAR_SESSION__URL", redis.url()),
        ("MORTAR_CACHE__URL", redis.url()),
        ("MORTAR_STORAGE__URL", mongo.url("game")),
        ("MORTAR_TABLES__PATH", tables.to_string_lossy().into_owned()),
        ("MORTAR_WORKER__JOB_LEASE_MS", "1500".into()),
        ("MORTAR_WORKER__JOB_RETRY_MS", "200".into()),
        ("MORTAR_MODULES__RANK__CLOSE_GRACE_MS", "300".into()),
        ("MORTAR_MODULES__USER__ARGON2_MEMORY_KIB", "1024".into()),
        ("MORTAR_MODULES__USER__ARGON2_ITERATIONS", "1".into()),
        ("MORTAR_MODULES__USER__REGISTER_PER_IP", "0".into()),
        ("MORTAR_MODULES__USER__REGISTER_PER_SEC", "0".into()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(key, value)| (*key, value.as_str())).collect();
    let workers = vec![
        support::worker(&dir, "worker-1", "127.0.0.1:0", "", &env),
        support::worker(&dir, "worker-2", "127.0.0.1:0", "", &env),
    ];
    let gateway = support::gateway(&dir, "gateway-1", "", &env);
    wait_live(&gateway, 2);

    // Eight players, spread over both workers by user; scores 10, 20, … 80 on both boards.
    let mut players = Vec::new();
    for n in 1..=8 {
        players.push(signed_up(&gateway.addr, &format!("player{n}")).await);
    }
    // Every submit in one period: start at the beginning of one.
    let into_period = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64 % 2_000;
    if into_period > 500 {
        tokio::time::sleep(Duration::from_millis(2_000 - into_period)).await;
    }
    let first_period = period_now();
    for (n, client) in players.iter_mut().enumerate() {
        let score = 10 * (n as i64 + 1);
        for board in ["fast", "alltime"] {
            let req = SubmitReq { board_id: board.into(), score };
            let submitted: SubmitResp = call(client, "rank.submit", req).await.unwrap();
            assert_eq!(submitted.score, score);
        }
    }
    assert_eq!(period_now(), first_period, "the submits took over 1.5 s");
    // Whichever worker serves a player, the ranks are the board's.
    for (n, client) in players.iter_mut().enumerate() {
        let me: MeResp = call(client, "rank.me", MeReq { board_id: "alltime".into() }).await.unwrap();
        assert_eq!(me, MeResp { rank: 8 - n as u32, score: 10 * (n as i64 + 1) }, "player p{}", n + 1);
    }
    let top: TopResp = call(
        &mut players[0],
        "rank.top",
        TopReq { board_id: "alltime".into(), limit: 3, ..TopReq::default() },
    )
    .await
    .unwrap();
    // A new account's display name is a default `Player########`, looked up through `user.lookup`.
    let shown: Vec<(u32, i64, bool)> =
        top.entries.iter().map(|e| (e.rank, e.score, e.name.starts_with("Player"))).collect();
    assert_eq!(shown, [(1, 80, true), (2, 70, true), (3, 60, true)]);

    // The first period closes (on one worker or the other); its two best get their reward.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let closer = loop {
        let closers: Vec<usize> =
            (0..2).filter(|&w| closed_in(&workers[w].log()).iter().any(|&p| p >= first_period)).collect();
        if let Some(&closer) = closers.last() {
            break closer;
        }
        assert!(std::time::Instant::now() < deadline, "no close of period {first_period} within 15 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // The worker that closed it dies; the next periods, with new scores, close on the other.
    workers[closer].signal("KILL");
    let survivor = 1 - closer;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second_period = period_now();
    for client in players.iter_mut().take(2) {
        let req = SubmitReq { board_id: "fast".into(), score: 1_000 };
        let mut submitted = call::<_, SubmitResp>(client, "rank.submit", req.clone()).await;
        // A player of the dead worker may need its gateway to notice first.
        for _ in 0..20 {
            if submitted.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            submitted = call(client, "rank.submit", req.clone()).await;
        }
        submitted.unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !closed_in(&workers[survivor].log()).iter().any(|&p| p >= second_period) {
        assert!(
            std::time::Instant::now() < deadline,
            "the survivor closed no later period: {}",
            workers[survivor].log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every reward once: p7 and p8 for the first period, p1 and p2 for theirs (if both submits
    // fell in one period; else each of them best in their own).
    let mut rewarded = 0;
    for (n, client) in players.iter_mut().enumerate() {
        let titles = mail_titles(client).await;
        let ranks: Vec<&String> = titles.iter().filter(|t| t.starts_with("fast: rank")).collect();
        let periods = match n {
            0 | 1 | 6 | 7 => 1,
            _ => 0,
        };
        assert_eq!(ranks.len(), periods, "p{}: {titles:?}", n + 1);
        rewarded += ranks.len();
    }
    assert_eq!(rewarded, 4);
    drop(workers);
}
