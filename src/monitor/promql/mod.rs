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
use crate::probe::conventions::{preset_named, Convention};
use crate::probe::reading::{Choice, Reader};

pub mod templates;

fn runbook() -> Convention {
    preset_named("runbook")
        .cloned()
        .expect("the runbook preset is in the table")
}

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
    /// The configured URL: its path prefixes the API's, its query rides along on every call.
    base: reqwest::Url,
    /// The URL as messages show it (userinfo and secret query values masked).
    url: String,
    auth: Auth,
    /// Every form of every credential this source sends, masked in whatever it reports
    /// (an error page may echo the request's Authorization header).
    known: Vec<String>,
    cfg: PrometheusConfig,
    /// The convention the templates are written from (pinned, else what the scrape found,
    /// else the runbook's), and the probe paths left out where the route label allows.
    convention: Convention,
    auto: bool,
    exclude: Vec<String>,
}

impl Source {
    /// `url` overrides the configured one (`--prometheus-url`). Credentials come from the
    /// environment variables the config names; a named variable that is unset is an error.
    pub fn new(cfg: &PrometheusConfig, url: Option<&str>) -> Result<Source> {
        let url = url.unwrap_or(&cfg.url).to_string();
        let shown = crate::redact::urls(&url);
        let base = reqwest::Url::parse(&url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| anyhow!(
                "the Prometheus URL {shown:?} must start with http:// or https:// (--prometheus-url or [monitoring.prometheus] url)"
            ))?;
        let mut known = crate::redact::url_credentials(&url);
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
        match &auth {
            Auth::None => {}
            Auth::Bearer(t) => known.extend(crate::redact::credential_forms(None, t)),
            Auth::Basic(u, p) => known.extend(crate::redact::credential_forms(Some(u), p)),
        }
        crate::redact::remember(known.iter().cloned());
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .build()?;
        Ok(Source {
            client,
            url: shown.trim_end_matches('/').to_string(),
            base,
            auth,
            known,
            cfg: cfg.clone(),
            convention: runbook(),
            auto: true,
            exclude: Vec::new(),
        })
    }

    /// Reads the service as `reader` does: its pinned convention (else the runbook's until a
    /// scrape says which) and its probe exclusion, so both sources judge the same series.
    pub fn reading_with(mut self, reader: &Reader) -> Self {
        if let Choice::Pinned(c) = &reader.choice {
            self.convention = c.clone();
            self.auto = false;
        }
        self.exclude = reader.exclude.clone();
        self
    }

    /// Follows the convention a scrape found (with `auto`).
    pub fn follow(&mut self, found: Option<&str>) {
        if let Some(c) = found
            .filter(|_| self.auto)
            .and_then(crate::probe::conventions::preset_named)
        {
            self.convention = c.clone();
        }
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
        let set = match metric {
            Metric::ErrorRatePct => &q.error_rate_pct,
            Metric::P95LatencyMs => &q.p95_latency_ms,
            Metric::P99LatencyMs => &q.p99_latency_ms,
            Metric::MemoryMib => &q.memory_mib,
            Metric::RestartsInWindow => &q.restarts,
            _ => return None,
        };
        let template = if set.trim().is_empty() {
            templates::of(&self.convention, metric, &self.exclude)?
        } else {
            set.clone()
        };
        Some(
            template
                .replace("$selector", &self.cfg.selector)
                .replace("$rate", &promql_duration(rate)),
        )
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
            bucket_ms: None,
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
        let instant = w_ms == 0 || rule.metric == Metric::RestartsInWindow;
        // Stale or misplaced points (a caching proxy's hour-old answer, points from 1970)
        // are not coverage: the answer must reach now, within a step or two.
        let covered = if instant {
            fresh(points[0].0, now_ms, step_ms)
        } else {
            coverage(&points, now_ms - w_ms, now_ms, step_ms)
        };
        if let Err(why) = covered {
            r.verdict = inconclusive(format!("Prometheus {why}"));
            r.evidence = points;
            return r;
        }
        if instant {
            r.verdict = match r.value {
                Some(v) => rules::sustained(rule, &[(now_ms, Some(v))]),
                None => inconclusive("Prometheus answered NaN (no traffic)".into()),
            };
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

    /// Any other API call (`/api/v1/rules`, `/api/v1/query_range`), its `data` as JSON.
    pub async fn api(&self, path: &str, params: &[(&str, String)]) -> Result<Value, String> {
        self.get(path, params).await
    }

    /// One API call: the configured URL's path and query kept, the body bounded, an HTTP
    /// error never judged whatever its body says, and every message masked of credentials.
    async fn get(&self, path: &str, params: &[(&str, String)]) -> Result<Value, String> {
        self.call(path, params).await.map_err(|e| {
            let masked = crate::redact::log_line(&e, &self.known);
            // An echoed error page is evidence, not a report: its start is enough.
            match masked.char_indices().nth(400) {
                Some((i, _)) => format!("{}…", &masked[..i]),
                None => masked,
            }
        })
    }

    async fn call(&self, path: &str, params: &[(&str, String)]) -> Result<Value, String> {
        let mut url = self.base.clone();
        url.set_path(&format!("{}{path}", self.base.path().trim_end_matches('/')));
        let mut req = self.client.get(url).query(params);
        req = match &self.auth {
            Auth::None => req,
            Auth::Bearer(t) => req.bearer_auth(t),
            Auth::Basic(u, p) => req.basic_auth(u, Some(p)),
        };
        let where_ = &self.url;
        let failed = |e: reqwest::Error| {
            if e.is_timeout() {
                format!(
                    "{where_}: no answer within {}s",
                    self.cfg.timeout.as_secs_f64()
                )
            } else {
                format!("{where_}: {}", crate::probe::health::describe(e))
            }
        };
        let resp = req.send().await.map_err(failed)?;
        let status = resp.status();
        use crate::probe::health::{read_body, Over, Unread};
        let body = read_body(resp, MAX_BODY, Over::Refuse)
            .await
            .map_err(|e| match e {
                Unread::Failed(e) => failed(e),
                Unread::Over(max) => format!("{where_}: the answer is over {} MiB", max >> 20),
            })?;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !status.is_success() {
            let said = match (v["errorType"].as_str(), v["error"].as_str()) {
                (Some(t), Some(e)) => format!(": {t} {e}"),
                _ => format!(
                    ": {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)]).trim()
                ),
            };
            return Err(format!("{where_} answered HTTP {}{said}", status.as_u16()));
        }
        if v.is_null() {
            return Err(format!(
                "{where_} answered HTTP {} with something that is not the Prometheus API's JSON",
                status.as_u16()
            ));
        }
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
    /// Each value is the instant answer at `to_ms` (which must be for that time), and a
    /// plausible one; what is missing says why in `error` (every metric's reason, joined).
    pub async fn span(&self, from_ms: i64, to_ms: i64) -> SpanValues {
        let span = Duration::from_millis((to_ms - from_ms).max(0) as u64);
        let mut out = SpanValues::default();
        let mut errors = Vec::new();
        for (metric, label, slot) in [
            (Metric::ErrorRatePct, "error rate", &mut out.error_rate_pct),
            (Metric::P95LatencyMs, "P95", &mut out.p95_ms),
            (Metric::P99LatencyMs, "P99", &mut out.p99_ms),
        ] {
            let Some(q) = self.query_over(metric, span) else {
                continue;
            };
            let judged = match self.instant(&q, to_ms).await {
                Ok(None) => Ok(None),
                Ok(Some((t, v))) => fresh(t, to_ms, 1000)
                    .map_err(|why| format!("Prometheus {why}"))
                    .and_then(|()| match v.and_then(|v| rules::implausible(metric, v)) {
                        Some(why) => Err(format!("Prometheus's answer refused: {why}")),
                        None => Ok(v),
                    }),
                Err(e) => Err(e),
            };
            match judged {
                Ok(v) => *slot = v,
                Err(e) => errors.push(format!("{label}: {e}")),
            }
        }
        out.error = (!errors.is_empty()).then(|| errors.join("; "));
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

/// `[1732700000.123, "4.2"]` -> (ms, Some(4.2)); "NaN" (0/0: no traffic) -> None. "+Inf"
/// stays infinite, for `rules::implausible` to refuse by name.
fn point(p: &Value) -> Result<(i64, Option<f64>), String> {
    let t = p[0].as_f64().ok_or("a point without a time")?;
    let v: f64 = p[1]
        .as_str()
        .ok_or("a point without a value")?
        .parse()
        .map_err(|_| format!("a value that is not a number: {}", p[1]))?;
    Ok(((t * 1000.0).round() as i64, (!v.is_nan()).then_some(v)))
}

/// An instant answer is for the time asked (within a step): an older one is a cache's.
fn fresh(t_ms: i64, at_ms: i64, step_ms: i64) -> Result<(), String> {
    let off = (at_ms - t_ms).abs();
    if off > step_ms.max(1000) {
        return Err(format!(
            "answered for a time {:.0}s away from the one asked (stale or misplaced)",
            off as f64 / 1000.0
        ));
    }
    Ok(())
}

/// A range answer covers the window: in time order, from within a step of its start to
/// within two steps of its end, with no gap over two steps.
fn coverage(
    points: &[(i64, Option<f64>)],
    start_ms: i64,
    end_ms: i64,
    step_ms: i64,
) -> Result<(), String> {
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return Err("has no points for the window".into());
    };
    let w = (end_ms - start_ms) as f64 / 1000.0;
    if points
        .iter()
        .any(|(t, _)| *t < start_ms - step_ms || *t > end_ms + step_ms)
    {
        return Err(format!(
            "answered points outside the {w:.0}s window asked (stale or misplaced)"
        ));
    }
    if first.0 > start_ms + step_ms {
        return Err(format!(
            "covers {:.0}s of the {w:.0}s window",
            (end_ms - first.0) as f64 / 1000.0
        ));
    }
    if last.0 < end_ms - 2 * step_ms {
        return Err(format!(
            "stops {:.0}s before now (stale)",
            (end_ms - last.0) as f64 / 1000.0
        ));
    }
    if let Some(gap) = points
        .windows(2)
        .map(|p| p[1].0 - p[0].0)
        .find(|g| *g > 2 * step_ms || *g <= 0)
    {
        return Err(format!(
            "has a gap of {:.0}s in the window (or points out of order)",
            gap as f64 / 1000.0
        ));
    }
    Ok(())
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

    #[test]
    fn only_points_that_reach_now_cover_a_window() {
        let pts = |ts: &[i64]| ts.iter().map(|t| (*t, Some(1.0))).collect::<Vec<_>>();
        // (points, covers 10_000..20_000 at 1 s steps)
        let table: [(&[i64], bool); 6] = [
            (
                &[
                    10_000, 11_000, 12_000, 13_000, 14_000, 15_000, 16_000, 17_000, 18_000, 19_000,
                    20_000,
                ],
                true,
            ),
            (&[6_400_000], false),              // an hour away
            (&[1_000, 2_000, 3_000], false),    // from 1970
            (&[20_000, 20_000, 20_000], false), // one time for all
            (&[10_000, 11_000, 12_000], false), // stops long before now
            (&[10_000, 15_000, 20_000], false), // a gap of 5 steps
        ];
        for (ts, ok) in table {
            assert_eq!(
                coverage(&pts(ts), 10_000, 20_000, 1_000).is_ok(),
                ok,
                "{ts:?}"
            );
        }
        assert!(fresh(20_000, 20_000, 1_000).is_ok());
        assert!(fresh(20_000 - 3_600_000, 20_000, 1_000).is_err());
    }

    #[test]
    fn nan_is_no_traffic_but_infinity_is_kept_to_be_refused() {
        let p = |v: &str| point(&serde_json::json!([1.0, v])).unwrap().1;
        assert_eq!(p("NaN"), None);
        assert_eq!(p("+Inf"), Some(f64::INFINITY));
        assert_eq!(p("-5"), Some(-5.0));
    }

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
        let reader = Reader {
            choice: Choice::Pinned(preset_named("otel").unwrap().clone()),
            exclude: vec!["/health".into(), "/metrics".into()],
        };
        let otel = source().reading_with(&reader);
        assert_eq!(
            otel.query_for(Metric::ErrorRatePct).unwrap(),
            r#"100 * sum(rate(http_server_request_duration_seconds_count{job="authentication-service",http_route!~"/health|/metrics",http_response_status_code=~"5.."}[60s])) / sum(rate(http_server_request_duration_seconds_count{job="authentication-service",http_route!~"/health|/metrics"}[60s]))"#
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
