//! The requests a session has started, whose replies leave in the order the requests came.

use crate::envelope::Envelope;
use futures::{StreamExt as _, stream::FuturesOrdered};
use std::{
    collections::VecDeque,
    future::{Future, poll_fn},
    pin::Pin,
    task::{Context, Poll},
};

/// A started request: completes with its reply.
pub(crate) type PendingReply = Pin<Box<dyn Future<Output = Envelope> + Send>>;

/// Up to this many requests at once (`session_concurrency`), a session polls all of its started
/// requests whenever its task wakes; beyond, each gets a waker of its own.
const POLL_ALL_UP_TO: usize = 8;

/// The requests a session has started, yielding their replies in the order they were started.
pub(crate) enum Running {
    /// Polled with the session task's own waker, all of them at each wake-up: for the one
    /// request a session runs at a time by default this costs less than a `FuturesOrdered`,
    /// which allocates a task node per request and wakes through it.
    Few(VecDeque<Slot>),
    /// Each polled only when woken, for sessions that run many requests at once. Boxed: every
    /// connection's task holds a `Running`, and this form is the rare one.
    Many(Box<FuturesOrdered<PendingReply>>),
}

/// A request of [`Running::Few`]: still running, or answered and waiting for those before it.
pub(crate) enum Slot {
    Running(PendingReply),
    Answered(Envelope),
}

impl Running {
    /// Room for a session that runs up to `concurrency` requests at once.
    pub(crate) fn new(concurrency: usize) -> Self {
        if concurrency <= POLL_ALL_UP_TO {
            // Allocated on the first request (see `push_back`): most connections are idle.
            Self::Few(VecDeque::new())
        } else {
            Self::Many(Box::default())
        }
    }

    /// How many requests have started and not yet yielded their reply.
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Few(slots) => slots.len(),
            Self::Many(running) => running.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts (queues, to be polled) a request after those already started.
    pub(crate) fn push_back(&mut self, reply: PendingReply) {
        match self {
            Self::Few(slots) => {
                // Room for one: a `VecDeque` would take four slots (half a KiB) at first,
                // and most sessions run one request at a time.
                if slots.capacity() == 0 {
                    slots.reserve_exact(1);
                }
                slots.push_back(Slot::Running(reply));
            }
            Self::Many(running) => running.push_back(reply),
        }
    }

    /// The reply of the first request started, once it and those before it have answered;
    /// `None` when none is running.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Envelope>> {
        let slots = match self {
            Self::Few(slots) => slots,
            Self::Many(running) => return running.poll_next_unpin(cx),
        };
        for slot in slots.iter_mut() {
            if let Slot::Running(reply) = slot
                && let Poll::Ready(answered) = reply.as_mut().poll(cx)
            {
                *slot = Slot::Answered(answered);
            }
        }
        match slots.front() {
            None => Poll::Ready(None),
            Some(Slot::Running(_)) => Poll::Pending,
            Some(Slot::Answered(_)) => match slots.pop_front() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::{sync::Arc, time::Duration};
    use tokio::sync::Notify;

    /// A reply with seq `seq` once `gate` is notified (or at once without one).
    fn reply(seq: u32, gate: Option<Arc<Notify>>) -> PendingReply {
        Box::pin(async move {
            if let Some(gate) = gate {
                gate.notified().await;
            }
            Envelope { seq, ..Default::default() }
        })
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
