//! The `/health` probe. Healthy means HTTP 200 *and* a JSON body whose `status` is exactly
//! `"healthy"`; a substring match would take "unhealthy" for healthy. Every call has a
//! timeout and every body read a size bound; a failed probe is a result, not an error.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

/// Bodies larger than this are cut off; a health document is a few hundred bytes.
pub const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, Clone, Serialize)]
pub struct HealthResult {
    pub healthy: bool,
    pub http_status: Option<u16>,
    pub latency_ms: f64,
    /// The body's `status` field, when it had one.
    pub status: Option<String>,
    pub dependencies: BTreeMap<String, String>,
    pub body: Option<Value>,
    pub error: Option<String>,
}

pub fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_max_idle_per_host(4)
        .no_proxy()
        .build()
        .expect("a plain HTTP client always builds")
}

/// GET `url` with the client's timeout; reads at most `limit` bytes of body.
pub async fn get_bounded(
    client: &reqwest::Client,
    url: &str,
    limit: usize,
) -> Result<(u16, Vec<u8>), String> {
    let mut resp = client.get(url).send().await.map_err(describe)?;
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(describe)? {
        let room = limit.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= limit {
            break;
        }
    }
    Ok((status, body))
}

/// A failed request in words: a timeout and a refusal read differently, and reqwest's
/// chain of causes is kept (URLs in it masked).
pub fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection refused or unreachable".into()
    } else {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(inner) = src {
            s = format!("{s}: {inner}");
            src = inner.source();
        }
        // reqwest names the URL in its errors: no userinfo or secret query value may follow.
        crate::redact::urls(&s)
    }
}

pub async fn probe(client: &reqwest::Client, url: &str) -> HealthResult {
    let started = Instant::now();
    let result = get_bounded(client, url, MAX_BODY).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Err(error) => HealthResult {
            healthy: false,
            http_status: None,
            latency_ms,
            status: None,
            dependencies: BTreeMap::new(),
            body: None,
            error: Some(error),
        },
        Ok((code, body)) => judge(code, &body, latency_ms),
    }
}

/// The verdict on one response; pure so it can be tested on every odd body.
pub fn judge(code: u16, body: &[u8], latency_ms: f64) -> HealthResult {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let status = parsed
        .as_ref()
        .and_then(|v| v.get("status"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let dependencies = parsed
        .as_ref()
        .and_then(|v| v.get("dependencies"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let healthy = code == 200 && status.as_deref() == Some("healthy");
    let error = if parsed.is_none() {
        Some(format!("HTTP {code}, body is not JSON"))
    } else if !healthy {
        Some(format!(
            "HTTP {code}, status {}",
            status.as_deref().unwrap_or("missing")
        ))
    } else {
        None
    };
    HealthResult {
        healthy,
        http_status: Some(code),
        latency_ms,
        status,
        dependencies,
        body: parsed,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::judge;

    #[test]
    fn healthy_needs_200_and_exact_status() {
        let ok =
            br#"{"status":"healthy","dependencies":{"kong":"healthy","telemetry":"degraded"}}"#;
        let r = judge(200, ok, 1.0);
        assert!(r.healthy);
        assert_eq!(r.dependencies["telemetry"], "degraded");
        assert!(
            !judge(200, br#"{"status":"unhealthy"}"#, 1.0).healthy,
            "unhealthy contains healthy"
        );
        assert!(!judge(503, br#"{"status":"healthy"}"#, 1.0).healthy);
        assert!(!judge(200, b"healthy", 1.0).healthy);
        assert!(!judge(200, br#"{"state":"healthy"}"#, 1.0).healthy);
    }
}
