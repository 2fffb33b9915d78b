//! `status`: the runbook's "Quick Health Check" appendix in one command: health, a metrics
//! summary, container resources as `docker stats` shows them, restarts, OOM, recent errors.

use anyhow::Result;
use serde_json::json;

use super::Ctx;
use crate::engine::{stats, Engine};
use crate::exit::Code;
use crate::output::Outcome;
use crate::probe::{health, metrics};

pub async fn run(ctx: Ctx) -> Result<Outcome> {
    let cfg = &ctx.config;
    let name = cfg.container.name.clone();
    let client = health::client(cfg.verify.probe_timeout);
    let (health_url, metrics_url) = (cfg.health_url(), cfg.metrics_url());
    let (h, m) = tokio::join!(
        health::probe(&client, &health_url),
        health::get_bounded(&client, &metrics_url, 4 << 20)
    );
    let snapshot = match &m {
        Ok((200, body)) => Some(metrics::snapshot(
            &metrics::parse(&String::from_utf8_lossy(body)).series,
        )),
        _ => None,
    };
    let engine = Engine::connect().await;
    let mut container = json!(null);
    let mut text = format!(
        "=== {name} ({}) at {} ===\n",
        cfg.verify.base_url,
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
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
    match &snapshot {
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
            text += &format!(
                "metrics: http_requests_total {} (5xx {}), http_request_duration mean {mean} p95 {} p99 {} (since start)\n",
                s.requests_total,
                s.requests_5xx,
                q(0.95),
                q(0.99)
            );
        }
        None => {
            text += &format!(
                "metrics: unavailable ({})\n",
                m.as_ref()
                    .map(|(c, _)| format!("HTTP {c}"))
                    .unwrap_or_else(|e| e.clone())
            )
        }
    }
    let mut code = if h.healthy {
        Code::Ok
    } else {
        Code::CheckFailed
    };
    match engine {
        Err(e) => {
            text += &format!("container: unavailable ({e:#})\n");
            code = Code::Operational;
        }
        Ok(engine) => match engine.find_container(&name).await? {
            None => {
                text += &format!("container: no container named {name}\n");
                code = Code::CheckFailed;
            }
            Some(c) => {
                let state = c.state.clone().unwrap_or_default();
                let restarts = c.restart_count.unwrap_or(0);
                let running = state.running.unwrap_or(false);
                // Two readings give CPU %: from the cgroup files when the engine is local,
                // else two one-shot engine readings 200 ms apart (a settled reading, what
                // `docker stats` waits for, takes the engine a second or two); the log is
                // read meanwhile.
                let reading = || async {
                    engine
                        .stats(&name)
                        .await
                        .ok()
                        .and_then(|s| stats::resources(&s))
                };
                let pid = state.pid.filter(|p| *p > 0);
                let resources = async {
                    if !running {
                        return None;
                    }
                    // A local engine: the cgroup files themselves, 100 ms apart for CPU %.
                    if let Some(first) = pid.and_then(stats::from_cgroup) {
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        if let Some(second) = pid.and_then(stats::from_cgroup) {
                            return Some(second.since(&first));
                        }
                    }
                    let first = reading().await;
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    let second = reading().await?;
                    Some(match &first {
                        Some(f) => second.since(f),
                        None => second,
                    })
                };
                let since = chrono::Utc::now().timestamp() - 3600;
                let (res, logs) = tokio::join!(resources, engine.logs_since(&name, since, 10_000));
                let errors: Vec<String> = logs
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|l| l.to_ascii_lowercase().contains("error"))
                    .collect();
                let last10: Vec<String> = errors.iter().rev().take(10).rev().cloned().collect();
                text += &format!(
                    "container: {} image {} state {} restarts {restarts} oom_killed {}\n",
                    c.id.clone()
                        .unwrap_or_default()
                        .chars()
                        .take(12)
                        .collect::<String>(),
                    c.config
                        .as_ref()
                        .and_then(|c| c.image.clone())
                        .unwrap_or_default(),
                    state.status.map(|s| s.to_string()).unwrap_or_default(),
                    state.oom_killed.unwrap_or(false)
                );
                match &res {
                    Some(r) => {
                        text += &format!(
                            "resources: memory {:.1} MiB / {:.0} MiB, cpu {}\n",
                            r.memory_bytes as f64 / 1048576.0,
                            r.memory_limit_bytes as f64 / 1048576.0,
                            r.cpu_pct.map(|c| format!("{c:.2}%")).unwrap_or("-".into())
                        )
                    }
                    None => text += "resources: unavailable (container not running)\n",
                }
                text += &format!(
                    "recent errors (last hour, {} in all, last 10):\n",
                    errors.len()
                );
                for l in &last10 {
                    text += &format!("  {l}\n");
                }
                if !running {
                    code = Code::CheckFailed;
                }
                container = json!({
                    "id": c.id, "image": c.config.as_ref().and_then(|c| c.image.clone()), "running": running,
                    "status": state.status.map(|s| s.to_string()), "restart_count": restarts, "oom_killed": state.oom_killed.unwrap_or(false),
                    "memory_bytes": res.map(|r| r.memory_bytes), "memory_limit_bytes": res.map(|r| r.memory_limit_bytes), "cpu_pct": res.and_then(|r| r.cpu_pct),
                    "errors_last_hour": errors.len(), "recent_errors": last10,
                });
            }
        },
    }
    let target = ctx
        .store()
        .and_then(|store| crate::rollout::rollback_target(&store, cfg))
        .ok();
    if let Some(t) = &target {
        text += &format!("rollback would restore: {} ({})\n", t.image, t.source);
    }
    let json = json!({
        "ok": code == Code::Ok, "name": name, "base_url": cfg.verify.base_url, "health": h,
        "metrics": snapshot, "container": container, "rollback_target": target,
    });
    Ok(Outcome::new(code, json, text))
}
