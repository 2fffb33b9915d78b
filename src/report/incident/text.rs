//! The incident report in words: every section is a function of the gathered `Incident`,
//! and nothing in it is a serialized object (a reader gets sentences, tables and a chart).

use crate::config::{Config, Metric};
use crate::monitor::digest::DayDigest;
use crate::monitor::rules;
use crate::store::events::{Delivery, IncidentDetail};

use super::{hms, severities, value, Incident};

pub fn markdown(inc: &Incident, cfg: &Config, chart_file: Option<&str>) -> String {
    let mut s = header(&inc.record);
    s += &summary(inc);
    s += &metrics_table(inc, cfg);
    s += &trigger_section(inc, chart_file);
    s += &timeline(inc);
    s += &logs(&inc.record);
    s += &checklist(&inc.record);
    s
}

fn header(r: &IncidentDetail) -> String {
    let mut s = format!(
        "# Incident: rollback of {} at {}\n\n",
        r.service,
        super::at(r.decided_at_ms).format("%Y-%m-%d %H:%M:%S UTC")
    );
    let kind = if r.automatic {
        "automatic rollback (monitor --auto-rollback)"
    } else {
        "manual rollback"
    };
    let outcome = if r.restored {
        format!(
            "service restored {:.2} s after the decision (runbook target < {:.0} s: {})",
            r.decision_to_healthy_ms as f64 / 1000.0,
            r.target_ms as f64 / 1000.0,
            if r.decision_to_healthy_ms <= r.target_ms {
                "met"
            } else {
                "MISSED"
            }
        )
    } else {
        format!(
            "restore FAILED: {}; {}",
            r.failure.as_deref().unwrap_or("not healthy"),
            r.left_running.as_deref().unwrap_or("")
        )
    };
    let rows = [
        ("Kind", kind.to_string()),
        (
            "Environment",
            if r.production {
                "production"
            } else {
                "staging"
            }
            .into(),
        ),
        (
            "From",
            r.from.clone().unwrap_or_else(|| {
                "not recorded (no deployment of this tool was serving before the rollback)".into()
            }),
        ),
        ("To", r.to.clone()),
        (
            "Reason",
            r.reason.clone().unwrap_or_else(|| "none given".into()),
        ),
        (
            "Approved by",
            r.approved_by
                .clone()
                .unwrap_or_else(|| "no approver named (staging)".into()),
        ),
        ("Outcome", outcome),
    ];
    for (k, v) in rows {
        s += &format!("- **{k}:** {}\n", one_line(&v));
    }
    s + "\n"
}

/// A value on one line: a reason's line breaks must not start a new section.
fn one_line(v: &str) -> String {
    v.replace(['\n', '\r'], " ")
}

fn summary(inc: &Incident) -> String {
    let r = &inc.record;
    let why = match inc.triggers.as_slice() {
        [] if r.automatic => "The monitor rolled back".to_string(),
        [] => "An operator rolled back; no monitor trigger preceded it".to_string(),
        fired => format!(
            "{} ({}) fired at {}; {}",
            fired
                .iter()
                .map(|f| f.condition.clone())
                .collect::<Vec<_>>()
                .join(", "),
            severities(&fired[0]),
            fired[0].at.format("%H:%M:%S"),
            if r.automatic {
                "the monitor rolled back on its own"
            } else {
                "an operator rolled back"
            }
        ),
    };
    let outcome = match r.healthy_at_ms {
        Some(_) => format!(
            "{} was healthy {:.2} s after the decision",
            r.to,
            r.decision_to_healthy_ms as f64 / 1000.0
        ),
        None => format!("restoring {} FAILED", r.to),
    };
    format!("## What happened\n\n{why}; {outcome}.\n\n")
}

/// The configured triggers on `metrics`, in words ("> 2% for 5m (rollback)").
fn triggers_on(cfg: &Config, metrics: &[Metric]) -> String {
    let m = &cfg.monitoring;
    let words: Vec<String> = m
        .rollback_triggers
        .iter()
        .map(|r| (r, "rollback"))
        .chain(m.immediate_triggers.iter().map(|r| (r, "immediate")))
        .filter(|(r, _)| metrics.contains(&r.metric))
        .map(|(r, sev)| format!("{} ({sev})", rules::describe(r)))
        .collect();
    if words.is_empty() {
        "none".into()
    } else {
        words.join("; ")
    }
}

type Row = (
    &'static str,
    fn(&DayDigest) -> Option<String>,
    String,
    Vec<Metric>,
);

fn rows(cfg: &Config) -> Vec<Row> {
    let t = &cfg.monitoring.targets;
    vec![
        (
            "Health check success rate",
            |d| {
                d.health_success_rate_pct()
                    .map(|v| format!("{v:.1}% ({} of {} probes)", d.healthy, d.samples))
            },
            format!("{}%", t.health_check_success_rate_pct),
            vec![
                Metric::HealthCheckSuccessRatePct,
                Metric::HealthCheckFailureRatePct,
            ],
        ),
        (
            "Error rate",
            |d| {
                let (total, errors) = d.counters.totals();
                d.counters.error_rate_pct().map(|v| {
                    format!(
                        "{} ({errors:.0} of {total:.0} requests)",
                        value(Metric::ErrorRatePct, v)
                    )
                })
            },
            format!("< {}%", t.error_rate_pct),
            vec![Metric::ErrorRatePct],
        ),
        (
            "P95 latency",
            |d| d.counters.quantile_ms(0.95).map(|v| format!("{v:.0} ms")),
            format!("≤ {} ms", t.p95_latency.as_millis()),
            vec![Metric::P95LatencyMs],
        ),
        (
            "P99 latency",
            |d| d.counters.quantile_ms(0.99).map(|v| format!("{v:.0} ms")),
            format!("≤ {} ms", t.p99_latency.as_millis()),
            vec![Metric::P99LatencyMs],
        ),
        (
            "Memory",
            |d| {
                d.memory_last_mib
                    .zip(d.memory_min_mib.zip(d.memory_max_mib))
                    .map(|(l, (lo, hi))| format!("{l:.1} MiB (range {lo:.1}–{hi:.1})"))
            },
            format!("{}–{} MiB, stable", t.memory_min_mib, t.memory_max_mib),
            vec![Metric::MemoryMib, Metric::MemoryGrowth],
        ),
        (
            "Restarts",
            |d| d.restarts().map(|n| n.to_string()),
            "none".into(),
            vec![Metric::RestartsInWindow],
        ),
    ]
}

fn metrics_table(inc: &Incident, cfg: &Config) -> String {
    let r = &inc.record;
    let after_min =
        (r.after_until_ms - r.healthy_at_ms.unwrap_or(r.after_until_ms)) as f64 / 60_000.0;
    let mut s = format!(
        "## Metrics before and after\n\n| Metric | 10 minutes before the decision | First {after_min:.0} minutes after the restore | Runbook target | Rollback triggers |\n|---|---|---|---|---|\n"
    );
    let (b, a) = (&inc.before.digest, &inc.after.digest);
    let none_before = "no samples";
    let none_after = if r.healthy_at_ms.is_none() {
        "not restored"
    } else if inc.final_ {
        "no samples"
    } else {
        "in progress"
    };
    for (name, f, target, metrics) in rows(cfg) {
        s += &format!(
            "| {name} | {} | {} | {target} | {} |\n",
            f(b).unwrap_or_else(|| none_before.into()),
            f(a).unwrap_or_else(|| none_after.into()),
            triggers_on(cfg, &metrics)
        );
    }
    s += "\n";
    s += &match b.samples {
        0 => "There are no samples in the 10 minutes before the decision: no monitor was watching the replaced service, so there is nothing to compare with.\n".to_string(),
        n => format!(
            "Before: {n} samples of the replaced service from {} to {}.\n",
            hms(b.first_ms.unwrap_or(inc.before.from_ms)),
            hms(b.last_ms.unwrap_or(inc.before.to_ms))
        ),
    };
    s += &match (r.healthy_at_ms, inc.final_, a.samples) {
        (None, ..) => "After: the restore failed, so there is no after-window.\n".to_string(),
        (Some(_), true, 0) => format!(
            "After: no samples of the restored service until {} (no monitor ran in those minutes).\n",
            hms(r.after_until_ms)
        ),
        (Some(_), true, n) => format!(
            "After: {n} samples of the restored service, up to {} (complete).\n",
            hms(a.last_ms.unwrap_or(r.after_until_ms))
        ),
        (Some(_), false, n) => format!(
            "After: {n} samples so far; the window runs until {}, and this report is written again then (by the monitor, or the next `monitor` or `report` run).\n",
            hms(r.after_until_ms)
        ),
    };
    s + "\n"
}

fn trigger_section(inc: &Incident, chart_file: Option<&str>) -> String {
    let mut s = "## Trigger and evidence\n\n".to_string();
    if inc.triggers.is_empty() {
        return s + "No monitor trigger preceded this rollback in the 15 minutes before it: it was an operator's decision.\n\n";
    }
    for f in &inc.triggers {
        s += &format!(
            "- **{}** fired at {}: {} ({} severity).\n",
            f.rule,
            f.at.format("%H:%M:%S"),
            f.condition,
            severities(f)
        );
    }
    s += "\n";
    match chart_file {
        Some(file) => {
            s += &format!(
                "![{} around the rollback: threshold, the breaching window shaded, decision and healthy marked]({file})\n\n",
                inc.triggers[0].rule
            )
        }
        None => {
            s += "No chart: the trigger's metric is not one the monitor samples over time (restarts, CVEs), or no samples were kept.\n\n"
        }
    }
    let f = &inc.triggers[0];
    if let Some(metric) = f.metric {
        s += &format!(
            "The evidence the monitor judged for {} (every point breached):\n\n| Time (UTC) | {} |\n|---|---|\n",
            f.rule,
            super::capitalised(rules::label(metric))
        );
        for (t, v) in &f.evidence {
            s += &format!(
                "| {} | {} |\n",
                super::at(*t).format("%H:%M:%S%.3f"),
                v.map(|v| value(metric, v))
                    .unwrap_or_else(|| "no reading".into())
            );
        }
        s += "\n";
    }
    s
}

fn timeline(inc: &Incident) -> String {
    let mut s = "## Timeline (UTC)\n\n".to_string();
    for m in &inc.timeline {
        s += &format!("- {} {}\n", m.at.format("%H:%M:%S"), m.text);
    }
    s + "\n"
}

fn logs(r: &IncidentDetail) -> String {
    let l = &r.logs;
    let mut s = "## Logs of the replaced container\n\n".to_string();
    if let Some(why) = &l.not_read {
        return s + &format!("Not read: {why}.\n\n");
    }
    if l.lines.is_empty() {
        s += "The replaced container wrote no log lines in its last 10 minutes.\n\n";
    } else {
        s += &format!(
            "Its last {} lines (secrets redacted):\n\n```text\n{}\n```\n\n",
            l.lines.len(),
            l.lines.join("\n")
        );
    }
    match l.error_lines {
        0 => s += "No line of its last 10 minutes matches the error pattern (`grep -i error`, as the runbook counts errors).\n\n",
        n => {
            s += &format!(
                "{n} line{} of its last 10 minutes match the error pattern (`grep -i error`, as the runbook counts errors); the first {}:\n\n```text\n{}\n```\n\n",
                if n == 1 { "" } else { "s" },
                l.first_errors.len(),
                l.first_errors.join("\n")
            )
        }
    }
    s
}

fn delivered(deliveries: &[Delivery], channel: &str) -> Option<Delivery> {
    deliveries.iter().find(|d| d.channel == channel).cloned()
}

fn checklist(r: &IncidentDetail) -> String {
    let mut s = "## Post-rollback actions (runbook)\n\n".to_string();
    s += &format!(
        "- [x] Document incident: this report (`incidents/{}.md`, the page `incidents/{}.html` beside it)\n",
        r.name, r.name
    );
    s += &match delivered(&r.deliveries, "webhook") {
        Some(d) if d.ok => format!(
            "- [x] Notify team: sent to the webhook at {} ({})\n",
            hms(d.at_ms),
            d.detail
        ),
        Some(d) => format!(
            "- [ ] Notify team: the webhook FAILED at {} ({}); tell the team yourself\n",
            hms(d.at_ms),
            d.detail
        ),
        None => "- [ ] Notify team: no webhook is configured (`[notify] webhook_url` or DHI_STAGE_WEBHOOK_URL); tell the team yourself\n".into(),
    };
    s += &match delivered(&r.deliveries, "github") {
        Some(d) if d.ok => format!(
            "- [x] Create GitHub issue: {} opened ({}), labelled incident, rollback, dhi-migration\n",
            super::issue_number(&d.detail),
            d.detail
        ),
        Some(d) => format!(
            "- [ ] Create GitHub issue: opening it FAILED ({}); `gh issue create --label incident,rollback,dhi-migration --title \"Rollback: {}\" --body-file incidents/{}.md`\n",
            d.detail,
            r.service,
            r.name
        ),
        None => format!(
            "- [ ] Create GitHub issue: `gh issue create --label incident,rollback,dhi-migration --title \"Rollback: {}\" --body-file incidents/{}.md` (or set `[notify] github_repo` and the token variable, and dhi-stage opens it)\n",
            r.service, r.name
        ),
    };
    s += "- [ ] Root cause analysis: why the trigger fired (people)\n- [ ] Fix and re-test before retry (people)\n";
    if r.production {
        s += &format!(
            "\nProduction rollback, the runbook's additional coordination:\n\n{}- [ ] Stakeholder notification\n- [ ] Customer communication (if service impact)\n- [ ] Post-incident review (required for production rollbacks)\n",
            match &r.approved_by {
                Some(a) if !r.automatic => format!("- [x] Executive approval: given by {a}\n"),
                Some(a) => format!("- [x] Executive approval: the standing approval given to `{a}` when it was started (name who gave it)\n"),
                None => "- [ ] Executive approval: none recorded\n".into(),
            }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incident(r: IncidentDetail) -> Incident {
        Incident {
            record: r,
            triggers: Vec::new(),
            before: Default::default(),
            after: Default::default(),
            timeline: Vec::new(),
            final_: true,
        }
    }

    #[test]
    fn a_production_rollback_lists_the_runbooks_coordination_and_who_approved() {
        let cfg = crate::config::parse(crate::config::DEFAULT_TOML, "t").unwrap();
        let md = markdown(
            &incident(IncidentDetail {
                name: "incident-x".into(),
                service: "auth".into(),
                to: "reg/auth:baseline".into(),
                approved_by: Some("cto".into()),
                production: true,
                restored: false,
                failure: Some("not healthy after 30s".into()),
                left_running: Some("the previous container was put back".into()),
                ..Default::default()
            }),
            &cfg,
            None,
        );
        for want in [
            "- [x] Executive approval: given by cto",
            "- [ ] Stakeholder notification",
            "- [ ] Customer communication (if service impact)",
            "- [ ] Post-incident review (required for production rollbacks)",
            "restore FAILED: not healthy after 30s; the previous container was put back",
            "| Error rate | no samples | not restored |",
        ] {
            assert!(md.contains(want), "{want:?} in {md}");
        }
        assert!(!md.contains('{'), "{md}");
    }
}
