//! Notifications: a generic webhook (Slack-compatible `{"text": ...}` payload) and, when a
//! repository and token are configured, a GitHub issue. A notification that fails is reported
//! and recorded; it never undoes or blocks what it reports on. Tokens never reach output.

use std::time::Duration;

use serde_json::{json, Value};

use crate::config::NotifyConfig;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Sent {
    pub channel: &'static str,
    pub ok: bool,
    pub detail: String,
    /// When the answer (or the failure) came, Unix ms.
    pub at_ms: i64,
}

impl Sent {
    fn new(channel: &'static str, ok: bool, detail: String) -> Sent {
        Sent {
            channel,
            ok,
            detail,
            at_ms: chrono::Utc::now().timestamp_millis(),
        }
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .expect("plain client")
}

fn webhook_url(cfg: &NotifyConfig) -> Option<String> {
    std::env::var("DHI_STAGE_WEBHOOK_URL")
        .ok()
        .or_else(|| cfg.webhook_url.clone())
        .filter(|u| !u.is_empty())
}

/// "webhook unreachable: timed out" (the URL, which may carry a token, is not said).
fn unreachable(what: &str, e: &reqwest::Error) -> String {
    let how = if e.is_timeout() {
        "timed out"
    } else {
        "connection failed"
    };
    format!("{what} unreachable: {how}")
}

/// Posts `{"text": text, "dhi_stage": {"event": event, ...detail}}` to the webhook, if one is set.
pub async fn webhook(cfg: &NotifyConfig, event: &str, text: &str, detail: &Value) -> Option<Sent> {
    let url = webhook_url(cfg)?;
    let payload = json!({"text": text, "dhi_stage": {"event": event, "detail": detail}});
    let r = client().post(&url).json(&payload).send().await;
    Some(match r {
        Ok(resp) if resp.status().is_success() => {
            Sent::new("webhook", true, format!("HTTP {}", resp.status().as_u16()))
        }
        Ok(resp) => Sent::new(
            "webhook",
            false,
            format!("webhook answered HTTP {}", resp.status().as_u16()),
        ),
        Err(e) => Sent::new("webhook", false, unreachable("webhook", &e)),
    })
}

/// Opens a GitHub issue labelled incident, rollback, dhi-migration, if a repository and a token are set.
pub async fn github_issue(cfg: &NotifyConfig, title: &str, body: &str) -> Option<Sent> {
    let repo = cfg.github_repo.clone().filter(|r| !r.is_empty())?;
    let token = std::env::var(&cfg.github_token_env)
        .ok()
        .filter(|t| !t.is_empty())?;
    let url = format!(
        "{}/repos/{repo}/issues",
        cfg.github_api.trim_end_matches('/')
    );
    let payload =
        json!({"title": title, "body": body, "labels": ["incident", "rollback", "dhi-migration"]});
    let r = client()
        .post(&url)
        .header("Authorization", format!("Bearer {token}"))
        .header("Accept", "application/vnd.github+json")
        .header("X-GitHub-Api-Version", "2022-11-28")
        .header(
            "User-Agent",
            concat!("dhi-stage/", env!("CARGO_PKG_VERSION")),
        )
        .json(&payload)
        .send()
        .await;
    Some(match r {
        Ok(mut resp) if resp.status().is_success() => {
            // The created issue is a few KB; its answer is read no further than 1 MiB.
            let mut body = Vec::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                body.extend_from_slice(&chunk);
                if body.len() > 1 << 20 {
                    break;
                }
            }
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            Sent::new(
                "github",
                true,
                v["html_url"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or("issue created".into()),
            )
        }
        Ok(resp) => Sent::new(
            "github",
            false,
            format!("GitHub answered HTTP {}", resp.status().as_u16()),
        ),
        Err(e) => Sent::new("github", false, unreachable("GitHub", &e)),
    })
}
