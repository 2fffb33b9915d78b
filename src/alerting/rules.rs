//! The Prometheus rule file (recording rules, then one alert per rollback trigger, in one
//! group so an alert reads what was recorded in the same evaluation) and its `promtool test
//! rules` cases: for every trigger, a breach just longer than its window fires it, just
//! shorter does not, and a breach of another metric does not.
//!
//! YAML is written by hand, every scalar as a double-quoted string (JSON's quoting is YAML's),
//! so no text from the configuration can change the document's structure.

use std::fmt::Write as _;
use std::time::Duration;

use super::{duration, Alert, Inputs, Recorded};
use crate::config::{Comparison, Metric};

/// A YAML (and JSON) double-quoted scalar.
pub fn q(s: &str) -> String {
    // A string always serializes: JSON escapes are valid YAML double-quoted scalars.
    serde_json::to_string(s).expect("a string serializes")
}

pub const FILE: &str = "dhi-stage.rules.yml";
pub const TEST_FILE: &str = "dhi-stage.rules.test.yml";

/// The labels every alert carries: what Alertmanager routes and inhibits on.
pub fn labels(i: &Inputs, a: &Alert) -> Vec<(&'static str, String)> {
    vec![
        ("severity", a.severity.as_str().to_string()),
        ("service", i.service().to_string()),
        ("trigger", a.trigger.clone()),
    ]
}

pub fn annotations(i: &Inputs, a: &Alert) -> Vec<(&'static str, String)> {
    vec![
        ("summary", a.summary.clone()),
        ("description", a.description.clone()),
        ("runbook_url", i.cfg.alerting.runbook_url.clone()),
    ]
}

fn map(s: &mut String, indent: &str, key: &str, kv: &[(&'static str, String)]) {
    let _ = writeln!(s, "{indent}{key}:");
    pairs(s, &format!("{indent}  "), kv);
}

/// The rule file.
pub fn file(i: &Inputs, recorded: &[Recorded], alerts: &[Alert]) -> String {
    let mut s = format!(
        "# Written by `dhi-stage alerts` from the configuration's rollback triggers; write it again\n# after changing them (the monitor judges the same thresholds and windows).\ngroups:\n  - name: {}\n    interval: {}\n    rules:\n",
        q("dhi-stage"),
        duration(i.cfg.alerting.evaluation_interval)
    );
    for r in recorded {
        let _ = writeln!(
            s,
            "      # {} from {}\n      - record: {}\n        expr: {}",
            crate::monitor::rules::label(r.metric),
            r.from,
            q(r.record),
            q(&r.expr)
        );
        map(
            &mut s,
            "        ",
            "labels",
            &[("service", i.service().to_string())],
        );
    }
    for a in alerts {
        let _ = writeln!(
            s,
            "      - alert: {}\n        expr: {}",
            q(&a.name),
            q(&a.expr)
        );
        if !a.hold.is_zero() {
            let _ = writeln!(s, "        for: {}", duration(a.hold));
        }
        map(&mut s, "        ", "labels", &labels(i, a));
        map(&mut s, "        ", "annotations", &annotations(i, a));
    }
    s
}

/// What a test feeds in: one series, and how it moves per evaluation interval.
struct Input {
    series: String,
    /// `start+stepxN` in promtool's notation, or a constant.
    start: f64,
    step: f64,
}

/// The input that breaches `a`, or None when its series is not one a test can write (a
/// configured template over series only the user knows).
fn breaching(i: &Inputs, a: &Alert, every: Duration) -> Option<Input> {
    let rule = a.rule.as_ref()?;
    let svc = format!("{{service={}}}", q(i.service()));
    let recorded = |m: Metric| {
        super::RECORDED
            .iter()
            .find(|(x, _)| *x == m)
            .map(|(_, name)| format!("{name}{svc}"))
    };
    let past = |th: f64| match rule.op {
        Comparison::Gt => th + th.abs().max(1.0),
        Comparison::Lt => th - th.abs().max(1.0) / 2.0,
    };
    let monitor = || {
        let sel = i.monitor_selector();
        // Only plain `label="value"` matchers can name an input series.
        (!sel.contains("=~") && !sel.contains("!=")).then_some(sel)
    };
    let per_min = every.as_secs_f64() / 60.0;
    Some(match rule.metric {
        Metric::HealthCheckFailureRatePct => Input {
            series: recorded(Metric::HealthCheckSuccessRatePct)?,
            start: 100.0 - past(rule.threshold),
            step: 0.0,
        },
        Metric::MemoryGrowth => Input {
            series: recorded(Metric::MemoryMib)?,
            start: 50.0,
            step: 2.0 * rule.threshold.max(0.05) * per_min,
        },
        Metric::RestartsInWindow
            if i.cfg
                .monitoring
                .prometheus
                .queries
                .restarts
                .trim()
                .is_empty() =>
        {
            Input {
                series: format!("dhi_stage_restarts_total{{{}}}", monitor()?),
                start: 0.0,
                step: 1.0,
            }
        }
        Metric::CriticalCves => Input {
            series: format!("dhi_stage_critical_cves{{{}}}", monitor()?),
            start: past(rule.threshold).ceil(),
            step: 0.0,
        },
        Metric::RestartsInWindow => return None,
        m => Input {
            series: recorded(m)?,
            start: past(rule.threshold),
            step: 0.0,
        },
    })
}

/// Whether `a` fires at `t` after the input began (the same evaluation Prometheus makes, for
/// the input shapes `breaching` writes).
fn fires(a: &Alert, input: &Input, own: &Input, t: Duration, every: Duration) -> bool {
    let Some(rule) = &a.rule else { return false };
    if input.series != own.series {
        return false;
    }
    let value = match rule.metric {
        Metric::HealthCheckFailureRatePct => 100.0 - input.start,
        Metric::MemoryGrowth => input.step / (every.as_secs_f64() / 60.0),
        Metric::RestartsInWindow => {
            // Every interval adds one: the window holds window/interval of them.
            let w = rule.sustained_for.min(t).as_secs_f64();
            input.step * (w / every.as_secs_f64()).floor()
        }
        _ => input.start,
    };
    let breaches = match rule.op {
        Comparison::Gt => value > rule.threshold,
        Comparison::Lt => value < rule.threshold,
    };
    breaches && t >= a.hold
}

/// The `promtool test rules` file for `file`'s alerts.
pub fn tests(i: &Inputs, alerts: &[Alert]) -> String {
    let every = i
        .cfg
        .alerting
        .evaluation_interval
        .max(Duration::from_secs(1));
    let mut s = format!(
        "# Written by `dhi-stage alerts`: promtool test rules {TEST_FILE}\nrule_files:\n  - {}\nevaluation_interval: {}\ntests:\n",
        q(FILE),
        duration(every)
    );
    let testable: Vec<(&Alert, Input)> = alerts
        .iter()
        .filter_map(|a| Some((a, breaching(i, a, every)?)))
        .collect();
    for (n, (a, input)) in testable.iter().enumerate() {
        for (name, inp, at) in cases(&testable, n, a, input, every) {
            let expected: Vec<&Alert> = alerts
                .iter()
                .filter(|x| x.name == a.name)
                .filter(|x| {
                    breaching(i, x, every).is_some_and(|own| fires(x, inp, &own, at, every))
                })
                .collect();
            write_case(&mut s, i, (&name, a), inp, at, every, &expected);
        }
    }
    s
}

/// The cases of `a`: breached just longer than its window (fires), just shorter (does not,
/// when the window allows one), and another metric breached (does not).
fn cases<'a>(
    testable: &'a [(&Alert, Input)],
    n: usize,
    a: &Alert,
    input: &'a Input,
    every: Duration,
) -> Vec<(String, &'a Input, Duration)> {
    // Window-in-expression alerts are judged once the window is full of breach.
    let window = a.rule.as_ref().map(|r| r.sustained_for).unwrap_or_default();
    let longer = if a.hold.is_zero() { window } else { a.hold } + every;
    let mut out = vec![(
        format!("{} breached just longer than its window fires", a.trigger),
        input,
        longer,
    )];
    if a.hold >= every * 2 {
        let name = format!(
            "{} breached just shorter than its window does not fire",
            a.trigger
        );
        out.push((name, input, a.hold - every));
    }
    let other = testable
        .iter()
        .cycle()
        .skip(n + 1)
        .take(testable.len())
        .find(|(b, bi)| b.name != a.name && bi.series != input.series);
    if let Some((b, bi)) = other {
        out.push((
            format!("{} does not fire on a breach of {}", a.trigger, b.trigger),
            bi,
            longer,
        ));
    }
    out
}

fn write_case(
    s: &mut String,
    i: &Inputs,
    (name, a): (&str, &Alert),
    inp: &Input,
    at: Duration,
    every: Duration,
    expected: &[&Alert],
) {
    let steps = at.as_secs() / every.as_secs() + 2;
    let values = match inp.step == 0.0 {
        true => format!("{}x{steps}", num(inp.start)),
        false => format!("{}+{}x{steps}", num(inp.start), num(inp.step)),
    };
    let _ = write!(
        s,
        "  - name: {}\n    interval: {}\n    input_series:\n      - series: {}\n        values: {}\n    alert_rule_test:\n      - eval_time: {}\n        alertname: {}\n",
        q(&format!("{name} ({})", a.severity.as_str())),
        duration(every),
        q(&inp.series),
        q(&values),
        duration(at),
        q(&a.name)
    );
    if expected.is_empty() {
        *s += "        exp_alerts: []\n";
        return;
    }
    *s += "        exp_alerts:\n";
    for x in expected {
        *s += "          - exp_labels:\n";
        pairs(s, "              ", &labels(i, x));
        *s += "            exp_annotations:\n";
        pairs(s, "              ", &annotations(i, x));
    }
}

fn pairs(s: &mut String, indent: &str, kv: &[(&'static str, String)]) {
    for (k, v) in kv {
        let _ = writeln!(s, "{indent}{k}: {}", q(v));
    }
}

/// A number as promtool's series notation writes it (no exponent).
fn num(v: f64) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".into()
    } else {
        s.to_string()
    }
}
