//! The bot's report: throughput, errors by code, latency percentiles from an HDR histogram.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::{collections::BTreeMap, fmt, time::Duration};

/// What one client saw during the measured run.
pub struct ClientStats {
    /// Reply latencies in microseconds.
    pub latency: Histogram<u64>,
    /// Requests sent.
    pub sent: u64,
    /// Replies with code OK.
    pub ok: u64,
    /// Failures by code name (`RATE_LIMITED`, …) or kind (`connect`, `closed`, `send`).
    pub errors: BTreeMap<String, u64>,
}

impl ClientStats {
    /// Empty stats.
    pub fn new() -> Self {
        // 1 µs to 60 s at 3 significant digits.
        let latency = Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
        Self { latency, sent: 0, ok: 0, errors: BTreeMap::new() }
    }

    /// Counts one failure of `kind`.
    pub fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_default() += 1;
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: ClientStats) {
        let _ = self.latency.add(&other.latency);
        self.sent += other.sent;
        self.ok += other.ok;
        for (kind, count) in other.errors {
            *self.errors.entry(kind).or_default() += count;
        }
    }
}

impl Default for ClientStats {
    fn default() -> Self {
        Self::new()
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Serialize, Clone, Copy, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest reply.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    /// The percentiles of `h`, a histogram of microseconds.
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// A bot run's result; `--json` writes it as is.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Wire protocol (`mortar` or `pinus`).
    pub protocol: String,
    /// Target URL.
    pub url: String,
    /// Clients asked for.
    pub clients: usize,
    /// Clients that connected (and finished setup).
    pub connected: usize,
    /// Length of the measured run in seconds (after all clients connected).
    pub duration_s: f64,
    /// Requests sent during the run.
    pub sent: u64,
    /// Replies with code OK.
    pub ok: u64,
    /// Failures by code or kind.
    pub errors: BTreeMap<String, u64>,
    /// Why the first client that could not connect (or finish its setup) failed, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_error: Option<String>,
    /// Replies (OK and error codes) per second.
    pub requests_per_sec: f64,
    /// Latency of all replies.
    pub latency_ms: Latency,
}

impl Report {
    /// The report of a run from merged client stats.
    pub fn new(
        scenario: &str,
        protocol: &str,
        url: &str,
        clients: usize,
        connected: usize,
        elapsed: Duration,
        stats: &ClientStats,
    ) -> Self {
        let h = &stats.latency;
        let latency = Latency::of(h);
        let seconds = elapsed.as_secs_f64().max(f64::EPSILON);
        Self {
            scenario: scenario.into(),
            protocol: protocol.into(),
            url: url.into(),
            clients,
            connected,
            duration_s: seconds,
            sent: stats.sent,
            ok: stats.ok,
            errors: stats.errors.clone(),
            connect_error: None,
            requests_per_sec: h.len() as f64 / seconds,
            latency_ms: latency,
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.latency_ms;
        writeln!(
            f,
            "{} over {}: {}/{} clients connected, {:.1} s",
            self.scenario, self.protocol, self.connected, self.clients, self.duration_s
        )?;
        writeln!(f, "  requests/s  {:.0}", self.requests_per_sec)?;
        writeln!(f, "  sent {}, ok {}", self.sent, self.ok)?;
        if self.errors.is_empty() {
            writeln!(f, "  errors      none")?;
        } else {
            let errors: Vec<_> = self.errors.iter().map(|(kind, n)| format!("{kind} {n}")).collect();
            writeln!(f, "  errors      {}", errors.join(", "))?;
        }
        if let Some(error) = &self.connect_error {
            writeln!(f, "  first client that did not connect: {error}")?;
            if error.contains("user.register answered RATE_LIMITED") {
                writeln!(
                    f,
                    "  the user module limits registrations (modules.user.register_per_ip, register_per_sec); \
                     for a load test from one machine start the node with \
                     MORTAR_MODULES__USER__REGISTER_PER_IP=0 MORTAR_MODULES__USER__REGISTER_PER_SEC=0"
                )?;
            }
        }
        if self.errors.contains_key("RATE_LIMITED") {
            // Error replies count in requests/s: say why they came before the figure is quoted.
            writeln!(
                f,
                "  RATE_LIMITED: the node limits each session's requests per second; for a load test \
                 start it with MORTAR_GATEWAY__RATE_PER_SEC=0"
            )?;
        }
        write!(
            f,
            "  latency ms  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3}",
            l.p50, l.p90, l.p99, l.p999, l.max, l.mean
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limited_run_says_how_to_lift_the_limit() {
        let mut stats = ClientStats::new();
        stats.error("RATE_LIMITED");
        let report =
            Report::new("echo", "mortar", "ws://127.0.0.1:4000/ws", 1, 1, Duration::from_secs(1), &stats);
        assert!(report.to_string().contains("MORTAR_GATEWAY__RATE_PER_SEC=0"), "{report}");
        let quiet = Report::new(
            "echo",
            "mortar",
            "ws://127.0.0.1:4000/ws",
            1,
            1,
            Duration::from_secs(1),
            &ClientStats::new(),
        );
        assert!(!quiet.to_string().contains("RATE_PER_SEC"), "{quiet}");
    }

    #[test]
    fn a_refused_registration_says_which_limit_to_lift() {
        let mut report = Report::new(
            "pack",
            "mortar",
            "ws://127.0.0.1:4000/ws",
            100,
            30,
            Duration::from_secs(1),
            &ClientStats::new(),
        );
        report.connect_error = Some("setup request user.register answered RATE_LIMITED".into());
        let text = report.to_string();
        assert!(text.contains("MORTAR_MODULES__USER__REGISTER_PER_IP=0"), "{text}");
        report.connect_error = Some("connection refused".into());
        assert!(!report.to_string().contains("REGISTER_PER_IP"), "{report}");
    }
}
