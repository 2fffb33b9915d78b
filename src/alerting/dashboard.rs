//! The Grafana dashboard: the runbook's metrics from the recorded series the alerts read (so
//! a panel and an alert never disagree), with the targets and triggers as threshold lines,
//! the memory band, restarts, the alert states, and the service's own request rate by `job`
//! (the dashboard's variable). The panels are data (`panels`); the JSON and the gate's
//! measurement read the same list.

use serde_json::{json, Value};

use super::Inputs;
use crate::config::Metric;

pub const FILE: &str = "dashboard.json";

/// One panel: its title, unit, queries (legend, PromQL) and threshold steps (value, colour).
pub struct Panel {
    pub title: String,
    pub unit: &'static str,
    pub queries: Vec<(String, String)>,
    pub thresholds: Vec<(f64, &'static str)>,
    /// Show thresholds as an area (the memory band) instead of lines.
    pub area: bool,
}

/// The trigger thresholds on `metrics`, red.
fn trigger_lines(i: &Inputs, metrics: &[Metric]) -> Vec<(f64, &'static str)> {
    let m = &i.cfg.monitoring;
    m.rollback_triggers
        .iter()
        .map(|r| (r, "orange"))
        .chain(m.immediate_triggers.iter().map(|r| (r, "red")))
        .filter(|(r, _)| metrics.contains(&r.metric))
        .map(|(r, c)| (r.threshold, c))
        .collect()
}

/// A runbook panel as data: title, unit, (legend, metric) series read from the recorded
/// series, the metrics whose triggers draw lines, whether thresholds shade an area.
struct Spec {
    title: &'static str,
    unit: &'static str,
    series: &'static [(&'static str, Metric)],
    lines: &'static [Metric],
    area: bool,
}

const RUNBOOK_PANELS: &[Spec] = &[
    Spec {
        title: "Health check success rate",
        unit: "percent",
        series: &[("success", Metric::HealthCheckSuccessRatePct)],
        lines: &[Metric::HealthCheckSuccessRatePct],
        area: false,
    },
    Spec {
        title: "Error rate (5xx)",
        unit: "percent",
        series: &[("error rate", Metric::ErrorRatePct)],
        lines: &[Metric::ErrorRatePct],
        area: false,
    },
    Spec {
        title: "Latency P95 / P99",
        unit: "ms",
        series: &[("P95", Metric::P95LatencyMs), ("P99", Metric::P99LatencyMs)],
        lines: &[Metric::P95LatencyMs, Metric::P99LatencyMs],
        area: false,
    },
    Spec {
        title: "Memory",
        unit: "mbytes",
        series: &[("memory", Metric::MemoryMib)],
        lines: &[Metric::MemoryMib],
        area: true,
    },
];

/// The runbook's targets drawn green (the memory band's top yellow) on a panel of `metric`.
fn targets(i: &Inputs, metric: Metric) -> Vec<(f64, &'static str)> {
    let t = &i.cfg.monitoring.targets;
    match metric {
        Metric::HealthCheckSuccessRatePct => vec![(t.health_check_success_rate_pct, "green")],
        Metric::ErrorRatePct => vec![(t.error_rate_pct, "green")],
        Metric::P95LatencyMs => vec![(t.p95_latency.as_secs_f64() * 1000.0, "green")],
        Metric::P99LatencyMs => vec![(t.p99_latency.as_secs_f64() * 1000.0, "green")],
        Metric::MemoryMib => vec![(t.memory_min_mib, "green"), (t.memory_max_mib, "yellow")],
        _ => Vec::new(),
    }
}

fn panel(
    title: &str,
    unit: &'static str,
    queries: Vec<(String, String)>,
    mut thresholds: Vec<(f64, &'static str)>,
    area: bool,
) -> Option<Panel> {
    thresholds.sort_by(|a, b| a.0.total_cmp(&b.0));
    (!queries.is_empty()).then(|| Panel {
        title: title.to_string(),
        unit,
        queries,
        thresholds,
        area,
    })
}

/// The panels, with `job` and `rate` standing for the dashboard's variable and rate interval
/// (`$job`, `$__rate_interval` in Grafana; concrete values when the gate measures). A panel
/// whose series nothing gives Prometheus is left out.
pub fn panels(i: &Inputs, job: &str, rate: &str) -> Vec<Panel> {
    let svc = format!("{{service=\"{}\"}}", i.service());
    let recorded = i.recorded();
    let rec = |m: Metric| {
        recorded
            .iter()
            .find(|r| r.metric == m)
            .map(|r| format!("{}{svc}", r.record))
    };
    let mut out: Vec<Panel> = RUNBOOK_PANELS
        .iter()
        .filter_map(|p| {
            let queries = p
                .series
                .iter()
                .filter_map(|(l, m)| Some((l.to_string(), rec(*m)?)))
                .collect();
            let mut th: Vec<_> = p.lines.iter().flat_map(|m| targets(i, *m)).collect();
            th.extend(trigger_lines(i, p.lines));
            panel(p.title, p.unit, queries, th, p.area)
        })
        .collect();
    let restarts = match &i.cfg.monitoring.prometheus.queries.restarts {
        q if !q.trim().is_empty() => Some(i.fill(q)),
        _ if !i.cfg.alerting.monitor_selector.trim().is_empty() => {
            Some(i.fill("max(dhi_stage_restarts_total{$monitor})"))
        }
        _ => None,
    };
    let restarts: Vec<_> = restarts
        .map(|q| ("restarts".to_string(), format!("increase(({q})[1h:])")))
        .into_iter()
        .collect();
    out.extend(panel(
        "Restarts (per hour)",
        "short",
        restarts,
        trigger_lines(i, &[Metric::RestartsInWindow]),
        false,
    ));
    let firing = format!(
        "sum by (alertname, severity) (ALERTS{{service=\"{}\",alertstate=\"firing\"}}) or on() vector(0)",
        i.service()
    );
    out.extend(panel(
        "Alerts firing",
        "short",
        vec![("{{alertname}} {{severity}}".into(), firing)],
        Vec::new(),
        false,
    ));
    // The service's own series, by the dashboard's job variable.
    let c = i.convention;
    if let Some(counter) = c
        .counter
        .clone()
        .or_else(|| c.latency.first().map(|(h, _)| format!("{h}_count")))
    {
        let q = format!("sum by (job) (rate({counter}{{job=~\"{job}\"}}[{rate}]))");
        out.extend(panel(
            "Requests per second by job",
            "reqps",
            vec![("{{job}}".into(), q)],
            Vec::new(),
            false,
        ));
    }
    out
}

/// The job the configured selector names (`job="x"`), for the variable's default.
pub fn configured_job(i: &Inputs) -> Option<String> {
    let sel = &i.cfg.monitoring.prometheus.selector;
    let rest = sel.split("job=\"").nth(1)?;
    Some(rest.split('"').next()?.to_string())
}

fn panel_json(id: usize, p: &Panel) -> Value {
    let steps: Vec<Value> = std::iter::once(json!({"color": "transparent", "value": null}))
        .chain(
            p.thresholds
                .iter()
                .map(|(v, c)| json!({"color": c, "value": v})),
        )
        .collect();
    json!({
        "id": id,
        "type": "timeseries",
        "title": p.title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": (id - 1) % 2 * 12, "y": (id - 1) / 2 * 8},
        "fieldConfig": {
            "defaults": {
                "unit": p.unit,
                "custom": {"thresholdsStyle": {"mode": if p.area { "line+area" } else { "dashed" }}},
                "thresholds": {"mode": "absolute", "steps": steps}
            },
            "overrides": []
        },
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": p.queries.iter().enumerate().map(|(n, (legend, expr))| json!({
            "refId": char::from(b'A' + n as u8).to_string(),
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "expr": expr,
            "legendFormat": legend
        })).collect::<Vec<_>>()
    })
}

/// The dashboard, importable as is (Grafana's schema 39).
pub fn file(i: &Inputs) -> String {
    let panels: Vec<Value> = panels(i, "$job", "$__rate_interval")
        .iter()
        .enumerate()
        .map(|(n, p)| panel_json(n + 1, p))
        .collect();
    let job = configured_job(i).unwrap_or_default();
    let d = json!({
        "title": format!("DHI staging: {}", i.service()),
        "uid": format!("dhi-stage-{}", i.service().chars().filter(char::is_ascii_alphanumeric).take(30).collect::<String>()),
        "description": "Written by `dhi-stage alerts` from the runbook's targets and rollback triggers.",
        "tags": ["dhi-stage", "runbook"],
        "schemaVersion": 39,
        "version": 1,
        "editable": true,
        "time": {"from": "now-7d", "to": "now"},
        "refresh": "1m",
        "timezone": "utc",
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"},
            {
                "name": "job", "type": "query", "label": "job",
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "query": {"query": "label_values(up, job)", "refId": "job"},
                "definition": "label_values(up, job)",
                "current": {"text": job, "value": job},
                "includeAll": false, "multi": false, "refresh": 1
            }
        ]},
        "annotations": {"list": []},
        "panels": panels
    });
    // A `Value` of strings, numbers and maps always serializes (no non-string keys, no NaN).
    serde_json::to_string_pretty(&d).expect("a dashboard serializes") + "\n"
}
