//! Whether the generated alerting and dashboard work, from Prometheus' and Alertmanager's own
//! answers: every trigger's alert loaded and healthy (`/api/v1/rules`), Alertmanager answering
//! (`/api/v2/status`), a drill alert delivered (Alertmanager's notification counters), and
//! every dashboard query returning data over the period. The gate reads these instead of a
//! person's attestation when a Prometheus is configured.

use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};

use super::Inputs;
use crate::monitor::promql::Source;

/// One operational criterion, measured.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Measured {
    pub met: bool,
    pub evidence: String,
}

/// A body larger than this is not an Alertmanager's answer.
const MAX_BODY: usize = 4 << 20;

/// A JSON answer read whole (refused past `MAX_BODY`: a cut document would misread).
async fn get(client: &reqwest::Client, url: &str) -> Result<(u16, Vec<u8>), String> {
    use crate::probe::health::{get_within, Over};
    get_within(client, url, MAX_BODY, Over::Refuse).await
}

fn alertmanager(i: &Inputs) -> Option<String> {
    Some(
        i.cfg
            .alerting
            .alertmanager_url
            .trim_end_matches('/')
            .to_string(),
    )
    .filter(|u| !u.is_empty())
}

/// "Alerting: configured for all rollback triggers": every trigger's alert (both severities)
/// loaded and healthy in Prometheus, Alertmanager answering, and the last drill delivered.
pub async fn alerting(i: &Inputs<'_>, prom: &Source, drill: Option<&Drilled>) -> Measured {
    let (alerts, left) = super::alerts(i);
    let mut bad: Vec<String> = left
        .iter()
        .map(|l| {
            format!(
                "{} ({}): no alert can be written: {}",
                l.trigger, l.severity, l.why
            )
        })
        .collect();
    let loaded = match prom
        .api("/api/v1/rules", &[("type", "alert".to_string())])
        .await
    {
        Ok(data) => loaded_alerts(&data),
        Err(e) => {
            return Measured {
                met: false,
                evidence: format!("Prometheus' rules could not be read: {e}"),
            }
        }
    };
    let triggers: Vec<&super::Alert> = alerts.iter().filter(|a| a.rule.is_some()).collect();
    bad.extend(triggers.iter().filter_map(|a| not_loaded(a, &loaded)));
    let am = alertmanager_answers(i).await.unwrap_or_else(|e| {
        bad.push(e);
        String::new()
    });
    let drill_words = match drill {
        None => "; no alert drill recorded (`dhi-stage alerts --drill`)".to_string(),
        Some(d) if d.delivered => format!("; drill delivered at {}", d.at),
        Some(d) => {
            bad.push(format!(
                "the last alert drill was not delivered: {}",
                d.detail
            ));
            String::new()
        }
    };
    let n = triggers.len();
    Measured {
        met: bad.is_empty(),
        evidence: match bad.is_empty() {
            true => format!("measured: all {n} trigger alerts loaded and healthy in Prometheus{am}{drill_words}"),
            false => format!("measured: {}", bad.join("; ")),
        },
    }
}

/// Why `a` is not loaded and healthy among Prometheus' rules, if it is not.
fn not_loaded(a: &super::Alert, loaded: &[(String, String, String, String)]) -> Option<String> {
    let sev = a.severity.as_str();
    let found = loaded.iter().find(|(name, trigger, severity, _)| {
        *name == a.name && *trigger == a.trigger && severity == sev
    });
    match found {
        None => Some(format!("{} ({sev}) is not loaded in Prometheus", a.name)),
        Some((.., health)) if health != "ok" => Some(format!(
            "{} ({sev}) is loaded but its health is {health}",
            a.name
        )),
        Some(_) => None,
    }
}

/// "; Alertmanager 0.25.0 answers", or why it does not.
async fn alertmanager_answers(i: &Inputs<'_>) -> Result<String, String> {
    let url = alertmanager(i).ok_or("no Alertmanager to measure ([alerting] alertmanager_url)")?;
    match get(
        &crate::probe::health::client(Duration::from_secs(5)),
        &format!("{url}/api/v2/status"),
    )
    .await
    {
        Ok((200, body)) => {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let version = v["versionInfo"]["version"]
                .as_str()
                .unwrap_or("(version unknown)");
            Ok(format!("; Alertmanager {version} answers"))
        }
        Ok((status, _)) => Err(format!("Alertmanager answered HTTP {status}")),
        Err(e) => Err(format!("Alertmanager did not answer: {e}")),
    }
}

/// (alert name, trigger label, severity label, health) of every loaded alerting rule.
fn loaded_alerts(data: &Value) -> Vec<(String, String, String, String)> {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    data["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .filter(|r| r["type"] == "alerting")
        .map(|r| {
            (
                s(&r["name"]),
                s(&r["labels"]["trigger"]),
                s(&r["labels"]["severity"]),
                s(&r["health"]),
            )
        })
        .collect()
}

/// "Monitoring dashboards: configured and working": every panel query of the generated
/// dashboard returns data over `(from_ms, to_ms)`.
pub async fn dashboards(i: &Inputs<'_>, prom: &Source, (from_ms, to_ms): (i64, i64)) -> Measured {
    let job = super::dashboard::configured_job(i).unwrap_or_else(|| ".+".into());
    let rate = super::duration(i.cfg.monitoring.prometheus.rate_window);
    let step = ((to_ms - from_ms) / 120).max(15_000);
    let (mut ok, mut bad) = (0, Vec::new());
    for p in super::dashboard::panels(i, &job, &rate) {
        for (legend, expr) in &p.queries {
            let params = [
                ("query", expr.clone()),
                ("start", format!("{:.3}", from_ms as f64 / 1000.0)),
                ("end", format!("{:.3}", to_ms as f64 / 1000.0)),
                ("step", format!("{}", step / 1000)),
            ];
            match prom.api("/api/v1/query_range", &params).await {
                Ok(data) if has_points(&data) => ok += 1,
                Ok(_) => bad.push(format!("{} ({legend}): no data", p.title)),
                Err(e) => bad.push(format!("{} ({legend}): {e}", p.title)),
            }
        }
    }
    Measured {
        met: bad.is_empty() && ok > 0,
        evidence: if bad.is_empty() {
            format!("measured: all {ok} panel queries of the generated dashboard return data over the period")
        } else {
            format!(
                "measured: {} of {} panel queries fail: {}",
                bad.len(),
                ok + bad.len(),
                bad.join("; ")
            )
        },
    }
}

fn has_points(data: &Value) -> bool {
    data["result"].as_array().is_some_and(|r| {
        r.iter()
            .any(|s| s["values"].as_array().is_some_and(|v| !v.is_empty()))
    })
}

/// An alert drill's outcome, as recorded.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
#[serde(default)]
pub struct Drilled {
    pub at: String,
    pub delivered: bool,
    pub detail: String,
    pub ms: u64,
}

/// Alertmanager's count of notifications sent and failed, over every integration.
async fn notifications(c: &reqwest::Client, am: &str) -> Result<(f64, f64), String> {
    let (status, body) = get(c, &format!("{am}/metrics")).await?;
    if status != 200 {
        return Err(format!("Alertmanager's /metrics answered HTTP {status}"));
    }
    let text = String::from_utf8_lossy(&body);
    let sum = |name: &str| {
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    Ok((
        sum("alertmanager_notifications_total"),
        sum("alertmanager_notifications_failed_total"),
    ))
}

/// `alerts --drill`: sends a test alert for this service through Alertmanager and waits until
/// Alertmanager says it notified the receiver (its notification counters), or `wait` passes.
pub async fn drill(i: &Inputs<'_>, wait: Duration) -> Result<Drilled, String> {
    let am = alertmanager(i).ok_or("no Alertmanager: set [alerting] alertmanager_url")?;
    let c = crate::probe::health::client(Duration::from_secs(5));
    let (sent0, failed0) = notifications(&c, &am).await?;
    let now = chrono::Utc::now();
    let alert = json!([{
        "labels": {"alertname": "DhiStageDrill", "service": i.service(), "severity": "drill", "trigger": "drill"},
        "annotations": {"summary": format!("{}: alert drill by dhi-stage (no action needed)", i.service())},
        "startsAt": now.to_rfc3339(),
        "endsAt": (now + chrono::Duration::minutes(5)).to_rfc3339(),
    }]);
    let started = std::time::Instant::now();
    let resp = c
        .post(format!("{am}/api/v2/alerts"))
        .json(&alert)
        .send()
        .await
        .map_err(crate::probe::health::describe)?;
    if !resp.status().is_success() {
        return Err(format!(
            "Alertmanager refused the drill alert: HTTP {}",
            resp.status().as_u16()
        ));
    }
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (sent, failed) = notifications(&c, &am).await?;
        let ms = started.elapsed().as_millis() as u64;
        if failed > failed0 {
            return Ok(Drilled {
                at: now.to_rfc3339(),
                delivered: false,
                detail: format!(
                    "Alertmanager counted {} failed notification(s)",
                    failed - failed0
                ),
                ms,
            });
        }
        if sent > sent0 {
            return Ok(Drilled {
                at: now.to_rfc3339(),
                delivered: true,
                detail: format!(
                    "Alertmanager notified the receiver {:.1} s after the alert",
                    ms as f64 / 1000.0
                ),
                ms,
            });
        }
        if started.elapsed() > wait {
            return Ok(Drilled {
                at: now.to_rfc3339(),
                delivered: false,
                detail: format!(
                    "no notification within {}",
                    humantime::format_duration(wait)
                ),
                ms,
            });
        }
    }
}
