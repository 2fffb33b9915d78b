//! `monitor`: the runbook's 7-day monitoring period. Each tick is stored before anything is
//! judged; on a trigger it prints the rule, the window and the evidence, records the event,
//! and exits 4 (or rolls back first with --auto-rollback; 5 if that fails).

use anyhow::Result;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::cli::{MonitorArgs, RollbackArgs};
use crate::engine::Engine;
use crate::exit::{failure, Code};
use crate::monitor::rules::{RuleResult, Verdict};
use crate::monitor::sample::Sampler;
use crate::monitor::{self, Cadence, Plan, Tick};
use crate::output::{Format, Outcome};

pub async fn run(ctx: Ctx, a: MonitorArgs) -> Result<Outcome> {
    let explicit_url = a.target.base_url.is_some();
    let explicit_name = a.target.name.is_some();
    let ctx = ctx.with_target(&a.target)?;
    let cfg = ctx.config.clone();
    let store = ctx.store()?;
    let active = store.active_deployment(&cfg.container.name)?;
    // A service this tool did not deploy: --base-url alone means no container to read.
    let container = if explicit_name || !explicit_url {
        Some(cfg.container.name.clone())
    } else {
        None
    };
    let engine = match &container {
        Some(_) => Some(Engine::connect().await?),
        None => None,
    };
    if let (Some(engine), Some(name)) = (&engine, &container) {
        if engine.find_container(name).await?.is_none() {
            tracing::warn!(container = %name, "no such container: container metrics will be missing");
        }
    }
    let deployed_at = active.as_ref().map(|d| d.started_at);
    let day = a
        .day
        .or_else(|| deployed_at.map(|t| ((chrono::Utc::now() - t).num_days().max(0) + 1) as u32));
    let production = matches!(a.profile.as_deref(), Some("production"));
    let cadence = match (a.interval, production) {
        (Some(i), _) => Cadence::Fixed(i),
        (None, true) => Cadence::Production {
            steps: cfg.monitoring.production_cadence.clone(),
            deployed_at_ms: deployed_at
                .map(|t| t.timestamp_millis())
                .unwrap_or_else(|| chrono::Utc::now().timestamp_millis()),
        },
        (None, false) => Cadence::Fixed(cfg.monitoring.interval),
    };
    if let Cadence::Fixed(i) = cadence {
        if i.is_zero() {
            return Err(failure(Code::Usage, "--interval must be greater than 0"));
        }
    }
    let plan = Plan {
        cadence,
        once: a.once,
        duration: a.duration,
    };
    let sampler = Sampler {
        engine: engine.as_ref(),
        client: crate::probe::health::client(cfg.verify.probe_timeout),
        health_url: cfg.health_url(),
        metrics_url: cfg.metrics_url(),
        target: cfg.verify.base_url.clone(),
        container: container.clone(),
        day,
        deployment_id: if explicit_url && !explicit_name {
            None
        } else {
            active.as_ref().map(|d| d.id)
        },
        image_ref: active.as_ref().map(|d| d.image_ref.clone()),
    };

    let cancel = CancellationToken::new();
    let watcher = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
            }
            cancel.cancel();
        })
    };
    let live = !ctx.quiet && ctx.format == Format::Text;
    let summary = monitor::run(&store, &sampler, &cfg.monitoring, &plan, &cancel, |t| {
        if live {
            eprintln!("{}", tick_line(t));
        }
    })
    .await;
    watcher.abort();
    let summary = summary?;

    let mut text = format!(
        "monitor {} ({}) day {}: {} sample(s){}\n",
        cfg.verify.base_url,
        container.as_deref().unwrap_or("no container"),
        day.map(|d| format!("{d}/{}", cfg.monitoring.period_days))
            .unwrap_or("-".into()),
        summary.ticks,
        if summary.interrupted {
            ", stopped by signal"
        } else {
            ""
        }
    );
    let today = store.samples(
        &cfg.verify.base_url,
        chrono::Utc::now().timestamp_millis() - 86_400_000,
        sampler.deployment_id,
    )?;
    let targets = monitor::rules::targets(&cfg.monitoring.targets, &today);
    text += "targets (last 24 h of this deployment):\n";
    for t in &targets {
        let mark = match t.met {
            Some(true) => "met    ",
            Some(false) => "NOT met",
            None => "no data",
        };
        text += &format!("  {mark} {:<34} {}\n", t.target, t.detail);
    }
    // The runbook measures P95/P99 with k6 runs: show the latest `load` run of the day beside the histogram.
    let latest_load = match day {
        Some(d) => store
            .test_results(d)?
            .into_iter()
            .rev()
            .find(|(k, ..)| k.starts_with("load:")),
        None => None,
    };
    if let Some((kind, passed, detail, at)) = &latest_load {
        let q = |k: &str| {
            detail
                .pointer(&format!("/latency_ms/{k}"))
                .and_then(serde_json::Value::as_f64)
                .map(|v| format!("{v:.1}ms"))
                .unwrap_or("no data".into())
        };
        text += &format!(
            "latest {kind} run ({at}): P95 {} P99 {} ({})\n",
            q("p95"),
            q("p99"),
            if *passed {
                "thresholds met"
            } else {
                "thresholds NOT met"
            }
        );
    }
    if let Some(last) = &summary.last {
        text += "rollback triggers:\n";
        for r in &last.results {
            text += &format!("  {}\n", rule_line(r));
        }
    }
    let mut json = json!({
        "ok": summary.fired.is_empty(), "target": cfg.verify.base_url, "container": container, "day": day,
        "samples": summary.ticks, "interrupted": summary.interrupted, "targets": targets,
        "rules": summary.last.as_ref().map(|t| t.results.clone()), "fired": summary.fired,
        "last_sample": summary.last.as_ref().map(|t| t.sample.clone()),
        "latest_load_run": latest_load.as_ref().map(|(kind, passed, detail, at)| json!({"kind": kind, "passed": passed, "at": at, "latency_ms": detail["latency_ms"]})),
    });
    if summary.fired.is_empty() {
        return Ok(Outcome::new(Code::Ok, json, text));
    }

    for f in &summary.fired {
        store.event(
            "trigger",
            sampler.deployment_id,
            &json!({"rule": f.name, "severity": f.severity, "condition": f.condition, "value": f.value, "evidence": f.evidence, "day": day}),
        )?;
        text += &format!(
            "\nTRIGGER FIRED: {} ({:?}): {}\n  evidence:\n",
            f.name, f.severity, f.condition
        );
        for (ts, v) in &f.evidence {
            let at = chrono::DateTime::from_timestamp_millis(*ts)
                .map(|t| t.format("%H:%M:%S%.3f").to_string())
                .unwrap_or_default();
            text += &format!(
                "    {at}  {}\n",
                v.map(|v| format!("{v:.2}")).unwrap_or("-".into())
            );
        }
    }
    let names: Vec<&str> = summary.fired.iter().map(|f| f.name.as_str()).collect();
    let note = format!(
        "dhi-stage: rollback trigger fired on {}: {}",
        cfg.container.name,
        names.join(", ")
    );
    if let Some(sent) = crate::notify::webhook(
        &cfg.notify,
        "trigger",
        &note,
        &json!({"fired": summary.fired, "day": day}),
    )
    .await
    {
        text += &format!(
            "notify webhook: {}\n",
            if sent.ok {
                sent.detail
            } else {
                format!("FAILED ({})", sent.detail)
            }
        );
    }
    if !a.auto_rollback {
        text += "\nrollback: dhi-stage rollback --reason \"monitor trigger\"";
        return Ok(Outcome::new(Code::TriggerFired, json, text));
    }
    let reason = format!(
        "monitor: {}",
        summary
            .fired
            .iter()
            .map(|f| format!("{} ({})", f.name, f.condition))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let rb_args = RollbackArgs {
        to: None,
        reason: Some(reason),
        approved_by: Some("monitor --auto-rollback".into()),
        drill: false,
        target: a.target.clone(),
        wait: None,
    };
    let rb = super::rollback::run(ctx, rb_args).await;
    let (code, rb_json, rb_text) = match rb {
        Ok(o) if o.code == Code::Ok => (Code::TriggerFired, o.json, o.text),
        Ok(o) => (Code::RollbackFailed, o.json, o.text),
        Err(e) => (
            Code::RollbackFailed,
            json!({"ok": false, "error": format!("{e:#}")}),
            format!("rollback FAILED: {e:#}"),
        ),
    };
    json["rollback"] = rb_json;
    text += &format!("\nauto-rollback:\n{rb_text}");
    Ok(Outcome::new(code, json, text))
}

fn tick_line(t: &Tick) -> String {
    let s = &t.sample;
    let at = chrono::DateTime::from_timestamp_millis(s.ts_ms)
        .map(|t| t.format("%H:%M:%S").to_string())
        .unwrap_or_default();
    let health = if s.health_ok {
        format!("healthy {:.0}ms", s.health_latency_ms.unwrap_or(0.0))
    } else {
        format!(
            "UNHEALTHY ({})",
            s.health_detail["error"].as_str().unwrap_or("?")
        )
    };
    let degraded: Vec<String> = s.health_detail["dependencies"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, v)| v.as_str() != Some("healthy"))
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("?")))
                .collect()
        })
        .unwrap_or_default();
    let fmt = |v: Option<f64>, unit: &str| v.map(|v| format!("{v:.1}{unit}")).unwrap_or("-".into());
    let mut line = format!(
        "[{at}] #{} {health}{} | err {} | p95 {} p99 {} | mem {} cpu {} | restarts {} | log errors {}",
        t.n,
        if degraded.is_empty() { String::new() } else { format!(" DEGRADED {}", degraded.join(",")) },
        fmt(t.error_rate_pct, "%"),
        fmt(t.p95_ms, "ms"),
        fmt(t.p99_ms, "ms"),
        fmt(s.memory_mb(), "MB"),
        fmt(s.cpu_pct, "%"),
        s.restart_count.map(|r| r.to_string()).unwrap_or("-".into()),
        s.log_errors.map(|r| r.to_string()).unwrap_or("-".into()),
    );
    for f in t.fired() {
        line += &format!("\n  FIRED {}: {}", f.name, f.condition);
    }
    line
}

fn rule_line(r: &RuleResult) -> String {
    let (mark, why) = match &r.verdict {
        Verdict::Fired => ("FIRED       ", String::new()),
        Verdict::Clear => ("clear       ", String::new()),
        Verdict::Inconclusive { reason } => ("inconclusive", format!(" ({reason})")),
    };
    let sev = match r.severity {
        crate::monitor::rules::Severity::Immediate => "immediate",
        crate::monitor::rules::Severity::Rollback => "rollback ",
    };
    format!(
        "{mark} {sev} {:<28} {}{} now {}",
        r.name,
        r.condition,
        why,
        r.value.map(|v| format!("{v:.2}")).unwrap_or("-".into())
    )
}
