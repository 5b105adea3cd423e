//! The embedded store when its disk fails under a real `mortar dev`: a full disk (a small tmpfs
//! of the test's own) and an empty store file.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod support;

use mortar_cli::client::Client;
use mortar_group::group::{CreateReq, CreateResp, MineReq, MineResp};
use mortar_pb::ErrorCode;
use mortar_user::user::{LoginReq, LoginResp, RegisterReq, RegisterResp};
use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};
use support::{Node, TempDir, call};

/// A tmpfs of `size` mounted on a directory of the test's own, unmounted on drop. Needs root (or
/// CAP_SYS_ADMIN), as scripts/test.sh runs in CI; without it the test fails saying so.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &TempDir, size: &str) -> Self {
        let path = dir.0.join("tmpfs");
        std::fs::create_dir_all(&path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output()
            .expect("the `mount` command runs");
        assert!(
            out.status.success(),
            "this test needs to mount a tmpfs (`mount -t tmpfs -o size={size} tmpfs {}`), which takes root or CAP_SYS_ADMIN; scripts/test.sh runs as root in CI. mount said: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Self { path }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(&self.path).status().is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy (a process the test started is dying): detach it now, freed when it is.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Writes zeros to `path` until the disk is full; how many bytes went in.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(error) => {
                assert_eq!(error.raw_os_error(), Some(28), "ENOSPC, not {error}");
                break;
            }
        }
    }
    let _ = file.sync_all();
    written
}

fn dev(dir: &TempDir, data: &Path) -> Node {
    let env = [
        ("MORTAR_ADMIN__LISTEN", "127.0.0.1:0"),
        ("MORTAR_GATEWAY__RATE_PER_SEC", "0"),
        ("MORTAR_MODULES__GROUP__MAX_GROUPS_PER_USER", "10000"),
        ("MORTAR_MODULES__GROUP__MAX_NAME_CHARS", "4000"),
    ];
    let args = ["dev", "--listen", "127.0.0.1:0", "--data", data.to_str().unwrap()];
    Node::start("dev", dir, &args, &env)
}

async fn player(url: &str, register: bool) -> Client {
    let mut client = Client::connect(url).await.unwrap();
    let (account, password) = ("keeper".to_owned(), "keeper-password".to_owned());
    if register {
        let req = RegisterReq { account: account.clone(), password: password.clone() };
        call::<_, RegisterResp>(&mut client, "user.register", req).await.unwrap();
    }
    call::<_, LoginResp>(&mut client, "user.login", LoginReq { account, password }).await.unwrap();
    client
}

/// A group with a long name: about 3 KB written.
async fn create(client: &mut Client, n: usize) -> Result<u64, i32> {
    let name = format!("{n:05}{}", "x".repeat(3000));
    call::<_, CreateResp>(client, "group.create", CreateReq { name }).await.map(|r| r.group_id)
}

async fn mine(client: &mut Client) -> Vec<u64> {
    let groups = call::<_, MineResp>(client, "group.mine", MineReq {}).await.unwrap().groups;
    groups.into_iter().map(|g| g.group_id).collect()
}

fn metric(node: &Node, name: &str) -> Option<f64> {
    let (_, text) = node.admin_get("/metrics");
    text.lines().find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_makes_the_store_unwritable_and_it_recovers_by_itself_losing_nothing() {
    let dir = TempDir::new("full-disk");
    let tmpfs = Tmpfs::mount(&dir, "8m");
    let data = tmpfs.path.join("data");
    let filler = tmpfs.path.join("filler");
    let node = dev(&dir, &data);
    let mut client = player(&node.addr, true).await;
    let mut acknowledged = Vec::new();
    for n in 0..10 {
        acknowledged.push(create(&mut client, n).await.unwrap());
    }
    assert_eq!(node.admin_get("/readyz").0, 200);
    assert_eq!(metric(&node, "mortar_store_writable{backend=\"embedded\"}"), Some(1.0));

    // The disk fills up: writes go on until the store needs a page it cannot have.
    assert!(fill(&filler) > 0);
    let mut refused = None;
    for n in 10..5_000 {
        match create(&mut client, n).await {
            Ok(id) => acknowledged.push(id),
            Err(code) => {
                refused = Some(code);
                break;
            }
        }
    }
    assert_eq!(refused, Some(ErrorCode::Unavailable as i32), "writes fail once the disk is full");
    // It stays unwritable while the disk is full: not ready, the gauge at 0, writes refused.
    for _ in 0..3 {
        assert_eq!(node.admin_get("/readyz").0, 503, "not ready while the store cannot write");
        assert_eq!(node.admin_get("/healthz").0, 200, "the process is alive");
        assert_eq!(metric(&node, "mortar_store_writable{backend=\"embedded\"}"), Some(0.0));
        assert_eq!(create(&mut client, 9_999).await, Err(ErrorCode::Unavailable as i32));
        std::thread::sleep(Duration::from_millis(700));
    }
    assert!(metric(&node, "mortar_store_write_failures_total{backend=\"embedded\"}").unwrap() >= 1.0);
    assert!(node.log().contains("embedded store cannot write"), "{}", node.log());

    // Space comes back: the store recovers by itself, with every acknowledged write.
    std::fs::remove_file(&filler).unwrap();
    wait_until("ready again once space is back", Duration::from_secs(30), || {
        node.admin_get("/readyz").0 == 200
    });
    assert_eq!(metric(&node, "mortar_store_writable{backend=\"embedded\"}"), Some(1.0));
    assert!(node.log().contains("embedded store writes again"), "{}", node.log());
    acknowledged.push(create(&mut client, 10_000).await.expect("writes succeed again"));
    let held = mine(&mut client).await;
    for id in &acknowledged {
        assert!(held.contains(id), "acknowledged group {id} lost; held {}", held.len());
    }

    // And after a restart on the same file.
    drop(client);
    drop(node);
    let node = dev(&dir, &data);
    let mut client = player(&node.addr, false).await;
    let held = mine(&mut client).await;
    for id in &acknowledged {
        assert!(held.contains(id), "acknowledged group {id} lost after the restart");
    }
    assert_eq!(node.admin_get("/readyz").0, 200);
    drop(node);
    drop(tmpfs);
}

#[test]
fn an_empty_store_file_is_refused_at_start_naming_it() {
    let dir = TempDir::new("empty-store");
    let data = dir.0.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let file = data.join("mortar.redb");
    std::fs::write(&file, b"").unwrap();
    let args = ["dev", "--listen", "127.0.0.1:0", "--data", data.to_str().unwrap()];
    let refused = Node::try_start("dev", &dir, &args, &[("MORTAR_ADMIN__LISTEN", "127.0.0.1:0")])
        .err()
        .expect("the node refuses an empty store file");
    assert!(refused.contains("exit Some(1)"), "{refused}");
    assert!(refused.contains(&format!("{} is empty", file.display())), "{refused}");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 0, "the file is left as it was");
}
