//! Scheduled jobs: work a module runs once per period, on one worker of the cluster at a time.
//!
//! ```
//! use mortar::{Ctx, Failure, job::Run};
//! use std::time::Duration;
//! mortar::module!("season");
//! mortar::job!("season.close", every = Duration::from_secs(3600), run = close);
//!
//! async fn close(ctx: Ctx, run: Run) -> Result<(), Failure> {
//!     // Run `run.key` closes the hour that ended at `run.end()`: whatever it grants is keyed by
//!     // it, so a run that is tried again grants nothing twice.
//!     ctx.info(format_args!("closing hour {}", run.key));
//!     Ok(())
//! }
//! ```
//!
//! What the host promises:
//! - **Once per period, cluster-wide.** Run `k` is due when period `k` (`k × every` to
//!   `(k + 1) × every` after the Unix epoch) has ended. Of the workers that enable the module, the
//!   one that holds the job's lease runs it: the lease is a document in the store (collection
//!   `mortar_jobs`), taken with compare-and-set, renewed while the run lasts, and taken over by
//!   another worker once its holder stops renewing it for `worker.job_lease_ms` (it died). A run
//!   that ends `Ok` is recorded as done and never runs again.
//! - **At least once, so make it idempotent.** A run whose worker died midway, or that failed
//!   (`Err`, a panic, its deadline), runs again, on this worker or another; the key says which
//!   period it is for. Key what it writes by it (a grant id, a document id).
//! - **Missed runs are caught up once.** When every worker was down over several periods, the
//!   next start runs only the latest due key; the job reads what it missed from its own records.
//! - A run's `Ctx` has no session or user; its route is the job's name, its deadline
//!   `worker.job_timeout_ms` from the run's start.
//!
//! The workers that enable the module must share its store (MongoDB, or the one embedded store
//! `storage.embedded_modules` gives the module to): the lease lives there.

use crate::{code::Failure, ctx::Ctx};
use mortar_abi::{
    future::BoxFuture,
    host::{Invocation, PanicSite},
    panic,
};
use std::{
    future::Future,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

pub use mortar_abi::job::{JobDecl, JobRun, registered};

/// One run of a job: which period it closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// The period the run closes: the `key`-th `every` since the Unix epoch.
    pub key: u64,
    /// The job's period.
    pub every: Duration,
}

impl Run {
    /// When the period began.
    pub fn start(&self) -> SystemTime {
        let secs = self.every.as_secs().saturating_mul(self.key);
        let nanos = u64::from(self.every.subsec_nanos()).saturating_mul(self.key);
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_nanos(nanos)
    }

    /// When the period ended (the run was due from then on).
    pub fn end(&self) -> SystemTime {
        self.start() + self.every
    }
}

/// The glue [`job!`](crate::job) generates: runs `job` for run `key`, and turns a panic into a
/// failed run (reported to the host) on this side of a library boundary.
#[doc(hidden)]
pub fn run<F, Fut, E>(
    invocation: Invocation,
    key: u64,
    every: Duration,
    job: F,
) -> BoxFuture<Result<(), Failure>>
where
    F: FnOnce(Ctx, Run) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<Failure>,
{
    Box::pin(async move {
        let reporter = invocation.clone();
        match panic::catch(job(Ctx::from(invocation), Run { key, every })).await {
            Ok(result) => result.map_err(Into::into),
            Err(message) => {
                reporter.panicked(PanicSite::Job, &message);
                Err(crate::Code::INTERNAL.because(format!("panicked: {message}")))
            }
        }
    })
}

/// Declares a scheduled job (see the [module docs](self)): `mortar::job!("MODULE.NAME", every =
/// DURATION, run = f)` with `f` an `async fn(ctx: Ctx, run: Run) -> Result<(), E>`
/// (`E: Into<Failure>`: a [`Code`](crate::Code) or a [`Failure`]). `every` is a constant
/// expression of at least one second.
#[macro_export]
macro_rules! job {
    ($name:literal, every = $every:expr, run = $run:path $(,)?) => {
        $crate::inventory::submit! {
            $crate::job::JobDecl {
                name: $name,
                every: $every,
                run: |invocation, key| $crate::job::run(invocation, key, $every, $run),
                defined_at: module_path!(),
            }
        }
    };
}
