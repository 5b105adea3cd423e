//! A session's mailbox: the pushes waiting for its agent to queue them for the client.
//!
//! A bounded queue that allocates nothing until the first push: most connections of a game sit
//! idle most of the time, and tokio's `mpsc` channel allocated its first block of 32 slots for
//! every connection (about a fifth of an idle connection's memory, docs/benchmarks.md).

use bytes::Bytes;
use futures::task::AtomicWaker;
use std::{
    collections::VecDeque,
    future::poll_fn,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    task::Poll,
};

/// Pushes for one session, at most `capacity` waiting; one reader, its agent.
pub struct Mailbox {
    frames: Mutex<VecDeque<Bytes>>,
    /// How many frames wait: the reader's check without the lock.
    waiting: AtomicUsize,
    capacity: usize,
    reader: AtomicWaker,
}

/// A push refused because the mailbox is full: the client does not read.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

impl Mailbox {
    /// An empty mailbox holding at most `capacity` frames.
    pub fn new(capacity: usize) -> Self {
        Self { frames: Mutex::default(), waiting: AtomicUsize::new(0), capacity, reader: AtomicWaker::new() }
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

    /// The oldest frame waiting, once there is one.
    pub async fn next(&self) -> Bytes {
        poll_fn(|cx| {
            if self.waiting.load(Ordering::Acquire) == 0 {
                self.reader.register(cx.waker());
            }
            // A push between the check and the registration woke no one: this looks again.
            self.try_next().map_or(Poll::Pending, Poll::Ready)
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
        let first = mailbox.next().await;
        assert_eq!(first.as_ptr(), a.as_ptr(), "the same bytes, not a copy");
        assert_eq!(mailbox.next().await, b);
        assert_eq!(mailbox.push(Bytes::from_static(b"d")), Ok(()), "room again");
    }

    #[tokio::test]
    async fn a_push_wakes_the_waiting_reader() {
        let mailbox = Arc::new(Mailbox::new(4));
        let reader = tokio::spawn({
            let mailbox = mailbox.clone();
            async move { mailbox.next().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        mailbox.push(Bytes::from_static(b"late")).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(2), reader).await.expect("woken").unwrap();
        assert_eq!(got, Bytes::from_static(b"late"));
    }
}
