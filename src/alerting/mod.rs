//! The runbook's rollback triggers as Prometheus alerting, an Alertmanager route and a Grafana
//! dashboard, written from the same configuration the monitor judges (`dhi-stage alerts`), and
//! measured by the gate through Prometheus' and Alertmanager's own answers.
//!
//! One table says where each metric comes from in Prometheus: a recording rule over the
//! service's own series (the metric convention's PromQL, as the monitor's Prometheus source
//! asks it), or the series `monitor --listen` exposes for what PromQL cannot see (CVEs, a blind
//! or dead monitor, and memory and restarts unless cAdvisor/kube-state-metrics series are
//! configured). Alerts, their unit tests and the dashboard's panels read that one table.

pub mod alertmanager;
pub mod check;
pub mod dashboard;
pub mod rules;

use std::time::Duration;

use crate::config::{Comparison, Config, Metric, TriggerRule};
use crate::monitor::promql::templates;
pub use crate::monitor::rules::Severity;
use crate::probe::conventions::Convention;

/// A metric as the alerts read it: a recorded series (its name, and the expression recording
/// it), or None when nothing configured gives it to Prometheus.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub metric: Metric,
    /// The recording rule's name (`dhi_stage:error_rate_pct`).
    pub record: &'static str,
    pub expr: String,
    /// Where the expression comes from, for the README and `alerts`' output.
    pub from: String,
}

/// The recorded series, in the order the rules file lists them.
const RECORDED: &[(Metric, &str)] = &[
    (Metric::ErrorRatePct, "dhi_stage:error_rate_pct"),
    (Metric::P95LatencyMs, "dhi_stage:latency_p95_ms"),
    (Metric::P99LatencyMs, "dhi_stage:latency_p99_ms"),
    (
        Metric::HealthCheckSuccessRatePct,
        "dhi_stage:health_success_pct",
    ),
    (Metric::MemoryMib, "dhi_stage:memory_mib"),
];

/// What the generator needs besides the configuration: the service's metric convention.
pub struct Inputs<'a> {
    pub cfg: &'a Config,
    pub convention: &'a Convention,
}

impl Inputs<'_> {
    /// The service's name on every alert and recorded series.
    pub fn service(&self) -> &str {
        &self.cfg.container.name
    }

    /// `$selector`, `$rate`, `$monitor` filled in.
    pub fn fill(&self, template: &str) -> String {
        let p = &self.cfg.monitoring.prometheus;
        template
            .replace("$selector", &p.selector)
            .replace("$rate", &duration(p.rate_window))
            .replace("$monitor", &self.monitor_selector())
    }

    /// The monitor's series for this service (empty when `monitor_selector` is).
    pub fn monitor_selector(&self) -> String {
        format!(
            "{},service=\"{}\"",
            self.cfg.alerting.monitor_selector,
            self.service()
        )
    }

    fn monitor_series(&self) -> bool {
        !self.cfg.alerting.monitor_selector.trim().is_empty()
    }

    /// The expression recording `metric`, and where it comes from; None when nothing gives it.
    fn source(&self, metric: Metric) -> Option<(String, String)> {
        let q = &self.cfg.monitoring.prometheus.queries;
        let configured = |t: &str, key: &str| {
            (!t.trim().is_empty()).then(|| {
                (
                    t.to_string(),
                    format!("[monitoring.prometheus.queries] {key}"),
                )
            })
        };
        let from_convention = || {
            templates::of(self.convention, metric, &self.exclude())
                .map(|t| (t, format!("the {} convention", self.convention.name)))
        };
        let (template, from) = match metric {
            Metric::ErrorRatePct => {
                configured(&q.error_rate_pct, "error_rate_pct").or_else(from_convention)?
            }
            Metric::P95LatencyMs => {
                configured(&q.p95_latency_ms, "p95_latency_ms").or_else(from_convention)?
            }
            Metric::P99LatencyMs => {
                configured(&q.p99_latency_ms, "p99_latency_ms").or_else(from_convention)?
            }
            Metric::HealthCheckSuccessRatePct => {
                (!self.cfg.alerting.health_success_pct.trim().is_empty()).then(|| {
                    (
                        self.cfg.alerting.health_success_pct.clone(),
                        "[alerting] health_success_pct".to_string(),
                    )
                })?
            }
            Metric::MemoryMib => configured(&q.memory_mib, "memory_mib").or_else(|| {
                self.monitor_series().then(|| {
                    (
                        "max(dhi_stage_memory_mib{$monitor})".to_string(),
                        "monitor --listen".to_string(),
                    )
                })
            })?,
            _ => return None,
        };
        Some((self.fill(&template), from))
    }

    /// The monitor's own requests, left out where a route label allows (as the monitor does).
    fn exclude(&self) -> Vec<String> {
        crate::probe::reading::Reader::from_config(self.cfg)
            .map(|r| r.exclude)
            .unwrap_or_default()
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        RECORDED
            .iter()
            .filter_map(|(metric, record)| {
                let (expr, from) = self.source(*metric)?;
                Some(Recorded {
                    metric: *metric,
                    record,
                    expr,
                    from,
                })
            })
            .collect()
    }
}

/// What `alerts --out DIR` wrote.
#[derive(Debug, serde::Serialize)]
pub struct Written {
    pub files: Vec<String>,
    pub alerts: Vec<serde_json::Value>,
    pub recorded: Vec<serde_json::Value>,
    pub left_out: Vec<LeftOut>,
    pub convention: String,
}

/// Writes the rule file, its promtool tests, the Alertmanager configuration (owner-only: it
/// holds the webhook URLs) and the dashboard into `dir`.
pub fn write(i: &Inputs, dir: &std::path::Path) -> anyhow::Result<Written> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let recorded = i.recorded();
    let (alerts, left_out) = alerts(i);
    let files = [
        (rules::FILE, rules::file(i, &recorded, &alerts), 0o644),
        (rules::TEST_FILE, rules::tests(i, &alerts), 0o644),
        (alertmanager::FILE, alertmanager::file(i), 0o600),
        (dashboard::FILE, dashboard::file(i), 0o644),
    ];
    let mut written = Vec::new();
    for (name, text, mode) in files {
        let p = dir.join(name);
        crate::files::write_atomic_mode(&p, &text, mode)?;
        written.push(p.display().to_string());
    }
    Ok(Written {
        files: written,
        alerts: alerts
            .iter()
            .map(|a| {
                serde_json::json!({"alert": a.name, "trigger": a.trigger, "severity": a.severity.as_str(),
                    "for": (!a.hold.is_zero()).then(|| duration(a.hold)), "expr": a.expr})
            })
            .collect(),
        recorded: recorded
            .iter()
            .map(|r| serde_json::json!({"record": r.record, "from": r.from, "expr": r.expr}))
            .collect(),
        left_out,
        convention: i.convention.name.clone(),
    })
}

/// The convention the alerts are written for: `--convention`, else the configuration's
/// pinned one, else the one the monitor last found in a scrape, else the runbook's.
pub fn convention_for(
    cfg: &Config,
    flag: Option<&str>,
    found: Option<&str>,
) -> Result<(Convention, String), String> {
    use crate::probe::conventions::{names, preset_named};
    let named = |n: &str, how: String| {
        preset_named(n)
            .cloned()
            .map(|c| (c, how))
            .ok_or_else(|| format!("--convention {n:?} is not one of: {}", names().join(", ")))
    };
    if let Some(n) = flag {
        return named(n, "--convention".into());
    }
    let reader = crate::probe::reading::Reader::from_config(cfg)?;
    if let crate::probe::reading::Choice::Pinned(c) = reader.choice {
        return Ok((c, "[monitoring.metrics] convention".into()));
    }
    match found.and_then(preset_named) {
        Some(c) => Ok((c.clone(), "the monitor's latest scrape".into())),
        None => named(
            "runbook",
            "the runbook's (no scrape read yet; pass --convention)".into(),
        ),
    }
}

/// `alerts`' outcome: the files, and the drill when one ran.
#[derive(Debug, serde::Serialize)]
pub struct Done {
    pub ok: bool,
    #[serde(flatten)]
    pub written: Written,
    pub convention_from: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drill: Option<check::Drilled>,
}

impl crate::output::Render for Done {
    fn code(&self) -> crate::exit::Code {
        crate::exit::Code::of_check(self.ok)
    }

    fn text(&self) -> String {
        let w = &self.written;
        let mut s = format!(
            "alerting for {} trigger alerts ({} convention, from {}):\n",
            w.alerts.len(),
            w.convention,
            self.convention_from
        );
        for f in &w.files {
            s += &format!("  wrote {f}\n");
        }
        for l in &w.left_out {
            s += &format!("  NO ALERT for {} ({}): {}\n", l.trigger, l.severity, l.why);
        }
        if let Some(d) = &self.drill {
            s += &format!(
                "  alert drill: {} ({})\n",
                if d.delivered {
                    "delivered"
                } else {
                    "NOT delivered"
                },
                d.detail
            );
        }
        s += "  check them: promtool check rules, promtool test rules, amtool check-config (README: Alerting and dashboards)";
        s
    }
}

/// One alerting rule: a rollback trigger (or the monitor's own health) as PromQL.
#[derive(Debug, Clone)]
pub struct Alert {
    /// `DhiStageErrorRate`: one name per trigger, both severities under it.
    pub name: String,
    pub trigger: String,
    pub severity: Severity,
    pub expr: String,
    /// `for:` (zero: the window is inside the expression, or the trigger has none).
    pub hold: Duration,
    pub summary: String,
    pub description: String,
    /// The rule it stands for (None: the monitor's own alerts).
    pub rule: Option<TriggerRule>,
}

/// A trigger no alert could be written for, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LeftOut {
    pub trigger: String,
    pub severity: &'static str,
    pub why: String,
}

/// `error_rate` -> `DhiStageErrorRate`.
pub fn alert_name(trigger: &str) -> String {
    let mut s = String::from("DhiStage");
    for part in trigger.split(|c: char| !c.is_ascii_alphanumeric()) {
        let mut c = part.chars();
        if let Some(f) = c.next() {
            s.extend(f.to_uppercase());
            s.push_str(c.as_str());
        }
    }
    s
}

/// A duration as PromQL and the rule files write it (`90s`, `5m`, `1h`).
pub fn duration(d: Duration) -> String {
    let s = d.as_secs().max(1);
    match s {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn op(o: Comparison) -> &'static str {
    match o {
        Comparison::Gt => ">",
        Comparison::Lt => "<",
    }
}

/// The expression of a trigger, and whether its window is inside it (no `for:`), or why none.
fn trigger_expr(
    i: &Inputs,
    rule: &TriggerRule,
    recorded: &[Recorded],
) -> Result<(String, bool), String> {
    let svc = format!("{{service=\"{}\"}}", i.service());
    let rec = |m: Metric| {
        recorded
            .iter()
            .find(|r| r.metric == m)
            .map(|r| format!("{}{svc}", r.record))
    };
    let th = rule.threshold;
    let o = op(rule.op);
    let w = duration(rule.sustained_for);
    let missing = |what: &str| Err(format!("Prometheus has no {what}: {}", hint(rule.metric)));
    Ok(match rule.metric {
        Metric::ErrorRatePct
        | Metric::P95LatencyMs
        | Metric::P99LatencyMs
        | Metric::MemoryMib
        | Metric::HealthCheckSuccessRatePct => match rec(rule.metric) {
            Some(s) => (format!("{s} {o} {th}"), false),
            None => return missing(crate::monitor::rules::label(rule.metric)),
        },
        Metric::HealthCheckFailureRatePct => match rec(Metric::HealthCheckSuccessRatePct) {
            Some(s) => (format!("(100 - {s}) {o} {th}"), false),
            None => return missing("health series"),
        },
        Metric::MemoryGrowth => match rec(Metric::MemoryMib) {
            // The slope over the window in MiB a minute, as the monitor judges it: only over a
            // window the series covers (a fresh container's warm-up is not a leak) and a rise
            // of at least 1 MiB across it.
            Some(s) => {
                let points = rule.sustained_for.as_secs_f64()
                    / i.cfg.alerting.evaluation_interval.as_secs_f64().max(1.0);
                (
                    format!(
                        "deriv({s}[{w}]) * 60 {o} {th} and (max_over_time({s}[{w}]) - min_over_time({s}[{w}])) >= 1 and count_over_time({s}[{w}]) >= {:.0}",
                        (points * 0.9).floor().max(2.0)
                    ),
                    true,
                )
            }
            None => return missing("memory series"),
        },
        Metric::RestartsInWindow => {
            let q = &i.cfg.monitoring.prometheus.queries.restarts;
            let count = if !q.trim().is_empty() {
                i.fill(q)
            } else if i.monitor_series() {
                i.fill("max(dhi_stage_restarts_total{$monitor})")
            } else {
                return missing("restart count");
            };
            (format!("increase(({count})[{w}:]) {o} {th}"), true)
        }
        Metric::CriticalCves => {
            if !i.monitor_series() {
                return missing("CVE count");
            }
            (
                i.fill(&format!(
                    "max(dhi_stage_critical_cves{{$monitor}}) {o} {th}"
                )),
                true,
            )
        }
    })
}

/// What to configure so Prometheus has a metric.
fn hint(m: Metric) -> &'static str {
    match m {
        Metric::MemoryMib | Metric::MemoryGrowth => {
            "set [monitoring.prometheus.queries] memory_mib (cAdvisor) or [alerting] monitor_selector"
        }
        Metric::RestartsInWindow => {
            "set [monitoring.prometheus.queries] restarts (kube-state-metrics) or [alerting] monitor_selector"
        }
        Metric::CriticalCves => "set [alerting] monitor_selector and scrape `monitor --listen`",
        Metric::HealthCheckSuccessRatePct | Metric::HealthCheckFailureRatePct => {
            "set [alerting] health_success_pct"
        }
        _ => "the metric convention has no series for it; set its [monitoring.prometheus.queries] template",
    }
}

/// Every trigger of both lists as an alert, plus the monitor's own (blind, dead); the
/// triggers left out say why.
pub fn alerts(i: &Inputs) -> (Vec<Alert>, Vec<LeftOut>) {
    let recorded = i.recorded();
    let m = &i.cfg.monitoring;
    let (mut out, mut left) = (Vec::new(), Vec::new());
    let all = m
        .rollback_triggers
        .iter()
        .map(|r| (r, Severity::Rollback))
        .chain(
            m.immediate_triggers
                .iter()
                .map(|r| (r, Severity::Immediate)),
        );
    for (rule, severity) in all {
        match trigger_expr(i, rule, &recorded) {
            Ok((expr, inside)) => {
                let words = crate::monitor::rules::describe(rule);
                out.push(Alert {
                    name: alert_name(&rule.name),
                    trigger: rule.name.clone(),
                    severity,
                    expr,
                    hold: if inside {
                        Duration::ZERO
                    } else {
                        rule.sustained_for
                    },
                    summary: format!(
                        "{}: rollback trigger {} ({}) fired",
                        i.service(),
                        rule.name,
                        severity.as_str()
                    ),
                    description: format!(
                        "{words} on {}. The runbook: {} (dhi-stage rollback --reason \"{}\").",
                        i.service(),
                        match severity {
                            Severity::Immediate => "roll back immediately",
                            Severity::Rollback => "roll back to the baseline",
                        },
                        rule.name
                    ),
                    rule: Some(rule.clone()),
                });
            }
            Err(why) => left.push(LeftOut {
                trigger: rule.name.clone(),
                severity: severity.as_str(),
                why,
            }),
        }
    }
    if i.monitor_series() {
        out.extend(monitor_alerts(i));
    }
    (out, left)
}

/// The monitor's own health: blind (a rule without a verdict past its margin), or dead (no
/// sample for three intervals, or its series gone).
fn monitor_alerts(i: &Inputs) -> Vec<Alert> {
    let late = (i.cfg.monitoring.interval * 3).max(Duration::from_secs(60));
    let sel = i.monitor_selector();
    vec![
        Alert {
            name: "DhiStageMonitorBlind".into(),
            trigger: "monitor_blind".into(),
            severity: Severity::Immediate,
            expr: format!("max(dhi_stage_blind_rules{{{sel}}}) > 0"),
            hold: Duration::ZERO,
            summary: format!("{}: the dhi-stage monitor is blind", i.service()),
            description: "A rollback trigger has had no verdict for longer than its window plus the margin: the monitor cannot see what it watches (dhi-stage status; the monitor's log says why).".into(),
            rule: None,
        },
        Alert {
            name: "DhiStageMonitorDown".into(),
            trigger: "monitor_down".into(),
            severity: Severity::Immediate,
            expr: format!(
                "(time() - max(dhi_stage_last_sample_timestamp_seconds{{{sel}}}) > {}) or absent(dhi_stage_last_sample_timestamp_seconds{{{sel}}})",
                late.as_secs()
            ),
            // Held as long: a Prometheus that has not scraped the monitor yet is not a death.
            hold: late,
            summary: format!("{}: the dhi-stage monitor is not sampling", i.service()),
            description: format!(
                "No sample for {} or more, or its series are gone: nothing judges the rollback triggers (is `dhi-stage monitor` running?).",
                duration(late)
            ),
            rule: None,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_durations_read_as_prometheus_writes_them() {
        assert_eq!(alert_name("error_rate"), "DhiStageErrorRate");
        assert_eq!(
            alert_name("memory_continuous_growth"),
            "DhiStageMemoryContinuousGrowth"
        );
        assert_eq!(duration(Duration::from_secs(300)), "5m");
        assert_eq!(duration(Duration::from_secs(3600)), "1h");
        assert_eq!(duration(Duration::from_secs(90)), "90s");
        assert_eq!(duration(Duration::ZERO), "1s");
    }

    #[test]
    fn every_runbook_trigger_has_an_alert_with_the_configuration() {
        let cfg = crate::config::parse(crate::config::DEFAULT_TOML, "t").unwrap();
        let c = crate::probe::conventions::preset_named("runbook").unwrap();
        let (all, left) = alerts(&Inputs {
            cfg: &cfg,
            convention: c,
        });
        assert!(left.is_empty(), "{left:?}");
        let n = cfg.monitoring.rollback_triggers.len() + cfg.monitoring.immediate_triggers.len();
        assert_eq!(all.len(), n + 2, "every trigger, and the monitor's own two");
        let err = all
            .iter()
            .find(|a| a.trigger == "error_rate" && a.severity == Severity::Rollback)
            .unwrap();
        assert_eq!(
            err.expr,
            r#"dhi_stage:error_rate_pct{service="auth-service-staging"} > 2"#
        );
        assert_eq!(err.hold, Duration::from_secs(300));
        let growth = all
            .iter()
            .find(|a| a.trigger == "memory_continuous_growth")
            .unwrap();
        assert!(growth.expr.starts_with("deriv(dhi_stage:memory_mib{") && growth.hold.is_zero());
        // Without the monitor's series, what only it sees is left out, and says why.
        let mut bare = cfg.clone();
        bare.alerting.monitor_selector = String::new();
        let (_, left) = alerts(&Inputs {
            cfg: &bare,
            convention: c,
        });
        let names: Vec<&str> = left.iter().map(|l| l.trigger.as_str()).collect();
        assert!(
            names.contains(&"critical_cve") && names.contains(&"memory"),
            "{names:?}"
        );
        assert!(left.iter().all(|l| l.why.contains("set [")), "{left:?}");
    }
}
