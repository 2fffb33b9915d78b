//! One observation of the service: the health probe, a metrics scrape, container stats,
//! restarts, OOM and new error lines in the log. Taking a sample never fails: whatever could
//! not be read is recorded as missing (or as a failed probe), because a monitor that crashes
//! when the service misbehaves watches nothing.

use serde::Serialize;
use serde_json::{json, Value};

use crate::engine::{stats, Engine};
use crate::probe::{health, metrics};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Sample {
    pub ts_ms: i64,
    pub day: Option<u32>,
    pub deployment_id: Option<i64>,
    pub target: String,
    pub container: Option<String>,
    pub health_ok: bool,
    pub health_http_status: Option<u16>,
    pub health_latency_ms: Option<f64>,
    /// `{status, dependencies, error}` from the probe.
    pub health_detail: Value,
    pub metrics: Option<metrics::Snapshot>,
    pub memory_bytes: Option<u64>,
    pub cpu_pct: Option<f64>,
    pub restart_count: Option<i64>,
    pub oom_killed: Option<bool>,
    pub log_errors: Option<i64>,
}

impl Sample {
    pub fn memory_mb(&self) -> Option<f64> {
        self.memory_bytes.map(|b| b as f64 / 1_000_000.0)
    }
}

/// What a sampler carries from one tick to the next (CPU counters, the log cursor).
#[derive(Default)]
pub struct Cursor {
    cpu: Option<(u64, u64)>,
    log_since_ns: Option<i128>,
}

pub struct Sampler<'a> {
    pub engine: Option<&'a Engine>,
    pub client: reqwest::Client,
    pub health_url: String,
    pub metrics_url: String,
    pub target: String,
    pub container: Option<String>,
    pub day: Option<u32>,
    pub deployment_id: Option<i64>,
    /// The deployed image, whose recorded CVE scan feeds the CRITICAL CVE trigger.
    pub image_ref: Option<String>,
}

/// A scrape larger than this is cut off (and then fails to parse the tail, which is fine).
const MAX_METRICS_BODY: usize = 4 << 20;

impl Sampler<'_> {
    pub async fn take(&self, cursor: &mut Cursor) -> Sample {
        let ts_ms = chrono::Utc::now().timestamp_millis();
        let (h, m) = tokio::join!(
            health::probe(&self.client, &self.health_url),
            health::get_bounded(&self.client, &self.metrics_url, MAX_METRICS_BODY)
        );
        let snapshot = match m {
            Ok((200, body)) => Some(metrics::snapshot(&metrics::parse(
                &String::from_utf8_lossy(&body),
            ))),
            _ => None,
        };
        let mut s = Sample {
            ts_ms,
            day: self.day,
            deployment_id: self.deployment_id,
            target: self.target.clone(),
            container: self.container.clone(),
            health_ok: h.healthy,
            health_http_status: h.http_status,
            health_latency_ms: Some(h.latency_ms),
            health_detail: json!({"status": h.status, "dependencies": h.dependencies, "error": h.error}),
            metrics: snapshot,
            memory_bytes: None,
            cpu_pct: None,
            restart_count: None,
            oom_killed: None,
            log_errors: None,
        };
        if let (Some(engine), Some(name)) = (self.engine, &self.container) {
            self.container_part(engine, name, cursor, &mut s).await;
        }
        s
    }

    async fn container_part(
        &self,
        engine: &Engine,
        name: &str,
        cursor: &mut Cursor,
        s: &mut Sample,
    ) {
        let Ok(c) = engine.inspect_container(name).await else {
            return;
        };
        let state = c.state.clone().unwrap_or_default();
        s.restart_count = c.restart_count;
        s.oom_killed = state.oom_killed;
        if state.running.unwrap_or(false) {
            // Without a previous reading the engine's own two readings give CPU % (about 1 s).
            let settle = cursor.cpu.is_none();
            if let Ok(st) = engine.stats(name, settle).await {
                if let Some(r) = stats::resources(&st) {
                    s.memory_bytes = Some(r.memory_bytes);
                    s.cpu_pct = match cursor.cpu {
                        Some((pt, ps)) => stats::cpu_percent(
                            pt,
                            ps,
                            r.cpu_total_ns,
                            r.system_cpu_ns,
                            online_cpus(&st),
                        ),
                        None => r.cpu_pct,
                    };
                    cursor.cpu = Some((r.cpu_total_ns, r.system_cpu_ns));
                }
            }
        }
        // Error lines since the previous sample, by the engine's timestamps so none counts twice.
        let since_ns = cursor
            .log_since_ns
            .unwrap_or(s.ts_ms as i128 * 1_000_000 - 1_000_000_000);
        let since_secs = (since_ns / 1_000_000_000) as i64;
        if let Ok(lines) = engine.logs_with_timestamps(name, since_secs, 100_000).await {
            let mut count = 0;
            let mut newest = since_ns;
            for (ts, line) in lines {
                if ts > since_ns {
                    newest = newest.max(ts);
                    if line.to_ascii_lowercase().contains("error") {
                        count += 1;
                    }
                }
            }
            s.log_errors = Some(count);
            cursor.log_since_ns = Some(newest.max(since_ns));
        }
    }
}

fn online_cpus(s: &bollard::models::ContainerStatsResponse) -> u32 {
    s.cpu_stats
        .as_ref()
        .and_then(|c| c.online_cpus)
        .unwrap_or(1)
        .max(1)
}
