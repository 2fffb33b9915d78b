//! The incident report the runbook's "Post-Rollback Actions" ask for, written after every
//! rollback: timeline, trigger and evidence window, metrics before and after, a log excerpt
//! of the container that was replaced, and the time to restore.

use serde::Serialize;
use serde_json::Value;

use crate::store::Event;

#[derive(Debug, Clone, Serialize)]
pub struct Incident {
    pub at: chrono::DateTime<chrono::Utc>,
    pub automatic: bool,
    pub from: Option<String>,
    pub to: String,
    pub reason: Option<String>,
    pub approved_by: Option<String>,
    pub restored: bool,
    pub decision_to_healthy_ms: u128,
    pub target_ms: u128,
    pub trigger: Option<Event>,
    /// Summary of the samples in the ten minutes before the decision.
    pub before: Value,
    /// The restored service's health response.
    pub after: Value,
    pub timeline: Vec<Event>,
    pub log_excerpt: Vec<String>,
}

pub fn markdown(i: &Incident) -> String {
    let mut s = format!(
        "# Incident: rollback of authentication-service at {}\n\n",
        i.at.format("%Y-%m-%d %H:%M:%S UTC")
    );
    s += &format!(
        "- **Kind:** {} rollback\n- **From:** {}\n- **To:** {}\n- **Reason:** {}\n- **Approved by:** {}\n- **Outcome:** {}\n- **Time to restore:** {:.2}s (decision to healthy; runbook target < {:.0}s)\n\n",
        if i.automatic { "automatic" } else { "manual" },
        i.from.as_deref().unwrap_or("unknown"),
        i.to,
        i.reason.as_deref().unwrap_or("not given"),
        i.approved_by.as_deref().unwrap_or("-"),
        if i.restored { "service restored" } else { "restore FAILED" },
        i.decision_to_healthy_ms as f64 / 1000.0,
        i.target_ms as f64 / 1000.0
    );
    s += "## Trigger and evidence window\n\n";
    match &i.trigger {
        None => s += "No monitor trigger preceded this rollback (operator decision).\n\n",
        Some(t) => {
            let t = t.trigger();
            s += &format!(
                "`{}` ({}): {}\n\n| time (UTC) | value |\n|---|---|\n",
                t.rule, t.severity, t.condition
            );
            for (ts, v) in &t.evidence {
                let at = chrono::DateTime::from_timestamp_millis(*ts)
                    .map(|d| d.format("%H:%M:%S%.3f").to_string())
                    .unwrap_or_default();
                s += &format!(
                    "| {at} | {} |\n",
                    v.map(|v| format!("{v:.2}")).unwrap_or("-".into())
                );
            }
            s += "\n";
        }
    }
    s += &format!("## Metrics before and after\n\n- Before (10 minutes before the decision): {}\n- After (restored container): {}\n\n", i.before, i.after);
    s += "## Timeline\n\n";
    for e in &i.timeline {
        s += &format!(
            "- {} `{}` {}\n",
            e.at.format("%H:%M:%S%.3f"),
            e.kind,
            e.detail
        );
    }
    s += "\n## Container log excerpt (replaced container)\n\n```\n";
    for l in &i.log_excerpt {
        s += l;
        s.push('\n');
    }
    s += "```\n\n## Post-rollback actions (runbook)\n\n- [ ] Document incident (this report)\n- [ ] Notify team\n- [ ] Create GitHub issue (labels: incident, rollback, dhi-migration)\n- [ ] Root cause analysis\n- [ ] Fix and re-test before retry\n";
    s
}
