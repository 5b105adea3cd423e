//! The `mortar` binary as a user runs it: `mortar dev` in one process, `mortar client` in another.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
};

const MORTAR: &str = env!("CARGO_BIN_EXE_mortar");

/// A number unique in this process, for temp paths.
fn next() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A `mortar dev` process, killed on drop, its data directory removed.
struct DevProcess {
    child: Child,
    url: String,
    data: std::path::PathBuf,
}

impl DevProcess {
    fn start() -> Self {
        Self::start_with(&[], Stdio::null())
    }

    /// Starts `mortar dev` with extra environment variables and stderr going to `stderr`.
    fn start_with(env: &[(&str, &str)], stderr: Stdio) -> Self {
        let data = std::env::temp_dir().join(format!("mortar-cli-data-{}-{}", std::process::id(), next()));
        let mut child = Command::new(MORTAR)
            .args(["dev", "--listen", "127.0.0.1:0", "--data"])
            .arg(&data)
            .env("MORTAR_ADMIN__LISTEN", "127.0.0.1:0")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("mortar dev starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout is piped"))
            .read_line(&mut line)
            .expect("readiness line");
        let url = line
            .trim()
            .strip_prefix("mortar: gateway listening on ")
            .unwrap_or_else(|| panic!("unexpected readiness line {line:?}"))
            .to_owned();
        assert!(url.starts_with("ws://127.0.0.1:") && url.ends_with("/ws"), "{url}");
        Self { child, url, data }
    }

    fn client(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(MORTAR)
            .args(["client", "--url", &self.url])
            .args(args)
            .output()
            .expect("mortar client runs");
        let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("utf-8 output");
        (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
    }
}

impl Drop for DevProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

#[test]
fn dev_and_client_from_the_command_line() {
    let mut dev = DevProcess::start();

    let (status, stdout, _) = dev.client(&["echo.say", r#"{"text":"hi"}"#]);
    assert_eq!((status, stdout.as_str()), (0, "{\"code\":\"OK\",\"data\":{\"text\":\"hi\"}}\n"));

    let (status, stdout, _) = dev.client(&["nothing.here"]);
    assert_eq!(
        (status, stdout.as_str()),
        (1, concat!(r#"{"code":"NO_ROUTE","reason":"no worker serves module \"nothing\""}"#, "\n"))
    );

    let (status, stdout, _) = dev.client(&["user.register", r#"{"account":"a","password":"password1"}"#]);
    assert_eq!(
        (status, stdout.as_str()),
        (1, concat!(r#"{"code":"BAD_REQUEST","reason":"account must be 3–32 characters"}"#, "\n"))
    );

    let (status, _, stderr) = dev.client(&["echo.say", r#"{"txt":"hi"}"#]);
    assert_eq!(status, 1);
    assert!(stderr.contains("does not fit echo.EchoReq"), "{stderr}");

    // SIGTERM stops the node cleanly.
    let terminated = Command::new("kill").args(["-TERM", &dev.child.id().to_string()]).status();
    assert!(terminated.expect("kill runs").success());
    let status = dev.child.wait().expect("mortar dev exits");
    assert!(status.success(), "{status}");
}

/// One request's log lines, at debug level, share one trace id: the gateway's "relayed" line and
/// the worker's "handled" line inside its request span.
#[test]
fn a_client_session_script_registers_logs_in_and_acts_as_one_player() {
    use std::io::Write as _;
    let dev = DevProcess::start();
    let script = r#"
# register, log in, look at the pack, use an item
user.register {"account":"script_player","password":"password1"}
user.login {"account":"script_player","password":"password1"}
pack.query
nosuch.route
pack.use {"itemId": 100, "bogus": 2}
pack.use {"itemId": 100, "count": 2}
user.profile
"#;
    let mut child = Command::new(MORTAR)
        .args(["client", "--session", "--url", &dev.url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mortar client runs");
    child.stdin.take().expect("piped").write_all(script.as_bytes()).expect("script written");
    let out = child.wait_with_output().expect("the session ends with its input");
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        stdout.lines().map(|line| serde_json::from_str(line).expect("one JSON value per line")).collect();
    assert_eq!(lines.len(), 7, "{stdout}");
    assert_eq!((lines[0]["route"].as_str(), lines[0]["code"].as_str()), (Some("user.register"), Some("OK")));
    let user = lines[0]["data"]["userId"].as_str().expect("userId, a uint64 as a JSON string").to_owned();
    assert_eq!(lines[1]["data"]["userId"].as_str(), Some(user.as_str()));
    assert!(lines[1]["data"]["token"].as_str().is_some_and(|token| token.starts_with(&format!("{user}."))));
    let name = lines[1]["data"]["name"].as_str().unwrap_or_default();
    assert!(name.starts_with("Player"), "a default display name, not the account: {name}");
    let seqs: Vec<u64> = lines.iter().filter_map(|line| line["seq"].as_u64()).collect();
    let first = seqs[0];
    assert_eq!(seqs, (first..first + 6).collect::<Vec<_>>(), "requests in order, one connection");
    let items = &lines[2]["data"]["items"];
    assert_eq!(items[1], serde_json::json!({"itemId": 100, "count": 5}), "the starter items: {stdout}");
    assert_eq!(
        (lines[3]["route"].as_str(), lines[3]["code"].as_str(), lines[3]["reason"].as_str()),
        (Some("nosuch.route"), Some("NO_ROUTE"), Some(r#"no worker serves module "nosuch""#))
    );
    assert!(lines[0].get("reason").is_none(), "an OK reply has no reason: {stdout}");
    assert!(
        lines[4]["error"].as_str().is_some_and(|e| e.contains("bogus")),
        "a line that cannot be sent: {stdout}"
    );
    assert_eq!(lines[5]["data"], serde_json::json!({"itemId": 100, "remaining": 3}));
    assert_eq!(lines[6]["data"]["account"], "script_player");
}

#[test]
fn one_trace_id_in_the_gateway_and_worker_log_lines() {
    let log_path = std::env::temp_dir().join(format!("mortar-trace-{}.log", std::process::id()));
    let log = std::fs::File::create(&log_path).expect("log file");
    // No NO_COLOR: a log that is not a terminal gets no colour codes by itself.
    let env = [("RUST_LOG", "mortar_gateway=debug,mortar_runtime=debug")];
    let mut dev = DevProcess::start_with(&env, Stdio::from(log));
    let (status, _, _) = dev.client(&["echo.say", r#"{"text":"traced"}"#]);
    assert_eq!(status, 0);
    let _ = Command::new("kill").args(["-TERM", &dev.child.id().to_string()]).status();
    let _ = dev.child.wait();
    let logs = std::fs::read_to_string(&log_path).expect("log written");
    let _ = std::fs::remove_file(&log_path);
    let trace_of = |needle: &str| {
        let line = logs
            .lines()
            .find(|line| line.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} line in:\n{logs}"));
        let start = line.find("trace=").unwrap_or_else(|| panic!("no trace id in {line:?}")) + "trace=".len();
        line[start..start + 32].to_owned()
    };
    assert!(!logs.contains('\x1b'), "colour codes in a log file:\n{logs}");
    let relayed = trace_of("relayed");
    let handled = trace_of("handled");
    assert_eq!(relayed, handled, "{logs}");
    assert!(relayed.chars().all(|c| c.is_ascii_hexdigit()), "{relayed}");
}

#[test]
fn bad_config_is_refused_at_start() {
    let out = Command::new(MORTAR)
        .args(["dev", "--conf", "/nonexistent/dev.toml"])
        .output()
        .expect("mortar dev runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/dev.toml"), "{stderr}");
}

#[test]
fn cluster_nodes_refuse_to_start_without_a_secret() {
    let out = Command::new(MORTAR)
        .args(["worker", "--rpc-listen", "127.0.0.1:0"])
        .env("MORTAR_ADMIN__ENABLED", "false")
        .output()
        .expect("mortar worker runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cluster.secret is empty"), "{stderr}");
}

#[test]
fn a_value_out_of_range_names_its_environment_variable() {
    let out = Command::new(MORTAR)
        .args(["dev", "--listen", "127.0.0.1:0"])
        .env("MORTAR_GATEWAY__MAX_IN_FLIGHT", "0")
        .output()
        .expect("mortar dev runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`gateway.max_in_flight` from MORTAR_GATEWAY__MAX_IN_FLIGHT: 0 is out of range"),
        "{stderr}"
    );
}

#[test]
fn a_game_table_that_does_not_validate_stops_the_start_naming_file_row_and_reason() {
    let dir = std::env::temp_dir().join(format!("mortar-cli-tables-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rows = r#"[{"id": 1, "name": "Gold", "kind": "currency", "max_stack": 9, "usable": false},
                  {"id": 1, "name": "Gem", "kind": "currency", "max_stack": 9, "usable": false}]"#;
    std::fs::write(dir.join("items.json"), rows).unwrap();
    let out = Command::new(MORTAR)
        .args(["dev", "--listen", "127.0.0.1:0"])
        .env("MORTAR_TABLES__PATH", &dir)
        .env("MORTAR_ADMIN__ENABLED", "false")
        .output()
        .expect("mortar dev runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = "items.json row 2: id 1 is also the id of row 1";
    assert!(stderr.contains(line), "{stderr}");
    assert_eq!(stderr.lines().filter(|l| l.starts_with("mortar: ")).count(), 1, "{stderr}");
}

#[test]
fn client_refuses_a_bad_timeout_and_says_a_refused_connection_once() {
    for bad in ["-1", "NaN", "1e30", "0", "soon"] {
        let out = Command::new(MORTAR)
            .args(["client", &format!("--timeout={bad}"), "echo.say"])
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2), "--timeout {bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--timeout"), "{stderr}");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("ws://127.0.0.1:{port}/ws");
    let out = Command::new(MORTAR).args(["client", "--url", &url, "echo.say"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("Connection refused").count(), 1, "{stderr}");
}

#[test]
fn version_names_the_abi_fingerprint_and_the_linked_modules() {
    let out = Command::new(MORTAR).arg("version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with(&format!("mortar {}\n", env!("CARGO_PKG_VERSION"))), "{text}");
    let fingerprint = text.lines().find_map(|line| line.strip_prefix("ABI fingerprint: ")).unwrap();
    assert!(fingerprint.starts_with("mortar-abi ") && fingerprint.contains("; rustc "), "{text}");
    assert!(
        text.contains("Linked modules: arena, echo, friend, group, mail, matchmake, pack, rank, user"),
        "{text}"
    );
}

#[test]
fn routes_lists_every_linked_route_with_who_may_call_it() {
    let out = Command::new(MORTAR).arg("routes").output().unwrap();
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let routes = doc["routes"].as_array().unwrap();
    let find = |route: &str| {
        routes.iter().find(|r| r["route"] == route).unwrap_or_else(|| panic!("{route} missing"))
    };
    assert_eq!(
        find("pack.use"),
        &serde_json::json!({"route": "pack.use", "access": "client", "request": "pack.UseReq", "reply": "pack.UseResp"})
    );
    assert_eq!(find("user.login")["access"], "public");
    assert_eq!(find("pack.add_items")["access"], "internal");
    assert_eq!(find("echo.room")["key"], "room", "a keyed route names its field");
    assert!(find("echo.say").get("key").is_none());
    let names: Vec<&str> = routes.iter().map(|r| r["route"].as_str().unwrap()).collect();
    assert!(names.windows(2).all(|pair| pair[0] < pair[1]), "sorted: {names:?}");
}

#[test]
fn a_stray_mortar_variable_is_warned_about_with_the_key_it_means() {
    // The warning comes before the config file is read: a missing one ends the start right after.
    let out = Command::new(MORTAR)
        .args(["worker", "--conf", "no-such-file.toml"])
        .env("MORTAR_WORKER_DYNAMIC_MODULES", "libx.so")
        .env("NO_COLOR", "1")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("MORTAR_WORKER_DYNAMIC_MODULES is not read")
            && stderr.contains("did you mean MORTAR_WORKER__DYNAMIC_MODULES?"),
        "{stderr}"
    );
}

#[test]
fn a_refused_module_setting_points_at_its_line() {
    let dir = std::env::temp_dir().join(format!("mortar-cli-module-line-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("dev.toml");
    std::fs::write(
        &conf,
        "[gateway]\nlisten = \"127.0.0.1:0\"\n\n[modules.rank]\nclose_grace_ms = \"soon\"\n",
    )
    .unwrap();
    let out = Command::new(MORTAR)
        .args(["dev", "--conf", conf.to_str().unwrap(), "--data", dir.join("data").to_str().unwrap()])
        .env("MORTAR_ADMIN__ENABLED", "false")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success());
    let expected = format!(
        "modules.rank: close_grace_ms: invalid type: string \"soon\", expected u64 ({} line 5)",
        conf.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
}
