//! Scheduled jobs: work a module runs every period, on one worker of the cluster at a time.

use crate::{code::Failure, future::BoxFuture, host::Invocation};
use std::time::Duration;

/// A job as `mortar::job!` registers it.
#[derive(Debug)]
pub struct JobDecl {
    /// `MODULE.NAME`: the job runs on the workers that enable `MODULE`, and its `Ctx` names this
    /// as its route.
    pub name: &'static str,
    /// Its period. Run `k` is due once period `k` (from `k × every` to `(k + 1) × every` after
    /// the Unix epoch) has ended.
    pub every: Duration,
    /// The job behind its glue: gets the run's context and its key `k`.
    pub run: JobRun,
    /// Where it is declared (`crate::path`), for error messages.
    pub defined_at: &'static str,
}

impl JobDecl {
    /// The module it belongs to: the part of its name before the dot.
    pub fn module(&self) -> &'static str {
        self.name.split_once('.').map_or(self.name, |(main, _)| main)
    }
}

/// A job behind its glue (see [`JobDecl::run`]).
pub type JobRun = fn(Invocation, u64) -> BoxFuture<Result<(), Failure>>;

inventory::collect!(JobDecl);

/// Every job linked into this program, in no particular order.
pub fn registered() -> impl Iterator<Item = &'static JobDecl> {
    inventory::iter::<JobDecl>.into_iter()
}
