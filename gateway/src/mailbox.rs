//! A session's mailbox: the pushes waiting for its agent to queue them for the client, and the
//! session's kick.
//!
//! A bounded queue that allocates nothing until the first push: most connections of a game sit
//! idle most of the time, and tokio's `mpsc` channel allocated its first block of 32 slots for
//! every connection (about a fifth of an idle connection's memory, docs/benchmarks.md).
//!
//! The kick lives beside the queue, not in it: it is never lost to a full mailbox, and the agent
//! learns of pushes and kicks through one waker and one poll per wake-up (a oneshot of its own
//! cost the agent a poll on every turn, about 4% of a gateway's CPU under pushes).

use bytes::Bytes;
use futures::task::AtomicWaker;
use std::{
    collections::VecDeque,
    future::poll_fn,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::Poll,
};

/// Pushes for one session, at most `capacity` waiting, and its kick; one reader, its agent.
pub struct Mailbox {
    frames: Mutex<VecDeque<Bytes>>,
    /// How many frames wait: the reader's check without the lock.
    waiting: AtomicUsize,
    capacity: usize,
    /// The kick's reason, tagged with [`KICKED`]; 0 while the session is not kicked.
    kick: AtomicU64,
    reader: AtomicWaker,
}

/// Marks [`Mailbox::kick`]'s word as set, whatever the reason's bits.
const KICKED: u64 = 1 << 32;

/// What the agent takes from its mailbox.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The session was kicked with this reason; it comes before any push still waiting.
    Kicked(i32),
    /// The oldest push waiting.
    Push(Bytes),
}

/// A push refused because the mailbox is full: the client does not read.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

impl Mailbox {
    /// An empty mailbox holding at most `capacity` frames.
    pub fn new(capacity: usize) -> Self {
        Self {
            frames: Mutex::default(),
            waiting: AtomicUsize::new(0),
            capacity,
            kick: AtomicU64::new(0),
            reader: AtomicWaker::new(),
        }
    }

    /// Kicks the session with `reason`; false when it was kicked already (the first reason wins).
    pub fn kick(&self, reason: i32) -> bool {
        let word = KICKED | u64::from(reason as u32);
        let first = self.kick.compare_exchange(0, word, Ordering::AcqRel, Ordering::Acquire).is_ok();
        if first {
            self.reader.wake();
        }
        first
    }

    /// The reason the session was kicked with, if it was.
    pub fn kicked(&self) -> Option<i32> {
        let word = self.kick.load(Ordering::Acquire);
        (word & KICKED != 0).then_some(word as u32 as i32)
    }

    /// Leaves `frame` for the reader, unless `capacity` frames wait already.
    pub fn push(&self, frame: Bytes) -> Result<(), Full> {
        {
            let mut frames = self.frames.lock().unwrap_or_else(PoisonError::into_inner);
            if frames.len() >= self.capacity {
                return Err(Full);
            }
            frames.push_back(frame);
            self.waiting.store(frames.len(), Ordering::Release);
        }
        self.reader.wake();
        Ok(())
    }

    /// The kick once the session is kicked, else the oldest push once there is one, and only
    /// when `pushes` (an agent whose client's queue is full takes no pushes, but a kick).
    pub async fn next(&self, pushes: bool) -> Delivery {
        poll_fn(|cx| {
            if let Some(reason) = self.kicked() {
                return Poll::Ready(Delivery::Kicked(reason));
            }
            if !pushes || self.waiting.load(Ordering::Acquire) == 0 {
                self.reader.register(cx.waker());
            }
            // A push or kick between the checks and the registration woke no one: look again.
            if let Some(reason) = self.kicked() {
                return Poll::Ready(Delivery::Kicked(reason));
            }
            match pushes {
                true => self.try_next().map_or(Poll::Pending, |frame| Poll::Ready(Delivery::Push(frame))),
                false => Poll::Pending,
            }
        })
        .await
    }

    /// The oldest frame waiting, if any.
    pub fn try_next(&self) -> Option<Bytes> {
        if self.waiting.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut frames = self.frames.lock().unwrap_or_else(PoisonError::into_inner);
        let frame = frames.pop_front();
        self.waiting.store(frames.len(), Ordering::Release);
        frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{sync::Arc, time::Duration};

    #[tokio::test]
    async fn frames_come_out_in_order_and_a_full_mailbox_refuses_more() {
        let mailbox = Mailbox::new(2);
        let (a, b) = (Bytes::from_static(b"a"), Bytes::from_static(b"b"));
        assert_eq!(mailbox.push(a.clone()), Ok(()));
        assert_eq!(mailbox.push(b.clone()), Ok(()));
        assert_eq!(mailbox.push(Bytes::from_static(b"c")), Err(Full));
        let Delivery::Push(first) = mailbox.next(true).await else { panic!("a push") };
        assert_eq!(first.as_ptr(), a.as_ptr(), "the same bytes, not a copy");
        assert_eq!(mailbox.next(true).await, Delivery::Push(b));
        assert_eq!(mailbox.push(Bytes::from_static(b"d")), Ok(()), "room again");
    }

    #[tokio::test]
    async fn a_push_wakes_the_waiting_reader() {
        let mailbox = Arc::new(Mailbox::new(4));
        let reader = tokio::spawn({
            let mailbox = mailbox.clone();
            async move { mailbox.next(true).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        mailbox.push(Bytes::from_static(b"late")).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(2), reader).await.expect("woken").unwrap();
        assert_eq!(got, Delivery::Push(Bytes::from_static(b"late")));
    }

    #[tokio::test]
    async fn a_kick_wakes_a_reader_taking_no_pushes_and_comes_before_waiting_pushes() {
        let mailbox = Arc::new(Mailbox::new(4));
        mailbox.push(Bytes::from_static(b"waiting")).unwrap();
        let reader = tokio::spawn({
            let mailbox = mailbox.clone();
            async move { mailbox.next(false).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!reader.is_finished(), "a push is not taken when the agent takes none");
        assert!(mailbox.kick(12));
        assert!(!mailbox.kick(13), "the first reason wins");
        let got = tokio::time::timeout(Duration::from_secs(2), reader).await.expect("woken").unwrap();
        assert_eq!(got, Delivery::Kicked(12));
        assert_eq!(mailbox.next(true).await, Delivery::Kicked(12), "a kick stays");
        assert_eq!(mailbox.kicked(), Some(12));
        let shutdown = Mailbox::new(1);
        shutdown.kick(i32::MIN);
        assert_eq!(shutdown.kicked(), Some(i32::MIN), "negative reasons survive the tag");
    }
}
