//! The mail module and the admin API in `mortar dev` (embedded store), through real WebSocket
//! clients and real HTTP: the token is required, system mail reaches offline players, claims add
//! the attachments once (racing claims, a retry after a half-done claim), limits hold.
#![allow(clippy::unwrap_used)]

use mortar_cli::client::Client;
use mortar_mail::mail::{
    ClaimReq, ClaimResp, DeleteReq, DeleteResp, ListReq, ListResp, New, ReadReq, ReadResp,
};
use mortar_pack::pack::{Item, QueryReq, QueryResp};
use mortar_pb::ErrorCode;
use mortar_tests::{DevNode, admin_request, echo_body};
use prost::Message as _;
use serde_json::{Value, json};
use std::time::Duration;

const TOKEN: &str = "gm-secret-token";

async fn node() -> DevNode {
    DevNode::with_config(|config| {
        config.admin.token = TOKEN.into();
        // Claims of one session run side by side, to race each other.
        config.gateway.session_concurrency = 8;
    })
    .await
}

async fn player(node: &DevNode, user: u64) -> Client {
    let mut client = Client::connect(&node.url()).await.unwrap();
    let reply = client.request("testkit", "login", echo_body(&user.to_string()), |_| {}).await.unwrap();
    assert_eq!(reply.code, 0);
    client
}

/// `POST /v1/call/mail.send` with the token: the mail ids.
async fn send(node: &DevNode, to: &[u64], title: &str, attachments: Value) -> Vec<u64> {
    let body = json!({ "toUsers": to.iter().map(u64::to_string).collect::<Vec<_>>(), "title": title, "body": "from the team", "attachments": attachments });
    let (status, reply) =
        admin_request(node.admin, "POST", "/v1/call/mail.send", Some(TOKEN), &body.to_string()).await;
    assert_eq!((status, &reply["code"]), (200, &json!(0)), "{reply}");
    reply["data"]["mailIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().parse().unwrap())
        .collect()
}

async fn list(client: &mut Client) -> ListResp {
    let listed: Result<ListResp, i32> = client.call("mail.list", &ListReq {}).await.unwrap();
    listed.unwrap()
}

async fn claim(client: &mut Client, mail_id: u64) -> Result<ClaimResp, i32> {
    client.call("mail.claim", &ClaimReq { mail_id }).await.unwrap()
}

async fn pack(client: &mut Client) -> Vec<Item> {
    let queried: Result<QueryResp, i32> = client.call("pack.query", &QueryReq {}).await.unwrap();
    queried.unwrap().items
}

fn items(pairs: &[(u32, u32)]) -> Vec<Item> {
    pairs.iter().map(|&(item_id, count)| Item { item_id, count }).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_needs_its_token() {
    let node = node().await;
    let body = json!({ "toUsers": ["5"], "title": "hi" }).to_string();
    for token in [None, Some("wrong"), Some("gm-secret-token-longer")] {
        let (status, _) = admin_request(node.admin, "POST", "/v1/call/mail.send", token, &body).await;
        assert_eq!(status, 401, "token {token:?}");
        let (status, _) = admin_request(node.admin, "GET", "/v1/online/5", token, "").await;
        assert_eq!(status, 401);
    }
    // Nothing was sent.
    let mut alice = player(&node, 5).await;
    assert!(list(&mut alice).await.mails.is_empty());

    let (status, online) = admin_request(node.admin, "GET", "/v1/online/5", Some(TOKEN), "").await;
    assert_eq!(status, 200);
    assert_eq!(
        (online["userId"].as_u64(), online["session"].as_u64().is_some()),
        (Some(5), true),
        "{online}"
    );
    let (status, _) = admin_request(node.admin, "GET", "/v1/online/6", Some(TOKEN), "").await;
    assert_eq!(status, 404, "offline");
    let (status, _) = admin_request(node.admin, "GET", "/v1/online/x", Some(TOKEN), "").await;
    assert_eq!(status, 400);

    // Bad bodies, unknown routes and the route's own refusals come back as codes.
    let (status, reply) =
        admin_request(node.admin, "POST", "/v1/call/mail.send", Some(TOKEN), "{\"nope\":1}").await;
    assert_eq!((status, &reply["code"]), (400, &json!(ErrorCode::BadRequest as i32)));
    let (status, reply) = admin_request(node.admin, "POST", "/v1/call/mail.nope", Some(TOKEN), "{}").await;
    assert_eq!((status, &reply["code"]), (404, &json!(ErrorCode::NoRoute as i32)));
    let (status, reply) = admin_request(node.admin, "POST", "/v1/call/mail.send", Some(TOKEN), "{}").await;
    assert_eq!(
        (status, &reply["code"], &reply["error"]),
        (200, &json!(2), &json!("BAD_REQUEST")),
        "no recipients"
    );
    // A client route as the system: no session, so no user.
    let (_, reply) = admin_request(node.admin, "POST", "/v1/call/mail.list", Some(TOKEN), "").await;
    assert_eq!(reply["code"], json!(ErrorCode::NotLoggedIn as i32));
    let (_, reply) =
        admin_request(node.admin, "POST", "/v1/call/echo.say", Some(TOKEN), "{\"text\":\"hi\"}").await;
    assert_eq!(reply, json!({ "code": 0, "data": { "text": "hi" } }));

    // Kick: the player gets sys.kick and the connection closes.
    let (status, reply) = admin_request(node.admin, "POST", "/v1/kick/5", Some(TOKEN), "").await;
    assert_eq!((status, reply), (200, json!({ "kicked": true })));
    let kick = tokio::time::timeout(Duration::from_secs(5), alice.next()).await.unwrap().unwrap();
    assert_eq!((kick.main_type.as_str(), kick.sub_type.as_str()), ("sys", "kick"));
    let (status, _) = admin_request(node.admin, "POST", "/v1/kick/5", Some(TOKEN), "").await;
    assert_eq!(status, 404, "no longer online");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_mail_reaches_offline_players_and_claims_grant_once() {
    let node = node().await;
    drop(player(&node, 20).await);
    let mut bob = player(&node, 21).await;
    // Alice (20) has an account and is offline; Bob is online and gets mail.new.
    let ids = send(
        &node,
        &[20, 21],
        "Welcome",
        json!([{ "itemId": 100, "count": 3 }, { "itemId": 1, "count": 50 }]),
    )
    .await;
    assert_eq!(ids.len(), 2);
    assert!(ids.iter().all(|&id| id != 0) && ids[0] != ids[1]);
    let new = tokio::time::timeout(Duration::from_secs(5), bob.next()).await.unwrap().unwrap();
    assert_eq!((new.main_type.as_str(), new.sub_type.as_str(), new.seq), ("mail", "new", 0));
    assert_eq!(New::decode(new.data).unwrap(), New { mail_id: ids[1], title: "Welcome".into() });

    let mut alice = player(&node, 20).await;
    let listed = list(&mut alice).await.mails;
    assert_eq!(listed.len(), 1);
    let mail = &listed[0];
    assert_eq!(
        (mail.mail_id, mail.title.as_str(), mail.read, mail.claimed, mail.has_attachments),
        (ids[0], "Welcome", false, false, true)
    );
    assert!(mail.sent_at > 1_700_000_000_000);

    let read: ReadResp = alice.call("mail.read", &ReadReq { mail_id: ids[0] }).await.unwrap().unwrap();
    assert_eq!((read.body.as_str(), read.attachments.len(), read.claimed), ("from the team", 2, false));
    assert!(list(&mut alice).await.mails[0].read);

    let claimed = claim(&mut alice, ids[0]).await.unwrap();
    assert_eq!(claimed.items.len(), 2);
    assert_eq!(pack(&mut alice).await, items(&[(1, 50), (100, 3)]));
    assert_eq!(claim(&mut alice, ids[0]).await.unwrap_err(), ErrorCode::AlreadyExists as i32);
    assert_eq!(pack(&mut alice).await, items(&[(1, 50), (100, 3)]), "a second claim adds nothing");
    assert!(list(&mut alice).await.mails[0].claimed);

    // Newest first; a mail without attachments has nothing to claim; deletes.
    let plain = send(&node, &[20], "News", json!([])).await[0];
    let listed = list(&mut alice).await.mails;
    assert_eq!(listed.iter().map(|m| m.mail_id).collect::<Vec<_>>(), [plain, ids[0]]);
    assert_eq!(claim(&mut alice, plain).await.unwrap_err(), ErrorCode::BadRequest as i32);
    assert_eq!(claim(&mut alice, 12345).await.unwrap_err(), ErrorCode::NotFound as i32);
    let deleted: Result<DeleteResp, i32> =
        alice.call("mail.delete", &DeleteReq { mail_id: plain }).await.unwrap();
    assert_eq!(deleted, Ok(DeleteResp {}));
    let deleted: Result<DeleteResp, i32> =
        alice.call("mail.delete", &DeleteReq { mail_id: plain }).await.unwrap();
    assert_eq!(deleted, Err(ErrorCode::NotFound as i32));
    assert_eq!(list(&mut alice).await.mails.len(), 1);

    // Limits and mail that could never be claimed or shown as it was written: each refused with
    // a code and a reason naming the field. Nothing reaches the mailbox.
    let bad_request = ErrorCode::BadRequest as i32;
    for (bad, code, reason) in [
        (
            json!({ "toUsers": ["20"], "title": "x".repeat(65) }),
            bad_request,
            "title: 1–64 characters, not only spaces",
        ),
        (json!({ "toUsers": ["20"], "title": " " }), bad_request, "title: 1–64 characters, not only spaces"),
        (
            json!({ "toUsers": ["20"], "title": "t", "body": "b".repeat(2001) }),
            bad_request,
            "body: at most 2000 characters",
        ),
        (
            json!({ "toUsers": ["20"], "title": "t", "attachments": vec![json!({ "itemId": 1, "count": 1 }); 11] }),
            bad_request,
            "attachments: at most 10",
        ),
        (
            json!({ "toUsers": ["20"], "title": "t", "attachments": [{ "itemId": 1, "count": 0 }] }),
            bad_request,
            "attachments[0]: count must be at least 1",
        ),
        (json!({ "toUsers": ["0"], "title": "t" }), bad_request, "toUsers: 0 is no player's id"),
        (
            json!({ "toUsers": ["20"], "title": "t", "attachments": [{ "itemId": 100, "count": 1 }, { "itemId": 999999, "count": 1 }] }),
            bad_request,
            "attachments[1]: item 999999 is not in items.json",
        ),
        (
            json!({ "toUsers": ["20"], "title": "t", "attachments": [{ "itemId": 100, "count": 4000000000u32 }] }),
            bad_request,
            "attachments[0]: item 100 would pass its max_stack of",
        ),
        (
            json!({ "toUsers": ["20"], "title": "t", "attachments": [{ "itemId": 300, "count": 1 }, { "itemId": 300, "count": 1 }] }),
            bad_request,
            "attachments[1]: item 300 would pass its max_stack of 1",
        ),
        (
            json!({ "toUsers": ["20", "987654321"], "title": "t" }),
            ErrorCode::NotFound as i32,
            "toUsers: no player has the id 987654321",
        ),
        (
            json!({ "toUsers": ["20"], "title": "Free gold\u{0}" }),
            bad_request,
            "title: must not hold control or text-direction characters",
        ),
        (
            json!({ "toUsers": ["20"], "title": "\u{1b}[2J\u{1b}[HSYSTEM" }),
            bad_request,
            "title: must not hold control or text-direction characters",
        ),
        (
            json!({ "toUsers": ["20"], "title": "t", "body": "\u{1b}]0;pwned\u{7}" }),
            bad_request,
            "body: must not hold control or text-direction characters",
        ),
    ] {
        let (_, reply) =
            admin_request(node.admin, "POST", "/v1/call/mail.send", Some(TOKEN), &bad.to_string()).await;
        assert_eq!(reply["code"], json!(code), "{bad}: {reply}");
        let said = reply["reason"].as_str().unwrap_or_default();
        assert!(said.starts_with(reason), "{bad}: {said:?} does not start with {reason:?}");
    }
    assert_eq!(list(&mut alice).await.mails.len(), 1, "none of them arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_and_retried_claims_grant_once() {
    let node = node().await;
    let mut carol = player(&node, 30).await;
    let mail = send(&node, &[30], "Race", json!([{ "itemId": 100, "count": 7 }])).await[0];
    let _ = tokio::time::timeout(Duration::from_secs(5), carol.next()).await.unwrap().unwrap(); // mail.new

    // Eight claims of one mail in flight at once on one session...
    let body = ClaimReq { mail_id: mail }.encode_to_vec();
    let mut seqs = Vec::new();
    for _ in 0..8 {
        seqs.push(carol.send("mail", "claim", body.clone().into()).await.unwrap());
    }
    let mut codes = Vec::new();
    while codes.len() < seqs.len() {
        let reply = tokio::time::timeout(Duration::from_secs(10), carol.next()).await.unwrap().unwrap();
        if reply.seq != 0 {
            codes.push(reply.code);
        }
    }
    codes.sort_unstable();
    assert_eq!(codes, [vec![0], vec![ErrorCode::AlreadyExists as i32; 7]].concat());
    // ...and one from a second session of the same player, which replaces the first.
    let mut again = player(&node, 30).await;
    assert_eq!(claim(&mut again, mail).await.unwrap_err(), ErrorCode::AlreadyExists as i32);
    assert_eq!(pack(&mut again).await, items(&[(100, 7)]), "granted once");

    // A claim cut short after the grant, before the mail was marked (what a crash between the
    // steps leaves): the pack already holds grant `mail:ID`. The retry adds nothing, marks it.
    let half_done = send(&node, &[30], "Crash", json!([{ "itemId": 101, "count": 2 }])).await[0];
    let grant = json!({ "grantId": format!("mail:{half_done}"), "items": [{ "itemId": 101, "count": 2 }], "userId": "30" });
    let (_, reply) =
        admin_request(node.admin, "POST", "/v1/call/pack.add_items", Some(TOKEN), &grant.to_string()).await;
    assert_eq!(reply, json!({ "code": 0, "data": { "granted": true } }));
    assert!(!list(&mut again).await.mails[0].claimed);
    assert_eq!(claim(&mut again, half_done).await.unwrap_err(), ErrorCode::AlreadyExists as i32);
    assert_eq!(pack(&mut again).await, items(&[(100, 7), (101, 2)]));
    assert!(list(&mut again).await.mails[0].claimed);
}
