//! A worker connection's relayed requests waiting for their answers: each in a slot of one table,
//! where the connection's reader leaves its reply and wakes its caller, with its deadline beside
//! it, watched by one task per connection ([`expire`]).

use crate::rpc::Handled;
use slab::Slab;
use std::{
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll, Waker},
    time::Instant,
};
use tarpc::client::RpcError;
use tokio::sync::Notify;

/// The requests sent on a connection and not answered yet. A request's id is its slot in the
/// slab (low 32 bits) and the slot's generation (high 32 bits), so that the late reply to a
/// request that gave up never completes the next request in its slot.
///
/// Their deadlines are kept here too, and one task per connection ([`expire`]) answers those
/// whose deadline passes: a timer per request cost its registration in the runtime's timer wheel
/// and its removal, under a lock each, a few percent of a gateway's instructions per relayed
/// request.
pub(super) struct Waiting {
    generation: u32,
    /// Requests sent, by slot.
    pub(super) slots: Slab<Pending>,
    /// The connection ended: no request is sent any more, and those waiting got `Shutdown`.
    ended: bool,
    /// When [`expire`] looks at the deadlines next: none while it waits for a request.
    next_expiry: Option<Instant>,
}

/// A request sent and not answered yet, or answered and not yet taken by its caller.
pub(super) struct Pending {
    generation: u32,
    deadline: Instant,
    answer: Answer,
}

/// Where a request's answer is. It waits in the request's slot, where its caller looks for it
/// when woken: a oneshot channel per request was an allocation more.
pub(super) enum Answer {
    /// Not here yet; the waker of the caller once it looked.
    Waiting(Option<Waker>),
    /// The reply, or none when the deadline passed first.
    Done(Option<Handled>),
}

impl Waiting {
    pub(super) fn new() -> Self {
        Self { generation: 0, slots: Slab::new(), ended: false, next_expiry: None }
    }

    /// Enters a request due by `deadline`: its id, and whether [`expire`] must look at the
    /// deadlines earlier than it planned. `None` once the connection ended.
    pub(super) fn insert(&mut self, deadline: Instant) -> Option<(u64, bool)> {
        if self.ended {
            return None;
        }
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        let answer = Answer::Waiting(None);
        let slot = self.slots.insert(Pending { generation, deadline, answer });
        let sooner = self.next_expiry.is_none_or(|next| deadline < next);
        if sooner {
            self.next_expiry = Some(deadline);
        }
        Some((u64::from(generation) << 32 | slot as u64, sooner))
    }

    /// Request `id`'s slot, if it is still there (its generation tells a later request in the same
    /// slot apart).
    fn get(&mut self, id: u64) -> Option<&mut Pending> {
        let generation = (id >> 32) as u32;
        self.slots.get_mut(slot_of(id)).filter(|pending| pending.generation == generation)
    }

    /// Forgets request `id`: its caller stopped waiting.
    pub(super) fn forget(&mut self, id: u64) {
        if self.get(id).is_some() {
            self.slots.remove(slot_of(id));
        }
    }

    /// Leaves request `id` its answer (none: its deadline passed), unless it has one already or
    /// nobody waits for it; the waker of its caller, to wake once the lock is released.
    pub(super) fn answer(&mut self, id: u64, handled: Option<Handled>) -> Option<Waker> {
        let pending = self.get(id)?;
        match std::mem::replace(&mut pending.answer, Answer::Done(handled)) {
            Answer::Waiting(waker) => waker,
            done @ Answer::Done(_) => {
                pending.answer = done;
                None
            }
        }
    }

    /// Request `id`'s answer once it has one, taking its slot; `Shutdown` when the connection ended
    /// before its answer came.
    pub(super) fn poll_answer(&mut self, id: u64, cx: &Context<'_>) -> Poll<Result<Handled, RpcError>> {
        let Some(pending) = self.get(id) else { return Poll::Ready(Err(RpcError::Shutdown)) };
        match &mut pending.answer {
            Answer::Waiting(Some(waker)) if waker.will_wake(cx.waker()) => return Poll::Pending,
            Answer::Waiting(waker) => {
                *waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            Answer::Done(_) => {}
        }
        match self.slots.remove(slot_of(id)).answer {
            Answer::Done(Some(handled)) => Poll::Ready(Ok(handled)),
            _ => Poll::Ready(Err(RpcError::DeadlineExceeded)),
        }
    }

    /// Answers the requests whose deadline is `now` or earlier with none, and plans the next look
    /// at the earliest deadline left; the wakers of their callers.
    pub(super) fn expired(&mut self, now: Instant) -> Vec<Waker> {
        let mut wakers = Vec::new();
        let mut next: Option<Instant> = None;
        for (_, pending) in self.slots.iter_mut() {
            let Answer::Waiting(waker) = &mut pending.answer else { continue };
            if pending.deadline > now {
                next = Some(next.map_or(pending.deadline, |next| next.min(pending.deadline)));
                continue;
            }
            wakers.extend(waker.take());
            pending.answer = Answer::Done(None);
        }
        self.next_expiry = next;
        wakers
    }

    /// The connection ended: the requests still waiting lose their slots, and their callers,
    /// whose wakers this returns, find `Shutdown`; answers that came already stay for their
    /// callers.
    pub(super) fn end(&mut self) -> Vec<Waker> {
        self.ended = true;
        let mut wakers = Vec::new();
        self.slots.retain(|_, pending| match &mut pending.answer {
            Answer::Waiting(waker) => {
                wakers.extend(waker.take());
                false
            }
            Answer::Done(_) => true,
        });
        wakers
    }
}

/// The slot of request `id` (see [`Waiting`]).
fn slot_of(id: u64) -> usize {
    (id & u64::from(u32::MAX)) as usize
}

/// Answers the requests of a connection whose deadline passes before their reply (with `None`),
/// looking at their deadlines only when the earliest one is due or a request due sooner than that
/// arrives (`sooner`).
pub(super) async fn expire(waiting: &Mutex<Waiting>, sooner: &Notify) {
    loop {
        let next = waiting.lock().unwrap_or_else(PoisonError::into_inner).next_expiry;
        match next {
            Some(next) => tokio::select! {
                () = tokio::time::sleep_until(next.into()) => {}
                () = sooner.notified() => {}
            },
            None => sooner.notified().await,
        }
        let expired = waiting.lock().unwrap_or_else(PoisonError::into_inner).expired(Instant::now());
        expired.into_iter().for_each(Waker::wake);
    }
}

/// Removes a request from the waiting ones when its caller's future is dropped before it took its
/// answer.
pub(super) struct Forget {
    pub(super) waiting: Arc<Mutex<Waiting>>,
    pub(super) id: u64,
    pub(super) answered: bool,
}

impl Drop for Forget {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner).forget(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::Reply;
    use bytes::Bytes;
    use std::time::Duration;

    fn in_ms(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[test]
    fn a_late_reply_never_completes_the_request_that_reuses_its_slot() {
        let mut waiting = Waiting::new();
        let cx = Context::from_waker(Waker::noop());
        let send = |waiting: &mut Waiting| waiting.insert(in_ms(1_000)).unwrap().0;
        let gave_up = send(&mut waiting);
        waiting.forget(gave_up);
        let next = send(&mut waiting);
        assert_eq!(next & 0xffff_ffff, gave_up & 0xffff_ffff, "the same slot");
        assert!(waiting.poll_answer(next, &cx).is_pending());
        let _ = waiting.answer(gave_up, Some(Handled::Reply(Reply::ok(Bytes::from_static(b"late")))));
        assert!(waiting.poll_answer(next, &cx).is_pending(), "the late reply finds nobody");
        let _ = waiting.answer(next, Some(Handled::Reply(Reply::ok(Bytes::from_static(b"next")))));
        let _ = waiting.answer(next, None);
        let Poll::Ready(Ok(Handled::Reply(reply))) = waiting.poll_answer(next, &cx) else {
            panic!("answered")
        };
        assert_eq!(&reply.data[..], b"next", "the first answer stays");
        assert!(waiting.slots.is_empty(), "taken once");
    }

    #[test]
    fn deadlines_are_looked_at_when_the_earliest_is_due() {
        let mut waiting = Waiting::new();
        let cx = Context::from_waker(Waker::noop());
        let now = Instant::now();
        let at = |ms| now + Duration::from_millis(ms);
        let (first, sooner) = waiting.insert(at(500)).unwrap();
        assert!(sooner, "the first request sets when to look");
        let (second, sooner) = waiting.insert(at(900)).unwrap();
        assert!(!sooner, "later: no need to look sooner");
        let (third, sooner) = waiting.insert(at(100)).unwrap();
        assert!(sooner, "due sooner than planned");
        assert_eq!(waiting.next_expiry, Some(at(100)));
        assert!(waiting.poll_answer(third, &cx).is_pending(), "its caller waits");
        waiting.forget(first);
        assert_eq!(waiting.expired(at(100)).len(), 1, "the one due, whose caller waits, is woken");
        assert!(matches!(waiting.poll_answer(third, &cx), Poll::Ready(Err(RpcError::DeadlineExceeded))));
        assert_eq!(waiting.next_expiry, Some(at(900)), "the earliest left");
        assert!(waiting.expired(at(899)).is_empty());
        assert!(waiting.expired(at(900)).is_empty(), "expired, but nobody looked yet to wake");
        assert!(matches!(waiting.poll_answer(second, &cx), Poll::Ready(Err(RpcError::DeadlineExceeded))));
        assert_eq!(waiting.next_expiry, None, "nothing left to look at");
        assert!(waiting.insert(at(2_000)).unwrap().1, "the next request sets it again");
        let (last, _) = waiting.insert(at(3_000)).unwrap();
        assert!(waiting.poll_answer(last, &cx).is_pending());
        let (answered, _) = waiting.insert(at(3_000)).unwrap();
        let _ = waiting.answer(answered, Some(Handled::Reply(Reply::ok(Bytes::from_static(b"in time")))));
        assert_eq!(waiting.end().len(), 1, "the connection ended: the caller still waiting is woken");
        assert!(matches!(waiting.poll_answer(last, &cx), Poll::Ready(Err(RpcError::Shutdown))));
        let Poll::Ready(Ok(Handled::Reply(reply))) = waiting.poll_answer(answered, &cx) else {
            panic!("an answer that came before the end stays")
        };
        assert_eq!(&reply.data[..], b"in time");
        assert!(waiting.insert(at(4_000)).is_none(), "nothing is sent after the end");
    }
}
