//! The runbook's k6 runs as a test of the day: the smoke or load profile from config (with
//! k6's own environment variables honoured), or an imported k6 summary; the result is
//! recorded against the day and judged against the runbook's thresholds.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use super::{Live, Plan, Report};
use crate::config::Config;
use crate::exit::{failure, Code};
use crate::output::Render;
use crate::store::Store;

pub struct Request {
    /// smoke or load.
    pub profile: String,
    pub vus: Option<u32>,
    pub duration: Option<Duration>,
    pub ramp: Option<Duration>,
    /// Requests a second (the open model) instead of VUs.
    pub rate: Option<f64>,
    pub summary_export: Option<PathBuf>,
    /// A k6 `--summary-export` file to record instead of running.
    pub import: Option<PathBuf>,
}

/// Runs (or imports) the profile, records it against the active deployment's day, and
/// writes the k6-shaped summary when asked.
pub async fn test(
    cfg: &Config,
    store: &Store,
    r: &Request,
    on_live: impl Fn(Live),
) -> Result<Report> {
    let day = store
        .active_deployment(&cfg.container.name)?
        .map(|d| ((chrono::Utc::now() - d.started_at).num_days().max(0) + 1) as u32);
    let report = match &r.import {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read k6 summary {}", path.display()))?;
            super::import_k6(&text, &r.profile, &cfg.load.thresholds)
                .map_err(|e| failure(Code::Usage, format!("{}: {e:#}", path.display())))?
        }
        None => super::run(&plan(cfg, r)?, &cfg.load.thresholds, on_live).await?,
    };
    store.record_test_result(
        day,
        &format!("load:{}", r.profile),
        report.passed,
        &serde_json::to_value(&report)?,
    )?;
    if let Some(path) = &r.summary_export {
        crate::files::write_atomic(
            path,
            &serde_json::to_string_pretty(&super::to_k6_summary(&report))?,
        )?;
    }
    Ok(report)
}

/// The plan for a run: arguments, else k6's environment variables, else the profile in config.
pub fn plan(cfg: &Config, r: &Request) -> Result<Plan> {
    let (profile, vus_var, dur_var) = match r.profile.as_str() {
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
    let vus = r.vus.or(env_vus).unwrap_or(profile.vus);
    if vus == 0 {
        return Err(failure(Code::Usage, "--vus must be at least 1"));
    }
    let routes = profile
        .routes
        .iter()
        .map(|r| super::parse_route(r))
        .collect::<Result<Vec<_>>>()
        .map_err(|e| failure(Code::Usage, format!("{e:#}")))?;
    // The open model's period is 1/rate: outside a request a day to a million a second it
    // cannot be scheduled (and NaN or infinity is no rate at all).
    if let Some(r) = r.rate {
        if !(r.is_finite() && (1.0 / 86_400.0..=1_000_000.0).contains(&r)) {
            return Err(failure(
                Code::Usage,
                format!("--rate {r:e} must be from 0.0000116 (one request a day) to 1000000 requests per second"),
            ));
        }
    }
    Ok(Plan {
        profile: r.profile.clone(),
        base_url: cfg.verify.base_url.clone(),
        routes,
        vus,
        ramp: r.ramp.unwrap_or(profile.ramp),
        duration: r.duration.or(env_dur).unwrap_or(profile.duration),
        rate: r.rate,
        timeout: Duration::from_secs(10),
    })
}

impl Render for Report {
    fn code(&self) -> Code {
        Code::of_check(self.passed)
    }

    fn text(&self) -> String {
        let r = self;
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
}
