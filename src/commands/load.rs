//! `load`: the runbook's K6 smoke and load runs, built in; or a k6 summary imported. Each run
//! is stored so `report` and `gate` can use it; thresholds breached exit 3.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;

use super::Ctx;
use crate::cli::LoadArgs;
use crate::exit::{failure, Code};
use crate::load::{self, Plan, Report};
use crate::output::{Format, Outcome};

pub async fn run(ctx: Ctx, a: LoadArgs) -> Result<Outcome> {
    let ctx = ctx.with_target(&a.target)?;
    let cfg = &ctx.config;
    let store = ctx.store()?;
    let day = store
        .active_deployment(&cfg.container.name)?
        .map(|d| ((chrono::Utc::now() - d.started_at).num_days().max(0) + 1) as u32);
    let report = match &a.import {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read k6 summary {}", path.display()))?;
            load::import_k6(&text, &a.profile, &cfg.load.thresholds)
                .map_err(|e| failure(Code::Usage, format!("{}: {e:#}", path.display())))?
        }
        None => run_plan(&ctx, &a).await?,
    };
    store.record_test_result(
        day,
        &format!("load:{}", a.profile),
        report.passed,
        &serde_json::to_value(&report)?,
    )?;
    if let Some(path) = &a.summary_export {
        super::write_atomic(
            path,
            &serde_json::to_string_pretty(&load::to_k6_summary(&report))?,
        )?;
    }
    let text = render(&report);
    let code = if report.passed {
        Code::Ok
    } else {
        Code::CheckFailed
    };
    Ok(Outcome::new(code, json!(report), text))
}

async fn run_plan(ctx: &Ctx, a: &LoadArgs) -> Result<Report> {
    let cfg = &ctx.config;
    let (profile, vus_var, dur_var) = match a.profile.as_str() {
        "load" => (
            &cfg.load.load,
            "K6_LOAD_TARGET_VUS",
            "K6_LOAD_STEADY_DURATION",
        ),
        _ => (&cfg.load.smoke, "K6_SMOKE_VUS", "K6_SMOKE_DURATION"),
    };
    // The runbook passes these to k6 as environment variables; honour them the same way.
    let env_vus = std::env::var(vus_var)
        .ok()
        .map(|v| {
            v.parse::<u32>()
                .map_err(|_| failure(Code::Usage, format!("{vus_var}={v:?} is not a number")))
        })
        .transpose()?;
    let env_dur = std::env::var(dur_var)
        .ok()
        .map(|v| {
            humantime::parse_duration(&v)
                .map_err(|_| failure(Code::Usage, format!("{dur_var}={v:?} is not a duration")))
        })
        .transpose()?;
    let vus = a.vus.or(env_vus).unwrap_or(profile.vus);
    if vus == 0 {
        return Err(failure(Code::Usage, "--vus must be at least 1"));
    }
    let routes = profile
        .routes
        .iter()
        .map(|r| load::parse_route(r))
        .collect::<Result<Vec<_>>>()
        .map_err(|e| failure(Code::Usage, format!("{e:#}")))?;
    // The open model's period is 1/rate: outside a request a day to a million a second it
    // cannot be scheduled (and NaN or infinity is no rate at all).
    if let Some(r) = a.rate {
        if !(r.is_finite() && (1.0 / 86_400.0..=1_000_000.0).contains(&r)) {
            return Err(failure(
                Code::Usage,
                format!("--rate {r:e} must be from 0.0000116 (one request a day) to 1000000 requests per second"),
            ));
        }
    }
    let plan = Plan {
        profile: a.profile.clone(),
        base_url: cfg.verify.base_url.clone(),
        routes,
        vus,
        ramp: a.ramp.unwrap_or(profile.ramp),
        duration: a.duration.or(env_dur).unwrap_or(profile.duration),
        rate: a.rate,
        timeout: Duration::from_secs(10),
    };
    let bar =
        (!ctx.quiet && ctx.format == Format::Text && std::io::stderr().is_terminal()).then(|| {
            let total = (plan.ramp + plan.duration).as_secs().max(1);
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len}s {msg}")
                    .expect("valid template"),
            );
            b
        });
    let report = load::run(&plan, &cfg.load.thresholds, |live| {
        if let Some(b) = &bar {
            b.set_position(live.elapsed.as_secs());
            b.set_message(format!(
                "{} requests  {:.0} req/s  p99 {:.1}ms  failures {}",
                live.requests, live.rps, live.p99_ms, live.failures
            ));
        }
    })
    .await?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(report)
}

fn render(r: &Report) -> String {
    let l = &r.latency_ms;
    let mut t = format!(
        "load profile {} ({}{}): {} requests in {:.1}s, {:.1} req/s, {} failed ({:.2}%){}\n",
        r.profile,
        r.source,
        r.vus
            .map(|v| format!(", {v} VUs"))
            .or(r.rate.map(|x| format!(", {x} req/s open model")))
            .unwrap_or_default(),
        r.requests,
        r.duration_s,
        r.rps,
        r.failures,
        r.failure_rate_pct,
        if r.dropped > 0 {
            format!(", {} dropped", r.dropped)
        } else {
            String::new()
        }
    );
    t +=
        &format!(
        "http_req_duration: min {:.2}ms p50 {:.2}ms p90 {:.2}ms p95 {:.2}ms p99 {} max {:.2}ms\n",
        l.min,
        l.p50,
        l.p90,
        l.p95,
        l.p99.map(|v| format!("{v:.2}ms")).unwrap_or("no data".into()),
        l.max
    );
    for th in &r.thresholds {
        let mark = match th.passed {
            Some(true) => "pass",
            Some(false) => "FAIL",
            None => "n/a ",
        };
        t += &format!("  {mark} {}\n", th.threshold);
    }
    t += if r.passed {
        "thresholds met"
    } else {
        "thresholds NOT met"
    };
    t
}
