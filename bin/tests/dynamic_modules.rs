//! Modules loaded from a shared library by a stock `mortar`: `tests/dynamic` built as a cdylib in
//! this test run (a dev-dependency, never linked into `mortar`), loaded through
//! `worker.dynamic_modules`, driven through WebSocket clients and `mortar client`; and libraries
//! that must be refused, each with exit code 1 and one error line naming the path and the reason.

#![allow(clippy::unwrap_used)]

mod support;

use mortar_cli::client::{Client, Contract};
use std::{path::PathBuf, process::Command, time::Duration};
use support::{MORTAR, Node, TempDir, library};

/// `mortar dev` in `dir` with the env `extra`; no admin listener.
fn dev(dir: &TempDir, extra: &[(&str, &str)]) -> Result<Node, String> {
    let mut env = vec![("MORTAR_ADMIN__ENABLED", "false"), ("MORTAR_GATEWAY__RATE_PER_SEC", "0")];
    env.extend_from_slice(extra);
    Node::try_start("dev", dir, &["dev", "--listen", "127.0.0.1:0", "--data", "data"], &env)
}

/// `mortar client --url URL ROUTE JSON`: exit code and stdout.
fn client(url: &str, route: &str, json: &str) -> (i32, String, String) {
    let out = Command::new(MORTAR).args(["client", "--url", url, route, json]).output().unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    (out.status.code().unwrap_or(-1), text(out.stdout).trim().to_owned(), text(out.stderr))
}

/// Sends `json` to `route` on `client`, encoded with `contract`; the reply as JSON.
async fn call(client: &mut Client, contract: &Contract, route: &str, json: &str) -> serde_json::Value {
    let (main, sub) = route.split_once('.').unwrap();
    let body = contract.encode_request(main, sub, json).unwrap();
    let reply = client.request(main, sub, body, |_| {}).await.unwrap();
    contract.reply_json(&reply, false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_mortar_serves_a_library_module_like_a_linked_one() {
    let dir = TempDir::new("dynamic");
    // A path relative to the node's working directory, set in its config file.
    std::fs::copy(library(), dir.0.join("libmortar_dynamic_test.so")).unwrap();
    let conf = dir.file("dev.toml", "[worker]\ndynamic_modules = [\"libmortar_dynamic_test.so\"]\n");
    let node = Node::try_start(
        "dev",
        &dir,
        &["dev", "--conf", conf.to_str().unwrap(), "--listen", "127.0.0.1:0", "--data", "data"],
        &[("MORTAR_ADMIN__ENABLED", "false"), ("MORTAR_GATEWAY__RATE_PER_SEC", "0")],
    )
    .unwrap();

    // A WebSocket client that knows only the envelope's and echo's protos learns dyntest's from
    // the gateway.
    let mut ws = Client::connect(&node.addr).await.unwrap();
    let mut contract = Contract::linked();
    assert!(!contract.knows("dyntest", "hello"));
    contract.add_from_gateway(&mut ws).await.unwrap();
    assert!(contract.knows("dyntest", "hello"));

    // Its async start hook ran with a context, and its log line reached the host's log.
    let log = node.log();
    let started =
        log.lines().find(|line| line.contains("dyntest started on dev")).unwrap_or_else(|| panic!("{log}"));
    assert!(
        started.contains("route=\"dyntest.on_start\"") && started.contains("module=dyntest"),
        "{started}"
    );

    let hello = call(&mut ws, &contract, "dyntest.hello", r#"{"text":"ws"}"#).await;
    assert_eq!(hello, serde_json::json!({"code": "OK", "data": {"text": "hello ws from a library"}}));
    // Sleeping, spawning and calling another (linked) module's internal route, all through Ctx.
    let nap = call(&mut ws, &contract, "dyntest.nap", r#"{"millis":40}"#).await;
    assert_eq!(nap["code"], "OK", "{nap}");
    let slept: u64 = nap["data"]["sleptMs"].as_str().unwrap().parse().unwrap();
    assert!(slept >= 40, "{nap}");
    let spawn = call(&mut ws, &contract, "dyntest.spawn", r#"{"text":"t1"}"#).await;
    assert_eq!(spawn["data"]["text"], "a spawned task recorded t1", "{spawn}");
    // Its own instance on this node, reached through Ctx.
    for n in ["1", "2"] {
        let counted = call(&mut ws, &contract, "dyntest.count", "{}").await;
        assert_eq!(counted["data"]["text"], n, "{counted}");
    }
    let shout = call(&mut ws, &contract, "dyntest.shout", r#"{"text":"loud"}"#).await;
    assert_eq!(shout["data"]["text"], "LOUD!", "{shout}");
    // A panic in the library answers INTERNAL; the node and the connection stay up.
    let panic = call(&mut ws, &contract, "dyntest.panic", r#"{"text":"boom"}"#).await;
    assert_eq!(panic, serde_json::json!({"code": "INTERNAL"}));
    let again = call(&mut ws, &contract, "dyntest.hello", r#"{"text":"again"}"#).await;
    assert_eq!(again["code"], "OK", "{again}");
    // So does a panic in a task the library spawned on the host's runtime.
    let spawned = call(&mut ws, &contract, "dyntest.spawn_panic", r#"{"text":"bang"}"#).await;
    assert_eq!(spawned["code"], "OK", "{spawned}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after = call(&mut ws, &contract, "dyntest.hello", r#"{"text":"after"}"#).await;
    assert_eq!(after["code"], "OK", "{after}");
    ws.close().await.unwrap();

    // `mortar client` finds the route's types through the gateway too.
    let (code, out, err) = client(&node.addr, "dyntest.hello", r#"{"text":"cli"}"#);
    assert_eq!(
        (code, out.as_str()),
        (0, r#"{"code":"OK","data":{"text":"hello cli from a library"}}"#),
        "{err}"
    );
    let (code, out, _) = client(&node.addr, "dyntest.panic", "{}");
    assert_eq!((code, out.as_str()), (1, r#"{"code":"INTERNAL"}"#));
    // So does `mortar bot`, driving a route of its choice.
    let report = dir.0.join("bot.json");
    let out = Command::new(MORTAR)
        .args(["bot", "--url", &node.addr, "--clients", "2", "--duration", "300ms", "--quiet"])
        .args(["--route", "dyntest.hello", "--body", r#"{"text":"bot"}"#, "--json", report.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert!(report["ok"].as_u64().is_some_and(|ok| ok > 0), "{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");

    let log = node.log();
    assert!(log.contains("handler panicked; answered INTERNAL"), "{log}");
    assert!(log.contains("dyntest.panic was asked to panic: boom"), "{log}");
    assert!(log.contains("task spawned by a handler panicked; it ended"), "{log}");
    assert!(log.contains("a dyntest task was asked to panic: bang"), "{log}");
}

#[test]
fn descriptors_can_be_turned_off() {
    let dir = TempDir::new("dynamic-off");
    let library = library();
    let modules = format!("[{:?}]", library.to_str().unwrap());
    let node = dev(
        &dir,
        &[("MORTAR_WORKER__DYNAMIC_MODULES", &modules), ("MORTAR_GATEWAY__SERVE_DESCRIPTORS", "false")],
    )
    .unwrap();
    let (code, out, _) = client(&node.addr, "sys.descriptors", "{}");
    assert_eq!(
        (code, out.as_str()),
        (1, r#"{"code":"NO_ROUTE","reason":"this gateway does not serve descriptors"}"#)
    );
    let (code, _, err) = client(&node.addr, "dyntest.hello", r#"{"text":"x"}"#);
    assert_eq!(code, 1);
    assert!(err.contains("route `dyntest.hello` is not in the proto contract"), "{err}");
    // The route is still served: an empty body needs no protos.
    let (code, out, _) = client(&node.addr, "dyntest.hello", "{}");
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_cluster_worker_loads_the_library_and_its_gateway_serves_its_protos() {
    let dir = TempDir::new("dynamic-cluster");
    let library = library();
    let modules = format!("[{:?}]", library.to_str().unwrap());
    let worker =
        support::worker(&dir, "worker-1", "127.0.0.1:0", "", &[("MORTAR_WORKER__DYNAMIC_MODULES", &modules)]);
    let registry = support::static_registry(&[&worker]);
    let gateway = support::gateway(&dir, "gateway-1", &registry, &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (code, out, err) = client(&gateway.addr, "dyntest.shout", r#"{"text":"far"}"#);
        if code == 0 {
            assert_eq!(out, r#"{"code":"OK","data":{"text":"FAR!"}}"#);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "gateway never served dyntest: {out} {err}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts `mortar dev` loading `path`; asserts it exits 1 with one `mortar:` error line holding
/// each of `expected`, and returns that line.
fn refused(dir: &TempDir, path: &str, env: &[(&str, &str)], expected: &[&str]) -> String {
    let modules = format!("[{path:?}]");
    let mut all = vec![("MORTAR_WORKER__DYNAMIC_MODULES", modules.as_str())];
    all.extend_from_slice(env);
    let error = match dev(dir, &all) {
        Ok(_) => panic!("a node loading {path} started"),
        Err(error) => error,
    };
    assert!(error.contains("exit Some(1)"), "{error}");
    let lines: Vec<&str> = error.lines().filter(|line| line.starts_with("mortar: ")).collect();
    assert_eq!(lines.len(), 1, "one error line: {error}");
    for part in expected {
        assert!(lines[0].contains(part), "{part:?} not in {:?}", lines[0]);
    }
    lines[0].to_owned()
}

/// `library()` copied into `dir` with every occurrence of `from` replaced by `to` (same length).
fn tampered(dir: &TempDir, from: &[u8], to: &[u8]) -> PathBuf {
    assert_eq!(from.len(), to.len());
    let mut bytes = std::fs::read(library()).unwrap();
    let mut found = 0;
    let mut i = 0;
    while let Some(at) = bytes[i..].windows(from.len()).position(|window| window == from) {
        bytes[i + at..i + at + from.len()].copy_from_slice(to);
        found += 1;
        i += at + from.len();
    }
    assert!(found > 0, "{} not found in the library", String::from_utf8_lossy(from));
    let path = dir.0.join("libmortar_dynamic_test.so");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn a_missing_file_is_refused() {
    let dir = TempDir::new("dynamic-missing");
    refused(&dir, "no/such/libthing.so", &[], &["dynamic module no/such/libthing.so: no such file"]);
}

#[test]
fn a_file_that_is_no_library_is_refused_with_the_loaders_reason() {
    let dir = TempDir::new("dynamic-garbage");
    let path = dir.file("libgarbage.so", "not a shared library");
    refused(
        &dir,
        path.to_str().unwrap(),
        &[],
        &["libgarbage.so: cannot be loaded: dlopen failed: ", "libgarbage.so"],
    );
}

#[test]
fn a_directory_a_fifo_and_a_symlink_loop_are_refused_as_what_they_are() {
    let dir = TempDir::new("dynamic-not-files");
    let directory = dir.0.join("libdir.so");
    std::fs::create_dir(&directory).unwrap();
    refused(&dir, directory.to_str().unwrap(), &[], &["libdir.so: is a directory, not a library file"]);
    let fifo = dir.0.join("libfifo.so");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    refused(&dir, fifo.to_str().unwrap(), &[], &["libfifo.so: is a FIFO, not a library file"]);
    let (a, b) = (dir.0.join("liba.so"), dir.0.join("libb.so"));
    std::os::unix::fs::symlink(&b, &a).unwrap();
    std::os::unix::fs::symlink(&a, &b).unwrap();
    refused(&dir, a.to_str().unwrap(), &[], &["liba.so: cannot be read: Too many levels of symbolic links"]);
}

#[test]
fn a_library_without_the_entry_point_is_refused() {
    let dir = TempDir::new("dynamic-symbol");
    let path = tampered(
        &dir,
        b"mortar_module_entry_v1_mortar_dynamic_test",
        b"mortar_module_entry_v1_mortar_dynamic_tesX",
    );
    refused(
        &dir,
        path.to_str().unwrap(),
        &[],
        &[
            "libmortar_dynamic_test.so: no entry point `mortar_module_entry_v1_mortar_dynamic_test`",
            "export_module!",
        ],
    );
}

#[test]
fn a_library_with_another_fingerprint_is_refused_naming_both() {
    let dir = TempDir::new("dynamic-fingerprint");
    let fingerprint = mortar::dynamic::FINGERPRINT;
    let layout = format!("declaration layout {}", mortar::dynamic::LAYOUT_VERSION);
    assert!(fingerprint.contains(&layout), "{fingerprint}");
    let other = fingerprint.replace(&layout, "declaration layout 9");
    let path = tampered(&dir, fingerprint.as_bytes(), other.as_bytes());
    let line = refused(
        &dir,
        path.to_str().unwrap(),
        &[],
        &["built for another ABI", "rebuild it against this node's SDK"],
    );
    assert!(line.contains(&format!("(library: {other})")), "{line}");
    assert!(line.contains(&format!("(node: {fingerprint})")), "{line}");
}

#[test]
fn a_library_module_whose_start_fails_is_refused_naming_the_library() {
    let dir = TempDir::new("dynamic-start");
    let library = library();
    let path = library.to_str().unwrap();
    refused(
        &dir,
        path,
        &[("DYNTEST_FAIL_START", "no game tables")],
        &["module `dyntest`", path, "failed to start: no game tables"],
    );
}
