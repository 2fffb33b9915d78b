//! The week at a glance: one self-contained page (`index.html`) with the period's state, the
//! runbook's targets and rollback triggers by day, a timeline of what happened, week-long
//! charts and the promotion criteria. `gather` reads the store once per day; everything
//! after it (`matrix`, `state`, `html`) is a pure function, so the page is tested on a
//! synthesized week. Every string that came from the service, the engine or a log is escaped.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::charts::{self, Band, Line};
use super::digest::Hour;
use super::{esc, gate, DayData, DayMetrics};
use crate::config::{Config, Metric, TriggerRule};
use crate::store::events::ms;
use crate::store::{DeploymentStatus, Event, EventKind, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Inside the period, nothing blocks promotion yet.
    Continuing,
    /// A target or criterion was missed on some day: the gate cannot pass this period.
    Blocked,
    /// The period is complete and the gate passes.
    ReadyToPromote,
    /// The baseline serves instead of the image under test.
    RolledBack,
}

impl State {
    pub fn words(self) -> &'static str {
        match self {
            State::Continuing => "continuing",
            State::Blocked => "blocked",
            State::ReadyToPromote => "ready to promote",
            State::RolledBack => "rolled back",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CellState {
    Met,
    NotMet,
    NoData,
    Inconclusive,
}

impl CellState {
    fn symbol(self) -> &'static str {
        match self {
            CellState::Met => "✓",
            CellState::NotMet => "✗",
            CellState::NoData => "–",
            CellState::Inconclusive => "?",
        }
    }
    fn words(self) -> &'static str {
        match self {
            CellState::Met => "met",
            CellState::NotMet => "not met",
            CellState::NoData => "no data",
            CellState::Inconclusive => "inconclusive",
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Cell {
    pub state: CellState,
    pub value: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// "target" or "trigger".
    pub kind: &'static str,
    pub name: String,
    pub requirement: String,
    /// Days 1..=period, in order.
    pub cells: Vec<Cell>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimelineEvent {
    pub at: DateTime<Utc>,
    /// deploy, rollback, trigger, blind, drill, validation, load, e2e, health
    pub kind: String,
    pub text: String,
    pub bad: bool,
    /// A page about it (a rollback's incident report), relative to the report directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Week {
    pub image: Option<String>,
    pub digest: Option<String>,
    pub period_start: Option<DateTime<Utc>>,
    pub day: u32,
    pub period_days: u32,
    pub state: State,
    pub state_reason: String,
    #[serde(skip)]
    pub days: Vec<(DayData, DayMetrics)>,
    pub matrix: Vec<Row>,
    pub timeline: Vec<TimelineEvent>,
    pub criteria: Vec<gate::Criterion>,
    /// (label, relative link) to each day's report and each incident report.
    pub links: Vec<(String, String)>,
    pub generated_at: DateTime<Utc>,
}

/// Reads the period from the store: every day so far, the gate over them, the timeline.
///
/// `measured`: the operational criteria as `gate::measure` found them (empty: shown from the
/// attestations, as the monitor's refresh does, which asks no server every five minutes).
pub fn gather(
    store: &Store,
    cfg: &Config,
    attestations: &toml::Table,
    measured: &gate::Measured,
    report_dir: &Path,
    now: DateTime<Utc>,
) -> Result<Week> {
    let (deployments, period) = super::period(store, cfg, now)?;
    let latest = store.latest_day()?.unwrap_or(0);
    let day = period
        .day_at(now)
        .unwrap_or(latest)
        .max(latest)
        .min(cfg.monitoring.period_days.max(latest));
    let through = day.max(1);
    let gate::Judged {
        passes,
        criteria,
        days,
    } = gate::judge(
        store,
        cfg,
        through,
        attestations,
        &Default::default(),
        measured,
    )?;
    let digest = period.image.as_ref().and_then(|img| {
        deployments
            .iter()
            .rev()
            .find(|d| &d.image_ref == img)
            .and_then(|d| d.digest.clone().or(d.image_id.clone()))
    });
    let matrix = matrix(&days, cfg);
    let (state, state_reason) = state(
        period.role == crate::monitor::period::Role::Baseline,
        &matrix,
        day,
        cfg.monitoring.period_days,
        passes,
        &criteria,
    );
    let mut timeline = Vec::new();
    for d in &deployments {
        if let Some(since) = period.started_at {
            if d.started_at < since - chrono::Duration::hours(1) {
                continue;
            }
        }
        timeline.push(TimelineEvent {
            at: d.started_at,
            kind: "deploy".into(),
            text: format!("{} #{}: {} ({})", d.kind, d.id, d.image_ref, d.status),
            bad: d.status == DeploymentStatus::Failed,
            link: None,
        });
    }
    let from = period.started_at.unwrap_or(now - chrono::Duration::days(8));
    // Each rollback's incident report, linked from its line of the timeline.
    let incidents: Vec<(String, String, Option<i64>)> = super::incident::records(store)?
        .into_iter()
        .filter(|r| {
            crate::store::events::at_ms(r.decided_at_ms) >= from - chrono::Duration::hours(1)
        })
        .filter_map(|r| {
            let href = super::incident::link(report_dir, &r)?;
            Some((r.name, href, r.to_deployment))
        })
        .collect();
    for e in store.events(None)?.into_iter().filter(|e| e.at >= from) {
        let (text, bad) = match e.kind {
            EventKind::Trigger => {
                let t = e.trigger();
                let text = format!("trigger {} ({}) fired: {}", t.rule, t.severity, t.condition);
                (text, true)
            }
            EventKind::Rollback => {
                let r = e.rollback();
                let text = format!(
                    "rollback to {} {}: decision to healthy {} ms; reason: {}",
                    r.to.as_deref().unwrap_or("?"),
                    if r.restored {
                        "restored service"
                    } else {
                        "FAILED"
                    },
                    ms(r.decision_to_healthy_ms),
                    r.reason.as_deref().unwrap_or("none given")
                );
                (text, true)
            }
            EventKind::Blind => {
                let names: Vec<String> = e
                    .blind()
                    .rules
                    .iter()
                    .map(|b| format!("{} ({})", b.name, b.reason))
                    .collect();
                (format!("monitor blind: {}", names.join("; ")), true)
            }
            // A switch is where the service moved: "switched to slot 2".
            EventKind::Deploy
                if e.detail["phase"] == "active" && e.detail["strategy"] == "switch" =>
            {
                let text = format!(
                    "switched to slot {}{} (deployment #{})",
                    e.detail["slot"],
                    e.detail["from_slot"]
                        .as_u64()
                        .map(|f| format!(" from slot {f}"))
                        .unwrap_or_default(),
                    e.deployment_id.unwrap_or_default()
                );
                (text, false)
            }
            EventKind::Drill => {
                let d = e.drill();
                let text = format!(
                    "rollback drill {}: back in {} ms, forward in {} ms",
                    if d.passed { "passed" } else { "FAILED" },
                    ms(d.rollback_decision_to_healthy_ms),
                    ms(d.forward_to_healthy_ms)
                );
                (text, !d.passed)
            }
            _ => continue,
        };
        let link = (e.kind == EventKind::Rollback)
            .then(|| {
                incidents
                    .iter()
                    .find(|i| i.2.is_some() && i.2 == e.deployment_id)
                    .map(|i| i.1.clone())
            })
            .flatten();
        timeline.push(TimelineEvent {
            at: e.at,
            kind: e.kind.to_string(),
            text,
            bad,
            link,
        });
    }
    for v in store.validations_since(from)? {
        timeline.push(TimelineEvent {
            at: v.at,
            kind: "validation".into(),
            text: format!(
                "validate {} of {}: {}",
                v.kind,
                v.image_ref.unwrap_or_default(),
                if v.passed { "passed" } else { "FAILED" }
            ),
            bad: !v.passed,
            link: None,
        });
    }
    for (d, _) in &days {
        for (kind, passed, _, at) in store.test_results(d.day)? {
            timeline.push(TimelineEvent {
                at: crate::store::parse_time(&at),
                kind: if kind == "e2e" { "e2e" } else { "load" }.into(),
                text: format!(
                    "day {} {}: {}",
                    d.day,
                    kind.replace("load:", "load run "),
                    if passed { "passed" } else { "FAILED" }
                ),
                bad: !passed,
                link: None,
            });
        }
        timeline.extend(health_failures(&d.digest.failures));
    }
    timeline.sort_by_key(|e| e.at);
    let mut links = Vec::new();
    for (d, _) in &days {
        for ext in ["html", "md"] {
            let f = format!("day-{}.{ext}", d.day);
            if report_dir.join(&f).exists() {
                links.push((format!("Day {} report", d.day), f));
                break;
            }
        }
    }
    for (name, href, _) in &incidents {
        links.push((format!("Incident {name}"), href.clone()));
    }
    Ok(Week {
        image: period.image,
        digest,
        period_start: period.started_at,
        day,
        period_days: cfg.monitoring.period_days,
        state,
        state_reason,
        days,
        matrix,
        timeline,
        criteria,
        links,
        generated_at: now,
    })
}

/// Gathers the week and writes `<dir>/index.html`; returns what it wrote.
pub fn write_page(
    store: &Store,
    cfg: &Config,
    dir: &Path,
    attestations: &toml::Table,
    measured: &gate::Measured,
) -> Result<(Week, std::path::PathBuf)> {
    use anyhow::Context;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create report dir {}", dir.display()))?;
    let w = gather(store, cfg, attestations, measured, dir, Utc::now())?;
    let path = dir.join("index.html");
    crate::files::write_atomic(&path, &html(&w, cfg))?;
    Ok((w, path))
}

/// Stretches of failed health probes, one event each, with the first failure's detail.
fn health_failures(runs: &[super::digest::FailureRun]) -> Vec<TimelineEvent> {
    runs.iter()
        .map(|r| TimelineEvent {
            at: DateTime::from_timestamp_millis(r.at_ms).unwrap_or_default(),
            kind: "health".into(),
            text: format!("{} failed health probe(s): {}", r.probes, r.detail),
            bad: true,
            link: None,
        })
        .collect()
}

/// Each target and trigger of the runbook by day: met, not met, no data or inconclusive.
pub fn matrix(days: &[(DayData, DayMetrics)], cfg: &Config) -> Vec<Row> {
    let t = &cfg.monitoring.targets;
    let n = cfg
        .monitoring
        .period_days
        .max(days.iter().map(|(d, _)| d.day).max().unwrap_or(0));
    let per_day = |f: &dyn Fn(&DayData, &DayMetrics) -> Cell| -> Vec<Cell> {
        (1..=n)
            .map(|i| match days.iter().find(|(d, _)| d.day == i) {
                Some((d, m)) if m.samples > 0 => f(d, m),
                _ => Cell {
                    state: CellState::NoData,
                    value: "no data".into(),
                },
            })
            .collect()
    };
    let judged = |v: Option<f64>, ok: &dyn Fn(f64) -> bool, show: &dyn Fn(f64) -> String| match v {
        None => Cell {
            state: CellState::Inconclusive,
            value: "could not be measured".into(),
        },
        Some(v) => Cell {
            state: if ok(v) {
                CellState::Met
            } else {
                CellState::NotMet
            },
            value: show(v),
        },
    };
    let p95 = t.p95_latency.as_secs_f64() * 1000.0;
    let p99 = t.p99_latency.as_secs_f64() * 1000.0;
    let mut rows = vec![
        Row {
            kind: "target",
            name: "Health check success rate".into(),
            requirement: format!("≥ {}%", t.health_check_success_rate_pct),
            cells: per_day(&|_, m| {
                judged(
                    m.health_success_rate_pct,
                    &|v| v >= t.health_check_success_rate_pct,
                    &|v| format!("{v:.2}%"),
                )
            }),
        },
        Row {
            kind: "target",
            name: "Error rate".into(),
            requirement: format!("< {}%", t.error_rate_pct),
            cells: per_day(&|_, m| {
                judged(m.error_rate_pct, &|v| v < t.error_rate_pct, &|v| {
                    format!("{v:.4}%")
                })
            }),
        },
        Row {
            kind: "target",
            name: "P95 latency".into(),
            requirement: format!("< {p95:.0} ms"),
            cells: per_day(&|_, m| {
                judged(m.p95_ms_metrics, &|v| v < p95, &|v| format!("{v:.1} ms"))
            }),
        },
        Row {
            kind: "target",
            name: "P99 latency".into(),
            requirement: format!("< {p99:.0} ms"),
            cells: per_day(&|_, m| {
                judged(m.p99_ms_metrics, &|v| v < p99, &|v| format!("{v:.1} ms"))
            }),
        },
        Row {
            kind: "target",
            name: "Memory".into(),
            requirement: format!("{:.0}-{:.0} MiB", t.memory_min_mib, t.memory_max_mib),
            cells: per_day(&|_, m| match (m.memory_min_mib, m.memory_max_mib) {
                (Some(lo), Some(hi)) => Cell {
                    state: if lo >= t.memory_min_mib && hi <= t.memory_max_mib {
                        CellState::Met
                    } else {
                        CellState::NotMet
                    },
                    value: format!("{lo:.1}-{hi:.1} MiB"),
                },
                _ => Cell {
                    state: CellState::Inconclusive,
                    value: "could not be measured".into(),
                },
            }),
        },
        Row {
            kind: "target",
            name: "Memory trend".into(),
            requirement: "stable (no growth)".into(),
            cells: per_day(&|_, m| match m.memory_trend.as_deref() {
                None => Cell {
                    state: CellState::Inconclusive,
                    value: "too few readings".into(),
                },
                Some(w) => Cell {
                    state: if w == "increasing" {
                        CellState::NotMet
                    } else {
                        CellState::Met
                    },
                    value: w.to_string(),
                },
            }),
        },
        Row {
            kind: "target",
            name: "Container restarts".into(),
            requirement: "0".into(),
            cells: per_day(&|_, m| match m.restarts {
                None => Cell {
                    state: CellState::Inconclusive,
                    value: "could not be measured".into(),
                },
                Some(r) => Cell {
                    state: if r == 0 {
                        CellState::Met
                    } else {
                        CellState::NotMet
                    },
                    value: r.to_string(),
                },
            }),
        },
    ];
    let rules = cfg
        .monitoring
        .rollback_triggers
        .iter()
        .map(|r| ("rollback", r))
        .chain(
            cfg.monitoring
                .immediate_triggers
                .iter()
                .map(|r| ("immediate", r)),
        );
    for (severity, r) in rules {
        rows.push(Row {
            kind: "trigger",
            name: format!("{} ({severity})", r.name),
            requirement: format!("never {}", condition(r)),
            cells: per_day(&|d, _| {
                let fired = d
                    .triggers
                    .iter()
                    .map(Event::trigger)
                    .filter(|t| t.rule == r.name && t.severity == severity)
                    .count();
                let blind = d.blind.iter().any(|e| {
                    e.blind()
                        .rules
                        .iter()
                        .any(|b| b.name == r.name && b.severity == severity)
                });
                if fired > 0 {
                    Cell {
                        state: CellState::NotMet,
                        value: format!("fired {fired}×"),
                    }
                } else if blind {
                    Cell {
                        state: CellState::Inconclusive,
                        value: "blind for a while".into(),
                    }
                } else {
                    Cell {
                        state: CellState::Met,
                        value: "clear".into(),
                    }
                }
            }),
        });
    }
    rows
}

fn condition(r: &TriggerRule) -> String {
    let op = match r.op {
        crate::config::Comparison::Gt => ">",
        crate::config::Comparison::Lt => "<",
    };
    let metric = serde_json::to_value(r.metric)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let sustained = if r.sustained_for.is_zero() {
        String::new()
    } else {
        format!(" for {}", humantime::format_duration(r.sustained_for))
    };
    format!("{metric} {op} {}{sustained}", r.threshold)
}

/// The badge: rolled back while the baseline serves; blocked when any day missed a target
/// or fired a trigger, or a measured criterion failed for a finished day; ready when the
/// period is complete and the gate passes; continuing otherwise.
pub fn state(
    baseline_serves: bool,
    matrix: &[Row],
    day: u32,
    period_days: u32,
    gate_passes: bool,
    criteria: &[gate::Criterion],
) -> (State, String) {
    if baseline_serves {
        return (
            State::RolledBack,
            "the rollback baseline serves instead of the image under test".into(),
        );
    }
    let missed: Vec<String> = matrix
        .iter()
        .flat_map(|r| {
            r.cells
                .iter()
                .enumerate()
                .filter(|(_, c)| c.state == CellState::NotMet)
                .map(move |(i, c)| format!("{} on day {} ({})", r.name, i + 1, c.value))
        })
        .collect();
    if !missed.is_empty() {
        return (State::Blocked, missed.join("; "));
    }
    if day >= period_days && gate_passes {
        return (
            State::ReadyToPromote,
            "all promotion criteria are met".into(),
        );
    }
    if day >= period_days {
        let failing: Vec<&str> = criteria
            .iter()
            .filter(|c| !c.met)
            .map(|c| c.criterion.as_str())
            .collect();
        return (
            State::Blocked,
            format!(
                "the period is complete but the gate fails: {}",
                failing.join("; ")
            ),
        );
    }
    (
        State::Continuing,
        format!("day {day} of {period_days}: nothing blocks promotion so far"),
    )
}

/// Hourly points over the period for the week-long charts, each hour on its own samples.
fn hourly(days: &[(DayData, DayMetrics)], f: impl Fn(&Hour) -> Option<f64>) -> Vec<(i64, f64)> {
    days.iter()
        .flat_map(|(d, _)| d.digest.hours.iter())
        .filter_map(|h| Some((h.start_ms, f(h)?)))
        .collect()
}

fn week_charts(w: &Week, cfg: &Config) -> Vec<String> {
    let start = w
        .period_start
        .map(|s| s.timestamp_millis())
        .or_else(|| w.days.first().and_then(|(d, _)| d.digest.first_ms))
        .unwrap_or(0);
    let end = start + w.period_days.max(w.day) as i64 * 86_400_000;
    let t = &cfg.monitoring.targets;
    let threshold = |m: Metric| {
        cfg.monitoring
            .rollback_triggers
            .iter()
            .find(|r| r.metric == m)
            .map(|r| r.threshold)
    };
    let health = hourly(&w.days, |h| Some(h.healthy as f64 / h.n as f64 * 100.0));
    let errors = hourly(&w.days, |h| h.counters.error_rate_pct());
    let p95 = hourly(&w.days, |h| h.counters.quantile_ms(0.95));
    let p99 = hourly(&w.days, |h| h.counters.quantile_ms(0.99));
    let mem = hourly(&w.days, |h| h.memory_max_mib);
    let restarts = {
        let mut total = 0.0;
        let mut out = Vec::new();
        for (d, m) in &w.days {
            total += m.restarts.unwrap_or(0) as f64;
            if let Some(last) = d.digest.last_ms {
                out.push((last, total));
            }
        }
        out
    };
    let s = |name: &str, color: &'static str, points: Vec<(i64, f64)>| charts::TimeSeries {
        name: name.into(),
        color,
        points,
    };
    let mut error_lines = Vec::new();
    if let Some(y) = threshold(Metric::ErrorRatePct) {
        error_lines.push(Line {
            label: format!("rollback {y}%"),
            y,
            color: "#c62828",
        });
    }
    let mut mem_lines = Vec::new();
    if let Some(y) = threshold(Metric::MemoryMib) {
        mem_lines.push(Line {
            label: format!("rollback {y:.0} MiB"),
            y,
            color: "#c62828",
        });
    }
    vec![
        charts::week_chart(
            "Health check success rate (hourly)",
            "%",
            (start, end),
            &[s("health success %", "#2e7d32", health)],
            &[Line {
                label: format!("target {}%", t.health_check_success_rate_pct),
                y: t.health_check_success_rate_pct,
                color: "#2e7d32",
            }],
            None,
        ),
        charts::week_chart(
            "Error rate (hourly)",
            "%",
            (start, end),
            &[s("error rate %", "#c62828", errors)],
            &error_lines,
            None,
        ),
        charts::week_chart(
            "Latency from the service's histogram (hourly)",
            "ms",
            (start, end),
            &[s("P95", "#6a1b9a", p95), s("P99", "#00838f", p99)],
            &[
                Line {
                    label: format!("P95 target {:.0}ms", t.p95_latency.as_secs_f64() * 1000.0),
                    y: t.p95_latency.as_secs_f64() * 1000.0,
                    color: "#6a1b9a",
                },
                Line {
                    label: format!("P99 target {:.0}ms", t.p99_latency.as_secs_f64() * 1000.0),
                    y: t.p99_latency.as_secs_f64() * 1000.0,
                    color: "#00838f",
                },
            ],
            None,
        ),
        charts::week_chart(
            "Memory, hourly maximum (MiB, as docker stats shows)",
            "MiB",
            (start, end),
            &[s("memory", "#1565c0", mem)],
            &mem_lines,
            Some(&Band {
                label: format!("target {:.0}-{:.0}", t.memory_min_mib, t.memory_max_mib),
                lo: t.memory_min_mib,
                hi: t.memory_max_mib,
            }),
        ),
        charts::week_chart(
            "Container restarts (running total)",
            "restarts",
            (start, end),
            &[s("restarts", "#ef6c00", restarts)],
            &[],
            None,
        ),
    ]
}

/// The timeline as one lane of markers on the period's time axis.
fn timeline_svg(w: &Week) -> String {
    let Some(first) = w.timeline.first() else {
        return String::new();
    };
    let start = w
        .period_start
        .unwrap_or(first.at)
        .min(first.at)
        .timestamp_millis();
    let end = (start + w.period_days.max(w.day) as i64 * 86_400_000).max(
        w.timeline
            .last()
            .map(|e| e.at.timestamp_millis())
            .unwrap_or(start)
            + 1,
    );
    let (wd, h, l, r) = (960.0, 120.0, 20.0, 20.0);
    let x = |ts: i64| l + (ts - start) as f64 / (end - start) as f64 * (wd - l - r);
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg class="timeline" role="img" aria-labelledby="tl-title" viewBox="0 0 {wd} {h}" xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="11"><title id="tl-title">Timeline of the period: {} events</title><line x1="{l}" y1="60" x2="{}" y2="60" stroke="#444"/>"##,
        w.timeline.len(),
        wd - r
    );
    let mut day = start;
    let mut i = 1;
    while day <= end {
        let _ = write!(
            s,
            r##"<line x1="{x}" y1="52" x2="{x}" y2="68" stroke="#888"/><text x="{x}" y="86" text-anchor="middle">day {i}</text><text x="{x}" y="100" text-anchor="middle" fill="#555">{}</text>"##,
            DateTime::from_timestamp_millis(day)
                .map(|d| d.format("%b %d").to_string())
                .unwrap_or_default(),
            x = x(day)
        );
        day += 86_400_000;
        i += 1;
    }
    for e in &w.timeline {
        let (y, color) = match e.kind.as_str() {
            "rollback" => (30.0, "#c62828"),
            "trigger" => (38.0, "#ef6c00"),
            "blind" => (46.0, "#6d4c41"),
            "deploy" => (22.0, "#1565c0"),
            _ if e.bad => (46.0, "#c62828"),
            _ => (14.0, "#2e7d32"),
        };
        let _ = write!(
            s,
            r##"<circle cx="{:.1}" cy="{y}" r="4" fill="{color}"><title>{} {}</title></circle>"##,
            x(e.at.timestamp_millis()),
            e.at.format("%Y-%m-%d %H:%M"),
            esc(&e.text)
        );
    }
    s += "</svg>";
    s
}

const CSS: &str = r#"
:root{--ok:#1b5e20;--okbg:#e8f5e9;--bad:#b71c1c;--badbg:#ffebee;--none:#424242;--nonebg:#f5f5f5;--inc:#5d4037;--incbg:#fff8e1}
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1a1a1a;background:#fafafa;line-height:1.4}
header,main{max-width:1240px;margin:0 auto;padding:12px 20px}
header{display:flex;flex-wrap:wrap;gap:12px 24px;align-items:center;border-bottom:1px solid #ddd;background:#fff}
header h1{font-size:1.35rem;margin:0;flex:1 1 320px}
header dl{display:grid;grid-template-columns:auto 1fr;gap:2px 10px;margin:0;font-size:.9rem}
header dt{color:#555}header dd{margin:0;word-break:break-all}
.badge{display:inline-block;padding:6px 14px;border-radius:16px;font-weight:700;border:2px solid}
.badge.continuing{color:#0d47a1;background:#e3f2fd}.badge.blocked{color:var(--bad);background:var(--badbg)}
.badge.ready_to_promote{color:var(--ok);background:var(--okbg)}.badge.rolled_back{color:#e65100;background:#fff3e0}
section{background:#fff;border:1px solid #e0e0e0;border-radius:6px;margin:16px 0;padding:8px 16px 16px}
h2{font-size:1.1rem}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.88rem}
th,td{border:1px solid #e0e0e0;padding:4px 6px;text-align:left;vertical-align:top}
thead th{background:#f5f5f5}
#matrix th[scope=row]{min-width:10em;max-width:16em;overflow-wrap:anywhere}#matrix td:nth-child(2){font-size:.8rem;color:#444;max-width:13em;overflow-wrap:anywhere}
td.cell{min-width:5.5em}
.met{color:var(--ok);background:var(--okbg)}.not_met{color:var(--bad);background:var(--badbg);font-weight:700}
.no_data{color:var(--none);background:var(--nonebg)}.inconclusive{color:var(--inc);background:var(--incbg)}
.sym{font-weight:700;margin-right:4px}.sr{position:absolute;left:-9999px}
ol.events{padding-left:1.4em;font-size:.88rem}ol.events li.bad{color:var(--bad)}
.kind{display:inline-block;min-width:6.5em;font-weight:600}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(440px,1fr));gap:12px}
.charts svg,svg.timeline{width:100%;height:auto}
figure{margin:0}
.legend span{margin-right:14px}
footer{max-width:1240px;margin:0 auto;padding:8px 20px 24px;color:#666;font-size:.8rem}
#matrix th[scope=row]{position:sticky;left:0;background:#fff;z-index:1}
caption{position:absolute;left:-9999px}
@media (max-width:600px){.charts{grid-template-columns:1fr}header h1{font-size:1.1rem}th,td{padding:3px 4px}#matrix td:nth-child(2),#matrix thead th:nth-child(2){display:none}#matrix th[scope=row]{min-width:7em;max-width:9em;font-size:.8rem}}
@media print{body{background:#fff}section{border:none;break-inside:avoid}.scroll{overflow:visible}a{color:#000}}
"#;

/// The page: header with the badge, the matrix, the timeline, the charts, the criteria.
pub fn html(w: &Week, cfg: &Config) -> String {
    let mut b = String::new();
    let badge = format!(
        r#"<p class="badge {cls}" role="status" id="state"><span aria-hidden="true">{sym}</span> {words}</p>"#,
        cls = serde_json::to_value(w.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        sym = match w.state {
            State::ReadyToPromote => "✓",
            State::Blocked => "✗",
            State::RolledBack => "↶",
            State::Continuing => "…",
        },
        words = w.state.words()
    );
    let time = |t: Option<DateTime<Utc>>| match t {
        Some(t) => format!(
            r#"<time datetime="{}">{}</time>"#,
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            t.format("%Y-%m-%d %H:%M UTC")
        ),
        None => "no data".into(),
    };
    let _ = write!(
        b,
        r#"<header><h1>DHI staging validation: the week at a glance</h1>{badge}<dl><dt>Image under test</dt><dd id="image">{}</dd><dt>Digest</dt><dd>{}</dd><dt>Period start</dt><dd>{}</dd><dt>Day</dt><dd id="day">{} of {}</dd><dt>Why</dt><dd id="state-reason">{}</dd></dl></header><main>"#,
        esc(w.image.as_deref().unwrap_or("none deployed")),
        esc(w.digest.as_deref().unwrap_or("unknown")),
        time(w.period_start),
        w.day,
        w.period_days,
        esc(&w.state_reason)
    );

    // The matrix.
    b += r#"<section aria-labelledby="m-h"><h2 id="m-h">Targets and rollback triggers by day</h2><p class="legend">"#;
    for s in [
        CellState::Met,
        CellState::NotMet,
        CellState::NoData,
        CellState::Inconclusive,
    ] {
        let _ = write!(
            b,
            r#"<span class="{}"><span class="sym">{}</span>{}</span>"#,
            cell_class(s),
            s.symbol(),
            s.words()
        );
    }
    b += r#"</p><div class="scroll"><table id="matrix"><caption>The runbook's targets and rollback triggers by day: each cell says met, not met, no data or inconclusive, and the day's value</caption><thead><tr><th scope="col">Runbook item</th><th scope="col">Requirement</th>"#;
    let ndays = w.matrix.first().map(|r| r.cells.len()).unwrap_or(0);
    for i in 1..=ndays {
        let date = w
            .period_start
            .map(|s| {
                (s + chrono::Duration::days(i as i64 - 1))
                    .format(" %b %d")
                    .to_string()
            })
            .unwrap_or_default();
        let _ = write!(
            b,
            r#"<th scope="col">Day {i}<br><small>{date}</small></th>"#
        );
    }
    b += "</tr></thead><tbody>";
    let mut kind = "";
    for r in &w.matrix {
        if r.kind != kind {
            kind = r.kind;
            let _ = write!(
                b,
                r#"<tr><th colspan="{}" scope="rowgroup">{}</th></tr>"#,
                ndays + 2,
                if kind == "target" {
                    "Targets (the runbook's critical metrics)"
                } else {
                    "Rollback triggers"
                }
            );
        }
        let _ = write!(
            b,
            r#"<tr data-row="{}"><th scope="row" title="{}">{}</th><td>{}</td>"#,
            esc(&r.name),
            esc(&r.requirement),
            esc(&r.name.replace('_', " ")),
            esc(&r.requirement)
        );
        for (i, c) in r.cells.iter().enumerate() {
            let _ = write!(
                b,
                r#"<td class="cell {cls}" data-day="{}" data-state="{cls}"><span class="sym" aria-hidden="true">{}</span><span class="sr">{}: </span><span class="value">{}</span></td>"#,
                i + 1,
                c.state.symbol(),
                c.state.words(),
                esc(&c.value),
                cls = cell_class(c.state)
            );
        }
        b += "</tr>";
    }
    b += "</tbody></table></div></section>";

    // The timeline.
    b += r#"<section aria-labelledby="t-h"><h2 id="t-h">Timeline</h2>"#;
    b += &timeline_svg(w);
    b += r#"<ol class="events" id="timeline">"#;
    for e in &w.timeline {
        let _ = write!(
            b,
            r#"<li class="{}" data-kind="{}">{} <span class="kind">{}</span> {}{}</li>"#,
            if e.bad { "bad" } else { "ok" },
            esc(&e.kind),
            time(Some(e.at)),
            esc(&e.kind),
            esc(&e.text),
            e.link
                .as_deref()
                .map(|l| format!(r#" (<a href="{}">incident report</a>)"#, esc(l)))
                .unwrap_or_default()
        );
    }
    b += "</ol></section>";

    // Charts.
    b += r#"<section aria-labelledby="c-h"><h2 id="c-h">The week in charts</h2><div class="charts">"#;
    for svg in week_charts(w, cfg) {
        let _ = write!(b, "<figure>{svg}</figure>");
    }
    b += "</div></section>";

    // Promotion criteria.
    b += r#"<section aria-labelledby="g-h"><h2 id="g-h">Promotion criteria</h2><div class="scroll"><table id="criteria"><thead><tr><th scope="col">Group</th><th scope="col">Criterion</th><th scope="col">State</th><th scope="col">Evidence</th></tr></thead><tbody>"#;
    for c in &w.criteria {
        let s = if c.met {
            CellState::Met
        } else {
            CellState::NotMet
        };
        let _ = write!(
            b,
            r#"<tr><td>{}</td><th scope="row">{}</th><td class="cell {cls}" data-state="{cls}"><span class="sym" aria-hidden="true">{}</span>{}{}</td><td>{}</td></tr>"#,
            esc(c.group),
            esc(&c.criterion),
            s.symbol(),
            s.words(),
            if c.attested { " (attested)" } else { "" },
            esc(&c.evidence),
            cls = cell_class(s)
        );
    }
    b += "</tbody></table></div></section>";

    if !w.links.is_empty() {
        b += r#"<section aria-labelledby="l-h"><h2 id="l-h">Reports</h2><ul>"#;
        for (label, href) in &w.links {
            let _ = write!(b, r#"<li><a href="{}">{}</a></li>"#, esc(href), esc(label));
        }
        b += "</ul></section>";
    }
    let _ = write!(
        b,
        "</main><footer>Written by dhi-stage {} at {}; the page regenerates with every <code>dhi-stage report</code>.</footer>",
        env!("CARGO_PKG_VERSION"),
        time(Some(w.generated_at))
    );
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>DHI staging: day {} of {}, {}</title><style>{CSS}</style></head><body>{b}</body></html>\n",
        w.day,
        w.period_days,
        w.state.words()
    )
}

fn cell_class(s: CellState) -> &'static str {
    match s {
        CellState::Met => "met",
        CellState::NotMet => "not_met",
        CellState::NoData => "no_data",
        CellState::Inconclusive => "inconclusive",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(states: &[CellState]) -> Row {
        Row {
            kind: "target",
            name: "Error rate".into(),
            requirement: "< 0.01%".into(),
            cells: states
                .iter()
                .map(|s| Cell {
                    state: *s,
                    value: "v".into(),
                })
                .collect(),
        }
    }

    #[test]
    fn the_badge_in_order_of_precedence() {
        use CellState::*;
        let clean = [row(&[Met, Met, NoData])];
        let missed = [row(&[Met, NotMet, Met])];
        let unmet = gate::Criterion {
            group: "Testing",
            criterion: "E2E".into(),
            met: false,
            evidence: String::new(),
            attested: false,
        };
        assert_eq!(state(true, &missed, 3, 7, false, &[]).0, State::RolledBack);
        let (s, why) = state(false, &missed, 3, 7, false, &[]);
        assert_eq!(
            (s, why.as_str()),
            (State::Blocked, "Error rate on day 2 (v)")
        );
        assert_eq!(state(false, &clean, 3, 7, false, &[]).0, State::Continuing);
        assert_eq!(
            state(false, &clean, 7, 7, true, &[]).0,
            State::ReadyToPromote
        );
        let (s, why) = state(false, &clean, 7, 7, false, &[unmet]);
        assert_eq!(s, State::Blocked);
        assert!(why.ends_with("E2E"), "{why}");
    }

    #[test]
    fn escaping_covers_attributes_and_text() {
        assert_eq!(
            esc(r#"<a href="x" onclick='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
    }
}
