//! Mail claims per second in `mortar dev` (embedded store, handlers in-process), through real
//! WebSocket clients: `PLAYERS` players each get `MAILS` system mails with one attachment (through
//! the admin API's `mail.send`), then claim them all, each player one claim after another and the
//! players at once. A claim is a mailbox read, a `pack.add_items` (a compare-and-set write of the
//! pack) and a compare-and-set write of the mailbox. The yardstick, measured in the same run with
//! the same clients: `echo.say` round trips for as long as the claims took.
//!
//! `cargo bench -p mortar-tests --bench mail_claims` (results in docs/benchmarks.md).
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use hdrhistogram::Histogram;
use mortar_cli::client::Client;
use mortar_mail::mail::{ClaimReq, ClaimResp};
use mortar_tests::{DevNode, admin_request, echo_body};
use serde_json::json;
use std::time::{Duration, Instant};

const PLAYERS: u64 = 50;
const MAILS: usize = 100;
const TOKEN: &str = "bench-token";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(bench());
}

async fn bench() {
    let node = DevNode::with_config(|config| {
        config.admin.token = TOKEN.into();
        config.gateway.rate_per_sec = 0;
        config.gateway.max_connections_per_ip = 0;
    })
    .await;
    let mut players = Vec::new();
    for user in 1..=PLAYERS {
        let mut client = Client::connect(&node.url()).await.unwrap();
        let reply = client.request("testkit", "login", echo_body(&user.to_string()), |_| {}).await.unwrap();
        assert_eq!(reply.code, 0);
        players.push(client);
    }
    // MAILS mails to every player: mail_ids[m][p] is player p's copy of mail m.
    let to: Vec<String> = (1..=PLAYERS).map(|user| user.to_string()).collect();
    let mut mail_ids = Vec::new();
    for m in 0..MAILS {
        let body = json!({ "toUsers": to, "title": format!("Gift {m}"), "body": "", "attachments": [{ "itemId": 1, "count": 1 }] });
        let (status, reply) =
            admin_request(node.admin, "POST", "/v1/call/mail.send", Some(TOKEN), &body.to_string()).await;
        assert_eq!((status, &reply["code"]), (200, &json!(0)), "{reply}");
        let ids: Vec<u64> = reply["data"]["mailIds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| id.as_str().unwrap().parse().unwrap())
            .collect();
        mail_ids.push(ids);
    }

    let started = Instant::now();
    let claims = players.into_iter().enumerate().map(|(p, mut client)| {
        let mine: Vec<u64> = mail_ids.iter().map(|ids| ids[p]).collect();
        tokio::spawn(async move {
            let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            for mail_id in mine {
                let sent = Instant::now();
                let claimed: Result<ClaimResp, i32> =
                    client.call("mail.claim", &ClaimReq { mail_id }).await.unwrap();
                assert_eq!(claimed.unwrap().items.len(), 1);
                latency.record(sent.elapsed().as_micros() as u64).unwrap();
            }
            (client, latency)
        })
    });
    let mut clients = Vec::new();
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for done in futures::future::join_all(claims).await {
        let (client, own) = done.unwrap();
        latency.add(own).unwrap();
        clients.push(client);
    }
    let took = started.elapsed();
    let total = PLAYERS as f64 * MAILS as f64;
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "mail.claim: {PLAYERS} players × {MAILS} mails, {:.0} claims/s, p50 {:.2} ms, p99 {:.2} ms ({:.2} s)",
        total / took.as_secs_f64(),
        ms(0.5),
        ms(0.99),
        took.as_secs_f64()
    );

    // The yardstick: echo.say round trips from the same clients for as long.
    let deadline = Instant::now() + took.max(Duration::from_secs(2));
    let echoes = clients.into_iter().map(|mut client| {
        tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                let reply = client.request("echo", "say", echo_body("hi"), |_| {}).await.unwrap();
                assert_eq!(reply.code, 0);
                done += 1;
            }
            done
        })
    });
    let echoed: u64 = futures::future::join_all(echoes).await.into_iter().map(Result::unwrap).sum();
    println!(
        "echo.say (yardstick): {PLAYERS} clients, {:.0} req/s",
        echoed as f64 / took.max(Duration::from_secs(2)).as_secs_f64()
    );
    node.stop().await.unwrap();
}
