//! `mortar bot` against a real dev node: a short run writes a JSON report of the expected shape
//! with nonzero counts.

use mortar_cli::bot::{self, BotOptions, Protocol};
use mortar_tests::DevNode;
use std::time::Duration;

fn options(url: String, json: std::path::PathBuf) -> BotOptions {
    BotOptions {
        url,
        clients: 8,
        duration: Duration::from_secs(2),
        scenario: "echo".into(),
        ramp_up: 0.0,
        rate: 0.0,
        payload: 16,
        item: 100,
        protocol: Protocol::Mortar,
        route: None,
        body: None,
        json: Some(json),
        quiet: true,
        threads: 0,
        login: None,
        prepare: None,
        fanout: None,
        window: 1,
        senders: 1,
        mode: "squad".into(),
        metrics: None,
        server_pid: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_push_scenario_measures_pushes_reaching_every_client() {
    let node = DevNode::with_config(|config| config.gateway.rate_per_sec = 0).await;
    let path = std::env::temp_dir().join(format!("mortar-bot-push-{}.json", std::process::id()));
    let mut options = options(format!("{0},{0}", node.url()), path.clone());
    options.scenario = "push".into();
    options.clients = 20;
    options.duration = Duration::from_millis(800);
    options.login = Some(r#"testkit.login {"text":"{user}"}"#.into());
    options.fanout = Some(r#"testkit.push {"text":"{users}"}"#.into());
    options.window = 4;
    options.senders = 2;
    let report = bot::run_push(options.clone()).await.expect("bot runs");
    let _ = std::fs::remove_file(&path);
    assert_eq!((report.clients, report.connected), (20, 20));
    assert!(report.rounds > 0, "{report}");
    assert!(report.pushes >= report.rounds * 20, "every completed round reached all 20: {report}");
    assert!(report.time_to_last_ms.p50 > 0.0, "{report}");
    assert!(report.errors.is_empty(), "{report}");

    options.fanout = None;
    let error = bot::run_push(options).await.expect_err("no --fanout").to_string();
    assert!(error.contains("--fanout"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bot_run_writes_a_json_report() {
    let node = DevNode::with_config(|config| config.gateway.rate_per_sec = 0).await;
    let path = std::env::temp_dir().join(format!("mortar-bot-{}.json", std::process::id()));
    let report = bot::run(options(node.url(), path.clone())).await.expect("bot runs");
    assert_eq!((report.clients, report.connected), (8, 8));

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("report written")).unwrap();
    let _ = std::fs::remove_file(&path);
    for key in [
        "scenario",
        "protocol",
        "url",
        "clients",
        "connected",
        "duration_s",
        "sent",
        "ok",
        "errors",
        "requests_per_sec",
    ] {
        assert!(json.get(key).is_some(), "missing {key} in {json}");
    }
    for key in ["p50", "p90", "p99", "p999", "max", "mean"] {
        assert!(json["latency_ms"][key].as_f64().is_some_and(|ms| ms > 0.0), "latency {key} in {json}");
    }
    assert_eq!(json["scenario"], "echo");
    assert!(json["ok"].as_u64().is_some_and(|ok| ok > 0), "{json}");
    assert!(json["requests_per_sec"].as_f64().is_some_and(|rps| rps > 0.0), "{json}");
    assert_eq!(json["errors"], serde_json::json!({}), "no errors against a healthy node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bot_reports_rate_limited_replies_by_code() {
    let node = DevNode::with_config(|config| {
        config.gateway.rate_per_sec = 5;
        config.gateway.rate_burst = 5;
    })
    .await;
    let path = std::env::temp_dir().join(format!("mortar-bot-limited-{}.json", std::process::id()));
    let mut options = options(node.url(), path.clone());
    options.clients = 2;
    options.duration = Duration::from_millis(500);
    let report = bot::run(options).await.expect("bot runs");
    let _ = std::fs::remove_file(&path);
    assert!(report.errors.get("RATE_LIMITED").is_some_and(|n| *n > 0), "{report}");
}

#[tokio::test]
async fn bot_says_why_nothing_connected() {
    let error = bot::run(options("ws://127.0.0.1:9/ws".into(), std::env::temp_dir().join("unused.json")))
        .await
        .expect_err("nothing listens on port 9");
    assert!(error.to_string().contains("no client could connect"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_and_pack_scenarios_register_once_and_use_what_the_player_has() {
    let node = DevNode::with_config(|config| {
        config.gateway.rate_per_sec = 0;
        config
            .modules
            .insert("user".into(), serde_json::json!({"argon2_memory_kib": 1024, "argon2_iterations": 1}));
    })
    .await;
    let path = std::env::temp_dir().join(format!("mortar-bot-login-{}.json", std::process::id()));
    let mut options = options(node.url(), path.clone());
    options.clients = 4;
    options.duration = Duration::from_millis(500);
    options.scenario = "login".into();
    let logins = bot::run(options.clone()).await.expect("bot runs");
    assert!(logins.ok > 0 && logins.errors.is_empty(), "{logins}");
    // Again: the accounts exist now, which a setup's register takes as fine.
    options.scenario = "pack".into();
    let uses = bot::run(options).await.expect("bot runs");
    let _ = std::fs::remove_file(&path);
    assert_eq!((uses.connected, uses.ok), (4, 4 * 5), "each player has the 5 starter potions: {uses}");
    assert!(uses.errors.keys().all(|code| code == "1001"), "then NOT_ENOUGH_ITEMS: {uses}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_push_scenario_prepares_a_group_and_counts_its_messages() {
    let node = DevNode::with_config(|config| {
        config.gateway.rate_per_sec = 0;
        // Cheap password hashes: the scenario logs many players in.
        config
            .modules
            .insert("user".into(), serde_json::json!({"argon2_memory_kib": 1024, "argon2_iterations": 1}));
    })
    .await;
    let path = std::env::temp_dir().join(format!("mortar-bot-group-{}.json", std::process::id()));
    let mut options = options(node.url(), path.clone());
    options.scenario = "push".into();
    options.clients = 12;
    options.duration = Duration::from_millis(800);
    let account = r#""account":"grp{user}","password":"group-password""#;
    options.login = Some(format!(
        r#"user.register {{{account}}} ; user.login {{{account}}} ; group.join {{"groupId":"{{prepared}}"}}"#
    ));
    options.prepare = Some(r#"group.create {"name":"bots"}"#.into());
    options.fanout = Some(r#"group.say {"groupId":"{prepared}","text":"hi"}"#.into());
    let report = bot::run_push(options).await.expect("bot runs");
    let _ = std::fs::remove_file(&path);
    assert_eq!((report.clients, report.connected), (12, 12), "{report}");
    assert!(report.rounds > 0, "{report}");
    assert!(report.pushes >= report.rounds * 12, "every round reached the 12 members: {report}");
    assert!(report.errors.is_empty(), "pack.changed and other pushes are not counted: {report}");
}
