//! The Alertmanager configuration for the generated alerts: one route for this service to a
//! receiver that posts to the configured webhooks (the Slack-compatible `[notify]
//! webhook_url`, and a generic one with Alertmanager's own JSON), grouped per trigger, and the
//! rollback-severity alert of a trigger inhibited while its immediate one fires.

use std::fmt::Write as _;

use super::rules::q;
use super::{duration, Inputs};

pub const FILE: &str = "alertmanager.yml";

/// The receivers' URLs: the config's, or the environment's for the webhook (as `notify` reads
/// it). They are secrets: the file is written owner-only and they are never printed.
pub fn webhooks(i: &Inputs) -> (Option<String>, Option<String>) {
    let slack = std::env::var("DHI_STAGE_WEBHOOK_URL")
        .ok()
        .or_else(|| i.cfg.notify.webhook_url.clone())
        .filter(|u| !u.is_empty());
    let generic = Some(i.cfg.alerting.webhook_url.clone()).filter(|u| !u.is_empty());
    (slack, generic)
}

pub fn file(i: &Inputs) -> String {
    let a = &i.cfg.alerting;
    let (slack, generic) = webhooks(i);
    let mut s = format!(
        "# Written by `dhi-stage alerts`. It holds the webhook URLs: keep it owner-only.\nroute:\n  receiver: {r}\n  group_by: [\"alertname\", \"service\", \"trigger\", \"severity\"]\n  group_wait: {}\n  group_interval: {}\n  repeat_interval: {}\n  routes:\n    - receiver: {r}\n      matchers: [{}]\nreceivers:\n  - name: {r}\n",
        duration(a.group_wait),
        duration(a.group_interval),
        duration(a.repeat_interval),
        q(&format!("service=\"{}\"", i.service())),
        r = q("dhi-stage"),
    );
    if let Some(url) = &slack {
        let _ = write!(
            s,
            "    slack_configs:\n      - api_url: {}\n        send_resolved: true\n        title: {}\n        text: {}\n",
            q(url),
            q("{{ .CommonLabels.service }}: {{ .CommonLabels.trigger }} ({{ .CommonLabels.severity }}) {{ .Status }}"),
            q("{{ range .Alerts }}{{ .Annotations.summary }}: {{ .Annotations.description }} {{ .Annotations.runbook_url }}\n{{ end }}"),
        );
    }
    if let Some(url) = &generic {
        let _ = write!(
            s,
            "    webhook_configs:\n      - url: {}\n        send_resolved: true\n",
            q(url)
        );
    }
    if slack.is_none() && generic.is_none() {
        s += "    # No webhook configured ([notify] webhook_url, [alerting] webhook_url): alerts go nowhere.\n";
    }
    s += "inhibit_rules:\n  # A trigger's immediate alert says all its rollback alert would.\n  - source_matchers: [\"severity=\\\"immediate\\\"\"]\n    target_matchers: [\"severity=\\\"rollback\\\"\"]\n    equal: [\"service\", \"trigger\"]\n";
    s
}
