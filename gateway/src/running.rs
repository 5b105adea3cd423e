//! The requests a session has started, whose replies leave in the order the requests came, each
//! by its deadline.

use crate::envelope::{self, Envelope};
use bytestring::ByteString;
use futures::{StreamExt as _, stream::FuturesOrdered};
use mortar_abi::{Code, future::BoxFuture};
use mortar_cluster::rpc::{Reply, workers};
use mortar_telemetry::{metrics as m, trace};
use std::{
    collections::VecDeque,
    future::{Future, poll_fn},
    pin::Pin,
    task::{Context, Poll, Waker},
    time::Instant,
};
use tokio::time::Sleep;

/// A started request: completes with its reply.
pub(crate) enum PendingReply {
    /// Answered at once.
    Ready(Envelope),
    /// Answered by a future of its own, which keeps the deadline itself (a request relayed over
    /// the network, `sys.descriptors`).
    Future(Pin<Box<dyn Future<Output = Envelope> + Send>>),
    /// Handled by this node's own worker on the session's task; the session keeps its deadline.
    Local(Local),
}

/// A request handled by this node's own worker: its handler's reply to come, and when the client
/// stops waiting for it.
///
/// Its deadline is kept by one timer per session, set when the session starts its first request
/// and re-armed only when it fires (a request's deadline is never earlier than those of the
/// requests before it): a timer per request would be registered and taken back out of the
/// runtime's timer wheel for every request.
pub(crate) struct Local {
    pub(crate) main_type: ByteString,
    pub(crate) sub_type: ByteString,
    pub(crate) seq: u32,
    pub(crate) session: u64,
    pub(crate) trace_id: u128,
    pub(crate) reply: BoxFuture<Reply>,
    pub(crate) deadline: Instant,
}

impl Local {
    /// Its reply, from the handler's (the route is taken: call once).
    fn answered(&mut self, reply: Reply) -> Envelope {
        let (session, seq, trace) = (self.session, self.seq, trace::display(self.trace_id));
        tracing::debug!(session, seq, %trace, code = %m::code_label(reply.code), "relayed");
        let (main_type, sub_type) = (std::mem::take(&mut self.main_type), std::mem::take(&mut self.sub_type));
        envelope::relayed(main_type, sub_type, self.seq, reply)
    }

    /// Its reply once the deadline passed: `TIMEOUT` (the route is taken: call once). The
    /// handler's future is cancelled when the request is dropped.
    fn timed_out(&mut self) -> Envelope {
        let (session, seq, trace) = (self.session, self.seq, trace::display(self.trace_id));
        tracing::warn!(session, seq, %trace, "request timed out");
        self.answered(Reply::because(Code::TIMEOUT, workers::TIMED_OUT))
    }

    /// As a future that keeps its deadline itself.
    fn into_future(self) -> Pin<Box<dyn Future<Output = Envelope> + Send>> {
        Box::pin(async move {
            let mut local = self;
            match tokio::time::timeout_at(local.deadline.into(), &mut local.reply).await {
                Ok(reply) => local.answered(reply),
                Err(_) => local.timed_out(),
            }
        })
    }
}

impl PendingReply {
    fn into_future(self) -> Pin<Box<dyn Future<Output = Envelope> + Send>> {
        match self {
            Self::Ready(reply) => Box::pin(std::future::ready(reply)),
            Self::Future(future) => future,
            Self::Local(local) => local.into_future(),
        }
    }
}

/// Up to this many requests at once (`session_concurrency`), a session polls all of its started
/// requests whenever its task wakes; beyond, each gets a waker of its own.
const POLL_ALL_UP_TO: usize = 8;

/// The requests a session has started, yielding their replies in the order they were started.
pub(crate) enum Running {
    /// Polled with the session task's own waker, all of them at each wake-up: for the one
    /// request a session runs at a time by default this costs less than a `FuturesOrdered`,
    /// which allocates a task node per request and wakes through it.
    Few(Few),
    /// Each polled only when woken, for sessions that run many requests at once. Boxed: every
    /// connection's task holds a `Running`, and this form is the rare one.
    Many(Box<FuturesOrdered<Pin<Box<dyn Future<Output = Envelope> + Send>>>>),
}

/// The requests of [`Running::Few`], and the timer that keeps the deadlines of its [`Local`]
/// ones: set at the earliest deadline when it is armed, boxed and dropped when it fires with
/// none running (an idle session holds none).
pub(crate) struct Few {
    slots: VecDeque<Slot>,
    timer: Option<Timer>,
}

/// The deadline timer of [`Few`], polled at every wake-up of its session for little: it is
/// registered with the polling task's waker once per arming, and afterwards polled again only
/// once it has fired (or when another task polls it), as the session task's waker wakes the same
/// task at every poll.
struct Timer {
    sleep: Pin<Box<Sleep>>,
    /// The waker it was last polled with since it was armed.
    registered: Option<Waker>,
}

impl Timer {
    fn new(deadline: Instant) -> Self {
        Self { sleep: Box::pin(tokio::time::sleep_until(deadline.into())), registered: None }
    }

    fn deadline(&self) -> Instant {
        self.sleep.deadline().into_std()
    }

    fn reset(&mut self, deadline: Instant) {
        self.sleep.as_mut().reset(deadline.into());
        self.registered = None;
    }

    /// Ready once the deadline has passed.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(waker) = &self.registered
            && waker.will_wake(cx.waker())
            && !self.sleep.is_elapsed()
        {
            return Poll::Pending;
        }
        let polled = self.sleep.as_mut().poll(cx);
        if polled.is_pending() {
            self.registered = Some(cx.waker().clone());
        }
        polled
    }
}

/// A request of [`Running::Few`]: still running, or answered and waiting for those before it.
enum Slot {
    Running(Pin<Box<dyn Future<Output = Envelope> + Send>>),
    Local(Local),
    Answered(Envelope),
}

impl Running {
    /// Room for a session that runs up to `concurrency` requests at once.
    pub(crate) fn new(concurrency: usize) -> Self {
        if concurrency <= POLL_ALL_UP_TO {
            // Allocated on the first request (see `push_back`): most connections are idle.
            Self::Few(Few { slots: VecDeque::new(), timer: None })
        } else {
            Self::Many(Box::default())
        }
    }

    /// How many requests have started and not yet yielded their reply.
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Few(few) => few.slots.len(),
            Self::Many(running) => running.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts (queues, to be polled) a request after those already started.
    pub(crate) fn push_back(&mut self, reply: PendingReply) {
        let few = match self {
            Self::Few(few) => few,
            Self::Many(running) => return running.push_back(reply.into_future()),
        };
        // Room for one: a `VecDeque` would take four slots (half a KiB) at first, and most
        // sessions run one request at a time.
        if few.slots.capacity() == 0 {
            few.slots.reserve_exact(1);
        }
        few.slots.push_back(match reply {
            PendingReply::Ready(reply) => Slot::Answered(reply),
            PendingReply::Future(future) => Slot::Running(future),
            PendingReply::Local(local) => {
                match &mut few.timer {
                    None => few.timer = Some(Timer::new(local.deadline)),
                    Some(timer) if timer.deadline() > local.deadline => timer.reset(local.deadline),
                    Some(_) => {}
                }
                Slot::Local(local)
            }
        });
    }

    /// The reply of the first request started, once it and those before it have answered;
    /// `None` when none is running.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Envelope>> {
        let few = match self {
            Self::Few(few) => few,
            Self::Many(running) => return running.poll_next_unpin(cx),
        };
        for slot in &mut few.slots {
            match slot {
                Slot::Running(reply) => {
                    if let Poll::Ready(answered) = reply.as_mut().poll(cx) {
                        *slot = Slot::Answered(answered);
                    }
                }
                Slot::Local(local) => {
                    if let Poll::Ready(reply) = local.reply.as_mut().poll(cx) {
                        let answered = local.answered(reply);
                        *slot = Slot::Answered(answered);
                    }
                }
                Slot::Answered(_) => {}
            }
        }
        few.keep_deadlines(cx);
        match few.slots.front() {
            None => Poll::Ready(None),
            Some(Slot::Running(_) | Slot::Local(_)) => Poll::Pending,
            Some(Slot::Answered(_)) => match few.slots.pop_front() {
                Some(Slot::Answered(reply)) => Poll::Ready(Some(reply)),
                _ => unreachable!("the front slot was answered"),
            },
        }
    }

    /// See [`Running::poll_next`].
    pub(crate) async fn next(&mut self) -> Option<Envelope> {
        poll_fn(|cx| self.poll_next(cx)).await
    }
}

impl Few {
    /// Answers `TIMEOUT` to the local requests whose deadline passed, once the timer fires, and
    /// re-arms it at the earliest deadline still running (or drops it when none runs).
    fn keep_deadlines(&mut self, cx: &mut Context<'_>) {
        while let Some(timer) = &mut self.timer {
            if timer.poll(cx).is_pending() {
                return;
            }
            let now = Instant::now();
            let mut earliest: Option<Instant> = None;
            for slot in &mut self.slots {
                let Slot::Local(local) = slot else { continue };
                if local.deadline <= now {
                    let answered = local.timed_out();
                    *slot = Slot::Answered(answered);
                } else {
                    earliest = Some(earliest.map_or(local.deadline, |earliest| earliest.min(local.deadline)));
                }
            }
            match earliest {
                // Polled again at the top, which registers it.
                Some(deadline) => timer.reset(deadline),
                None => self.timer = None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{sync::Arc, time::Duration};
    use tokio::sync::Notify;

    /// A reply with seq `seq` once `gate` is notified (or at once without one).
    fn reply(seq: u32, gate: Option<Arc<Notify>>) -> PendingReply {
        PendingReply::Future(Box::pin(async move {
            if let Some(gate) = gate {
                gate.notified().await;
            }
            Envelope { seq, ..Default::default() }
        }))
    }

    /// Requests answered out of order still yield their replies in order, in both forms.
    #[tokio::test]
    async fn replies_leave_in_request_order() {
        for concurrency in [1, POLL_ALL_UP_TO, POLL_ALL_UP_TO + 1] {
            let mut running = Running::new(concurrency);
            let gates: Vec<_> = (0..3).map(|_| Arc::new(Notify::new())).collect();
            for (seq, gate) in gates.iter().enumerate() {
                running.push_back(reply(seq as u32, Some(gate.clone())));
            }
            running.push_back(reply(3, None));
            assert_eq!(running.len(), 4);
            // The last two answer first: nothing leaves before the first has answered.
            gates[2].notify_one();
            gates[1].notify_one();
            let early = tokio::time::timeout(Duration::from_millis(50), running.next()).await;
            assert!(early.is_err(), "a reply left before the first request answered ({concurrency})");
            gates[0].notify_one();
            let mut seqs = Vec::new();
            while let Some(reply) = running.next().await {
                seqs.push(reply.seq);
            }
            assert_eq!(seqs, [0, 1, 2, 3], "concurrency {concurrency}");
            assert!(running.is_empty());
        }
    }

    /// Notes when it is dropped: a request's handler cancelled.
    struct Cancelled(Arc<std::sync::atomic::AtomicBool>);

    impl Drop for Cancelled {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// A request handled by this node's worker, due `after` from now, whose handler answers OK
    /// once `gate` is notified (never without one) and marks `cancelled` when dropped.
    fn local(
        seq: u32,
        after: Duration,
        gate: Option<Arc<Notify>>,
        cancelled: &Arc<std::sync::atomic::AtomicBool>,
    ) -> PendingReply {
        let guard = Cancelled(cancelled.clone());
        PendingReply::Local(Local {
            main_type: "echo".into(),
            sub_type: "say".into(),
            seq,
            session: 1,
            trace_id: 1,
            reply: Box::pin(async move {
                let _guard = guard;
                match gate {
                    Some(gate) => gate.notified().await,
                    None => std::future::pending().await,
                }
                Reply::code(Code::OK)
            }),
            deadline: Instant::now() + after,
        })
    }

    async fn next_in_time(running: &mut Running) -> Option<Envelope> {
        tokio::time::timeout(Duration::from_secs(5), running.next()).await.expect("answered in time")
    }

    fn code_and_seq(reply: Option<Envelope>) -> (Code, u32) {
        let reply = reply.expect("a reply");
        (Code::from_wire(reply.code), reply.seq)
    }

    /// Requests handled in-process get `TIMEOUT` at their deadline, in order with the others,
    /// their handlers cancelled; one that answers in time gets its reply. The session's timer is
    /// let go once no request runs.
    #[tokio::test]
    async fn local_requests_time_out_at_their_deadline() {
        for concurrency in [1, POLL_ALL_UP_TO + 1] {
            let mut running = Running::new(concurrency);
            let flags: Vec<_> = (0..3).map(|_| Arc::new(std::sync::atomic::AtomicBool::new(false))).collect();
            let gate = Arc::new(Notify::new());
            let started = Instant::now();
            running.push_back(local(1, Duration::from_millis(60), None, &flags[0]));
            running.push_back(local(2, Duration::from_secs(10), Some(gate.clone()), &flags[1]));
            running.push_back(local(3, Duration::from_millis(120), None, &flags[2]));
            gate.notify_one();
            assert_eq!(code_and_seq(next_in_time(&mut running).await), (Code::TIMEOUT, 1), "{concurrency}");
            assert!(started.elapsed() >= Duration::from_millis(60), "{concurrency}: early");
            assert!(flags[0].load(std::sync::atomic::Ordering::SeqCst), "{concurrency}: not cancelled");
            assert_eq!(code_and_seq(next_in_time(&mut running).await), (Code::OK, 2), "{concurrency}");
            assert_eq!(code_and_seq(next_in_time(&mut running).await), (Code::TIMEOUT, 3), "{concurrency}");
            assert!(started.elapsed() >= Duration::from_millis(120), "{concurrency}: early");
            assert!(flags[2].load(std::sync::atomic::Ordering::SeqCst), "{concurrency}: not cancelled");
            assert!(running.next().await.is_none());
            if let Running::Few(few) = &running {
                assert!(few.timer.is_none(), "the timer outlived the requests");
            }
        }
    }

    /// A request due before those already running (a shorter timeout) moves the session's timer
    /// earlier: it is answered at its own deadline, not theirs.
    #[tokio::test]
    async fn an_earlier_deadline_moves_the_timer() {
        let mut running = Running::new(2);
        let (gate, flag) = (Arc::new(Notify::new()), Arc::new(std::sync::atomic::AtomicBool::new(false)));
        running.push_back(local(1, Duration::from_secs(30), Some(gate.clone()), &flag));
        running.push_back(local(2, Duration::from_millis(30), None, &flag));
        // The first holds the order; the second is answered meanwhile, at its deadline.
        let early = tokio::time::timeout(Duration::from_millis(200), running.next()).await;
        assert!(early.is_err(), "a reply left before the first request answered");
        gate.notify_one();
        assert_eq!(code_and_seq(running.next().await), (Code::OK, 1));
        let second = tokio::time::timeout(Duration::from_millis(50), running.next()).await;
        assert_eq!(code_and_seq(second.expect("answered at its deadline")), (Code::TIMEOUT, 2));
    }

    /// The session's task is woken when a request it runs answers.
    #[tokio::test]
    async fn an_answer_wakes_the_session() {
        let mut running = Running::new(1);
        let gate = Arc::new(Notify::new());
        running.push_back(reply(7, Some(gate.clone())));
        let opener = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            gate.notify_one();
        });
        let reply = tokio::time::timeout(Duration::from_secs(5), running.next()).await;
        assert_eq!(reply.expect("woken").map(|reply| reply.seq), Some(7));
        opener.await.expect("opener ran");
    }
}
