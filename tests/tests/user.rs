//! The user module in `mortar dev` (embedded store), through real WebSocket clients: register,
//! duplicate accounts, login, wrong passwords, resume, a login elsewhere, starter items once,
//! profile and rename. (Rate limits have their own test binary: a module's config is one per
//! process.)
#![allow(clippy::unwrap_used)]

use mortar_cli::client::{Client, ClientError};
use mortar_pack::pack::{Item, QueryReq, QueryResp};
use mortar_pb::{ErrorCode, Kick, UserMessage};
use mortar_tests::{DevNode, Received, login, raw, receive, register, request, send};
use mortar_user::user::{
    LoginReq, ProfileReq, ProfileResp, RegisterReq, RenameReq, RenameResp, ResumeReq, ResumeResp,
};
use prost::Message;
use std::time::Duration;

/// A dev node whose argon2 is cheap (the tests hash many passwords).
async fn node() -> DevNode {
    DevNode::with_config(|config| {
        let user = serde_json::json!({ "argon2_memory_kib": 1024, "argon2_iterations": 1 });
        config.modules.insert("user".into(), user);
    })
    .await
}

async fn call<Req: Message, Resp: Message + Default>(
    client: &mut Client,
    route: &str,
    req: Req,
) -> Result<Resp, i32> {
    client.call(route, &req).await.unwrap()
}

async fn pack(client: &mut Client) -> Vec<Item> {
    call::<_, QueryResp>(client, "pack.query", QueryReq {}).await.unwrap().items
}

/// The starter items of the built-in `starter_items.json`.
fn starter() -> Vec<Item> {
    [(1, 500), (100, 5), (300, 1)].into_iter().map(|(item_id, count)| Item { item_id, count }).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_login_resume_and_a_login_elsewhere() {
    let node = node().await;
    let mut guest = Client::connect(&node.url()).await.unwrap();
    let bad = ErrorCode::BadRequest as i32;
    assert_eq!(register(&mut guest, "an", "password1").await, Err(bad), "account too short");
    assert_eq!(register(&mut guest, "Ana", "password1").await, Err(bad), "upper case");
    assert_eq!(register(&mut guest, "ana", "short").await, Err(bad), "password too short");
    let ana = register(&mut guest, "ana", "password1").await.unwrap();
    assert_ne!(ana, 0);
    assert_eq!(register(&mut guest, "ana", "password2").await, Err(ErrorCode::AlreadyExists as i32));
    assert_eq!(
        call::<_, ProfileResp>(&mut guest, "user.profile", ProfileReq {}).await,
        Err(ErrorCode::NotLoggedIn as i32)
    );

    let denied: Result<u64, i32> = Err(ErrorCode::PermissionDenied as i32);
    assert_eq!(login(&mut guest, "ana", "wrong-password").await.map(|r| r.user_id), denied);
    assert_eq!(login(&mut guest, "nobody", "password1").await.map(|r| r.user_id), denied);
    let first = login(&mut guest, "ana", "password1").await.unwrap();
    assert_eq!(first.user_id, ana);
    assert!(
        first.name.starts_with("Player") && first.name.len() == 14,
        "a default name, not the account: {}",
        first.name
    );
    // The session is the player's now; the starter items came once.
    assert_eq!(pack(&mut guest).await, starter());
    let profile: ProfileResp = call(&mut guest, "user.profile", ProfileReq {}).await.unwrap();
    assert_eq!(
        (profile.user_id, profile.account.as_str(), profile.name.as_str()),
        (ana, "ana", first.name.as_str())
    );
    assert!(profile.created_at > 0);
    let renamed: RenameResp =
        call(&mut guest, "user.rename", RenameReq { name: "Ana the Brave".into() }).await.unwrap();
    assert_eq!(renamed.name, "Ana the Brave");
    for name in ["", "   ", "a\u{7}b", &"x".repeat(25)] {
        assert_eq!(
            call::<_, RenameResp>(&mut guest, "user.rename", RenameReq { name: name.into() }).await,
            Err(bad)
        );
    }

    // Reconnect and resume with the token.
    let mut again = Client::connect(&node.url()).await.unwrap();
    let resumed: ResumeResp =
        call(&mut again, "user.resume", ResumeReq { token: first.token.clone() }).await.unwrap();
    assert_eq!((resumed.user_id, resumed.name.as_str()), (ana, "Ana the Brave"));
    kicked(&mut guest).await;

    // Logging in again revokes the token, kicks the resumed session, and grants nothing twice.
    let mut third = Client::connect(&node.url()).await.unwrap();
    let second = login(&mut third, "ana", "password1").await.unwrap();
    kicked(&mut again).await;
    assert_ne!(second.token, first.token);
    assert_eq!(pack(&mut third).await, starter());
    let mut fourth = Client::connect(&node.url()).await.unwrap();
    assert_eq!(
        call::<_, ResumeResp>(&mut fourth, "user.resume", ResumeReq { token: first.token })
            .await
            .map(|r| r.user_id),
        denied
    );
    for token in ["", "x", "1.abc", &format!("{ana}.{}", "0".repeat(64))] {
        assert_eq!(
            call::<_, ResumeResp>(&mut fourth, "user.resume", ResumeReq { token: token.into() })
                .await
                .map(|r| r.user_id),
            denied
        );
    }
}

/// Reads until `sys.kick` with `LOGGED_IN_ELSEWHERE`, then the close.
/// The code and reason of `route`'s reply to `req`.
async fn refusal(client: &mut Client, route: &str, req: impl Message) -> (i32, String) {
    let (main, sub) = route.split_once('.').unwrap();
    let reply = client.request(main, sub, req.encode_to_vec().into(), |_| {}).await.unwrap();
    (reply.code, reply.reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_mistake_comes_back_with_its_reason() {
    let node = node().await;
    // A plain WebSocket client, decoding the envelope itself.
    let mut socket = raw(&node.url()).await;
    let body = RegisterReq { account: "a".into(), password: "password1".into() }.encode_to_vec();
    send(&mut socket, request("user.register", 5, body)).await;
    let Received::Message(reply) = receive(&mut socket).await else { panic!("closed") };
    assert_eq!(
        (reply.main_type.as_str(), reply.sub_type.as_str(), reply.seq, reply.code),
        ("user", "register", 5, ErrorCode::BadRequest as i32)
    );
    assert_eq!(reply.reason, "account must be 3–32 characters");
    assert!(reply.data.is_empty());

    let mut client = Client::connect(&node.url()).await.unwrap();
    let registration =
        |account: &str, password: &str| RegisterReq { account: account.into(), password: password.into() };
    let bad = ErrorCode::BadRequest as i32;
    assert_eq!(
        refusal(&mut client, "user.register", registration("Ana", "password1")).await,
        (bad, "account may hold only a–z, 0–9 and _".into())
    );
    assert_eq!(
        refusal(&mut client, "user.register", registration("ana", "short")).await,
        (bad, "password must be 8–128 bytes".into())
    );
    let ok =
        client.request("user", "register", registration("ana", "password1").encode_to_vec().into(), |_| {});
    let ok = ok.await.unwrap();
    assert_eq!((ok.code, ok.reason.as_str()), (0, ""), "an OK reply has no reason");
    assert_eq!(
        refusal(&mut client, "user.register", registration("ana", "password2")).await,
        (ErrorCode::AlreadyExists as i32, "account is taken".into())
    );
    // A wrong password and an unknown account read the same.
    let wrong = (ErrorCode::PermissionDenied as i32, "wrong account or password".to_owned());
    let credentials =
        |account: &str, password: &str| LoginReq { account: account.into(), password: password.into() };
    assert_eq!(refusal(&mut client, "user.login", credentials("ana", "password2")).await, wrong);
    assert_eq!(refusal(&mut client, "user.login", credentials("nobody", "password1")).await, wrong);
    assert_eq!(
        refusal(&mut client, "user.rename", RenameReq { name: "x".into() }).await,
        (ErrorCode::NotLoggedIn as i32, "log in first".into())
    );
    login(&mut client, "ana", "password1").await.unwrap();
    assert_eq!(
        refusal(&mut client, "user.rename", RenameReq { name: " ".repeat(3) }).await,
        (bad, "name must be 1–24 characters, not only spaces".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn display_names_are_normalized_visible_and_unique_case_insensitively() {
    let node = node().await;
    let (mut ana, mut bob) =
        (Client::connect(&node.url()).await.unwrap(), Client::connect(&node.url()).await.unwrap());
    register(&mut ana, "ana", "password1").await.unwrap();
    register(&mut bob, "bob", "password1").await.unwrap();
    let ana_default = login(&mut ana, "ana", "password1").await.unwrap().name;
    login(&mut bob, "bob", "password1").await.unwrap();
    let rename = |name: &str| RenameReq { name: name.into() };
    let taken = (ErrorCode::AlreadyExists as i32, "name is taken by another player".to_owned());
    // Nobody takes another's default name, in any case: the form is kept for new players.
    let reserved = "names of the form Player and 8 digits are given to new players; choose another";
    assert_eq!(
        refusal(&mut bob, "user.rename", rename(&ana_default.to_uppercase())).await,
        (ErrorCode::BadRequest as i32, reserved.to_owned())
    );
    let renamed: RenameResp = call(&mut ana, "user.rename", rename("Ana")).await.unwrap();
    assert_eq!(renamed.name, "Ana");
    // Another case, fullwidth letters, padding: the same name, taken.
    for same in ["ANA", "ana", "Ａｎａ", "  Ana "] {
        assert_eq!(refusal(&mut bob, "user.rename", rename(same)).await, taken, "{same:?}");
    }
    // Invisible characters are refused with the code point.
    for (hidden, point) in [("An\u{200B}a", "U+200B"), ("\u{202E}anA", "U+202E"), ("A\u{2066}na", "U+2066")] {
        let (code, reason) = refusal(&mut bob, "user.rename", rename(hidden)).await;
        assert_eq!(code, ErrorCode::BadRequest as i32, "{hidden:?}");
        assert!(reason.contains(point), "{reason}");
    }
    let bob_named: RenameResp =
        call(&mut bob, "user.rename", rename(" Bob   the\u{3000}Builder ")).await.unwrap();
    assert_eq!(bob_named.name, "Bob the Builder", "NFKC, one space between words");
    // Its owner may change the case of a name; the old name is free again after a rename.
    let again: RenameResp = call(&mut ana, "user.rename", rename("ANA")).await.unwrap();
    assert_eq!(again.name, "ANA");
    let _: RenameResp = call(&mut ana, "user.rename", rename("Anabel")).await.unwrap();
    let freed: RenameResp = call(&mut bob, "user.rename", rename("ana")).await.unwrap();
    assert_eq!(freed.name, "ana");
}

/// An account as the user module wrote it before display names had keys: `name` is the account
/// name unless the player chose one, and there is no `name_key`.
async fn make_legacy(data: &std::path::Path, account: &str, name: &str) {
    use mortar_user::Account;
    let config = mortar_node::config::StorageConfig { path: data.to_owned(), ..Default::default() };
    let store = mortar::store::Store::<Account>::new(mortar_backends::storage::open(&config).await.unwrap());
    let found = store.find_one("account", account).await.unwrap().unwrap();
    store
        .update(found.id, |doc| {
            doc.name = name.into();
            doc.name_key = None;
            Ok(())
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_named_before_names_had_keys_get_one_at_their_next_login() {
    let data = mortar_tests::temp_dir("legacy-names");
    let config = |config: &mut mortar_node::NodeConfig| {
        config.storage.path = data.clone();
        let user = serde_json::json!({ "argon2_memory_kib": 1024, "argon2_iterations": 1 });
        config.modules.insert("user".into(), user);
    };
    let node = DevNode::with_config(config).await;
    let mut client = Client::connect(&node.url()).await.unwrap();
    for account in ["old_ana", "old_bob", "old_cy", "new_dee"] {
        register(&mut client, account, "password1").await.unwrap();
    }
    drop(client);
    node.stop().await.unwrap();
    make_legacy(&data, "old_ana", "old_ana").await; // the default name then
    make_legacy(&data, "old_bob", "Bob").await;
    make_legacy(&data, "old_cy", "Cy").await;

    let node = DevNode::with_config(config).await;
    // A name without a key is not reserved: a newer player may take it.
    let mut dee = Client::connect(&node.url()).await.unwrap();
    login(&mut dee, "new_dee", "password1").await.unwrap();
    let _: RenameResp = call(&mut dee, "user.rename", RenameReq { name: "BOB".into() }).await.unwrap();
    // At their login: the default name of then becomes a default name of now; a chosen name is
    // kept and reserved, unless another player holds it, and then it becomes a default name.
    let ana = login(&mut Client::connect(&node.url()).await.unwrap(), "old_ana", "password1").await.unwrap();
    assert_eq!(ana.name, format!("Player{:08}", ana.user_id % 100_000_000), "not the account name");
    let bob = login(&mut Client::connect(&node.url()).await.unwrap(), "old_bob", "password1").await.unwrap();
    assert!(bob.name.starts_with("Player"), "{}", bob.name);
    let cy = login(&mut Client::connect(&node.url()).await.unwrap(), "old_cy", "password1").await.unwrap();
    assert_eq!(cy.name, "Cy");
    let taken = (ErrorCode::AlreadyExists as i32, "name is taken by another player".to_owned());
    assert_eq!(refusal(&mut dee, "user.rename", RenameReq { name: "cy".into() }).await, taken);
    node.stop().await.unwrap();
    // Ana's new default name has its key in the unique index.
    let config = mortar_node::config::StorageConfig { path: data.clone(), ..Default::default() };
    let store = mortar::store::Store::<mortar_user::Account>::new(
        mortar_backends::storage::open(&config).await.unwrap(),
    );
    let holder = store.find_one("name_key", &ana.name.to_lowercase()).await.unwrap().map(|found| found.id);
    assert_eq!(holder, Some(ana.user_id));
    let _ = std::fs::remove_dir_all(&data);
}

async fn kicked(client: &mut Client) {
    let mut reason = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), client.next()).await.expect("kicked in time") {
            Ok(UserMessage { main_type, sub_type, data, .. }) if main_type == "sys" && sub_type == "kick" => {
                reason = Some(Kick::decode(data).unwrap().reason);
            }
            Ok(_) => {}
            Err(ClientError::Closed(_)) => break,
            Err(error) => panic!("{error}"),
        }
    }
    assert_eq!(reason, Some(ErrorCode::LoggedInElsewhere as i32));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_config_section_that_does_not_check_stops_the_start() {
    let mut config = mortar_node::NodeConfig::default();
    config.storage.path = mortar_tests::temp_dir("user-config");
    config.modules.insert("user".into(), serde_json::json!({"argon2_memory_kib": 1}));
    let listeners = mortar_node::Listeners {
        gateway: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        admin: None,
    };
    let error = mortar_node::dev::run(config, listeners, || {}, std::future::pending()).await.unwrap_err();
    assert!(error.to_string().starts_with("modules.user: argon2 parameters"), "{error}");
}
