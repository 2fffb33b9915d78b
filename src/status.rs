//! The runbook's "Quick Health Check" appendix as one reading: health, a metrics summary,
//! container resources as `docker stats` shows them, restarts, OOM, recent errors, and what
//! a rollback would restore. The same probes and the same resource reading as a monitor tick
//! (`probe::health`, `probe::metrics`, `engine::stats`); unlike a tick it has no previous
//! reading, so CPU % comes from two readings 100 ms apart and errors from the last hour.

use anyhow::Result;
use serde::Serialize;

use crate::config::Config;
use crate::engine::logs::{is_error_line, LogLimits, LogScan};
use crate::engine::stats::{self, Resources};
use crate::engine::Engine;
use crate::exit::failure;
use crate::exit::Code;
use crate::output::Render;
use crate::probe::health::{self, HealthResult};
use crate::probe::metrics::{self, Snapshot};
use crate::probe::reading::{self, About, Reader};
use crate::rollout::RollbackTarget;

/// `status`'s outcome: exit 0 healthy and running, 3 not, 1 when the engine cannot be asked.
#[derive(Debug, Serialize)]
pub struct Status {
    pub ok: bool,
    pub name: String,
    pub base_url: String,
    pub health: HealthResult,
    pub metrics: Option<Snapshot>,
    /// Which metric convention read /metrics, and whether the monitor's probes are in it.
    pub metrics_convention: Option<About>,
    pub container: Option<Container>,
    pub rollback_target: Option<RollbackTarget>,
    /// The switch strategy's warm previous slot, reaped now that keep_previous has passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reaped: Option<String>,
    /// Why the engine could not be asked (exit 1), when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine_error: Option<String>,
    #[serde(skip)]
    code: Code,
    #[serde(skip)]
    at: String,
    /// Why there is no metrics summary.
    #[serde(skip)]
    metrics_error: String,
}

#[derive(Debug, Serialize)]
pub struct Container {
    pub id: Option<String>,
    pub image: Option<String>,
    pub running: bool,
    pub status: Option<String>,
    pub restart_count: i64,
    pub oom_killed: bool,
    pub memory_bytes: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    pub cpu_pct: Option<f64>,
    pub errors_last_hour: u64,
    pub recent_errors: Vec<String>,
    /// The log read stopped at its byte or time budget: `errors_last_hour` is a lower bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors_cut: Option<String>,
}

pub async fn check(cfg: &Config, state_dir: &std::path::Path) -> Result<Status> {
    let reaped = crate::rollout::switch::reap_now(cfg, state_dir).await;
    let name = cfg.container.name.clone();
    let client = health::client(cfg.verify.probe_timeout);
    let (health_url, metrics_url) = (cfg.health_url(), cfg.metrics_url());
    let (h, m) = tokio::join!(
        health::probe(&client, &health_url),
        health::get_bounded(&client, &metrics_url, 4 << 20)
    );
    let reader = Reader::from_config(cfg).map_err(|e| failure(Code::Usage, e))?;
    let (snapshot, metrics_error, convention) = match &m {
        Ok((200, body)) => {
            let r = reading::read(&String::from_utf8_lossy(body), &reader);
            match r.about.convention.is_some() {
                true => (Some(r.snapshot), String::new(), Some(r.about)),
                false => (
                    None,
                    r.about.note.clone().unwrap_or_default(),
                    Some(r.about),
                ),
            }
        }
        Ok((c, _)) => (None, format!("HTTP {c}"), None),
        Err(e) => (None, e.clone(), None),
    };
    let (container, engine_error) = match Engine::connect().await {
        Err(e) => (None, Some(format!("{e:#}"))),
        Ok(engine) => {
            // Lines copied from the logs lose every value the env file holds.
            let known: Vec<String> = crate::envfile::read(&cfg.env_file)
                .map(|vars| vars.into_iter().map(|v| v.value).collect())
                .unwrap_or_default();
            (container(&engine, &name, &known).await?, None)
        }
    };
    let code = match (&engine_error, &container) {
        (Some(_), _) => Code::Operational,
        (None, None) => Code::CheckFailed,
        (None, Some(c)) if !c.running => Code::CheckFailed,
        _ => Code::of_check(h.healthy),
    };
    let rollback_target = crate::store::Store::open(state_dir)
        .and_then(|store| crate::rollout::rollback_target(&store, cfg))
        .ok();
    Ok(Status {
        reaped,
        ok: code == Code::Ok,
        name,
        base_url: cfg.verify.base_url.clone(),
        health: h,
        metrics: snapshot,
        metrics_convention: convention,
        container,
        rollback_target,
        engine_error,
        code,
        at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        metrics_error,
    })
}

async fn container(engine: &Engine, name: &str, known: &[String]) -> Result<Option<Container>> {
    let Some(c) = engine.find_container(name).await? else {
        return Ok(None);
    };
    let state = c.state.clone().unwrap_or_default();
    let running = state.running.unwrap_or(false);
    // A remote engine's pid names some other process here.
    let pid = state.pid.filter(|p| *p > 0 && engine.is_local());
    let since = chrono::Utc::now().timestamp() - 3600;
    // Counted as they stream, the last 10 kept: the runbook's `docker logs --since 1h | grep
    // -c error`, bounded (a service whose last hour of logs is gigabytes costs 8 MiB, 10 s).
    let limits = LogLimits::new(10, std::time::Duration::from_secs(10));
    let (res, logs) = tokio::join!(
        resources(engine, name, running, pid),
        engine.scan_logs(name, since, 0, None, limits, &is_error_line)
    );
    let logs = logs.unwrap_or_else(|e| LogScan {
        cut: Some(format!("{e:#}")),
        ..Default::default()
    });
    Ok(Some(Container {
        id: c.id.clone(),
        image: c.config.as_ref().and_then(|c| c.image.clone()),
        running,
        status: state.status.map(|s| s.to_string()),
        restart_count: c.restart_count.unwrap_or(0),
        oom_killed: state.oom_killed.unwrap_or(false),
        memory_bytes: res.map(|r| r.memory_bytes),
        memory_limit_bytes: res.map(|r| r.memory_limit_bytes),
        cpu_pct: res.and_then(|r| r.cpu_pct),
        errors_last_hour: logs.matched,
        recent_errors: logs
            .last
            .iter()
            .map(|l| crate::redact::log_line(l, known))
            .collect(),
        errors_cut: logs.cut,
    }))
}

/// Two readings give CPU %: from the cgroup files when the engine is local (the files
/// `docker stats` reads), else two one-shot engine readings 200 ms apart (a settled reading,
/// what `docker stats` waits for, takes the engine a second or two).
async fn resources(
    engine: &Engine,
    name: &str,
    running: bool,
    pid: Option<i64>,
) -> Option<Resources> {
    if !running {
        return None;
    }
    if let Some(first) = pid.and_then(stats::from_cgroup) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if let Some(second) = pid.and_then(stats::from_cgroup) {
            return Some(second.since(&first));
        }
    }
    let reading = || async {
        engine
            .stats(name)
            .await
            .ok()
            .and_then(|s| stats::resources(&s))
    };
    let first = reading().await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let second = reading().await?;
    Some(match &first {
        Some(f) => second.since(f),
        None => second,
    })
}

impl Render for Status {
    fn code(&self) -> Code {
        self.code
    }

    fn text(&self) -> String {
        let h = &self.health;
        let mut text = format!("=== {} ({}) at {} ===\n", self.name, self.base_url, self.at);
        if let Some(r) = &self.reaped {
            text += &format!("{r}\n");
        }
        text += &format!(
            "health: {} (HTTP {}, {:.1}ms){}\n",
            if h.healthy { "healthy" } else { "NOT healthy" },
            h.http_status.map(|s| s.to_string()).unwrap_or("-".into()),
            h.latency_ms,
            h.error
                .as_ref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
        if let Some(body) = &h.body {
            text += &format!("  {body}\n");
        }
        match &self.metrics {
            Some(s) => {
                let q = |p: f64| {
                    metrics::histogram_quantile(p, &s.buckets)
                        .map(|v| format!("{:.1}ms", v * 1000.0))
                        .unwrap_or("-".into())
                };
                let mean = if s.duration_count > 0.0 {
                    format!("{:.1}ms", s.duration_sum / s.duration_count * 1000.0)
                } else {
                    "-".into()
                };
                let conv = self.metrics_convention.as_ref();
                text += &format!(
                    "metrics ({}): requests {} (5xx {}), latency mean {mean} p95 {} p99 {} (since start{})\n",
                    conv.and_then(|c| c.convention.as_deref()).unwrap_or("-"),
                    s.requests_total,
                    s.requests_5xx,
                    q(0.95),
                    q(0.99),
                    conv.map(About::probes_said).unwrap_or_default()
                );
                if let Some(note) = conv.and_then(|c| c.note.as_deref()) {
                    text += &format!("  {note}\n");
                }
            }
            None => text += &format!("metrics: unavailable ({})\n", self.metrics_error),
        }
        match (&self.engine_error, &self.container) {
            (Some(e), _) => text += &format!("container: unavailable ({e})\n"),
            (None, None) => text += &format!("container: no container named {}\n", self.name),
            _ => {}
        }
        if let Some(c) = &self.container {
            text += &format!(
                "container: {} image {} state {} restarts {} oom_killed {}\n",
                c.id.as_deref()
                    .unwrap_or("")
                    .chars()
                    .take(12)
                    .collect::<String>(),
                c.image.as_deref().unwrap_or(""),
                c.status.as_deref().unwrap_or(""),
                c.restart_count,
                c.oom_killed
            );
            match (c.memory_bytes, c.memory_limit_bytes) {
                (Some(m), Some(l)) => {
                    text += &format!(
                        "resources: memory {:.1} MiB / {:.0} MiB, cpu {}\n",
                        m as f64 / 1048576.0,
                        l as f64 / 1048576.0,
                        c.cpu_pct.map(|c| format!("{c:.2}%")).unwrap_or("-".into())
                    )
                }
                _ => text += "resources: unavailable (container not running)\n",
            }
            text += &match &c.errors_cut {
                None => format!(
                    "recent errors (last hour, {} in all, last 10):\n",
                    c.errors_last_hour
                ),
                Some(why) => format!(
                    "recent errors (last hour, at least {} — {why}; last 10 read):\n",
                    c.errors_last_hour
                ),
            };
            for l in &c.recent_errors {
                text += &format!("  {l}\n");
            }
        }
        if let Some(t) = &self.rollback_target {
            text += &format!("rollback would restore: {} ({})\n", t.image, t.source);
        }
        text
    }
}
