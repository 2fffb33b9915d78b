//! One observation of the service as the store keeps it. It lives on the store's floor so
//! the store can read and write it without importing the monitor that takes it.

use serde::Serialize;
use serde_json::Value;

use crate::probe::metrics;

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Sample {
    pub ts_ms: i64,
    /// Day of the image under test's validation period; None while the baseline runs.
    pub day: Option<u32>,
    pub deployment_id: Option<i64>,
    /// `candidate` (the image under test) or `baseline` (a rollback target is serving).
    pub role: Option<String>,
    pub target: String,
    pub container: Option<String>,
    pub container_id: Option<String>,
    pub health_ok: bool,
    pub health_http_status: Option<u16>,
    pub health_latency_ms: Option<f64>,
    /// `{status, dependencies, error}` from the probe.
    pub health_detail: Value,
    pub metrics: Option<metrics::Snapshot>,
    /// Why `metrics` is missing: the scrape failed, answered non-200, or was too large.
    pub scrape_error: Option<String>,
    /// Lines of the scrape that could not be read (the rest was used).
    pub parse_errors: u32,
    /// Why the container readings are missing: the engine did not answer, no such container.
    pub engine_error: Option<String>,
    pub memory_bytes: Option<u64>,
    pub cpu_pct: Option<f64>,
    /// The engine's CPU counters, kept so the next run (cron) computes CPU % without waiting.
    pub cpu_total_ns: Option<u64>,
    pub system_cpu_ns: Option<u64>,
    pub restart_count: Option<i64>,
    pub oom_killed: Option<bool>,
    pub log_errors: Option<i64>,
    /// The engine timestamp (ns) of the newest log line read, where the next run resumes.
    pub log_cursor_ns: Option<i64>,
}

/// Bytes in a MiB: the runbook reads memory with `docker stats`, which shows MiB.
pub const MIB: f64 = 1024.0 * 1024.0;

impl Sample {
    /// Memory in MiB, the unit `docker stats` shows and the runbook's thresholds mean.
    pub fn memory_mib(&self) -> Option<f64> {
        self.memory_bytes.map(|b| b as f64 / MIB)
    }

    /// The scrape as rates can use it: present and made of numbers.
    pub fn usable_metrics(&self) -> Option<&metrics::Snapshot> {
        self.metrics.as_ref().filter(|m| m.usable())
    }
}

impl Sample {
    /// Drops what only the newest minutes of a history need (the scrape, the health detail,
    /// the names), keeping the readings every window reads (health, memory, restarts, OOM,
    /// errors): a monitor holds an hour of 1 s samples this way in a few hundred KB.
    pub fn slim(&mut self) {
        self.metrics = None;
        self.health_detail = Value::Null;
        self.target = String::new();
        self.container = None;
        self.container_id = None;
        self.role = None;
    }

    /// Whether `slim` ran on it (a taken sample always names its target).
    pub fn is_slim(&self) -> bool {
        self.target.is_empty()
    }
}
