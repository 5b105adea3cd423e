//! Store throughput: get and compare-and-set updates per second on the embedded backend, durable
//! (every acknowledged write fsync'd), with 1 and 100 concurrent tasks. A plain timed run rather
//! than criterion: what matters is throughput under concurrency, where group commit works.
//! Run with `cargo bench -p mortar-backends --bench store`; numbers are in docs/benchmarks.md. With
//! `MORTAR_BENCH_MONGODB_URL=mongodb://HOST:PORT/DB` the same rows run against that server too.
#![allow(missing_docs, clippy::unwrap_used)]

use mortar::store::{Document, Store};
use mortar_backends::storage::{embedded::EmbeddedStore, mongo::MongoStore};
use serde::{Deserialize, Serialize};
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

#[derive(Clone, Default, Serialize, Deserialize)]
struct Pack {
    items: Vec<(u32, u32)>,
}

impl Document for Pack {
    const COLLECTION: &'static str = "bench_pack";
}

const WINDOW: Duration = Duration::from_secs(3);
const DOCS: u64 = 1_000;

/// Runs `op` from `tasks` tasks for [`WINDOW`]; operations per second.
async fn rate<F, Fut>(tasks: u64, op: F) -> f64
where
    F: Fn(u64, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let started = Instant::now();
    let workers: Vec<_> = (0..tasks)
        .map(|task| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut done = 0u64;
                while started.elapsed() < WINDOW {
                    op(task, done).await;
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for worker in workers {
        total += worker.await.unwrap();
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// The yardstick: 4 KiB writes each followed by an fsync, on the same disk, per second.
fn fsyncs_per_second(dir: &std::path::Path) -> f64 {
    use std::io::Write as _;
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("fsync-yardstick");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = [7u8; 4096];
    let (started, mut n) = (Instant::now(), 0u32);
    while started.elapsed() < Duration::from_secs(1) {
        file.write_all(&block).unwrap();
        file.sync_data().unwrap();
        n += 1;
    }
    let _ = std::fs::remove_file(path);
    f64::from(n) / started.elapsed().as_secs_f64()
}

/// Fills the collection, then measures gets and CAS updates with 1 and 100 tasks.
async fn rows(backend: &str, store: &Store<Pack>) {
    let pack = Pack { items: (0..20).map(|i| (i, 1)).collect() };
    for id in 1..=DOCS {
        // A rerun against a kept server finds them there.
        let _ = store.insert(id, pack.clone()).await;
    }
    for tasks in [1, 100] {
        let s = store.clone();
        let gets = rate(tasks, move |task, n| {
            let s = s.clone();
            async move {
                s.get((task * 7 + n) % DOCS + 1).await.unwrap();
            }
        })
        .await;
        println!("{backend} get, {tasks:>3} tasks: {gets:>9.0}/s");
    }
    for tasks in [1, 100] {
        let s = store.clone();
        // Each task updates its own documents: CAS without conflicts, one fsync per batch.
        let updates = rate(tasks, move |task, n| {
            let s = s.clone();
            async move {
                let id = (task * 10 + n % 10) % DOCS + 1;
                s.update(id, |pack| {
                    pack.items[0].1 += 1;
                    Ok(())
                })
                .await
                .unwrap();
            }
        })
        .await;
        println!("{backend} durable CAS update, {tasks:>3} tasks: {updates:>9.0}/s");
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let dir = std::env::temp_dir().join(format!("mortar-store-bench-{}", std::process::id()));
        println!("yardstick: 4 KiB write + fsync on this disk: {:.0}/s", fsyncs_per_second(&dir));
        let store = Store::<Pack>::new(Arc::new(EmbeddedStore::open(&dir).unwrap()));
        rows("embedded", &store).await;
        if let Ok(url) = std::env::var("MORTAR_BENCH_MONGODB_URL") {
            let mongo = MongoStore::connect(&url, Duration::from_secs(5)).await.unwrap();
            rows("mongodb", &Store::<Pack>::new(Arc::new(mongo))).await;
        }
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    });
}
