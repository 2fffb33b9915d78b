//! Prometheus as the metrics source: the scrape-based rules (error rate, P95, P99, and memory
//! and restarts when their series are configured) judged through PromQL instead of one
//! container's /metrics, so a fleet of replicas is judged as one service. Each rule's window
//! is read as a range query stepped at the monitor's interval, and judged by the same
//! "sustained" rule as the direct scrape (`rules::sustained`): every step breaches. A query
//! with no data, or data that does not cover the window, is inconclusive (and so counts
//! toward blindness), never a pass.

use std::time::Duration;

use anyhow::{anyhow, Result};
use serde_json::Value;

use super::rules::{self, RuleResult, Severity, Verdict};
use crate::config::{Metric, PrometheusConfig, TriggerRule};

/// A response body larger than this is refused: a query that returns that much is not ours.
const MAX_BODY: usize = 4 << 20;

#[derive(Debug, Clone)]
enum Auth {
    None,
    Bearer(String),
    Basic(String, String),
}

pub struct Source {
    client: reqwest::Client,
    /// Base URL without a trailing slash, as configured.
    url: String,
    auth: Auth,
    cfg: PrometheusConfig,
}

impl Source {
    /// `url` overrides the configured one (`--prometheus-url`). Credentials come from the
    /// environment variables the config names; a named variable that is unset is an error.
    pub fn new(cfg: &PrometheusConfig, url: Option<&str>) -> Result<Source> {
        let url = url.unwrap_or(&cfg.url).trim_end_matches('/').to_string();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(anyhow!(
                "the Prometheus URL {:?} must start with http:// or https:// (--prometheus-url or [monitoring.prometheus] url)",
                crate::redact::urls(&url)
            ));
        }
        let env = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| anyhow!("[monitoring.prometheus] names the environment variable {name}, which is not set"))
        };
        let auth = if !cfg.bearer_token_env.is_empty() {
            Auth::Bearer(env(&cfg.bearer_token_env)?)
        } else if !cfg.username.is_empty() {
            let password = if cfg.password_env.is_empty() {
                String::new()
            } else {
                env(&cfg.password_env)?
            };
            Auth::Basic(cfg.username.clone(), password)
        } else {
            Auth::None
        };
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .build()?;
        Ok(Source {
            client,
            url,
            auth,
            cfg: cfg.clone(),
        })
    }

    /// The PromQL for a metric, or None when this source does not answer it (health, CVEs,
    /// memory growth, or a metric whose template is empty).
    pub fn query_for(&self, metric: Metric) -> Option<String> {
        self.query_over(metric, self.cfg.rate_window)
    }

    /// The same with `$rate` set to `rate`: a whole day's span for the report and the gate
    /// (the ratio of two rates over a span is the ratio of their increases).
    fn query_over(&self, metric: Metric, rate: Duration) -> Option<String> {
        let q = &self.cfg.queries;
        let template = match metric {
            Metric::ErrorRatePct => &q.error_rate_pct,
            Metric::P95LatencyMs => &q.p95_latency_ms,
            Metric::P99LatencyMs => &q.p99_latency_ms,
            Metric::MemoryMib => &q.memory_mib,
            Metric::RestartsInWindow => &q.restarts,
            _ => return None,
        };
        (!template.trim().is_empty()).then(|| {
            template
                .replace("$selector", &self.cfg.selector)
                .replace("$rate", &promql_duration(rate))
        })
    }

    /// Re-judges, through PromQL, every rule this source answers; the others keep the
    /// direct verdicts they came with.
    pub async fn judge(
        &self,
        results: &mut [RuleResult],
        rules: &[(&TriggerRule, Severity)],
        now_ms: i64,
        step: Duration,
    ) {
        for (r, (rule, severity)) in results.iter_mut().zip(rules) {
            if let Some(query) = self.query_for(rule.metric) {
                *r = self.judge_one(rule, *severity, &query, now_ms, step).await;
            }
        }
    }

    async fn judge_one(
        &self,
        rule: &TriggerRule,
        severity: Severity,
        query: &str,
        now_ms: i64,
        step: Duration,
    ) -> RuleResult {
        let mut r = RuleResult {
            name: rule.name.clone(),
            severity,
            metric: rule.metric,
            condition: format!("{} (Prometheus)", rules::describe(rule)),
            verdict: Verdict::Inconclusive {
                reason: String::new(),
            },
            value: None,
            evidence: Vec::new(),
        };
        let inconclusive = |reason: String| Verdict::Inconclusive { reason };
        let w_ms = rule.sustained_for.as_millis() as i64;
        let step_ms = step.as_millis().max(1000) as i64;
        let points = if rule.metric == Metric::RestartsInWindow {
            // A count over the window: one instant query with the window in it.
            let q = format!(
                "increase(({query})[{}:])",
                promql_duration(rule.sustained_for.max(step))
            );
            self.instant(&q, now_ms)
                .await
                .map(|v| v.into_iter().collect::<Vec<_>>())
        } else if w_ms == 0 {
            self.instant(query, now_ms)
                .await
                .map(|v| v.into_iter().collect())
        } else {
            self.range(query, now_ms - w_ms, now_ms, step_ms).await
        };
        let points = match points {
            Err(e) => {
                r.verdict = inconclusive(format!("Prometheus query failed: {e}"));
                return r;
            }
            Ok(p) => p,
        };
        if points.is_empty() {
            r.verdict = inconclusive(format!("Prometheus has no data for `{query}`"));
            return r;
        }
        r.value = points.last().and_then(|(_, v)| *v);
        if w_ms == 0 || rule.metric == Metric::RestartsInWindow {
            r.verdict = match r.value {
                Some(v) => rules::sustained(rule, &[(now_ms, Some(v))]),
                None => inconclusive("Prometheus answered NaN (no traffic)".into()),
            };
            r.evidence = points;
            return r;
        }
        // The window must be covered: the first point within one step of its start.
        let first = points[0].0;
        if first > now_ms - w_ms + step_ms {
            r.verdict = inconclusive(format!(
                "Prometheus covers {:.0}s of the {:.0}s window",
                (now_ms - first) as f64 / 1000.0,
                w_ms as f64 / 1000.0
            ));
            r.evidence = points;
            return r;
        }
        r.verdict = rules::sustained(rule, &points);
        r.evidence = points;
        r
    }

    /// `/api/v1/query_range`: the one series' (ms, value) points; NaN is None (0/0: no traffic).
    async fn range(
        &self,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<Vec<(i64, Option<f64>)>, String> {
        let params = [
            ("query", query.to_string()),
            ("start", secs(start_ms)),
            ("end", secs(end_ms)),
            ("step", secs(step_ms)),
        ];
        let data = self.get("/api/v1/query_range", &params).await?;
        let series = one_series(&data)?;
        let Some(series) = series else {
            return Ok(Vec::new());
        };
        let values = series["values"]
            .as_array()
            .ok_or("a matrix result without values")?;
        values.iter().map(point).collect()
    }

    /// `/api/v1/query` at `at_ms`: the one series' value, if any.
    async fn instant(&self, query: &str, at_ms: i64) -> Result<Option<(i64, Option<f64>)>, String> {
        let params = [("query", query.to_string()), ("time", secs(at_ms))];
        let data = self.get("/api/v1/query", &params).await?;
        match one_series(&data)? {
            None => Ok(None),
            Some(s) => point(&s["value"]).map(Some),
        }
    }

    async fn get(&self, path: &str, params: &[(&str, String)]) -> Result<Value, String> {
        let mut req = self.client.get(format!("{}{path}", self.url)).query(params);
        req = match &self.auth {
            Auth::None => req,
            Auth::Bearer(t) => req.bearer_auth(t),
            Auth::Basic(u, p) => req.basic_auth(u, Some(p)),
        };
        let where_ = crate::redact::urls(&self.url);
        let mut resp = req.send().await.map_err(|e| {
            format!(
                "{where_}: {}",
                crate::redact::urls(&e.without_url().to_string())
            )
        })?;
        let status = resp.status();
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("{where_}: {}", e.without_url()))?
        {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(format!(
                    "{where_}: the answer is over {} MiB",
                    MAX_BODY >> 20
                ));
            }
            body.extend_from_slice(&chunk);
        }
        let v: Value = serde_json::from_slice(&body).map_err(|_| {
            format!(
                "{where_} answered HTTP {} with something that is not the Prometheus API's JSON",
                status.as_u16()
            )
        })?;
        if v.get("status").is_none() {
            return Err(format!(
                "{where_} answered HTTP {} with JSON that is not the Prometheus API's (no status)",
                status.as_u16()
            ));
        }
        if v["status"] != "success" {
            return Err(format!(
                "{where_} answered HTTP {}: {} {}",
                status.as_u16(),
                v["errorType"].as_str().unwrap_or("error"),
                v["error"].as_str().unwrap_or("")
            ));
        }
        Ok(v["data"].clone())
    }
}

/// A whole day's error rate and latency from Prometheus, for the report and the gate: the
/// same templates with the rate window stretched over the span (the ratio of two rates over
/// a span is the ratio of their increases). None where Prometheus has no data.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SpanValues {
    pub error_rate_pct: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Why a value is missing, when a query failed.
    pub error: Option<String>,
}

impl Source {
    pub async fn span(&self, from_ms: i64, to_ms: i64) -> SpanValues {
        let span = Duration::from_millis((to_ms - from_ms).max(0) as u64);
        let mut out = SpanValues::default();
        for (metric, slot) in [
            (Metric::ErrorRatePct, &mut out.error_rate_pct),
            (Metric::P95LatencyMs, &mut out.p95_ms),
            (Metric::P99LatencyMs, &mut out.p99_ms),
        ] {
            let Some(q) = self.query_over(metric, span) else {
                continue;
            };
            match self.instant(&q, to_ms).await {
                Ok(v) => *slot = v.and_then(|(_, v)| v),
                Err(e) => out.error = Some(e),
            }
        }
        out
    }
}

/// The result's one series; several mean the template does not aggregate (`sum ...`).
fn one_series(data: &Value) -> Result<Option<Value>, String> {
    let result = data["result"]
        .as_array()
        .ok_or("a result that is not a list")?;
    match result.len() {
        0 => Ok(None),
        1 => Ok(Some(result[0].clone())),
        n => Err(format!(
            "the query returned {n} series; aggregate it (sum, max) so the fleet is one value"
        )),
    }
}

/// `[1732700000.123, "4.2"]` -> (ms, Some(4.2)); "NaN" -> None.
fn point(p: &Value) -> Result<(i64, Option<f64>), String> {
    let t = p[0].as_f64().ok_or("a point without a time")?;
    let v: f64 = p[1]
        .as_str()
        .ok_or("a point without a value")?
        .parse()
        .map_err(|_| format!("a value that is not a number: {}", p[1]))?;
    Ok(((t * 1000.0).round() as i64, v.is_finite().then_some(v)))
}

fn secs(ms: i64) -> String {
    format!("{:.3}", ms as f64 / 1000.0)
}

/// A duration as PromQL writes it: whole seconds, at least 1s.
fn promql_duration(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> Source {
        Source::new(&PrometheusConfig::default(), Some("http://127.0.0.1:9")).unwrap()
    }

    #[test]
    fn templates_get_the_selector_and_the_rate_window() {
        let s = source();
        let q = s.query_for(Metric::ErrorRatePct).unwrap();
        assert_eq!(
            q,
            r#"100 * sum(rate(http_requests_total{job="authentication-service",status=~"5.."}[60s])) / sum(rate(http_requests_total{job="authentication-service"}[60s]))"#
        );
        assert!(s
            .query_for(Metric::P99LatencyMs)
            .unwrap()
            .starts_with("1000 * histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{job=\"authentication-service\"}[60s])))"));
        // Not configured: the engine answers memory and restarts; health and CVEs never PromQL.
        assert_eq!(s.query_for(Metric::MemoryMib), None);
        assert_eq!(s.query_for(Metric::HealthCheckFailureRatePct), None);
    }

    #[test]
    fn points_and_series_as_the_api_returns_them() {
        let v: Value = serde_json::json!([1732700000.5, "4.25"]);
        assert_eq!(point(&v), Ok((1_732_700_000_500, Some(4.25))));
        assert_eq!(point(&serde_json::json!([1.0, "NaN"])), Ok((1000, None)));
        let two = serde_json::json!({"resultType": "vector", "result": [{}, {}]});
        assert!(one_series(&two).unwrap_err().contains("aggregate it"));
        assert_eq!(one_series(&serde_json::json!({"result": []})), Ok(None));
    }

    #[test]
    fn unset_credentials_and_bad_urls_are_refused() {
        let mut cfg = PrometheusConfig {
            bearer_token_env: "DHI_TEST_SURELY_UNSET_TOKEN".into(),
            ..Default::default()
        };
        let err = Source::new(&cfg, Some("http://127.0.0.1:9"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("DHI_TEST_SURELY_UNSET_TOKEN"), "{err}");
        cfg.bearer_token_env.clear();
        assert!(Source::new(&cfg, Some("127.0.0.1:9090")).is_err());
    }
}
