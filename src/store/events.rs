//! Event details as types. Writers build these structs; readers (the daily report, the week
//! page, incidents, the gate) get them back from `Event` instead of reading JSON by key.
//! Every field is optional on reading, so details written by older versions still read.

use serde::{Deserialize, Serialize};

/// A rollback trigger fired (the monitor's rule, its window, the evidence).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TriggerDetail {
    pub rule: String,
    /// `immediate` or `rollback`.
    pub severity: String,
    pub condition: String,
    pub value: Option<f64>,
    /// (time in ms, value) over the rule's window.
    pub evidence: Vec<(i64, Option<f64>)>,
    pub day: Option<u32>,
}

/// A rollback: by an operator or the monitor, the restore after a failed deploy
/// (`automatic`), or the undo of an interrupted deploy (`kind` = reconcile).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RollbackDetail {
    /// rollback, drill or reconcile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub to: Option<String>,
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    pub restored: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub automatic: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision_to_healthy_ms: Option<u64>,
    /// A failed deploy's restore of the previous container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sigkill_needed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undone_deployment: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub left_running: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision_to_failure_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RollbackDetail {
    /// Decision to healthy, or for a failed deploy's restore, the restore's time.
    pub fn to_healthy_ms(&self) -> Option<u64> {
        self.decision_to_healthy_ms.or(self.restore_ms)
    }
}

/// A rollback drill: back to the baseline and forward again, each timed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct DrillDetail {
    pub rollback_to: Option<String>,
    pub rollback_decision_to_healthy_ms: Option<u64>,
    pub forward_to: Option<String>,
    pub forward_to_healthy_ms: Option<u64>,
    pub passed: bool,
    pub target_ms: Option<u64>,
}

/// Rules the monitor could not judge for longer than their window plus the margin.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct BlindDetail {
    pub rules: Vec<BlindRuleDetail>,
    pub day: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct BlindRuleDetail {
    pub name: String,
    pub severity: String,
    pub condition: String,
    pub inconclusive_since_ms: Option<i64>,
    pub for_s: Option<f64>,
    pub reason: String,
}

/// What an incident report is made of that the store does not otherwise keep: the moments
/// of the rollback, the replaced container's last log lines (redacted), the notifications.
/// Everything else (triggers, samples before and after, the timeline) is read again from the
/// store each time the report is written, so a later run can complete it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct IncidentDetail {
    /// The report's file name without extension (`incident-20261203T075719.123Z`).
    pub name: String,
    /// The service: its container (or Deployment) and the base URL its samples are under.
    pub service: String,
    pub target: String,
    pub decided_at_ms: i64,
    /// When the restored container answered healthy (none: the restore failed).
    pub healthy_at_ms: Option<i64>,
    /// The deployment rolled back from, and the one the rollback made.
    pub from_deployment: Option<i64>,
    pub to_deployment: Option<i64>,
    pub from: Option<String>,
    pub to: String,
    pub automatic: bool,
    pub reason: Option<String>,
    pub approved_by: Option<String>,
    pub restored: bool,
    pub failure: Option<String>,
    pub left_running: Option<String>,
    pub decision_to_healthy_ms: u64,
    pub target_ms: u64,
    /// Production: the runbook's extra coordination items belong on the checklist.
    pub production: bool,
    pub logs: LogExcerpt,
    pub deliveries: Vec<Delivery>,
    /// The end of the after-window; the report is final once samples reach it.
    pub after_until_ms: i64,
    pub complete: bool,
}

/// The replaced container's log, as copied into the incident.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct LogExcerpt {
    /// Why there are no lines to show (excerpts switched off, no container was replaced,
    /// the engine did not answer); None when the log was read.
    pub not_read: Option<String>,
    /// The last lines, redacted.
    pub lines: Vec<String>,
    /// Lines of the whole excerpt window that match the error pattern, and the first few.
    pub error_lines: u64,
    pub first_errors: Vec<String>,
}

/// A notification the rollback sent: the webhook, the GitHub issue.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Delivery {
    /// `webhook` or `github`.
    pub channel: String,
    pub ok: bool,
    pub at_ms: i64,
    /// "HTTP 200", the URL, or why it failed.
    pub detail: String,
}

/// A Unix time in ms as a UTC time (the epoch for one out of range).
pub fn at_ms(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// A time in ms as the timeline and the gate show it ("-" when not recorded).
pub fn ms(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_written_before_the_types_still_read() {
        let old = serde_json::json!({"kind": "rollback", "to": "reg/auth:baseline", "restored": true,
            "reason": "monitor: error_rate", "decision_to_healthy_ms": 512, "stop_ms": 240, "extra": 1});
        let d: RollbackDetail = serde_json::from_value(old).unwrap();
        assert_eq!(
            (d.to.as_deref(), d.restored, d.to_healthy_ms()),
            (Some("reg/auth:baseline"), true, Some(512))
        );
        let t: TriggerDetail = serde_json::from_value(serde_json::json!({"rule": "error_rate",
            "severity": "immediate", "evidence": [[1, 4.8], [2, null]]}))
        .unwrap();
        assert_eq!(t.evidence, vec![(1, Some(4.8)), (2, None)]);
        let restore: RollbackDetail = serde_json::from_value(
            serde_json::json!({"automatic": true, "restored": false, "restore_ms": 90}),
        )
        .unwrap();
        assert_eq!(restore.to_healthy_ms(), Some(90));
    }
}
