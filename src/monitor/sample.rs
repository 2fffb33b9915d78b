//! One observation of the service: the health probe, a metrics scrape, container stats,
//! restarts, OOM and new error lines in the log. Taking a sample never fails: whatever could
//! not be read is recorded as missing with the reason (a failed scrape, an engine that did
//! not answer), because a monitor that crashes when the service misbehaves watches nothing,
//! and one that drops the reason cannot say it is blind.

use serde_json::json;

use std::time::Duration;

use crate::engine::logs::{is_error_line, LogLimits};
use crate::engine::{stats, Engine};
use crate::probe::{health, reading};

pub use crate::store::sample::{Sample, MIB};

/// What a sampler carries from one tick to the next (CPU counters, the log cursor). A cron
/// run starts it from the previous stored sample of the same container.
#[derive(Default, Debug, Clone)]
pub struct Cursor {
    pub container_id: Option<String>,
    pub cpu: Option<(u64, u64)>,
    pub log_since_ns: Option<i64>,
}

impl Cursor {
    /// Continues from a stored sample: its CPU counters and log cursor, for its container.
    pub fn resume(prev: &Sample) -> Cursor {
        Cursor {
            container_id: prev.container_id.clone(),
            cpu: prev.cpu_total_ns.zip(prev.system_cpu_ns),
            log_since_ns: prev.log_cursor_ns,
        }
    }
}

pub struct Sampler<'a> {
    pub engine: Option<&'a Engine>,
    /// Why there is no engine although a container is watched (it did not answer at start).
    pub engine_unavailable: Option<String>,
    pub client: reqwest::Client,
    pub health_url: String,
    pub metrics_url: String,
    pub target: String,
    pub container: Option<String>,
    pub day: Option<u32>,
    pub deployment_id: Option<i64>,
    pub role: Option<String>,
    /// The deployed image, whose recorded CVE scan feeds the CRITICAL CVE trigger.
    pub image_ref: Option<String>,
    pub image_id: Option<String>,
    /// `--metrics-source prometheus`: the scrape-based rules are judged through PromQL.
    pub prometheus: Option<super::promql::Source>,
    /// How /metrics is read: the library's convention, the monitor's own requests left out.
    pub reader: reading::Reader,
    /// `--target kubernetes`: restarts and readiness from every pod of the Deployment
    /// (selector), instead of one container's.
    #[cfg(feature = "kubernetes")]
    pub pods: Option<(crate::cluster::Cluster, String)>,
}

/// A scrape larger than this is refused as a whole (a cut exposition would read as a
/// counter reset).
pub const MAX_METRICS_BODY: usize = 4 << 20;

impl Sampler<'_> {
    /// Watches what a rollout made active from now on (fresh windows: samples are per
    /// deployment).
    pub fn follow(&mut self, id: &crate::monitor::period::Identity) {
        self.deployment_id = id.deployment_id;
        self.image_ref = id.image_ref.clone();
        self.image_id = id.image_id.clone();
        self.role = Some(id.role.as_str().to_string());
        self.day = id.day;
    }

    /// One sample; the engine's (or the cluster's) part gets `budget` at most, so a tick
    /// never outlasts its interval however the engine stalls or drips.
    pub async fn take(&self, cursor: &mut Cursor, budget: Duration) -> Sample {
        let ts_ms = chrono::Utc::now().timestamp_millis();
        let mut s = Sample {
            ts_ms,
            day: self.day,
            deployment_id: self.deployment_id,
            role: self.role.clone(),
            target: self.target.clone(),
            container: self.container.clone(),
            // Readings are filled in below.
            ..Sample::default()
        };
        // Probe first, then scrape: the probe's own request is then always inside the scrape
        // that follows it, so every interval holds exactly the monitor's one probe.
        let http = async {
            let h = health::probe(&self.client, &self.health_url).await;
            let m =
                health::get_bounded(&self.client, &self.metrics_url, MAX_METRICS_BODY + 1).await;
            (h, m)
        };
        // The engine is read alongside, so every reading of a sample lies within the same
        // short span after its timestamp rather than one after the other.
        let container = async {
            #[cfg(feature = "kubernetes")]
            if let Some((cluster, selector)) = &self.pods {
                return pods_part(cluster, selector, &mut s).await;
            }
            let Some(name) = &self.container else { return };
            match self.engine {
                Some(engine) => {
                    self.container_part(engine, name, cursor, budget, &mut s)
                        .await
                }
                None => {
                    s.engine_error = Some(
                        self.engine_unavailable
                            .clone()
                            .unwrap_or_else(|| "no Docker Engine".into()),
                    )
                }
            }
        };
        let bounded = async { tokio::time::timeout(budget, container).await.is_err() };
        let ((h, m), stalled) = tokio::join!(http, bounded);
        if stalled {
            s.engine_error.get_or_insert(format!(
                "the engine did not finish answering within the tick's {:.1}s",
                budget.as_secs_f64()
            ));
        }
        let (snapshot, scrape_error, parse_errors, about) = self.read_scrape(m);
        s.health_ok = h.healthy;
        s.health_http_status = h.http_status;
        s.health_latency_ms = Some(h.latency_ms);
        let kept = s.health_detail.take();
        s.health_detail =
            json!({"status": h.status, "dependencies": h.dependencies, "error": h.error});
        // What the engine's part noted beside the health detail (pods, a cut log read).
        for key in ["pods", "logs"] {
            if let Some(v) = kept.get(key) {
                s.health_detail[key] = v.clone();
            }
        }
        // Which convention read the scrape, and whether the monitor's probes are in it.
        if let Some(a) = about {
            s.health_detail["metrics"] = serde_json::to_value(a).unwrap_or_default();
        }
        s.metrics = snapshot;
        s.scrape_error = scrape_error;
        s.parse_errors = parse_errors;
        s
    }
}

/// A scrape as the rules take it: (snapshot, why there is none, unreadable lines, which
/// convention read it).
type Scraped = (
    Option<crate::probe::metrics::Snapshot>,
    Option<String>,
    u32,
    Option<reading::About>,
);

impl Sampler<'_> {
    fn read_scrape(&self, m: Result<(u16, Vec<u8>), String>) -> Scraped {
        match m {
            Ok((200, body)) if body.len() > MAX_METRICS_BODY => (
                None,
                Some(format!(
                    "/metrics is larger than {} MiB",
                    MAX_METRICS_BODY >> 20
                )),
                0,
                None,
            ),
            Ok((200, body)) => {
                let r = reading::read(&String::from_utf8_lossy(&body), &self.reader);
                // No convention fits: nothing to compute rates from, and the reason names
                // what was found, so the rules say it instead of "no traffic".
                let unfit = r.about.convention.is_none();
                let why = r.about.note.clone().filter(|_| unfit);
                ((!unfit).then_some(r.snapshot), why, r.errors, Some(r.about))
            }
            Ok((code, _)) => (
                None,
                Some(format!("/metrics answered HTTP {code}")),
                0,
                None,
            ),
            Err(e) => (None, Some(format!("/metrics: {e}")), 0, None),
        }
    }
}

/// Every pod of the Deployment: restarts summed (the restarts rule counts the fleet's), and
/// how many are ready, kept with the health detail.
#[cfg(feature = "kubernetes")]
async fn pods_part(cluster: &crate::cluster::Cluster, selector: &str, s: &mut Sample) {
    match cluster.pods(selector).await {
        Ok(pods) => {
            let views: Vec<_> = pods
                .iter()
                .map(crate::engine::kubernetes::pod_view)
                .collect();
            s.restart_count = Some(
                views
                    .iter()
                    .map(|p| p.restarts)
                    .fold(0, i64::saturating_add),
            );
            // A terminating pod (a rollout's old one) is on its way out, not unready.
            let serving = views.iter().filter(|p| !p.terminating);
            let ready = serving.clone().filter(|p| p.ready).count();
            s.health_detail = json!({"pods": {"ready": ready, "total": serving.count()}});
        }
        Err(e) => s.engine_error = Some(format!("{e:#}")),
    }
}

impl Sampler<'_> {
    async fn container_part(
        &self,
        engine: &Engine,
        name: &str,
        cursor: &mut Cursor,
        budget: Duration,
        s: &mut Sample,
    ) {
        let c = match engine.inspect_container(name).await {
            Ok(c) => c,
            Err(e) => {
                s.engine_error = Some(format!("{e:#}"));
                return;
            }
        };
        // Counters and cursors belong to one container: a new one (a rollback) starts over.
        if cursor.container_id != c.id {
            *cursor = Cursor {
                container_id: c.id.clone(),
                ..Cursor::default()
            };
        }
        s.container_id = c.id.clone();
        let state = c.state.clone().unwrap_or_default();
        s.restart_count = c.restart_count;
        s.oom_killed = state.oom_killed;
        if state.running.unwrap_or(false) {
            // One reading; CPU % comes from the previous one (this run's or the stored one),
            // so no run waits a second for the engine's second reading.
            match engine.stats(name).await {
                Ok(st) => {
                    if let Some(r) = stats::resources(&st) {
                        s.memory_bytes = Some(r.memory_bytes);
                        s.cpu_pct = cursor.cpu.and_then(|(pt, ps)| {
                            stats::cpu_percent(
                                pt,
                                ps,
                                r.cpu_total_ns,
                                r.system_cpu_ns,
                                online_cpus(&st),
                            )
                        });
                        s.cpu_total_ns = Some(r.cpu_total_ns);
                        s.system_cpu_ns = Some(r.system_cpu_ns);
                        cursor.cpu = Some((r.cpu_total_ns, r.system_cpu_ns));
                    }
                }
                Err(e) => s.engine_error = Some(format!("{e:#}")),
            }
        }
        // Error lines since the previous sample, by the engine's timestamps so none counts
        // twice and none is missed between two cron runs. The first sample of a container
        // only sets the cursor: its interval has no start.
        let Some(since_ns) = cursor.log_since_ns else {
            cursor.log_since_ns = Some(s.ts_ms.saturating_mul(1_000_000));
            s.log_cursor_ns = cursor.log_since_ns;
            return;
        };
        let since_secs = since_ns.div_euclid(1_000_000_000);
        // Counted as they stream, within the tick's budget: a chatty service's hour of logs
        // (or an engine whose stream never ends) costs 8 MiB at most, and says it was cut.
        let limits = LogLimits::new(0, budget);
        match engine
            .scan_logs(
                name,
                since_secs,
                i128::from(since_ns),
                None,
                limits,
                &is_error_line,
            )
            .await
        {
            Ok(scan) => {
                s.log_errors = Some(scan.matched as i64);
                if let Some(why) = &scan.cut {
                    s.health_detail["logs"] = json!({"cut": why, "errors_at_least": scan.matched});
                }
                let newest = i64::try_from(scan.newest_ns).unwrap_or(since_ns);
                cursor.log_since_ns = Some(newest);
                s.log_cursor_ns = Some(newest);
            }
            Err(e) => {
                s.log_cursor_ns = Some(since_ns);
                s.engine_error.get_or_insert(format!("{e:#}"));
            }
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
