//! The daily validation report and the promotion gate. `gather` reads one day from the
//! store; everything after it (metrics, the recommendation, the markdown, the charts, the
//! verdict) is a pure function of that data, so it is snapshot-tested on synthetic days.

pub mod charts;
pub mod daily;
pub use crate::monitor::digest;
pub mod gate;
pub mod html;
pub mod incident;
pub mod junit;
pub mod week;

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::config::Config;
use crate::monitor::rules;
#[cfg(test)]
use crate::monitor::sample::Sample;
use crate::store::{Event, EventKind, Store};

#[derive(Debug, Clone, Serialize)]
pub struct LoadRun {
    pub profile: String,
    pub passed: bool,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub failure_rate_pct: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DayData {
    pub day: u32,
    pub period_days: u32,
    pub date: Option<chrono::NaiveDate>,
    pub environment: String,
    pub image: Option<String>,
    /// The day's samples, read in one pass (`digest.rs`).
    #[serde(skip)]
    pub digest: digest::DayDigest,
    /// Tests build a day from samples; `refresh` digests them.
    #[cfg(test)]
    #[serde(skip)]
    pub samples: Vec<Sample>,
    pub load_runs: Vec<LoadRun>,
    /// (passed, total) from the day's JUnit results.
    pub e2e: Option<(u32, u32)>,
    pub e2e_expected: u32,
    /// (score, of) from the latest validate.
    pub score: Option<(u32, u32)>,
    /// The latest CVE scan's detail (before, after_vex, suppressed).
    pub cve: Option<Value>,
    pub triggers: Vec<Event>,
    pub rollbacks: Vec<Event>,
    /// The monitor's `blind` events of the day (rules it could not judge for too long).
    pub blind: Vec<Event>,
    /// The day's incident reports: (name, link relative to the report directory).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub incidents: Vec<(String, String)>,
    /// Milliseconds of this day during which the baseline served instead of the image under
    /// test (its samples are the baseline's and are not in this day's numbers).
    pub baseline_ms: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DayMetrics {
    pub samples: usize,
    pub health_success_rate_pct: Option<f64>,
    pub error_rate_pct: Option<f64>,
    /// The runbook's log-based variant: error lines in the container log / requests.
    pub log_error_rate_pct: Option<f64>,
    pub p95_ms_metrics: Option<f64>,
    pub p99_ms_metrics: Option<f64>,
    pub p95_ms_load: Option<f64>,
    pub p99_ms_load: Option<f64>,
    pub memory_min_mib: Option<f64>,
    pub memory_max_mib: Option<f64>,
    pub memory_slope_mb_per_min: Option<f64>,
    pub memory_trend: Option<String>,
    pub restarts: Option<i64>,
    /// "prometheus" when error rate and latency came from PromQL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_source: Option<String>,
    /// Why error rate or latency is missing (a Prometheus query refused, stale, impossible).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_error: Option<String>,
    /// The metric convention the day's scrapes were read with (its latest sample's), and
    /// whether the monitor's own requests are in the figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_convention: Option<crate::probe::reading::About>,
}

/// The convention the day's latest scrape was read with (`probe::reading::About`).
pub fn day_convention(store: &Store, day: u32) -> Option<crate::probe::reading::About> {
    let target = store.day_target(day).ok()??;
    let last = store.last_sample(&target, None).ok()??;
    serde_json::from_value(last.health_detail.get("metrics")?.clone()).ok()
}

/// Per day, the error rate and latency Prometheus gives (`metrics_source = "prometheus"`);
/// empty with the direct scrape.
pub type PromDays = std::collections::BTreeMap<u32, crate::monitor::promql::SpanValues>;

/// The days' PromQL figures when the config reads metrics from Prometheus: each day over the
/// span of its samples. Async, so the report and the gate ask before their pure work.
pub async fn prometheus_days(
    store: &Store,
    cfg: &Config,
    days: std::ops::RangeInclusive<u32>,
) -> Result<PromDays> {
    let mut out = PromDays::new();
    if cfg.monitoring.metrics_source != crate::config::MetricsSource::Prometheus {
        return Ok(out);
    }
    let usage = |e: String| crate::exit::failure(crate::exit::Code::Usage, e);
    let reader = crate::probe::reading::Reader::from_config(cfg).map_err(usage)?;
    let source = crate::monitor::promql::Source::new(&cfg.monitoring.prometheus, None)
        .map_err(|e| usage(format!("{e:#}")))?
        .reading_with(&reader);
    for day in days {
        let d = digest::of_day(store, day)?;
        if let (Some(from), Some(to)) = (d.first_ms, d.last_ms) {
            out.insert(day, source.span(from, to).await);
        }
    }
    Ok(out)
}

/// The day's error rate and P95/P99 from Prometheus instead of the stored scrapes; a value
/// Prometheus does not have stays unknown (no data), never the scrape's.
pub fn apply_prometheus(m: &mut DayMetrics, v: &crate::monitor::promql::SpanValues) {
    m.error_rate_pct = v.error_rate_pct;
    m.p95_ms_metrics = v.p95_ms;
    m.p99_ms_metrics = v.p99_ms;
    m.metrics_source = Some("prometheus".into());
    m.metrics_error = v.error.clone();
}

/// A security score as (score, of) and the CVE scan's detail.
type SecurityEvidence = (Option<(u32, u32)>, Option<Value>);

/// Text made safe for HTML and SVG, in element content and in quoted attributes alike:
/// everything from the service, the engine or a log passes through here.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// The latest security score and CVE scan recorded for this image, and only it.
pub fn security_evidence(
    store: &Store,
    image_ref: &str,
    image_id: Option<&str>,
) -> Result<SecurityEvidence> {
    let score = store
        .latest_validation_of("score", image_id, image_ref)?
        .and_then(|(_, _, d)| Some((d["score"].as_u64()? as u32, d["of"].as_u64()? as u32)));
    let cve = store
        .latest_validation_of("cve", image_id, image_ref)?
        .map(|(_, _, d)| d);
    Ok((score, cve))
}

/// The configured container's deployments and the validation period they make at `now`.
pub fn period(
    store: &Store,
    cfg: &Config,
    now: DateTime<Utc>,
) -> Result<(
    Vec<crate::store::Deployment>,
    crate::monitor::period::Period,
)> {
    let deployments: Vec<_> = store
        .deployments()?
        .into_iter()
        .filter(|d| d.container_name == cfg.container.name)
        .collect();
    let period = crate::monitor::period::current(
        &deployments,
        |r| crate::monitor::period::is_baseline(r, &cfg.baseline_ref(), &cfg.image.baseline_tag),
        now,
    );
    Ok((deployments, period))
}

/// The image whose validation period this is: (reference, image id) of the candidate that
/// is active, or that the baseline replaced.
pub fn image_under_test(store: &Store, cfg: &Config) -> Result<Option<(String, Option<String>)>> {
    let (deployments, period) = period(store, cfg, Utc::now())?;
    Ok(period.image.map(|image| {
        let id = deployments
            .iter()
            .rev()
            .find(|d| d.image_ref == image)
            .and_then(|d| d.image_id.clone());
        (image, id)
    }))
}

/// Reads day `day` from the store: samples labelled with it, its test results, the latest
/// validations, and the events between its first sample and the next day's first sample.
pub fn gather(store: &Store, cfg: &Config, day: u32) -> Result<DayData> {
    let digest = digest::of_day(store, day)?;
    let last_deployment = store.last_deployment_of_day(day)?;
    let from: Option<DateTime<Utc>> = digest.first_ms.and_then(DateTime::from_timestamp_millis);
    let to: Option<DateTime<Utc>> = store
        .first_sample_ms(day + 1)?
        .and_then(DateTime::from_timestamp_millis);
    let in_day = |e: &Event| from.is_some_and(|f| e.at >= f) && to.is_none_or(|t| e.at < t);
    let mut load_runs = Vec::new();
    let mut e2e = None;
    for (kind, passed, detail, _) in store.test_results(day)? {
        if let Some(profile) = kind.strip_prefix("load:") {
            load_runs.push(LoadRun {
                profile: profile.to_string(),
                passed,
                p95_ms: detail.pointer("/latency_ms/p95").and_then(Value::as_f64),
                p99_ms: detail.pointer("/latency_ms/p99").and_then(Value::as_f64),
                failure_rate_pct: detail["failure_rate_pct"].as_f64(),
            });
        } else if kind == "e2e" {
            e2e = Some((
                detail["passed"].as_u64().unwrap_or(0) as u32,
                detail["total"].as_u64().unwrap_or(0) as u32,
            ));
        }
    }
    let image = last_deployment
        .and_then(|id| store.deployment(id).ok().flatten())
        .map(|d| d.image_ref)
        .or_else(|| {
            store
                .active_deployment(&cfg.container.name)
                .ok()
                .flatten()
                .map(|d| d.image_ref)
        });
    // Stretches of the validation period in which the baseline served, clipped to the day.
    let baseline_ms = match from {
        None => 0,
        Some(f) => {
            let until = to.unwrap_or(f + chrono::Duration::days(1)).min(Utc::now());
            period(store, cfg, Utc::now())?
                .1
                .interruptions
                .iter()
                .map(|(a, b)| ((*b).min(until) - (*a).max(f)).num_milliseconds().max(0))
                .sum()
        }
    };
    // The day's evidence is about the image the day's samples watched, never another's.
    let image_id = last_deployment
        .and_then(|id| store.deployment(id).ok().flatten())
        .and_then(|d| d.image_id);
    let (score, cve) = match &image {
        None => (None, None),
        Some(r) => security_evidence(store, r, image_id.as_deref())?,
    };
    Ok(DayData {
        day,
        period_days: cfg.monitoring.period_days,
        date: from.map(|f| f.date_naive()),
        environment: match cfg.environment {
            crate::config::Environment::Staging => "Staging".into(),
            crate::config::Environment::Production => "Production".into(),
        },
        image,
        digest,
        #[cfg(test)]
        samples: Vec::new(),
        load_runs,
        e2e,
        e2e_expected: cfg.promotion.e2e_expected,
        score,
        cve,
        triggers: store
            .events(Some(EventKind::Trigger))?
            .into_iter()
            .filter(in_day)
            .collect(),
        rollbacks: store
            .events(Some(EventKind::Rollback))?
            .into_iter()
            .filter(in_day)
            .filter(|e| e.rollback().kind.as_deref() != Some("drill"))
            .collect(),
        blind: store
            .events(Some(EventKind::Blind))?
            .into_iter()
            .filter(in_day)
            .collect(),
        incidents: incident::records(store)?
            .into_iter()
            .filter(|r| {
                let at = crate::store::events::at_ms(r.decided_at_ms);
                from.is_some_and(|f| at >= f) && to.is_none_or(|t| at < t)
            })
            .map(|r| {
                let href = incident::link(&cfg.report.dir, &r)
                    .unwrap_or_else(|| format!("incidents/{}.md", r.name));
                (r.name, href)
            })
            .collect(),
        baseline_ms,
    })
}

pub fn metrics(d: &DayData, growth_threshold: f64) -> DayMetrics {
    let g = &d.digest;
    let trend = g.memory_fit.memory_trend(growth_threshold);
    let word = trend.map(|(_, w)| {
        match w {
            rules::MemoryTrend::Increasing => "increasing",
            rules::MemoryTrend::Decreasing => "decreasing",
            rules::MemoryTrend::Stable => "stable",
        }
        .to_string()
    });
    let worst = |f: fn(&LoadRun) -> Option<f64>| {
        d.load_runs
            .iter()
            .filter_map(f)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
    };
    DayMetrics {
        samples: g.samples as usize,
        health_success_rate_pct: g.health_success_rate_pct(),
        error_rate_pct: g.counters.error_rate_pct(),
        log_error_rate_pct: g.log_error_rate_pct(),
        p95_ms_metrics: g.counters.quantile_ms(0.95),
        p99_ms_metrics: g.counters.quantile_ms(0.99),
        p95_ms_load: worst(|r| r.p95_ms),
        p99_ms_load: worst(|r| r.p99_ms),
        memory_min_mib: g.memory_min_mib,
        memory_max_mib: g.memory_max_mib,
        memory_slope_mb_per_min: trend.map(|t| t.0),
        memory_trend: word,
        restarts: g.restarts(),
        metrics_source: None,
        metrics_error: None,
        metrics_convention: None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Recommendation {
    ContinueMonitoring,
    Promote,
    Investigate,
    RollbackRequired,
}

/// The stated rules, first match wins:
/// 1. a trigger fired today and no successful rollback followed it -> rollback required;
/// 2. a rollback happened, or any target, test or security criterion failed -> investigate;
/// 3. the last day of the period with everything met (and the gate passing) -> promote;
/// 4. otherwise -> continue monitoring.
pub fn recommend(
    d: &DayData,
    m: &DayMetrics,
    cfg: &Config,
    gate_passes: bool,
) -> (Recommendation, Vec<String>) {
    let last_trigger = d.triggers.last().map(|e| e.at);
    let restored_after = d
        .rollbacks
        .iter()
        .any(|r| r.rollback().restored && last_trigger.is_some_and(|t| r.at >= t));
    if let Some(t) = d.triggers.last() {
        if !restored_after {
            return (
                Recommendation::RollbackRequired,
                vec![format!(
                    "trigger {} fired at {} and no rollback restored service after it",
                    t.trigger().rule,
                    t.at.format("%H:%M:%S")
                )],
            );
        }
    }
    let mut reasons = Vec::new();
    if !d.rollbacks.is_empty() {
        reasons.push(format!("{} rollback(s) today", d.rollbacks.len()));
    }
    let t = &cfg.monitoring.targets;
    if m.health_success_rate_pct
        .is_some_and(|h| h < t.health_check_success_rate_pct)
    {
        reasons.push(format!(
            "health check success rate {:.2}% < {}%",
            m.health_success_rate_pct.unwrap_or(0.0),
            t.health_check_success_rate_pct
        ));
    }
    if m.error_rate_pct.is_some_and(|e| e >= t.error_rate_pct) {
        reasons.push(format!(
            "error rate {:.4}% >= {}%",
            m.error_rate_pct.unwrap_or(0.0),
            t.error_rate_pct
        ));
    }
    if let (Some(lo), Some(hi)) = (m.memory_min_mib, m.memory_max_mib) {
        if lo < t.memory_min_mib || hi > t.memory_max_mib {
            reasons.push(format!(
                "memory {:.1}-{:.1} MiB outside the {}-{} MiB target",
                lo, hi, t.memory_min_mib, t.memory_max_mib
            ));
        }
    }
    if m.memory_trend.as_deref() == Some("increasing") {
        reasons.push("memory is increasing".into());
    }
    if m.restarts.is_some_and(|r| r > 0) {
        reasons.push(format!("{} container restart(s)", m.restarts.unwrap_or(0)));
    }
    for r in d.load_runs.iter().filter(|r| !r.passed) {
        reasons.push(format!("K6 {} test failed", r.profile));
    }
    if let Some((p, total)) = d.e2e {
        if p < d.e2e_expected || p < total {
            reasons.push(format!("E2E {p}/{} passing", d.e2e_expected));
        }
    }
    if let Some((s, of)) = d.score {
        if s < cfg.security.required_score {
            reasons.push(format!("security score {s}/{of}"));
        }
    }
    let hc = d
        .cve
        .as_ref()
        .map(|c| {
            c["after_vex"]["critical"].as_u64().unwrap_or(0)
                + c["after_vex"]["high"].as_u64().unwrap_or(0)
        })
        .unwrap_or(0);
    if hc > 0 {
        reasons.push(format!("{hc} HIGH/CRITICAL CVE(s) after VEX"));
    }
    if !reasons.is_empty() {
        return (Recommendation::Investigate, reasons);
    }
    if d.day >= d.period_days && gate_passes {
        return (
            Recommendation::Promote,
            vec!["all promotion criteria met (dhi-stage gate)".into()],
        );
    }
    let mut why = vec![format!("day {}/{}: no blockers", d.day, d.period_days)];
    if d.day >= d.period_days {
        why.push("the promotion gate does not pass yet (see dhi-stage gate)".into());
    }
    (Recommendation::ContinueMonitoring, why)
}

fn pct(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}%"))
        .unwrap_or("no data".into())
}

/// Whole units where they read well, one decimal for small values (0.3ms, not 0ms).
fn num(v: f64) -> String {
    if v.abs() < 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{}ms", num(v)))
        .unwrap_or("no data".into())
}

/// The runbook's "Validation Summary Report Template", every field in its order and wording.
pub fn markdown(
    d: &DayData,
    m: &DayMetrics,
    rec: Recommendation,
    reasons: &[String],
    signed_by: &str,
    today: chrono::NaiveDate,
    charts: &[(&str, &str)],
) -> String {
    let date = d.date.map(|x| x.to_string()).unwrap_or("no data".into());
    let mut s = format!(
        "# DHI Staging Validation Report - Day {}/{}\n\n",
        d.day, d.period_days
    );
    s += &format!(
        "**Date:** {date}\n**Environment:** {}\n**Image:** {}\n\n",
        d.environment,
        d.image.as_deref().unwrap_or("no data")
    );
    s += "## Health Metrics\n\n";
    s += &format!(
        "- Health Check Success Rate: {}\n",
        pct(m.health_success_rate_pct, 2)
    );
    s += &format!(
        "- Error Rate: {}{}\n",
        pct(m.error_rate_pct, 2),
        m.log_error_rate_pct
            .map(|l| format!(" (5xx / requests; log-based: {l:.2}%)"))
            .unwrap_or_default()
    );
    if let Some(why) = &m.metrics_error {
        s += &format!("- Metrics not measured: {why}\n");
    }
    if let Some(c) = &m.metrics_convention {
        s += &format!(
            "- Metrics read as: {}{}\n",
            c.convention.as_deref().unwrap_or("no known convention"),
            c.probes_said()
        );
    }
    let lat = |load: Option<f64>, met: Option<f64>| match (load, met) {
        (None, None) => "no data".to_string(),
        (l, mt) => format!("{} (load runs) / {} (service metrics)", ms(l), ms(mt)),
    };
    s += &format!("- P95 Latency: {}\n", lat(m.p95_ms_load, m.p95_ms_metrics));
    s += &format!("- P99 Latency: {}\n", lat(m.p99_ms_load, m.p99_ms_metrics));
    s += &format!(
        "- Memory Usage: {}\n",
        match (m.memory_min_mib, m.memory_max_mib) {
            (Some(lo), Some(hi)) => format!(
                "{}-{} MiB ({})",
                num(lo),
                num(hi),
                m.memory_trend.as_deref().unwrap_or("stable")
            ),
            _ => "no data".into(),
        }
    );
    s += &format!(
        "- Container Restarts: {}\n\n",
        m.restarts
            .map(|r| r.to_string())
            .unwrap_or("no data".into())
    );
    s += "## Test Results\n\n";
    s += &format!(
        "- E2E Tests: {}\n",
        d.e2e
            .map(|(p, _)| format!("{p}/{}", d.e2e_expected))
            .unwrap_or("no data".into())
    );
    let pf = |profile: &str| {
        let runs: Vec<&LoadRun> = d
            .load_runs
            .iter()
            .filter(|r| r.profile == profile)
            .collect();
        if runs.is_empty() {
            "no data".to_string()
        } else if runs.iter().all(|r| r.passed) {
            "Pass".into()
        } else {
            "Fail".into()
        }
    };
    s += &format!(
        "- K6 Smoke Tests: {}\n- K6 Load Tests: {}\n\n",
        pf("smoke"),
        pf("load")
    );
    s += "## Security Status\n\n";
    match &d.cve {
        Some(c) => {
            let a = &c["after_vex"];
            let n = |k: &str| a[k].as_u64().unwrap_or(0);
            let total: u64 = ["critical", "high", "medium", "low", "unknown"]
                .iter()
                .map(|k| n(k))
                .sum();
            s += &format!(
                "- DHI CVE Count: {total} (CRITICAL: {}, HIGH: {})\n",
                n("critical"),
                n("high")
            );
            s += &format!(
                "- VEX Suppressed: {}\n",
                c["suppressed"].as_u64().unwrap_or(0)
            );
        }
        None => s += "- DHI CVE Count: no data\n- VEX Suppressed: no data\n",
    }
    s += &format!(
        "- Security Score: {}\n\n",
        d.score
            .map(|(a, b)| format!("{a}/{b}"))
            .unwrap_or("no data".into())
    );
    s += "## Issues\n\n";
    if d.triggers.is_empty() && reasons.is_empty() {
        s += "- None\n";
    }
    for t in &d.triggers {
        let trigger = t.trigger();
        let ev: Vec<String> = trigger
            .evidence
            .iter()
            .filter_map(|(_, v)| v.map(|v| format!("{v:.2}")))
            .collect();
        s += &format!(
            "- {} trigger `{}` fired at {}: {} (window values: {})\n",
            trigger.severity,
            trigger.rule,
            t.at.format("%H:%M:%S UTC"),
            trigger.condition,
            if ev.is_empty() {
                "-".into()
            } else {
                ev.join(", ")
            }
        );
    }
    if rec == Recommendation::Investigate {
        for r in reasons {
            s += &format!("- {r}\n");
        }
    }
    for r in d.rollbacks.iter().map(Event::rollback) {
        s += &format!(
            "- Action taken: rollback to {} ({})\n",
            r.to.as_deref().unwrap_or("?"),
            if r.restored { "restored" } else { "FAILED" }
        );
    }
    s += "\n## Rollback Events\n\n";
    match d.rollbacks.last() {
        None => s += "- Rollback triggered: No\n- Reason: n/a\n- Duration: n/a\n",
        Some(r) => {
            let r = r.rollback();
            let dur = r.to_healthy_ms();
            s += &format!(
                "- Rollback triggered: Yes ({} today)\n- Reason: {}\n- Duration: {}\n",
                d.rollbacks.len(),
                r.reason.as_deref().unwrap_or("not given"),
                dur.map(|ms| format!("{:.2}s to restore", ms as f64 / 1000.0))
                    .unwrap_or("not restored".into())
            );
        }
    }
    for (name, href) in &d.incidents {
        s += &format!("- Incident report: [{name}]({href})\n");
    }
    if d.baseline_ms > 0 {
        s += &format!(
            "- Validation period interrupted: the baseline served for {} of this day (its samples are not in these numbers)\n",
            humantime::format_duration(std::time::Duration::from_secs((d.baseline_ms / 1000) as u64))
        );
    }
    s += "\n## Recommendation\n\n";
    let boxes = [
        (
            Recommendation::ContinueMonitoring,
            format!("Continue monitoring (Day {}/{})", d.day, d.period_days),
        ),
        (
            Recommendation::Promote,
            "Promote to production (all criteria met)".into(),
        ),
        (
            Recommendation::Investigate,
            "Investigate issues (blockers identified)".into(),
        ),
        (
            Recommendation::RollbackRequired,
            "Rollback required (critical issues)".into(),
        ),
    ];
    for (r, label) in boxes {
        s += &format!("- [{}] {label}\n", if r == rec { "x" } else { " " });
    }
    s += &format!("\nWhy: {}\n", reasons.join("; "));
    if !charts.is_empty() {
        s += "\n## Charts\n\n";
        for (title, file) in charts {
            s += &format!("![{title}]({file})\n");
        }
    }
    s += &format!("\n**Signed:** {signed_by}\n**Date:** {today}\n");
    s
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::probe::metrics::Snapshot;

    /// A synthetic day: one sample a minute for an hour, a service at 60 MiB answering
    /// 100 requests a minute in 10 ms.
    pub fn day(n: u32) -> DayData {
        let t0 = 1_790_000_000_000 + n as i64 * 86_400_000;
        let samples = (0..60)
            .map(|i| Sample {
                ts_ms: t0 + i * 60_000,
                day: Some(n),
                deployment_id: Some(1),
                target: "http://127.0.0.1:3002".into(),
                container: Some("auth-service-staging".into()),
                health_ok: true,
                health_http_status: Some(200),
                health_latency_ms: Some(2.0),
                health_detail: Value::Null,
                metrics: Some(Snapshot {
                    requests_total: i as f64 * 100.0,
                    requests_5xx: 0.0,
                    buckets: vec![
                        (0.005, 0.0),
                        (0.01, i as f64 * 100.0),
                        (0.1, i as f64 * 100.0),
                        (f64::INFINITY, i as f64 * 100.0),
                    ],
                    ..Default::default()
                }),
                memory_bytes: Some(60 * 1_048_576 + (i % 3) as u64 * 100_000),
                cpu_pct: Some(1.0),
                restart_count: Some(0),
                oom_killed: Some(false),
                log_errors: Some(0),
                ..Default::default()
            })
            .collect();
        let mut d = DayData {
            day: n,
            period_days: 7,
            date: chrono::DateTime::from_timestamp_millis(t0).map(|t| t.date_naive()),
            environment: "Staging".into(),
            image: Some("127.0.0.1:5000/authentication-service:staging-dhi-20261127".into()),
            digest: Default::default(),
            samples,
            load_runs: vec![
                LoadRun {
                    profile: "smoke".into(),
                    passed: true,
                    p95_ms: Some(12.0),
                    p99_ms: Some(20.0),
                    failure_rate_pct: Some(0.0),
                },
                LoadRun {
                    profile: "load".into(),
                    passed: true,
                    p95_ms: Some(40.0),
                    p99_ms: Some(80.0),
                    failure_rate_pct: Some(0.0),
                },
            ],
            e2e: Some((146, 146)),
            e2e_expected: 146,
            score: Some((12, 12)),
            cve: Some(
                serde_json::json!({"after_vex": {"critical": 0, "high": 0, "medium": 2, "low": 1, "unknown": 0}, "suppressed": 3, "vex_documents": ["vex.json"], "warnings": []}),
            ),
            triggers: Vec::new(),
            rollbacks: Vec::new(),
            blind: Vec::new(),
            incidents: Vec::new(),
            baseline_ms: 0,
        };
        d.refresh();
        d
    }

    impl DayData {
        /// Digests `samples` again after a test changed them.
        pub fn refresh(&mut self) {
            self.digest = digest::DayDigest::of(&self.samples);
        }
    }

    fn event(kind: &str, at_ms: i64, detail: Value) -> Event {
        Event {
            id: 1,
            at: chrono::DateTime::from_timestamp_millis(at_ms).unwrap(),
            kind: EventKind::parse(kind).unwrap(),
            deployment_id: Some(1),
            detail,
        }
    }

    fn cfg() -> Config {
        crate::config::parse(crate::config::DEFAULT_TOML, "t").unwrap()
    }

    fn render(d: &DayData) -> String {
        let m = metrics(d, 0.1);
        let (rec, why) = recommend(d, &m, &cfg(), false);
        markdown(
            d,
            &m,
            rec,
            &why,
            "Ops On-Call",
            chrono::NaiveDate::from_ymd_opt(2026, 11, 27).unwrap(),
            &[("Memory", "day-2-memory.svg")],
        )
    }

    /// Compares with `src/report/snapshots/NAME.md`; `UPDATE_SNAPSHOTS=1` rewrites it.
    fn snapshot(name: &str, got: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/report/snapshots")
            .join(format!("{name}.md"));
        if std::env::var("UPDATE_SNAPSHOTS").is_ok() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, got).unwrap();
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|_| {
            panic!(
                "missing snapshot {}; run with UPDATE_SNAPSHOTS=1",
                path.display()
            )
        });
        assert_eq!(got, want, "snapshot {name} differs");
    }

    #[test]
    fn a_passing_day() {
        let d = day(2);
        let m = metrics(&d, 0.1);
        assert_eq!(m.health_success_rate_pct, Some(100.0));
        assert_eq!(m.error_rate_pct, Some(0.0));
        assert_eq!(m.memory_trend.as_deref(), Some("stable"));
        assert_eq!(m.restarts, Some(0));
        snapshot("passing-day", &render(&d));
    }

    #[test]
    fn a_failing_day() {
        let mut d = day(3);
        for (i, s) in d.samples.iter_mut().enumerate() {
            s.health_ok = i != 10;
            s.memory_bytes = Some(60 * 1_048_576 + i as u64 * 400 * 1024);
            if let Some(m) = s.metrics.as_mut() {
                m.requests_5xx = i as f64;
            }
        }
        d.refresh();
        d.load_runs[1].passed = false;
        d.load_runs[1].p95_ms = Some(130.0);
        d.e2e = Some((144, 146));
        let m = metrics(&d, 0.1);
        assert_eq!(m.memory_trend.as_deref(), Some("increasing"));
        assert!((m.error_rate_pct.unwrap() - 1.0).abs() < 1e-9);
        let (rec, _) = recommend(&d, &m, &cfg(), false);
        assert_eq!(rec, Recommendation::Investigate);
        snapshot("failing-day", &render(&d));
    }

    #[test]
    fn a_day_with_a_rollback() {
        let mut d = day(4);
        let t = d.samples[30].ts_ms;
        d.triggers.push(event("trigger", t, serde_json::json!({"rule": "error_rate", "severity": "immediate", "condition": "error rate > 2% for 5m", "evidence": [[t - 60_000, 4.8], [t, 5.1]]})));
        d.baseline_ms = 2 * 3_600_000 + 5 * 60_000;
        d.rollbacks.push(event("rollback", t + 1_000, serde_json::json!({"to": "authentication-service:baseline-distroless", "restored": true, "reason": "monitor: error_rate", "decision_to_healthy_ms": 512})));
        let m = metrics(&d, 0.1);
        assert_eq!(
            recommend(&d, &m, &cfg(), false).0,
            Recommendation::Investigate
        );
        snapshot("rollback-day", &render(&d));
        // The same trigger without a rollback after it asks for one.
        d.rollbacks.clear();
        assert_eq!(
            recommend(&d, &m, &cfg(), false).0,
            Recommendation::RollbackRequired
        );
    }

    #[test]
    fn missing_data_says_no_data() {
        let mut d = day(5);
        d.samples.clear();
        d.refresh();
        d.load_runs.clear();
        d.e2e = None;
        d.cve = None;
        d.score = None;
        let md = render(&d);
        for field in [
            "Health Check Success Rate: no data",
            "P95 Latency: no data",
            "E2E Tests: no data",
            "K6 Smoke Tests: no data",
            "DHI CVE Count: no data",
            "Security Score: no data",
        ] {
            assert!(md.contains(field), "{field}\n{md}");
        }
    }
}
