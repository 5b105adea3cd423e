//! The gateway's live sessions: how a push finds a session's outgoing queue.
//!
//! Each agent registers its mailbox here for as long as its connection lives. A push encodes its
//! message once and hands the same bytes (reference-counted, never copied) to every addressed
//! session's mailbox without waiting: a session whose mailbox is full does not read, so its copy
//! is dropped and counted rather than holding up the others.

use crate::mailbox::Mailbox;
use bytes::Bytes;
use mortar_cluster::rpc::PushReport;
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

/// A live session's ways in: its mailbox, for pushes and its kick.
struct Entry {
    mailbox: Arc<Mailbox>,
    /// The logged-in user (0: none), shared with the session's agent, which puts it in every
    /// request it relays.
    user: Arc<AtomicU64>,
    /// The client's address, for the `on_online` hooks of its login.
    ip: std::net::IpAddr,
    /// When it was marked logged in, in ms since the Unix epoch (this gateway's clock), for
    /// restoring its login in a session store that lost it.
    login_at_ms: AtomicU64,
}

/// The kick that tells a session the gateway shuts down (no reply code is negative): it ends as
/// on shutdown, with `SERVER_SHUTDOWN` and a 1001 close. Sessions learn of a shutdown through
/// their mailbox's kick, which the agent polls anyway, rather than from the gateway's shutdown token,
/// whose every poll takes a lock that all sessions share.
pub const SHUTDOWN: i32 = i32::MIN;

/// Shards of the table: connects and disconnects of different sessions rarely share a lock.
const SHARDS: usize = 16;

/// The most wills one session holds (see [`SessionTable::will`]); a new one beyond drops the
/// oldest.
pub const MAX_WILLS: usize = 16;

/// A will a session holds: a push sent to it when the gateway loses `worker`.
struct Will {
    worker: Arc<str>,
    key: String,
    frame: Bytes,
}

/// Live sessions by id, each with its writer's queue.
pub struct SessionTable {
    shards: [RwLock<foldhash::HashMap<u64, Entry>>; SHARDS],
    /// The wills of the sessions holding any (few: the members of rooms), by session.
    wills: Mutex<HashMap<u64, Vec<Will>>>,
}

impl Default for SessionTable {
    fn default() -> Self {
        Self { shards: std::array::from_fn(|_| RwLock::default()), wills: Mutex::default() }
    }
}

impl SessionTable {
    fn shard(&self, session: u64) -> &RwLock<foldhash::HashMap<u64, Entry>> {
        // Session ids are sequential, so the low bits spread them evenly.
        &self.shards[(session % SHARDS as u64) as usize]
    }

    /// Registers `session` with its mailbox, its user slot and its client's address, replacing
    /// any earlier entry of that id.
    pub fn insert(&self, session: u64, mailbox: Arc<Mailbox>, user: Arc<AtomicU64>, ip: std::net::IpAddr) {
        self.shard(session)
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(session, Entry { mailbox, user, ip, login_at_ms: AtomicU64::new(0) });
    }

    /// Marks `session` as logged in as `user` (not 0): its client's address, or none when no
    /// such session is live.
    pub fn bind(&self, session: u64, user: u64) -> Option<std::net::IpAddr> {
        let shard = self.shard(session).read().unwrap_or_else(PoisonError::into_inner);
        let entry = shard.get(&session)?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        entry.login_at_ms.store(now.map_or(0, |now| now.as_millis() as u64), Ordering::Release);
        entry.user.store(user, Ordering::Release);
        Some(entry.ip)
    }

    /// The live sessions logged in and not kicked: `(session, user, login_at_ms)`.
    pub fn logged_in(&self) -> Vec<(u64, u64, u64)> {
        let mut found = Vec::new();
        for shard in &self.shards {
            let shard = shard.read().unwrap_or_else(PoisonError::into_inner);
            found.extend(shard.iter().filter(|(_, entry)| entry.mailbox.kicked().is_none()).filter_map(
                |(session, entry)| {
                    let user = entry.user.load(Ordering::Acquire);
                    (user != 0).then(|| (*session, user, entry.login_at_ms.load(Ordering::Acquire)))
                },
            ));
        }
        found
    }

    /// Whether `session` is live, logged in as `user`, and not kicked.
    pub fn holds(&self, session: u64, user: u64) -> bool {
        let shard = self.shard(session).read().unwrap_or_else(PoisonError::into_inner);
        shard.get(&session).is_some_and(|entry| {
            entry.mailbox.kicked().is_none() && entry.user.load(Ordering::Acquire) == user
        })
    }

    /// Kicks `session` with `reason` (the first kick's reason wins); false when no such session
    /// is live.
    pub fn kick(&self, session: u64, reason: i32) -> bool {
        let shard = self.shard(session).read().unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = shard.get(&session) else { return false };
        entry.mailbox.kick(reason);
        true
    }

    /// Kicks every live session with [`SHUTDOWN`] (a session kicked already keeps its reason).
    pub fn shutdown(&self) {
        for shard in &self.shards {
            let shard = shard.read().unwrap_or_else(PoisonError::into_inner);
            for entry in shard.values() {
                entry.mailbox.kick(SHUTDOWN);
            }
        }
    }

    /// Forgets `session` and its wills; pushes to it count as offline from now on.
    pub fn remove(&self, session: u64) {
        self.shard(session).write().unwrap_or_else(PoisonError::into_inner).remove(&session);
        self.wills.lock().unwrap_or_else(PoisonError::into_inner).remove(&session);
    }

    /// Has live `session` hold `frame` (or, for none, drop what it holds) under `key` of
    /// `worker`, until the gateway loses that worker ([`SessionTable::worker_lost`]) or the
    /// session ends; false when it is not live.
    pub fn will(&self, session: u64, worker: &str, key: &str, frame: Option<&Bytes>) -> bool {
        let live = self.shard(session).read().unwrap_or_else(PoisonError::into_inner).contains_key(&session);
        let mut wills = self.wills.lock().unwrap_or_else(PoisonError::into_inner);
        let held = wills.entry(session).or_default();
        held.retain(|will| !(&*will.worker == worker && will.key == key));
        if let (Some(frame), true) = (frame, live) {
            if held.len() >= MAX_WILLS {
                held.remove(0);
            }
            held.push(Will { worker: worker.into(), key: key.to_owned(), frame: frame.clone() });
        }
        if held.is_empty() {
            wills.remove(&session);
        }
        live
    }

    /// The gateway lost `worker`: queues the wills left for it to their sessions and forgets
    /// them; how many were queued.
    pub fn worker_lost(&self, worker: &str) -> usize {
        let mut due = Vec::new();
        {
            let mut wills = self.wills.lock().unwrap_or_else(PoisonError::into_inner);
            wills.retain(|session, held| {
                held.retain(|will| match &*will.worker == worker {
                    true => {
                        due.push((*session, will.frame.clone()));
                        false
                    }
                    false => true,
                });
                !held.is_empty()
            });
        }
        due.iter().map(|(session, frame)| self.push(&[*session], frame).delivered).sum()
    }

    /// Live sessions.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.read().unwrap_or_else(PoisonError::into_inner).len()).sum()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues `frame` for each of `sessions`, without waiting on any of them.
    pub fn push(&self, sessions: &[u64], frame: &Bytes) -> PushReport {
        let mut report = PushReport::default();
        for &session in sessions {
            let shard = self.shard(session).read().unwrap_or_else(PoisonError::into_inner);
            match shard.get(&session).map(|entry| entry.mailbox.push(frame.clone())) {
                Some(Ok(())) => report.delivered += 1,
                None => {
                    report.offline += 1;
                    report.gone.push(session);
                }
                Some(Err(_)) => report.dropped += 1,
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn mailbox(capacity: usize) -> Arc<Mailbox> {
        Arc::new(Mailbox::new(capacity))
    }

    #[test]
    fn a_lost_worker_sends_its_wills_once_and_no_one_elses() {
        let table = SessionTable::default();
        let (one, two) = (mailbox(8), mailbox(8));
        table.insert(1, one.clone(), Arc::default(), LOOPBACK);
        table.insert(2, two.clone(), Arc::default(), LOOPBACK);
        let (a, b) = (Bytes::from_static(b"room a ended"), Bytes::from_static(b"room b ended"));
        assert!(table.will(1, "worker-1", "a", Some(&a)));
        assert!(table.will(1, "worker-1", "a", Some(&a)), "a second will under one key replaces the first");
        assert!(table.will(2, "worker-1", "a", Some(&a)));
        assert!(table.will(2, "worker-2", "b", Some(&b)));
        assert!(!table.will(3, "worker-1", "a", Some(&a)), "no such session: nothing held");
        assert!(table.will(2, "worker-1", "a", None), "dropped (left the room)");

        assert_eq!(table.worker_lost("worker-1"), 1);
        assert_eq!(one.try_next(), Some(a), "the will sent");
        assert!(one.try_next().is_none() && two.try_next().is_none());
        assert_eq!(table.worker_lost("worker-1"), 0, "sent once");

        table.remove(2);
        assert_eq!(table.worker_lost("worker-2"), 0, "an ended session's wills are gone with it");
        assert!(table.wills.lock().unwrap().is_empty());
    }

    #[test]
    fn a_push_reaches_live_sessions_and_reports_the_rest() {
        let table = SessionTable::default();
        let (live, full) = (mailbox(4), mailbox(1));
        table.insert(1, live.clone(), Arc::default(), LOOPBACK);
        table.insert(2, full.clone(), Arc::default(), LOOPBACK);
        full.push(Bytes::new()).unwrap();

        let frame = Bytes::from_static(b"push");
        let report = table.push(&[1, 2, 4], &frame);
        assert_eq!(report, PushReport { delivered: 1, offline: 1, gone: vec![4], dropped: 1 });
        let got = live.try_next().expect("a frame queued");
        // The same bytes, not a copy.
        assert_eq!(got.as_ptr(), frame.as_ptr());

        table.remove(1);
        assert_eq!(table.push(&[1], &frame).offline, 1);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn a_kick_reaches_its_session_once_with_the_first_reason() {
        let table = SessionTable::default();
        let kicked = mailbox(1);
        table.insert(7, kicked.clone(), Arc::new(AtomicU64::new(3)), LOOPBACK);
        assert!(table.holds(7, 3));
        assert!(table.kick(7, 12));
        assert!(table.kick(7, 13));
        assert!(!table.kick(8, 12));
        assert_eq!(kicked.kicked(), Some(12));
        assert!(!table.holds(7, 3), "a kicked session holds no login");
    }

    #[test]
    fn a_shutdown_kicks_every_session_but_those_kicked_already() {
        let table = SessionTable::default();
        let mailboxes: Vec<_> = (0..3).map(|_| mailbox(1)).collect();
        for (session, mailbox) in (1..).zip(&mailboxes) {
            table.insert(session, mailbox.clone(), Arc::default(), LOOPBACK);
        }
        table.kick(2, 12);
        table.shutdown();
        let reasons: Vec<_> = mailboxes.iter().map(|mailbox| mailbox.kicked()).collect();
        assert_eq!(reasons, [Some(SHUTDOWN), Some(12), Some(SHUTDOWN)]);
    }
}
