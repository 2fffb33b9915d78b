//! `monitor`: the runbook's 7-day monitoring period. Each tick is stored before anything is
//! judged; on a trigger it prints the rule, the window and the evidence, records the event,
//! and exits 4 (or rolls back first with --auto-rollback; 5 if that fails).

use anyhow::Result;
use serde_json::json;

use super::Ctx;
use crate::cli::MonitorArgs;
use crate::engine::Engine;
use crate::exit::{failure, Code};
use crate::monitor::period::Role;
use crate::monitor::rules::{RuleResult, Verdict};
use crate::monitor::sample::Sampler;
use crate::monitor::{self, Cadence, Plan, Tick};
use crate::output::{Format, Outcome};

pub async fn run(ctx: Ctx, a: MonitorArgs) -> Result<Outcome> {
    let explicit_url = a.target.base_url.is_some();
    let explicit_name = a.target.name.is_some();
    let ctx = ctx.with_target(&a.target)?;
    let cfg = ctx.config.clone();
    let mut store = ctx.store()?;
    let active = store.active_deployment(&cfg.container.name)?;
    // A service this tool did not deploy: --base-url alone means no container to read.
    let container = if explicit_name || !explicit_url {
        Some(cfg.container.name.clone())
    } else {
        None
    };
    // An engine that does not answer is a reading the monitor lacks, not a reason to stop
    // watching: health and metrics are still sampled, and the gap is reported (blindness).
    let (engine, engine_unavailable) = match &container {
        Some(_) => match Engine::connect().await {
            Ok(e) => (Some(e), None),
            Err(e) => {
                tracing::warn!("{e:#}");
                (None, Some(format!("{e:#}")))
            }
        },
        None => (None, None),
    };
    if let (Some(engine), Some(name)) = (&engine, &container) {
        if engine.find_container(name).await.ok().flatten().is_none() {
            tracing::warn!(container = %name, "no such container: container metrics will be missing");
        }
    }
    let follow = !explicit_url || explicit_name;
    let identity =
        crate::monitor::period::identify(&store, &cfg, follow, a.day, chrono::Utc::now())?;
    let (period, role, day) = (identity.period.clone(), identity.role, identity.day);
    let deployed_at = active.as_ref().map(|d| d.started_at);
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
        if i.is_zero() || i > std::time::Duration::from_secs(86_400) {
            return Err(failure(
                Code::Usage,
                "--interval must be greater than 0 and at most 1 day",
            ));
        }
    }
    let plan = Plan {
        cadence,
        once: a.once,
        duration: a.duration,
        blind_margin: cfg.monitoring.blind_margin,
        rollout_grace: cfg.verify.startup_wait + std::time::Duration::from_secs(60),
    };
    let rollback_target = crate::rollout::rollback_target(&store, &cfg)?;
    let mut sampler = Sampler {
        engine: engine.as_ref(),
        engine_unavailable,
        client: crate::probe::health::client(cfg.verify.probe_timeout),
        health_url: cfg.health_url(),
        metrics_url: cfg.metrics_url(),
        target: cfg.verify.base_url.clone(),
        container: container.clone(),
        day,
        deployment_id: identity.deployment_id,
        role: Some(role.as_str().to_string()),
        image_ref: identity.image_ref.clone(),
        image_id: identity.image_id.clone(),
    };
    let resolve_cfg = cfg.clone();
    let resolve = move |store: &crate::store::Store| {
        crate::monitor::period::identify(store, &resolve_cfg, follow, a.day, chrono::Utc::now())
    };

    // The same SIGINT/SIGTERM handling as deploy and rollback: the tick in progress finishes.
    let interrupt = crate::rollout::Interrupt::install();
    let live = !ctx.quiet && ctx.format == Format::Text;
    // The week page, when configured: every few minutes in a long loop, and once at the end.
    let page_every = std::time::Duration::from_secs(300);
    let page_written = std::cell::Cell::new(std::time::Instant::now());
    let state_dir = ctx.state_dir.clone();
    let write_page = || {
        if !cfg.report.week_page_from_monitor {
            return;
        }
        page_written.set(std::time::Instant::now());
        let attestations = crate::report::gate::read_attestations(None).unwrap_or_default();
        let written = crate::store::Store::open(&state_dir).and_then(|s| {
            crate::report::week::write_page(&s, &cfg, &cfg.report.dir, &attestations)
        });
        if let Err(e) = written {
            tracing::warn!("the week page was not written: {e:#}");
        }
    };
    let summary = monitor::run(
        &mut store,
        &mut sampler,
        &cfg.monitoring,
        &plan,
        interrupt.token(),
        &resolve,
        |t| {
            if live {
                eprintln!("{}", tick_line(t));
            }
            if page_written.get().elapsed() >= page_every {
                write_page();
            }
        },
    )
    .await;
    drop(interrupt);
    let summary = summary?;

    let mut text = format!(
        "monitor {} ({}) {}: {} sample(s){}\n",
        cfg.verify.base_url,
        container.as_deref().unwrap_or("no container"),
        match (role, day) {
            (Role::Baseline, _) =>
                "baseline serving (samples are the baseline's, not counted in any day)".to_string(),
            (_, Some(d)) => format!("day {d}/{}", cfg.monitoring.period_days),
            (_, None) => "day -".to_string(),
        },
        summary.ticks,
        if summary.interrupted {
            ", stopped by signal"
        } else {
            ""
        }
    );
    if period.interrupted_ms() > 0 {
        text += &format!(
            "validation period of {} interrupted: the baseline served for {}\n",
            period.image.as_deref().unwrap_or("?"),
            humantime::format_duration(std::time::Duration::from_secs(
                (period.interrupted_ms() / 1000) as u64
            ))
        );
    }
    text += &format!(
        "rollback would restore: {} ({})\n",
        rollback_target.image, rollback_target.source
    );
    let warnings = cfg.warnings();
    for w in &warnings {
        text += &format!("config warning: {w}\n");
    }
    // The last 24 hours read in one pass: a day of 1 s samples is never held in memory.
    let mut today = monitor::digest::DayDigest::default();
    store.scan_since(
        &cfg.verify.base_url,
        chrono::Utc::now().timestamp_millis() - 86_400_000,
        sampler.deployment_id,
        |_, s| today.push(s),
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
    let blind_now = !summary.blind.is_empty();
    let mut json = json!({
        "ok": summary.fired.is_empty() && !blind_now, "target": cfg.verify.base_url, "container": container, "day": day,
        "role": role, "period": period, "rollback_target": rollback_target, "config_warnings": warnings,
        "blind": summary.blind,
        "samples": summary.ticks, "interrupted": summary.interrupted, "targets": targets,
        "rules": summary.last.as_ref().map(|t| t.results.clone()), "fired": summary.fired,
        "last_sample": summary.last.as_ref().map(|t| t.sample.clone()),
        "latest_load_run": latest_load.as_ref().map(|(kind, passed, detail, at)| json!({"kind": kind, "passed": passed, "at": at, "latency_ms": detail["latency_ms"]})),
    });
    if !summary.newly_blind.is_empty() {
        let names: Vec<String> = summary
            .newly_blind
            .iter()
            .map(|b| format!("{} ({})", b.name, b.reason))
            .collect();
        let note = format!(
            "dhi-stage: monitor of {} is BLIND: {}",
            cfg.container.name,
            names.join("; ")
        );
        store.event(
            "blind",
            sampler.deployment_id,
            &json!({"rules": summary.newly_blind, "day": day}),
        )?;
        text += &notify_webhook(
            &cfg.notify,
            "blind",
            &note,
            &json!({"blind": summary.newly_blind, "day": day}),
        )
        .await;
    }
    if blind_now {
        text += "\nBLIND: these rules could not be judged for longer than their window plus the margin:\n";
        for b in &summary.blind {
            text += &format!(
                "  {} ({}): no verdict for {:.0}s: {}\n",
                b.name, b.condition, b.for_s, b.reason
            );
        }
    }
    if summary.fired.is_empty() {
        let code = if blind_now { Code::Blind } else { Code::Ok };
        write_page();
        return Ok(Outcome::new(code, json, text));
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
    text += &notify_webhook(
        &cfg.notify,
        "trigger",
        &note,
        &json!({"fired": summary.fired, "day": day}),
    )
    .await;
    if !a.auto_rollback {
        text += "\nrollback: dhi-stage rollback --reason \"monitor trigger\"";
        write_page();
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
    // The same procedure and rules as an operator's rollback, approved by the standing
    // approval of whoever started the monitor with --auto-rollback.
    let request = crate::rollout::rollback::Request {
        to: None,
        reason: Some(reason),
        approval: crate::rollout::rollback::Approval::Automatic("monitor --auto-rollback"),
        drill: false,
        wait: None,
    };
    let context = crate::rollout::rollback::Context {
        config: &ctx.config,
        state_dir: &ctx.state_dir,
        lock_wait: ctx.lock_wait,
    };
    let rb = crate::rollout::rollback::rollback(&context, &request).await;
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
    write_page();
    Ok(Outcome::new(code, json, text))
}

/// Sends one webhook notification, if one is configured; the line saying how it went.
async fn notify_webhook(
    cfg: &crate::config::NotifyConfig,
    event: &str,
    note: &str,
    detail: &serde_json::Value,
) -> String {
    match crate::notify::webhook(cfg, event, note, detail).await {
        None => String::new(),
        Some(sent) if sent.ok => format!("notify webhook: {}\n", sent.detail),
        Some(sent) => format!("notify webhook: FAILED ({})\n", sent.detail),
    }
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
        fmt(s.memory_mib(), "MiB"),
        fmt(s.cpu_pct, "%"),
        s.restart_count.map(|r| r.to_string()).unwrap_or("-".into()),
        s.log_errors.map(|r| r.to_string()).unwrap_or("-".into()),
    );
    if t.scrape_failures_in_a_row > 0 {
        line += &format!(
            " | METRICS FAILED x{} ({})",
            t.scrape_failures_in_a_row,
            s.scrape_error.as_deref().unwrap_or("counters not numeric")
        );
    }
    if s.parse_errors > 0 {
        line += &format!(" | {} unreadable /metrics line(s)", s.parse_errors);
    }
    if let Some(e) = &s.engine_error {
        line += &format!(" | ENGINE: {e}");
    }
    if let Some(step) = t.clock_stepped_back_ms {
        line += &format!(
            " | CLOCK STEPPED BACK {:.1}s (later-stamped samples not judged)",
            step as f64 / 1000.0
        );
    }
    for b in &t.blind {
        line += &format!("\n  BLIND {}: {}", b.name, b.reason);
    }
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
