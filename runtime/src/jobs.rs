//! The modules' scheduled jobs (`mortar::job!`): each run once per period, on one worker of the
//! cluster at a time.
//!
//! Every worker that enables a job's module runs a runner for it. Run `k` is due once period `k`
//! (`k × every` to `(k + 1) × every` after the Unix epoch) has ended; only the latest due run is
//! run, so periods missed while every worker was down are caught up once. Which worker runs it is
//! decided by a lease: a document of collection `mortar_jobs` in the module's store (id from the
//! job's name) holding the last key done, the holder's node id and when its lease lapses. A
//! runner takes the lease with compare-and-set when it is free or lapsed, renews it every third
//! of `worker.job_lease_ms` while the run lasts, and records the key as done (freeing the lease)
//! when the run ends `Ok`. A runner that cannot renew in time drops its run: another worker may
//! have taken the lease over. A run that failed is tried again after `worker.job_retry_ms`.

use super::Core;
use mortar_abi::{
    Failure,
    host::{Invocation, Request, Session},
    job::JobDecl,
    store::{Collection, Fields, RawDoc, StoreError},
};
use mortar_telemetry::{metrics as m, trace};
use serde_json::{Value, json};
use std::{
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

/// How a worker runs its modules' jobs.
#[derive(Clone, Copy, Debug)]
pub struct JobTiming {
    /// How long a lease lasts without renewal: how soon another worker takes over a job whose
    /// holder died.
    pub lease: Duration,
    /// A run's deadline, from its start (its `Ctx::deadline`); a run still going then is cut
    /// short and tried again.
    pub timeout: Duration,
    /// How long after a failed run it is tried again.
    pub retry: Duration,
}

/// The collection of the jobs' leases.
const LEASES: Collection = Collection { name: "mortar_jobs", indexes: &[], sorted: &[] };

/// The lease document's id for job `name`; its `name` field tells a collision apart.
fn lease_id(name: &str) -> u64 {
    mortar_abi::store::stable_id(&[name.as_bytes()])
}

/// A job's lease as its document holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Lease {
    /// The last key whose run ended `Ok`.
    done: Option<u64>,
    /// The node running it now; empty when none.
    holder: String,
    /// When the holder's lease lapses, in ms since the Unix epoch.
    until_ms: u64,
}

impl Lease {
    fn read(doc: &RawDoc) -> Self {
        let fields = &doc.fields;
        Self {
            done: fields.get("done").and_then(Value::as_u64),
            holder: fields.get("holder").and_then(Value::as_str).unwrap_or_default().to_owned(),
            until_ms: fields.get("until_ms").and_then(Value::as_u64).unwrap_or(0),
        }
    }

    fn fields(&self, name: &str) -> Fields {
        let json =
            json!({ "name": name, "done": self.done, "holder": self.holder, "until_ms": self.until_ms });
        match json {
            Value::Object(fields) => fields,
            _ => Fields::new(),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64)
}

/// The key of the latest run due at `now_ms`: the last period that has ended.
fn due_key(job: &JobDecl, now_ms: u64) -> Option<u64> {
    let every = job.every.as_millis().max(1) as u64;
    (now_ms / every).checked_sub(1)
}

/// A pause of up to a quarter second, so the workers of a cluster do not all ask at once.
fn jitter() -> Duration {
    use std::hash::{BuildHasher as _, RandomState};
    Duration::from_millis(RandomState::new().hash_one(now_ms()) % 250)
}

/// Runs `job` on `core`'s worker until `stop` is cancelled (a run going on then ends first).
pub(crate) async fn run(core: Arc<Core>, job: &'static JobDecl, timing: JobTiming, stop: CancellationToken) {
    let id = lease_id(job.name);
    let store = core.store.clone();
    let me = core.node_id.clone();
    let mut waited_on = None;
    while !stop.is_cancelled() {
        let pause = match step(&core, job, id, &timing).await {
            Ok(Step::Ran | Step::Taken) => Duration::ZERO,
            Ok(Step::Wait(pause)) => pause,
            Ok(Step::Held(holder)) => {
                if waited_on.as_ref() != Some(&holder) {
                    tracing::debug!(node = %me, job = job.name, %holder, "job is run by another node");
                    waited_on = Some(holder);
                }
                timing.lease / 3
            }
            Err(error) => {
                tracing::warn!(node = %me, job = job.name, %error, "job lease cannot be read or written; trying again");
                timing.retry
            }
        };
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(pause + jitter()) => {}
        }
    }
    // Leave the lease to the others at once rather than when it lapses.
    if let Ok(Some(doc)) = store.get(LEASES, id).await {
        let lease = Lease::read(&doc);
        if lease.holder == me {
            let freed = Lease { holder: String::new(), until_ms: 0, ..lease };
            let _ = store.replace(LEASES, id, doc.version, freed.fields(job.name)).await;
        }
    }
}

/// What one look at a job's lease did.
enum Step {
    /// Nothing is due: look again after this long.
    Wait(Duration),
    /// Another node holds the lease.
    Held(String),
    /// Another node took the lease first: look again at once.
    Taken,
    /// This node ran a due run (it ended or failed).
    Ran,
}

async fn step(
    core: &Arc<Core>,
    job: &'static JobDecl,
    id: u64,
    timing: &JobTiming,
) -> Result<Step, StoreError> {
    let store = &core.store;
    let now = now_ms();
    let every_ms = job.every.as_millis().max(1) as u64;
    let until_next = Duration::from_millis(every_ms - now % every_ms);
    let Some(key) = due_key(job, now) else { return Ok(Step::Wait(until_next)) };
    let doc = store.get(LEASES, id).await?;
    let lease = doc.as_ref().map(Lease::read).unwrap_or_default();
    if let Some(doc) = &doc
        && doc.fields.get("name").and_then(Value::as_str) != Some(job.name)
    {
        return Err(StoreError::Internal(format!(
            "lease document {id} of `{}` belongs to another job: {:?}",
            LEASES.name,
            doc.fields.get("name")
        )));
    }
    if lease.done.is_some_and(|done| done >= key) {
        return Ok(Step::Wait(until_next));
    }
    if !lease.holder.is_empty() && lease.holder != core.node_id && lease.until_ms > now {
        return Ok(Step::Held(lease.holder));
    }
    let mine =
        Lease { holder: core.node_id.clone(), until_ms: now + timing.lease.as_millis() as u64, ..lease };
    let taken = match &doc {
        None => store.insert(LEASES, id, mine.fields(job.name)).await,
        Some(doc) => store.replace(LEASES, id, doc.version, mine.fields(job.name)).await,
    };
    let version = match taken {
        Ok(version) => version,
        Err(StoreError::Conflict | StoreError::AlreadyExists { .. }) => return Ok(Step::Taken),
        Err(error) => return Err(error),
    };
    if !lease.holder.is_empty() && lease.holder != core.node_id {
        tracing::info!(node = %core.node_id, job = job.name, previous = %lease.holder, key, "took over a job whose holder stopped renewing its lease");
    }
    run_once(core, job, id, key, version, mine, timing).await;
    Ok(Step::Ran)
}

/// Runs run `key` of `job` holding the lease (at `version`), renewing it meanwhile, and records
/// the outcome.
async fn run_once(
    core: &Arc<Core>,
    job: &'static JobDecl,
    id: u64,
    key: u64,
    mut version: u64,
    mut lease: Lease,
    timing: &JobTiming,
) {
    let store = &core.store;
    let node = &core.node_id;
    let trace_id = trace::new_trace_id();
    let started = Instant::now();
    let deadline = started + timing.timeout;
    let request = Request {
        session: Session { id: 0, user: None, ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED), gateway: String::new() },
        route: job.name,
        seq: 0,
        trace_id,
        depth: 0,
        deadline,
    };
    let span =
        tracing::info_span!("job", node = %node, job = job.name, key, trace = %trace::display(trace_id));
    let running =
        tokio::time::timeout_at(deadline.into(), (job.run)(Invocation::new(request, core.clone()), key))
            .instrument(span);
    tokio::pin!(running);
    let renew_every = timing.lease / 3;
    let outcome: Result<(), String> = loop {
        tokio::select! {
            ran = &mut running => break match ran {
                Ok(Ok(())) => Ok(()),
                Ok(Err(failure)) => Err(describe(&failure)),
                Err(_) => Err(format!("cut short at its deadline ({:?}, worker.job_timeout_ms)", timing.timeout)),
            },
            () = tokio::time::sleep(renew_every) => {
                let renewed = Lease { until_ms: now_ms() + timing.lease.as_millis() as u64, ..lease.clone() };
                match store.replace(LEASES, id, version, renewed.fields(job.name)).await {
                    Ok(next) => {
                        version = next;
                        lease = renewed;
                    }
                    Err(error) if lease.until_ms <= now_ms() || error == StoreError::Conflict => {
                        // Another node may hold it now: running on would make two.
                        tracing::error!(%node, job = job.name, key, %error, "job lease lost while running; the run is dropped and tried again");
                        return;
                    }
                    Err(error) => {
                        tracing::warn!(%node, job = job.name, key, %error, "job lease not renewed; trying again");
                    }
                }
            }
        }
    };
    let elapsed = started.elapsed();
    let code = if outcome.is_ok() { 0 } else { mortar_abi::Code::INTERNAL.get() };
    metrics::counter!(m::JOB_RUNS, "job" => job.name, "code" => m::code_label(code)).increment(1);
    metrics::histogram!(m::JOB_DURATION, "job" => job.name).record(elapsed);
    let done = match &outcome {
        Ok(()) => {
            // Debug: a job of one second would write a line a second; failures and takeovers are
            // logged at warn and info, every run is counted in the metrics.
            tracing::debug!(%node, job = job.name, key, elapsed_ms = elapsed.as_millis() as u64, "job ran");
            Some(key)
        }
        Err(reason) => {
            tracing::warn!(%node, job = job.name, key, %reason, retry_in = ?timing.retry, "job run failed; it is tried again");
            lease.done
        }
    };
    let freed = Lease { done, holder: String::new(), until_ms: 0 };
    // On failure the lease is freed too; the retry pause lets another node try first.
    let mut attempt = 0;
    loop {
        match store.replace(LEASES, id, version, freed.fields(job.name)).await {
            Ok(_) => break,
            Err(StoreError::Conflict) => {
                tracing::error!(%node, job = job.name, key, "job lease taken over while its run ended; the run may happen again");
                return;
            }
            Err(error) if attempt < 5 => {
                attempt += 1;
                tracing::warn!(%node, job = job.name, key, %error, "job outcome not recorded yet; trying again");
                store.backoff(attempt).await;
            }
            Err(error) => {
                tracing::error!(%node, job = job.name, key, %error, "job outcome not recorded; the run happens again once its lease lapses");
                return;
            }
        }
    }
    if outcome.is_err() {
        tokio::time::sleep(timing.retry).await;
    }
}

fn describe(failure: &Failure) -> String {
    match failure.reason() {
        Some(reason) => format!("{}: {reason}", failure.code()),
        None => failure.code().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ids_are_stable_and_storable() {
        assert_eq!(lease_id("rank.close"), lease_id("rank.close"));
        assert_ne!(lease_id("rank.close"), lease_id("rank.open"));
        assert!(lease_id("x") <= mortar_abi::store::MAX_ID && lease_id("x") > 0);
    }

    #[test]
    fn the_due_key_is_the_last_period_that_ended() {
        fn nothing(_: Invocation, _: u64) -> mortar_abi::future::BoxFuture<Result<(), Failure>> {
            Box::pin(async { Ok(()) })
        }
        let job = JobDecl { name: "m.j", every: Duration::from_secs(10), run: nothing, defined_at: "t" };
        assert_eq!(due_key(&job, 9_999), None);
        assert_eq!(due_key(&job, 10_000), Some(0));
        assert_eq!(due_key(&job, 29_999), Some(1));
    }

    #[test]
    fn a_lease_reads_back_what_it_wrote() {
        let lease = Lease { done: Some(7), holder: "w1".into(), until_ms: 42 };
        let doc = RawDoc { id: 1, version: 1, fields: lease.fields("m.j") };
        assert_eq!(Lease::read(&doc), lease);
        let doc = RawDoc { id: 1, version: 1, fields: Lease::default().fields("m.j") };
        assert_eq!(Lease::read(&doc), Lease::default());
    }

    /// Two workers on one store, and a job of a module both enable.
    mod runs {
        use crate::{
            Backends, Worker,
            config::WorkerConfig,
            routes::{ModuleSource, Origin, RouteTable},
        };
        use mortar_abi::{
            Code, Failure,
            future::BoxFuture,
            host::Invocation,
            job::JobDecl,
            module::{ModuleDecl, Named},
            store::StoreBackend,
        };
        use std::{
            sync::{Arc, Mutex},
            time::{Duration, SystemTime, UNIX_EPOCH},
        };

        /// (job, key, node, ms since the epoch, ok) of a run.
        type Seen = (&'static str, u64, String, u64, bool);

        /// Every run the test jobs saw.
        static RUNS: Mutex<Vec<Seen>> = Mutex::new(Vec::new());

        fn now_ms() -> u64 {
            SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
        }

        fn record(invocation: &Invocation, key: u64, ok: bool) {
            let node = invocation.host().node_id().to_owned();
            RUNS.lock().unwrap().push((invocation.request().route, key, node, now_ms(), ok));
        }

        fn runs_of(job: &str) -> Vec<(u64, String, u64, bool)> {
            let runs = RUNS.lock().unwrap();
            runs.iter().filter(|run| run.0 == job).map(|run| (run.1, run.2.clone(), run.3, run.4)).collect()
        }

        fn tick(invocation: Invocation, key: u64) -> BoxFuture<Result<(), Failure>> {
            Box::pin(async move {
                record(&invocation, key, true);
                Ok(())
            })
        }

        /// Fails its first run, then succeeds.
        fn flaky(invocation: Invocation, key: u64) -> BoxFuture<Result<(), Failure>> {
            Box::pin(async move {
                let first = runs_of(invocation.request().route).is_empty();
                record(&invocation, key, !first);
                if first { Err(Code::UNAVAILABLE.because("the first run fails")) } else { Ok(()) }
            })
        }

        static ONCE: ModuleDecl = ModuleDecl {
            build: || Box::new(Named("once")),
            defined_at: "t",
            on_online: None,
            on_offline: None,
            on_start: None,
        };
        static ONCE_TICK: JobDecl =
            JobDecl { name: "once.tick", every: Duration::from_secs(1), run: tick, defined_at: "t" };
        static LAPSE: ModuleDecl = ModuleDecl {
            build: || Box::new(Named("lapse")),
            defined_at: "t",
            on_online: None,
            on_offline: None,
            on_start: None,
        };
        static LAPSE_TICK: JobDecl =
            JobDecl { name: "lapse.tick", every: Duration::from_secs(1), run: flaky, defined_at: "t" };

        fn worker(
            node: &str,
            module: &'static ModuleDecl,
            job: &'static JobDecl,
            store: &Arc<dyn StoreBackend>,
        ) -> Worker {
            let source = ModuleSource {
                origin: Origin::Linked,
                modules: vec![module],
                build: mortar_abi::module::build,
                routes: Vec::new(),
                protos: Vec::new(),
                layers: Vec::new(),
                tables: Vec::new(),
                configs: Vec::new(),
                documents: Vec::new(),
                jobs: vec![job],
            };
            let routes = RouteTable::build(vec![source], &[]).unwrap();
            Worker::new(node.into(), routes, Backends { store: store.clone(), ..Backends::none() })
        }

        fn store(name: &str) -> (Arc<dyn StoreBackend>, std::path::PathBuf) {
            let dir = std::env::temp_dir().join(format!("mortar-jobs-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let store = mortar_backends::storage::embedded::EmbeddedStore::open(&dir).unwrap();
            (Arc::new(store), dir)
        }

        fn timing() -> WorkerConfig {
            WorkerConfig { job_lease_ms: 600, job_retry_ms: 200, ..WorkerConfig::default() }
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn two_workers_run_each_period_once() {
            let (store, dir) = store("once");
            let workers = [worker("w1", &ONCE, &ONCE_TICK, &store), worker("w2", &ONCE, &ONCE_TICK, &store)];
            for worker in &workers {
                worker.start(&timing()).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(3_600)).await;
            for worker in &workers {
                worker.stop(Duration::from_secs(2)).await;
            }
            let runs = runs_of("once.tick");
            let mut keys: Vec<u64> = runs.iter().map(|run| run.0).collect();
            assert!(keys.len() >= 3, "a run per second: {runs:?}");
            keys.dedup();
            assert_eq!(keys.len(), runs.len(), "each period ran once: {runs:?}");
            assert!(keys.windows(2).all(|pair| pair[1] == pair[0] + 1), "no period skipped: {runs:?}");
            let _ = std::fs::remove_dir_all(dir);
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_lapsed_lease_is_taken_over_and_a_failed_run_tried_again() {
            let (store, dir) = store("lapse");
            let lapses_at = now_ms() + 1_500;
            let dead = super::Lease { done: None, holder: "dead".into(), until_ms: lapses_at };
            let id = super::lease_id("lapse.tick");
            store.insert(super::LEASES, id, dead.fields("lapse.tick")).await.unwrap();
            let worker = worker("w1", &LAPSE, &LAPSE_TICK, &store);
            worker.start(&timing()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(3_000)).await;
            worker.stop(Duration::from_secs(2)).await;
            let runs = runs_of("lapse.tick");
            assert!(runs.len() >= 2, "a failed run, then the run again: {runs:?}");
            assert!(runs[0].2 >= lapses_at, "nothing ran while the dead node's lease held: {runs:?}");
            assert!(!runs[0].3 && runs[1].3 && runs[0].0 <= runs[1].0, "{runs:?}");
            let lease = super::Lease::read(&store.get(super::LEASES, id).await.unwrap().unwrap());
            assert_eq!((lease.holder.as_str(), lease.until_ms), ("", 0), "a stopped worker leaves the lease");
            assert!(lease.done >= Some(runs[1].0), "{lease:?}");
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
