//! The incident report the runbook's "Post-Rollback Actions" ask for ("create incident report
//! with metrics, logs, timeline"), written as an on-call engineer would: the runbook's metrics
//! before and after as a table, the trigger's evidence as a chart, the timeline in words, the
//! replaced container's log, and a checklist that says what the tool already did.
//!
//! A report is a function of its record (`IncidentDetail`, what only the rollback knew: its
//! moments, the log lines, the notifications) and the store (triggers, samples, events), so
//! it is written again when the restored service's first minutes are in (`complete_pending`).
//! Markdown, an SVG chart beside it, and one self-contained HTML page.

use std::path::{Path, PathBuf};

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::{Comparison, Config, Metric, TriggerRule};
use crate::monitor::digest::DayDigest;
use crate::monitor::rules;
use crate::store::events::{Delivery, IncidentDetail};
use crate::store::{EventKind, Store};

/// How far before the decision the "before" column and the chart reach (the runbook's
/// "metrics" of the incident: the ten minutes that led to it).
const BEFORE_MS: i64 = 600_000;
/// How far back a trigger counts as the one this rollback answered.
const TRIGGER_LOOKBACK_MS: i64 = 900_000;

/// One stretch of samples, read into a digest (the daily report's numbers for it).
#[derive(Debug, Default)]
pub struct Window {
    pub from_ms: i64,
    pub to_ms: i64,
    pub digest: DayDigest,
}

/// A trigger as the report tells it: one line per rule and condition, both severities merged.
#[derive(Debug, Clone, Serialize)]
pub struct Fired {
    pub rule: String,
    pub condition: String,
    pub severities: Vec<String>,
    pub at: DateTime<Utc>,
    pub metric: Option<Metric>,
    pub op: Option<Comparison>,
    pub threshold: Option<f64>,
    /// (ms, value) over the rule's window, as the monitor judged it.
    pub evidence: Vec<(i64, Option<f64>)>,
}

impl Fired {
    /// Where the breach began: the first point of the evidence that breached.
    pub fn breach_start(&self) -> Option<(i64, f64)> {
        self.evidence
            .iter()
            .filter_map(|(t, v)| v.map(|v| (*t, v)))
            .find(|(_, v)| match (self.op, self.threshold) {
                (Some(Comparison::Gt), Some(th)) => *v > th,
                (Some(Comparison::Lt), Some(th)) => *v < th,
                _ => true,
            })
    }
}

/// A moment of the timeline, in words.
#[derive(Debug, Clone, Serialize)]
pub struct Moment {
    pub at: DateTime<Utc>,
    pub text: String,
    pub bad: bool,
}

/// Everything a report shows.
#[derive(Debug)]
pub struct Incident {
    pub record: IncidentDetail,
    pub triggers: Vec<Fired>,
    pub before: Window,
    pub after: Window,
    pub timeline: Vec<Moment>,
    /// The restored service's after-window has passed: the report is final.
    pub final_: bool,
}

/// The report's files: markdown, the chart beside it, the HTML page.
pub struct Files {
    pub markdown: PathBuf,
    pub html: PathBuf,
    pub chart: Option<PathBuf>,
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn hms(ms: i64) -> String {
    at(ms).format("%H:%M:%S").to_string()
}

/// Reads what the report shows from the store.
pub fn gather(
    store: &Store,
    cfg: &Config,
    rec: &IncidentDetail,
    now: DateTime<Utc>,
) -> Result<Incident> {
    let decided = rec.decided_at_ms;
    let before = window(
        store,
        &rec.target,
        rec.from_deployment,
        decided - BEFORE_MS,
        decided,
    )?;
    let after = match rec.healthy_at_ms {
        Some(h) => window(store, &rec.target, rec.to_deployment, h, rec.after_until_ms)?,
        None => Window::default(),
    };
    let triggers = triggers(store, cfg, rec)?;
    let mut inc = Incident {
        record: rec.clone(),
        triggers,
        before,
        after,
        timeline: Vec::new(),
        final_: now.timestamp_millis() >= rec.after_until_ms,
    };
    inc.timeline = timeline(store, &inc)?;
    Ok(inc)
}

fn window(
    store: &Store,
    target: &str,
    deployment: Option<i64>,
    from: i64,
    to: i64,
) -> Result<Window> {
    let mut digest = DayDigest::default();
    store.scan_since(target, from, deployment, |_, s| {
        if s.ts_ms <= to {
            digest.push(s)
        }
    })?;
    Ok(Window {
        from_ms: from,
        to_ms: to,
        digest,
    })
}

/// The configured rule a trigger event names (its metric, comparison and threshold).
fn rule_of<'a>(cfg: &'a Config, name: &str, severity: &str) -> Option<&'a TriggerRule> {
    let (first, second) = if severity == "immediate" {
        (
            &cfg.monitoring.immediate_triggers,
            &cfg.monitoring.rollback_triggers,
        )
    } else {
        (
            &cfg.monitoring.rollback_triggers,
            &cfg.monitoring.immediate_triggers,
        )
    };
    first.iter().chain(second).find(|r| r.name == name)
}

/// The triggers of the rolled-back deployment in the 15 minutes before the decision, one per
/// rule and condition (a rule that fired at both severities is one line).
fn triggers(store: &Store, cfg: &Config, rec: &IncidentDetail) -> Result<Vec<Fired>> {
    let from = at(rec.decided_at_ms - TRIGGER_LOOKBACK_MS);
    let to = at(rec.decided_at_ms + 5_000);
    let mut out: Vec<Fired> = Vec::new();
    let events = store.events(Some(EventKind::Trigger))?;
    let mine = events.iter().filter(|e| {
        e.at >= from
            && e.at <= to
            && (rec.from_deployment.is_none() || e.deployment_id == rec.from_deployment)
    });
    for e in mine {
        let t = e.trigger();
        if let Some(f) = out
            .iter_mut()
            .find(|f| f.rule == t.rule && f.condition == t.condition)
        {
            if !f.severities.contains(&t.severity) {
                f.severities.push(t.severity.clone());
            }
            if t.evidence.len() > f.evidence.len() {
                f.evidence = t.evidence;
            }
            continue;
        }
        let rule = rule_of(cfg, &t.rule, &t.severity);
        out.push(Fired {
            rule: t.rule.clone(),
            condition: t.condition.clone(),
            severities: vec![t.severity.clone()],
            at: e.at,
            metric: rule.map(|r| r.metric),
            op: rule.map(|r| r.op),
            threshold: rule.map(|r| r.threshold),
            evidence: t.evidence,
        });
    }
    Ok(out)
}

/// "rollback and immediate", "rollback".
fn severities(f: &Fired) -> String {
    let mut s = f.severities.clone();
    s.sort();
    s.reverse();
    s.join(" and ")
}

/// A value in the metric's unit, as the runbook writes it.
pub fn value(metric: Metric, v: f64) -> String {
    match metric {
        Metric::HealthCheckSuccessRatePct | Metric::HealthCheckFailureRatePct => {
            format!("{v:.1}%")
        }
        Metric::ErrorRatePct if v != 0.0 && v.abs() < 0.1 => format!("{v:.3}%"),
        Metric::ErrorRatePct => format!("{v:.1}%"),
        Metric::P95LatencyMs | Metric::P99LatencyMs => format!("{v:.0} ms"),
        Metric::MemoryMib => format!("{v:.1} MiB"),
        Metric::MemoryGrowth => format!("{v:.2} MiB/min"),
        Metric::RestartsInWindow | Metric::CriticalCves => format!("{v:.0}"),
    }
}

fn moment(ms: i64, text: String, bad: bool) -> Moment {
    Moment {
        at: at(ms),
        text,
        bad,
    }
}

/// The moments, in time order: each trigger's breach and firing, failed health checks before
/// and after, blind stretches, the decision, healthy again, the notifications.
fn timeline(store: &Store, inc: &Incident) -> Result<Vec<Moment>> {
    let mut m = trigger_moments(inc);
    m.extend(health_moments(inc));
    m.extend(blind_moments(store, &inc.record)?);
    m.extend(rollback_moments(inc));
    m.sort_by_key(|x| x.at);
    Ok(m)
}

fn trigger_moments(inc: &Incident) -> Vec<Moment> {
    let mut m = Vec::new();
    for f in &inc.triggers {
        if let (Some((t, v)), Some(metric), Some(th)) = (f.breach_start(), f.metric, f.threshold) {
            let op = if f.op == Some(Comparison::Lt) {
                "<"
            } else {
                ">"
            };
            let text = format!(
                "{} {} {op} {} (the window starts)",
                rules::label(metric),
                value(metric, v),
                value(metric, th)
            );
            m.push(moment(t, text, true));
        }
        let text = format!("trigger fired: {} ({})", f.condition, severities(f));
        m.push(moment(f.at.timestamp_millis(), text, true));
    }
    m
}

fn health_moments(inc: &Incident) -> Vec<Moment> {
    let windows = [
        (&inc.before, "the replaced service"),
        (&inc.after, "the restored service"),
    ];
    windows
        .iter()
        .flat_map(|(w, whose)| {
            w.digest.failures.iter().map(move |run| {
                let times = match run.probes {
                    1 => String::new(),
                    n => format!(" {n} times in a row"),
                };
                let text = format!("health check of {whose} failed{times} ({})", run.detail);
                moment(run.at_ms, text, true)
            })
        })
        .collect()
}

fn blind_moments(store: &Store, rec: &IncidentDetail) -> Result<Vec<Moment>> {
    let (from, to) = (at(rec.decided_at_ms - BEFORE_MS), at(rec.after_until_ms));
    let mut m = Vec::new();
    for e in store
        .events(Some(EventKind::Blind))?
        .iter()
        .filter(|e| e.at >= from && e.at <= to)
    {
        for b in e.blind().rules {
            let since = b.inconclusive_since_ms.unwrap_or(e.at.timestamp_millis());
            let text = format!(
                "monitor blind on {} ({}): {}",
                b.name, b.condition, b.reason
            );
            m.push(moment(since, text, true));
        }
    }
    Ok(m)
}

fn rollback_moments(inc: &Incident) -> Vec<Moment> {
    let rec = &inc.record;
    let decided = match (rec.automatic, rec.approved_by.as_deref()) {
        (true, by) => format!(
            "automatic rollback decided by {}",
            by.unwrap_or("monitor --auto-rollback")
        ),
        (false, by) => format!(
            "rollback decided by {}{}",
            by.map(|a| format!("{a} (approver)"))
                .unwrap_or_else(|| "an operator".into()),
            rec.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
    };
    let mut m = vec![moment(rec.decided_at_ms, decided, true)];
    m.push(match rec.healthy_at_ms {
        Some(h) => {
            let secs = rec.decision_to_healthy_ms as f64 / 1000.0;
            moment(
                h,
                format!("{} healthy ({secs:.2} s after the decision)", rec.to),
                false,
            )
        }
        None => moment(
            rec.decided_at_ms + rec.decision_to_healthy_ms as i64,
            format!(
                "restore FAILED: {}; {}",
                rec.failure.as_deref().unwrap_or("not healthy"),
                rec.left_running.as_deref().unwrap_or("")
            ),
            true,
        ),
    });
    m.extend(
        rec.deliveries
            .iter()
            .map(|d| moment(d.at_ms, delivery_words(d), !d.ok)),
    );
    if inc.final_ && rec.healthy_at_ms.is_some() {
        let n = inc.after.digest.samples;
        let s = if n == 1 { "" } else { "s" };
        let text = format!("end of the after-window: {n} sample{s} of the restored service");
        m.push(moment(rec.after_until_ms, text, false));
    }
    m
}

/// "webhook notified (HTTP 200)", "GitHub issue #123 opened", "webhook FAILED: ...".
fn delivery_words(d: &Delivery) -> String {
    match (d.channel.as_str(), d.ok) {
        ("webhook", true) => format!("webhook notified ({})", d.detail),
        ("github", true) => format!("GitHub issue {} opened", issue_number(&d.detail)),
        (c, _) => format!("{c} notification FAILED: {}", d.detail),
    }
}

/// "#123" from an issue's URL, or the URL itself.
fn issue_number(url: &str) -> String {
    match url.rsplit('/').next() {
        Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => format!("#{n}"),
        _ => url.to_string(),
    }
}

/// The trigger's metric as the chart plots it: its series from a window's digest.
fn series_of(metric: Metric, d: &DayDigest) -> Option<&[(i64, f64)]> {
    let c = &d.charts;
    Some(match metric {
        Metric::ErrorRatePct => &c.error_rate_pct.points,
        Metric::P95LatencyMs => &c.p95_ms.points,
        Metric::P99LatencyMs => &c.p99_ms.points,
        Metric::MemoryMib | Metric::MemoryGrowth => &c.memory_mib.points,
        Metric::HealthCheckSuccessRatePct | Metric::HealthCheckFailureRatePct => {
            &c.health_running_pct.points
        }
        Metric::RestartsInWindow | Metric::CriticalCves => return None,
    })
}

/// The chart of the first trigger's metric, from the before-window to the after-window;
/// None when no trigger preceded the rollback or its metric is not sampled (restarts, CVEs).
pub fn chart(inc: &Incident) -> Option<String> {
    let f = inc.triggers.first()?;
    let metric = f.metric?;
    let mut points: Vec<(i64, f64)> = series_of(metric, &inc.before.digest)?.to_vec();
    points.extend_from_slice(series_of(metric, &inc.after.digest)?);
    points.retain(|(_, v)| v.is_finite());
    if points.is_empty() {
        return None;
    }
    let rec = &inc.record;
    let start = points[0]
        .0
        .min(f.breach_start().map(|b| b.0).unwrap_or(i64::MAX));
    let end = points
        .last()
        .map(|p| p.0)
        .unwrap_or(start)
        .max(rec.healthy_at_ms.unwrap_or(0));
    let mut moments = vec![(rec.decided_at_ms, "decision".to_string())];
    if let Some(h) = rec.healthy_at_ms {
        moments.push((h, "healthy".to_string()));
    }
    let threshold = f.threshold.map(|y| super::charts::Line {
        label: format!("trigger {}", value(metric, y)),
        y,
        color: "#c62828",
    });
    let breach = f.breach_start().map(|(t, _)| (t, f.at.timestamp_millis()));
    let unit = match metric {
        Metric::P95LatencyMs | Metric::P99LatencyMs => "ms",
        Metric::MemoryMib => "MiB",
        Metric::MemoryGrowth => "MiB",
        _ => "%",
    };
    Some(super::charts::incident_chart(
        &format!("{} around the rollback", capitalised(rules::label(metric))),
        unit,
        (start, end),
        &super::charts::TimeSeries {
            name: rules::label(metric).to_string(),
            color: "#1565c0",
            points,
        },
        &super::charts::Marks {
            threshold,
            breach,
            moments: &moments,
        },
    ))
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

mod text;
pub use text::markdown;

/// Writes the report's files under `<report dir>/incidents/`: the chart first, then the
/// markdown and the page, each atomically.
pub fn write(cfg: &Config, inc: &Incident) -> Result<Files> {
    let dir = cfg.report.dir.join("incidents");
    std::fs::create_dir_all(&dir)?;
    let name = &inc.record.name;
    let svg = chart(inc);
    let chart_file = format!("{name}-chart.svg");
    let chart = match &svg {
        Some(s) => {
            let p = dir.join(&chart_file);
            crate::files::write_atomic(&p, s)?;
            Some(p)
        }
        None => None,
    };
    let md = markdown(inc, cfg, svg.as_ref().map(|_| chart_file.as_str()));
    let markdown_path = dir.join(format!("{name}.md"));
    crate::files::write_atomic(&markdown_path, &md)?;
    let inline: Vec<(String, String)> = svg.map(|s| (chart_file, s)).into_iter().collect();
    let page = super::html::page(
        &format!("Incident: rollback of {}", inc.record.service),
        &md,
        &inline,
    );
    let html = dir.join(format!("{name}.html"));
    crate::files::write_atomic(&html, &page)?;
    Ok(Files {
        markdown: markdown_path,
        html,
        chart,
    })
}

/// The incidents whose after-window has passed since their report was written: each is
/// gathered again and rewritten (the "after" column complete), and recorded as complete.
/// `monitor` and `report` call it; a failure is a warning, never the run's outcome.
pub fn complete_pending(store: &Store, cfg: &Config, now: DateTime<Utc>) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let pending = records(store)?.into_iter().filter(|r| {
        !r.complete && !r.name.is_empty() && now.timestamp_millis() >= r.after_until_ms
    });
    for mut rec in pending {
        let inc = gather(store, cfg, &rec, now)?;
        let files = write(cfg, &inc)?;
        rec.complete = true;
        store.event(EventKind::Incident, rec.to_deployment, &rec)?;
        written.push(files.markdown);
    }
    Ok(written)
}

/// The latest record of each incident (for links from the week page and the day report).
pub fn records(store: &Store) -> Result<Vec<IncidentDetail>> {
    let mut latest: Vec<IncidentDetail> = Vec::new();
    for e in store.events(Some(EventKind::Incident))? {
        let r = e.incident();
        match latest.iter_mut().find(|x| x.name == r.name) {
            Some(x) => *x = r,
            None => latest.push(r),
        }
    }
    Ok(latest)
}

/// The page of an incident relative to the report directory, when it was written there.
pub fn link(report_dir: &Path, rec: &IncidentDetail) -> Option<String> {
    ["html", "md"].into_iter().find_map(|ext| {
        let rel = format!("incidents/{}.{ext}", rec.name);
        report_dir.join(&rel).exists().then_some(rel)
    })
}
