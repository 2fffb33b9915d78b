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

/// A plain client for loopback and in-network services: every call bounded by `timeout`, no
/// proxy from the environment (a probe goes to the service, not through a proxy).
pub fn client(timeout: Duration) -> reqwest::Client {
    // `build` fails only on a TLS backend that cannot start or a bad proxy setting; this
    // client sets neither, so it cannot fail on input.
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_max_idle_per_host(4)
        .no_proxy()
        .build()
        .expect("a plain HTTP client always builds")
}

/// GET `url` with the client's timeout; reads at most `limit` bytes of body (the rest cut).
pub async fn get_bounded(
    client: &reqwest::Client,
    url: &str,
    limit: usize,
) -> Result<(u16, Vec<u8>), String> {
    get_within(client, url, limit, Over::Cut).await
}

/// What a GET does with a body over its bound: keep its start (a health answer is judged by
/// its status and first bytes), or refuse it (a JSON document cut short would misread).
#[derive(Clone, Copy, PartialEq)]
pub enum Over {
    Cut,
    Refuse,
}

/// GET `url` with the client's timeout, its body read up to `limit` bytes, then `over`.
pub async fn get_within(
    client: &reqwest::Client,
    url: &str,
    limit: usize,
    over: Over,
) -> Result<(u16, Vec<u8>), String> {
    let resp = client.get(url).send().await.map_err(describe)?;
    let status = resp.status().as_u16();
    let body = read_body(resp, limit, over).await.map_err(|e| match e {
        Unread::Failed(e) => describe(e),
        Unread::Over(limit) if limit >= 1 << 20 => {
            format!("the answer is over {} MiB", limit >> 20)
        }
        Unread::Over(limit) => format!("the answer is over {} KiB", limit >> 10),
    })?;
    Ok((status, body))
}

/// Why a body was not read: the transfer failed, or it passed its bound (`Over::Refuse`).
pub enum Unread {
    Failed(reqwest::Error),
    Over(usize),
}

/// A response's body, read chunk by chunk up to `limit` bytes, then `over`: the one bounded
/// reader of every HTTP answer the tool reads (health, Prometheus, Alertmanager, Kong).
pub async fn read_body(
    mut resp: reqwest::Response,
    limit: usize,
    over: Over,
) -> Result<Vec<u8>, Unread> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(Unread::Failed)? {
        let room = limit.saturating_sub(body.len());
        if chunk.len() > room {
            if over == Over::Refuse {
                return Err(Unread::Over(limit));
            }
            body.extend_from_slice(&chunk[..room]);
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
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
