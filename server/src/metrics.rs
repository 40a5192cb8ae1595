//! In-process counters for `/metrics` (Prometheus text format). Gauges that
//! the database knows (jobs by state, queue depth) are read from it at scrape
//! time; counters of this process live here.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use app::model::job::JobState;
use app::model::status::ProbeState;

/// Upper bounds (seconds) of the claim-to-start latency histogram.
const BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A limit that refused a request (each has its own counter in
/// `opsdeck_limit_refusals_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// A request body over `[server].max_body_bytes` (413).
    RequestBody,
    /// A terminal input frame over `[terminal].max_frame_bytes` (close 1009).
    TerminalFrameSize,
    /// Terminal input faster than `[terminal].max_frames_per_second` (close 1008).
    TerminalFrameRate,
    /// A sign-in refused after too many failures (429).
    LoginAttempts,
    /// An event stream past `[server].max_streams_per_user` (429).
    StreamsPerUser,
    /// An event stream past `[server].max_streams_per_address` (429).
    StreamsPerAddress,
    /// An agent connection past `[agents].max_connections_per_token` (429).
    AgentConnections,
}

impl Limit {
    pub const ALL: [Limit; 7] = [
        Limit::RequestBody,
        Limit::TerminalFrameSize,
        Limit::TerminalFrameRate,
        Limit::LoginAttempts,
        Limit::StreamsPerUser,
        Limit::StreamsPerAddress,
        Limit::AgentConnections,
    ];

    /// The `limit` label.
    pub fn label(self) -> &'static str {
        match self {
            Limit::RequestBody => "request_body",
            Limit::TerminalFrameSize => "terminal_frame_size",
            Limit::TerminalFrameRate => "terminal_frame_rate",
            Limit::LoginAttempts => "login_attempts",
            Limit::StreamsPerUser => "streams_per_user",
            Limit::StreamsPerAddress => "streams_per_address",
            Limit::AgentConnections => "agent_connections",
        }
    }
}

/// Refusals by limit; shared with whatever enforces a limit (the body
/// limit layer, terminal sockets), which needs nothing else of [`Metrics`].
#[derive(Debug, Default)]
pub struct Refusals([AtomicU64; Limit::ALL.len()]);

impl Refusals {
    pub fn count(&self, limit: Limit) {
        self.0[limit as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, limit: Limit) -> u64 {
        self.0[limit as usize].load(Ordering::Relaxed)
    }
}

#[derive(Default)]
pub struct Metrics {
    lines: AtomicU64,
    finished: [AtomicU64; 6],
    claim_buckets: [AtomicU64; BUCKETS.len()],
    claim_count: AtomicU64,
    claim_sum_micros: AtomicU64,
    streams: AtomicU64,
    refusals: Arc<Refusals>,
    /// Jobs of lost nodes this process failed.
    jobs_lost: AtomicU64,
    /// Runs this process stopped because their job was no longer its own.
    jobs_fenced: AtomicU64,
    /// Times this node found it had been declared lost and registered again.
    node_rejoins: AtomicU64,
    /// Status probes this process ran, by what they found.
    probes: [AtomicU64; ProbeState::ALL.len()],
    /// Notifications between replicas and tails (PostgreSQL; all zero on
    /// SQLite).
    pub notify: crate::notify::Counters,
}

/// This node and the others, as `/metrics` shows them (read at scrape time).
#[derive(Debug, Clone, Default)]
pub struct NodeView {
    pub node: String,
    pub epoch: i64,
    /// Nodes whose heartbeat is within `node_timeout`.
    pub alive: u64,
    /// Nodes declared lost (or silent past `node_timeout`, not yet declared).
    pub lost: u64,
}

impl Metrics {
    pub fn lines_written(&self, n: u64) {
        self.lines.fetch_add(n, Ordering::Relaxed);
    }

    pub fn job_finished(&self, state: JobState) {
        if let Some(i) = JobState::ALL.iter().position(|s| *s == state) {
            self.finished[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Time from a job's claim to its process running.
    pub fn claim_to_start(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.claim_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.claim_count.fetch_add(1, Ordering::Relaxed);
        self.claim_sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// A job of a lost node was failed by this process.
    pub fn job_lost(&self) {
        self.jobs_lost.fetch_add(1, Ordering::Relaxed);
    }

    /// A run here was stopped: its job was no longer this node's.
    pub fn job_fenced(&self) {
        self.jobs_fenced.fetch_add(1, Ordering::Relaxed);
    }

    /// A status probe ran here and found `state`.
    pub fn probed(&self, state: ProbeState) {
        if let Some(i) = ProbeState::ALL.iter().position(|s| *s == state) {
            self.probes[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// This node registered again after it had been declared lost.
    pub fn node_rejoined(&self) {
        self.node_rejoins.fetch_add(1, Ordering::Relaxed);
    }

    /// The node gauges and counters in Prometheus text.
    pub fn render_nodes(&self, v: &NodeView) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP opsdeck_node_info This process's node id ([cluster].node), always 1."
        );
        let _ = writeln!(out, "# TYPE opsdeck_node_info gauge");
        let _ = writeln!(out, "opsdeck_node_info{{node=\"{}\"}} 1", v.node);
        let _ = writeln!(
            out,
            "# HELP opsdeck_node_epoch This node's epoch (bumped at each start and after it was declared lost)."
        );
        let _ = writeln!(out, "# TYPE opsdeck_node_epoch gauge");
        let _ = writeln!(out, "opsdeck_node_epoch {}", v.epoch);
        let _ = writeln!(
            out,
            "# HELP opsdeck_nodes Nodes known to the database, alive (heartbeat within node_timeout) or lost."
        );
        let _ = writeln!(out, "# TYPE opsdeck_nodes gauge");
        let _ = writeln!(out, "opsdeck_nodes{{state=\"alive\"}} {}", v.alive);
        let _ = writeln!(out, "opsdeck_nodes{{state=\"lost\"}} {}", v.lost);
        let counters = [
            (
                "opsdeck_jobs_lost_total",
                "Jobs of lost nodes this process failed.",
                &self.jobs_lost,
            ),
            (
                "opsdeck_jobs_fenced_total",
                "Runs this process stopped because their job was no longer its own (failed while this node was lost).",
                &self.jobs_fenced,
            ),
            (
                "opsdeck_node_rejoins_total",
                "Times this node found it had been declared lost and registered under a new epoch.",
                &self.node_rejoins,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        out
    }

    /// An event stream opened (`true`) or closed (`false`).
    pub fn stream(&self, open: bool) {
        if open {
            self.streams.fetch_add(1, Ordering::Relaxed);
        } else {
            self.streams.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Event streams open now.
    pub fn streams_open(&self) -> u64 {
        self.streams.load(Ordering::Relaxed)
    }

    /// The refusal counters, for the code that enforces a limit.
    pub fn refusals(&self) -> &Arc<Refusals> {
        &self.refusals
    }

    pub fn lines_total(&self) -> u64 {
        self.lines.load(Ordering::Relaxed)
    }

    /// The Prometheus text, with the database's job counts by state.
    pub fn render(&self, by_state: &[(JobState, i64)]) -> String {
        let stream_subscribers = self.streams_open();
        let mut out = String::new();
        let count = |s: JobState| {
            by_state
                .iter()
                .find(|(k, _)| *k == s)
                .map_or(0, |(_, n)| *n)
        };
        let _ = writeln!(out, "# HELP opsdeck_jobs Jobs in the database by state.");
        let _ = writeln!(out, "# TYPE opsdeck_jobs gauge");
        for s in JobState::ALL {
            let _ = writeln!(out, "opsdeck_jobs{{state=\"{s}\"}} {}", count(s));
        }
        let _ = writeln!(out, "# HELP opsdeck_queue_depth Jobs waiting to run.");
        let _ = writeln!(out, "# TYPE opsdeck_queue_depth gauge");
        let _ = writeln!(out, "opsdeck_queue_depth {}", count(JobState::Queued));
        let _ = writeln!(
            out,
            "# HELP opsdeck_log_lines_written_total Log lines committed by this process."
        );
        let _ = writeln!(out, "# TYPE opsdeck_log_lines_written_total counter");
        let _ = writeln!(
            out,
            "opsdeck_log_lines_written_total {}",
            self.lines_total()
        );
        let _ = writeln!(
            out,
            "# HELP opsdeck_jobs_finished_total Jobs this process finished, by final state."
        );
        let _ = writeln!(out, "# TYPE opsdeck_jobs_finished_total counter");
        for (i, s) in JobState::ALL
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_finished())
        {
            let _ = writeln!(
                out,
                "opsdeck_jobs_finished_total{{state=\"{s}\"}} {}",
                self.finished[i].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP opsdeck_claim_to_start_seconds Time from claiming a job to its process running.");
        let _ = writeln!(out, "# TYPE opsdeck_claim_to_start_seconds histogram");
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "opsdeck_claim_to_start_seconds_bucket{{le=\"{bound}\"}} {}",
                self.claim_buckets[i].load(Ordering::Relaxed)
            );
        }
        let total = self.claim_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "opsdeck_claim_to_start_seconds_bucket{{le=\"+Inf\"}} {total}"
        );
        let _ = writeln!(
            out,
            "opsdeck_claim_to_start_seconds_sum {}",
            self.claim_sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "opsdeck_claim_to_start_seconds_count {total}");
        let _ = writeln!(
            out,
            "# HELP opsdeck_stream_subscribers Open event streams (job streams and feeds)."
        );
        let _ = writeln!(out, "# TYPE opsdeck_stream_subscribers gauge");
        let _ = writeln!(out, "opsdeck_stream_subscribers {stream_subscribers}");
        let _ = writeln!(
            out,
            "# HELP opsdeck_limit_refusals_total Requests, frames and sign-ins refused by a limit, by limit."
        );
        let _ = writeln!(out, "# TYPE opsdeck_limit_refusals_total counter");
        for limit in Limit::ALL {
            let _ = writeln!(
                out,
                "opsdeck_limit_refusals_total{{limit=\"{}\"}} {}",
                limit.label(),
                self.refusals.get(limit)
            );
        }
        let _ = writeln!(
            out,
            "# HELP opsdeck_status_probes_total Target status probes this process ran, by the state they found."
        );
        let _ = writeln!(out, "# TYPE opsdeck_status_probes_total counter");
        for (i, s) in ProbeState::ALL.iter().enumerate() {
            let _ = writeln!(
                out,
                "opsdeck_status_probes_total{{state=\"{}\"}} {}",
                s.as_str(),
                self.probes[i].load(Ordering::Relaxed)
            );
        }
        self.notify.render(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_limit_has_its_own_refusal_counter() {
        let m = Metrics::default();
        m.refusals().count(Limit::RequestBody);
        m.refusals().count(Limit::RequestBody);
        m.refusals().count(Limit::TerminalFrameRate);
        let text = m.render(&[]);
        assert!(text.contains("opsdeck_limit_refusals_total{limit=\"request_body\"} 2\n"));
        assert!(text.contains("opsdeck_limit_refusals_total{limit=\"terminal_frame_rate\"} 1\n"));
        assert!(text.contains("opsdeck_limit_refusals_total{limit=\"terminal_frame_size\"} 0\n"));
        assert!(text.contains("opsdeck_limit_refusals_total{limit=\"login_attempts\"} 0\n"));
    }

    #[test]
    fn the_node_gauges_name_the_node_and_count_its_events() {
        let m = Metrics::default();
        m.job_lost();
        m.job_lost();
        m.job_fenced();
        let text = m.render_nodes(&NodeView {
            node: "vm-3000".into(),
            epoch: 7,
            alive: 2,
            lost: 1,
        });
        assert!(
            text.contains("opsdeck_node_info{node=\"vm-3000\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("opsdeck_node_epoch 7\n"));
        assert!(text.contains("opsdeck_nodes{state=\"alive\"} 2\n"));
        assert!(text.contains("opsdeck_nodes{state=\"lost\"} 1\n"));
        assert!(text.contains("opsdeck_jobs_lost_total 2\n"));
        assert!(text.contains("opsdeck_jobs_fenced_total 1\n"));
        assert!(text.contains("opsdeck_node_rejoins_total 0\n"));
    }
}
