//! Connection admission: how many connections may be open in total, per client IP, and still in
//! the WebSocket handshake. Each admitted connection holds a guard that gives its slot back on drop.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
};

/// Why a connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Too many connections are in the handshake: closed without an answer.
    Handshakes,
    /// The node holds `max_connections`: HTTP 503 at upgrade.
    Total,
    /// The client's IP holds `max_connections_per_ip`: HTTP 429 at upgrade.
    PerIp,
}

impl Refusal {
    /// The metric label and log word for this refusal.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Handshakes => "handshakes",
            Refusal::Total => "total",
            Refusal::PerIp => "per_ip",
        }
    }
}

/// Counts connections against the configured limits.
pub struct Admission {
    max_total: usize,
    max_per_ip: usize,
    max_handshakes: usize,
    total: AtomicUsize,
    handshakes: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl Admission {
    /// Limits of `max_total` connections, `max_per_ip` per address (0 = no limit) and
    /// `max_handshakes` connections in the handshake.
    pub fn new(max_total: usize, max_per_ip: usize, max_handshakes: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_ip,
            max_handshakes,
            total: AtomicUsize::new(0),
            handshakes: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a handshake slot for a new TCP connection.
    ///
    /// # Errors
    /// [`Refusal::Handshakes`] when all slots are taken.
    pub fn handshake(self: &Arc<Self>) -> Result<HandshakeGuard, Refusal> {
        take(&self.handshakes, self.max_handshakes).ok_or(Refusal::Handshakes)?;
        Ok(HandshakeGuard(self.clone()))
    }

    /// Takes a connection slot for `ip`.
    ///
    /// # Errors
    /// [`Refusal::Total`] or [`Refusal::PerIp`] when that limit is reached.
    pub fn connect(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionGuard, Refusal> {
        take(&self.total, self.max_total).ok_or(Refusal::Total)?;
        if self.max_per_ip > 0 {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
            let count = per_ip.entry(ip).or_insert(0);
            if *count >= self.max_per_ip {
                drop(per_ip);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::PerIp);
            }
            *count += 1;
        }
        Ok(ConnectionGuard { admission: self.clone(), ip })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// Addresses with a connection now (the per-IP table's size).
    pub fn addresses(&self) -> usize {
        self.per_ip.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// Increments `counter` unless it is at `max`.
fn take(counter: &AtomicUsize, max: usize) -> Option<usize> {
    counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok()
}

/// A handshake slot; given back on drop.
pub struct HandshakeGuard(Arc<Admission>);

impl Drop for HandshakeGuard {
    fn drop(&mut self) {
        self.0.handshakes.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection slot; given back on drop (the per-IP entry is removed at zero, so the table
/// holds only addresses with open connections).
pub struct ConnectionGuard {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let admission = &self.admission;
        if admission.max_per_ip > 0 {
            let mut per_ip = admission.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = per_ip.get_mut(&self.ip) {
                *count -= 1;
                if *count == 0 {
                    per_ip.remove(&self.ip);
                }
            }
        }
        admission.total.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn per_ip_limit_counts_each_address() {
        let admission = Admission::new(10, 2, 10);
        let a1 = admission.connect(A).unwrap();
        let _a2 = admission.connect(A).unwrap();
        assert_eq!(admission.connect(A).err(), Some(Refusal::PerIp));
        let _b1 = admission.connect(B).unwrap();
        assert_eq!(admission.open(), 3);
        drop(a1);
        let _a3 = admission.connect(A).unwrap();
        assert_eq!(admission.open(), 3);
    }

    #[test]
    fn total_limit_and_release() {
        let admission = Admission::new(2, 0, 10);
        let a = admission.connect(A).unwrap();
        let _b = admission.connect(B).unwrap();
        assert_eq!(admission.connect(B).err(), Some(Refusal::Total));
        drop(a);
        assert!(admission.connect(A).is_ok());
    }

    #[test]
    fn per_ip_table_forgets_closed_addresses() {
        let admission = Admission::new(10, 5, 10);
        let guards: Vec<_> = (0..3).map(|_| admission.connect(A).unwrap()).collect();
        assert_eq!(admission.addresses(), 1);
        drop(guards);
        assert_eq!((admission.addresses(), admission.open()), (0, 0));
    }

    #[test]
    fn handshake_slots() {
        let admission = Admission::new(10, 0, 1);
        let slot = admission.handshake().unwrap();
        assert_eq!(admission.handshake().err(), Some(Refusal::Handshakes));
        drop(slot);
        assert!(admission.handshake().is_ok());
    }
}
