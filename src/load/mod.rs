//! A k6-equivalent load probe. Virtual users (closed model) or a constant arrival rate (open
//! model) send requests; each result goes over a channel to one collector that records the
//! latency in an HDR histogram (never a sorted Vec) and feeds the live progress line. In the
//! open model latency is measured from when a request was *scheduled*, so a stalled server
//! shows up as latency instead of silently lowering the request count (coordinated omission).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

use crate::config::LoadThresholds;

pub mod profile;

#[derive(Debug, Clone)]
pub struct Route {
    pub method: reqwest::Method,
    pub path: String,
}

pub fn parse_route(s: &str) -> Result<Route> {
    let (m, p) = s
        .split_once(' ')
        .ok_or_else(|| anyhow!("route {s:?} must be \"METHOD /path\""))?;
    let method = reqwest::Method::from_bytes(m.as_bytes())
        .map_err(|_| anyhow!("route {s:?}: bad method"))?;
    if !p.starts_with('/') {
        return Err(anyhow!("route {s:?}: the path must start with /"));
    }
    Ok(Route {
        method,
        path: p.to_string(),
    })
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub profile: String,
    pub base_url: String,
    pub routes: Vec<Route>,
    pub vus: u32,
    pub ramp: Duration,
    pub duration: Duration,
    /// Requests per second for the open model; None runs VUs back to back.
    pub rate: Option<f64>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: Option<f64>,
    pub max: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub profile: String,
    pub source: String,
    pub base_url: Option<String>,
    pub vus: Option<u32>,
    pub rate: Option<f64>,
    pub duration_s: f64,
    pub requests: u64,
    pub failures: u64,
    pub dropped: u64,
    pub failure_rate_pct: f64,
    pub rps: f64,
    /// Milliseconds.
    pub latency_ms: Latency,
    pub thresholds: Vec<ThresholdResult>,
    pub passed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThresholdResult {
    pub threshold: String,
    pub passed: Option<bool>,
    pub value: Option<f64>,
}

struct Sent {
    micros: u64,
    ok: bool,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Live {
    pub elapsed: Duration,
    /// Ramp plus steady duration: what `elapsed` runs up to.
    pub total: Duration,
    pub requests: u64,
    pub failures: u64,
    pub rps: f64,
    pub p99_ms: f64,
}

pub async fn run(
    plan: &Plan,
    thresholds: &LoadThresholds,
    on_progress: impl Fn(Live),
) -> Result<Report> {
    if plan.routes.is_empty() {
        return Err(anyhow!("no routes to send requests to"));
    }
    let client = reqwest::Client::builder()
        .timeout(plan.timeout)
        .connect_timeout(plan.timeout)
        .pool_max_idle_per_host(plan.vus.max(1) as usize * 2)
        .no_proxy()
        .build()?;
    let (tx, mut rx) = mpsc::channel::<Vec<Sent>>(4096);
    let started = Instant::now();
    let end = started + plan.ramp + plan.duration;
    let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));

    let producers = match plan.rate {
        None => closed_model(plan, &client, tx, started, end),
        Some(rate) => open_model(plan, rate, &client, tx, started, end, dropped.clone())?,
    };

    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds");
    let (mut requests, mut failures) = (0u64, 0u64);
    let mut last_report = Instant::now();
    while let Some(batch) = rx.recv().await {
        for s in batch {
            requests += 1;
            if !s.ok {
                failures += 1;
            }
            hist.saturating_record(s.micros.max(1));
        }
        if last_report.elapsed() >= Duration::from_millis(250) {
            last_report = Instant::now();
            let elapsed = started.elapsed();
            on_progress(Live {
                elapsed,
                total: plan.ramp + plan.duration,
                requests,
                failures,
                rps: requests as f64 / elapsed.as_secs_f64(),
                p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
            });
        }
    }
    for p in producers {
        let _ = p.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ms = |v: u64| v as f64 / 1000.0;
    let latency = if requests == 0 {
        Latency {
            min: 0.0,
            mean: 0.0,
            p50: 0.0,
            p90: 0.0,
            p95: 0.0,
            p99: None,
            max: 0.0,
        }
    } else {
        Latency {
            min: ms(hist.min()),
            mean: hist.mean() / 1000.0,
            p50: ms(hist.value_at_quantile(0.50)),
            p90: ms(hist.value_at_quantile(0.90)),
            p95: ms(hist.value_at_quantile(0.95)),
            p99: Some(ms(hist.value_at_quantile(0.99))),
            max: ms(hist.max()),
        }
    };
    let dropped = dropped.load(std::sync::atomic::Ordering::Relaxed);
    let mut report = Report {
        profile: plan.profile.clone(),
        source: "dhi-stage".into(),
        base_url: Some(plan.base_url.clone()),
        vus: plan.rate.is_none().then_some(plan.vus),
        rate: plan.rate,
        duration_s: elapsed,
        requests,
        failures,
        dropped,
        failure_rate_pct: if requests == 0 {
            0.0
        } else {
            failures as f64 / requests as f64 * 100.0
        },
        rps: requests as f64 / elapsed.max(1e-9),
        latency_ms: latency,
        thresholds: Vec::new(),
        passed: false,
    };
    judge(&mut report, thresholds);
    Ok(report)
}

/// A worker hands its results over in batches (one wake-up of the collector per batch,
/// not per request), at least every 100 ms so the live line stays current.
const BATCH: usize = 64;

fn closed_model(
    plan: &Plan,
    client: &reqwest::Client,
    tx: mpsc::Sender<Vec<Sent>>,
    started: Instant,
    end: Instant,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..plan.vus.max(1))
        .map(|vu| {
            let (client, tx, routes, base) = (
                client.clone(),
                tx.clone(),
                plan.routes.clone(),
                plan.base_url.clone(),
            );
            // Ramp: VU n starts n/vus of the way through the ramp, as k6's ramping-vus does.
            let start_at = started + plan.ramp.mul_f64(vu as f64 / plan.vus.max(1) as f64);
            tokio::spawn(async move {
                tokio::time::sleep_until(start_at).await;
                let mut i = vu as usize;
                let mut batch = Vec::with_capacity(BATCH);
                let mut flushed = Instant::now();
                while Instant::now() < end {
                    let r = &routes[i % routes.len()];
                    i += 1;
                    let t0 = Instant::now();
                    let ok = send(&client, &base, r).await;
                    batch.push(Sent {
                        micros: t0.elapsed().as_micros() as u64,
                        ok,
                    });
                    if batch.len() >= BATCH || flushed.elapsed() >= Duration::from_millis(100) {
                        flushed = Instant::now();
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                        if tx.send(full).await.is_err() {
                            return;
                        }
                    }
                }
                if !batch.is_empty() {
                    let _ = tx.send(batch).await;
                }
            })
        })
        .collect()
}

fn open_model(
    plan: &Plan,
    rate: f64,
    client: &reqwest::Client,
    tx: mpsc::Sender<Vec<Sent>>,
    started: Instant,
    end: Instant,
    dropped: Arc<std::sync::atomic::AtomicU64>,
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    if !(rate > 0.0 && rate.is_finite()) {
        return Err(anyhow!(
            "--rate must be a positive number of requests per second"
        ));
    }
    let (client, routes, base) = (client.clone(), plan.routes.clone(), plan.base_url.clone());
    // In-flight cap: beyond it a request is counted as dropped (k6's dropped_iterations).
    let slots = Arc::new(Semaphore::new((plan.vus.max(1) as usize * 50).max(100)));
    // A rate so small that one request a year would overflow a Duration is refused, not a panic.
    let every = Duration::try_from_secs_f64(1.0 / rate)
        .ok()
        .filter(|d| *d <= Duration::from_secs(86_400) && *d >= Duration::from_micros(1))
        .ok_or_else(|| {
            anyhow!("--rate {rate} is outside one request a day to a million a second")
        })?;
    Ok(vec![tokio::spawn(async move {
        let mut k: u32 = 0;
        loop {
            let Some(scheduled) = every.checked_mul(k).map(|d| started + d) else {
                return;
            };
            if scheduled >= end || k == u32::MAX {
                return;
            }
            tokio::time::sleep_until(scheduled).await;
            let r = routes[k as usize % routes.len()].clone();
            k += 1;
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                continue;
            };
            let (client, tx, base) = (client.clone(), tx.clone(), base.clone());
            tokio::spawn(async move {
                let ok = send(&client, &base, &r).await;
                let _ = tx
                    .send(vec![Sent {
                        micros: scheduled.elapsed().as_micros() as u64,
                        ok,
                    }])
                    .await;
                drop(permit);
            });
        }
    })])
}

/// One request; "ok" as k6's http_req_failed sees it: a response with status below 400.
async fn send(client: &reqwest::Client, base: &str, r: &Route) -> bool {
    let req = client.request(r.method.clone(), format!("{base}{}", r.path));
    let req = if r.method == reqwest::Method::POST {
        req.header("content-type", "application/json")
            .body("{\"username\":\"load\",\"password\":\"load\"}")
    } else {
        req
    };
    match req.send().await {
        Ok(mut resp) => {
            let ok = resp.status().as_u16() < 400;
            // Drain a bounded body so the connection can be reused.
            let mut read = 0usize;
            while let Ok(Some(chunk)) = resp.chunk().await {
                read += chunk.len();
                if read > 1 << 20 {
                    break;
                }
            }
            ok
        }
        Err(_) => false,
    }
}

/// Applies the runbook's SLAs: P95 < 100 ms, P99 < 200 ms, 0% HTTP failures.
pub fn judge(r: &mut Report, t: &LoadThresholds) {
    let p95 = t.p95_latency.as_secs_f64() * 1000.0;
    let p99 = t.p99_latency.as_secs_f64() * 1000.0;
    let none = r.requests == 0;
    r.thresholds = vec![
        ThresholdResult {
            threshold: format!("http_req_duration p(95) < {p95}ms"),
            passed: (!none).then_some(r.latency_ms.p95 < p95),
            value: Some(r.latency_ms.p95),
        },
        ThresholdResult {
            threshold: format!("http_req_duration p(99) < {p99}ms"),
            passed: if none {
                None
            } else {
                r.latency_ms.p99.map(|v| v < p99)
            },
            value: r.latency_ms.p99,
        },
        ThresholdResult {
            threshold: format!("http_req_failed rate <= {}%", t.http_failure_rate_pct),
            passed: (!none).then_some(r.failure_rate_pct <= t.http_failure_rate_pct),
            value: Some(r.failure_rate_pct),
        },
    ];
    r.passed = r.thresholds.iter().all(|x| x.passed == Some(true));
}

/// Reads a k6 `--summary-export` file. k6 only exports the trend stats it was told to
/// (`p(99)` needs `summaryTrendStats`); a missing one is "no data", never invented.
pub fn import_k6(text: &str, profile: &str, t: &LoadThresholds) -> Result<Report> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| anyhow!("not a k6 summary (invalid JSON: {e})"))?;
    let m = v
        .get("metrics")
        .ok_or_else(|| anyhow!("not a k6 summary: no \"metrics\" object"))?;
    let d = m
        .get("http_req_duration")
        .ok_or_else(|| anyhow!("k6 summary has no http_req_duration metric"))?;
    let d = d.get("values").unwrap_or(d); // k6 >= 0.30 handleSummary nests values
    let f = |k: &str| d.get(k).and_then(serde_json::Value::as_f64);
    let reqs = m.get("http_reqs").map(|x| x.get("values").unwrap_or(x));
    let requests = reqs
        .and_then(|x| x.get("count"))
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(0.0) as u64;
    let rps = reqs
        .and_then(|x| x.get("rate"))
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(0.0);
    let failed = m
        .get("http_req_failed")
        .map(|x| x.get("values").unwrap_or(x));
    // summary-export: {"passes": failed count, "fails": ok count, "value": rate}
    let rate = failed
        .and_then(|x| x.get("value").or_else(|| x.get("rate")))
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(0.0);
    let need = |k: &str| f(k).ok_or_else(|| anyhow!("k6 summary's http_req_duration lacks {k:?}"));
    let mut r = Report {
        profile: profile.to_string(),
        source: "k6-import".into(),
        base_url: None,
        vus: m
            .get("vus_max")
            .map(|x| x.get("values").unwrap_or(x))
            .and_then(|x| x.get("max").or_else(|| x.get("value")))
            .and_then(serde_json::Value::as_f64)
            .map(|v| v as u32),
        rate: None,
        duration_s: if rps > 0.0 {
            requests as f64 / rps
        } else {
            0.0
        },
        requests,
        // A Rate metric's `passes` counts its non-zero values: for http_req_failed, the
        // failed requests. The rate times the count is the fallback.
        failures: failed
            .and_then(|x| x.get("passes"))
            .and_then(serde_json::Value::as_u64)
            .unwrap_or((rate * requests as f64).round() as u64),
        dropped: 0,
        failure_rate_pct: rate * 100.0,
        rps,
        latency_ms: Latency {
            min: need("min")?,
            mean: need("avg")?,
            p50: need("med")?,
            p90: need("p(90)")?,
            p95: need("p(95)")?,
            p99: f("p(99)"),
            max: need("max")?,
        },
        thresholds: Vec::new(),
        passed: false,
    };
    judge(&mut r, t);
    Ok(r)
}

/// The report in k6's summary-export shape, for tools that read k6 output.
pub fn to_k6_summary(r: &Report) -> serde_json::Value {
    let mut dur = serde_json::json!({"avg": r.latency_ms.mean, "min": r.latency_ms.min, "med": r.latency_ms.p50, "max": r.latency_ms.max, "p(90)": r.latency_ms.p90, "p(95)": r.latency_ms.p95});
    if let Some(p99) = r.latency_ms.p99 {
        dur["p(99)"] = serde_json::json!(p99);
    }
    serde_json::json!({
        "metrics": {
            "http_req_duration": dur,
            "http_reqs": {"count": r.requests, "rate": r.rps},
            "http_req_failed": {"passes": r.failures, "fails": r.requests - r.failures, "value": r.failure_rate_pct / 100.0},
            "dropped_iterations": {"count": r.dropped},
        },
        "dhi_stage": r,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thresholds() -> LoadThresholds {
        let cfg = crate::config::parse(crate::config::DEFAULT_TOML, "t").unwrap();
        cfg.load.thresholds
    }

    #[test]
    fn imports_a_k6_summary_export() {
        let text = r#"{"metrics":{"http_req_duration":{"avg":20.5,"min":1.2,"med":15.0,"max":180.0,"p(90)":40.0,"p(95)":90.0,"p(99)":150.0},
            "http_reqs":{"count":1000,"rate":16.6},"http_req_failed":{"passes":0,"fails":1000,"value":0}}}"#;
        let r = import_k6(text, "load", &thresholds()).unwrap();
        assert_eq!(
            (r.requests, r.latency_ms.p95, r.latency_ms.p99),
            (1000, 90.0, Some(150.0))
        );
        assert!(r.passed);
        let slow = text.replace("\"p(95)\":90.0", "\"p(95)\":120.0");
        assert!(!import_k6(&slow, "load", &thresholds()).unwrap().passed);
        let no_p99 = text.replace(",\"p(99)\":150.0", "");
        let r = import_k6(&no_p99, "load", &thresholds()).unwrap();
        assert_eq!(r.latency_ms.p99, None);
        assert!(!r.passed, "a missing P99 cannot pass the P99 threshold");
        assert!(import_k6("{}", "load", &thresholds()).is_err());
    }

    /// The two shapes k6 writes: `--summary-export` (flat metrics, a Rate's `passes` counting
    /// its true values, threshold booleans) and a `handleSummary` JSON.stringify(data)
    /// (`type`/`contains`/`values`, `options`, `state`), each with the sub-metric
    /// `http_req_duration{expected_response:true}` beside the metric itself.
    #[test]
    fn imports_both_real_k6_summary_shapes() {
        let export = include_str!("../../tests/fixtures/k6/summary-export.json");
        let r = import_k6(export, "load", &thresholds()).unwrap();
        assert_eq!((r.requests, r.failures, r.vus), (2400, 9, Some(10)));
        assert_eq!((r.latency_ms.p95, r.latency_ms.max), (62.4471, 181.2004));
        assert!((r.failure_rate_pct - 0.375).abs() < 1e-9);
        // k6's default trend stats have no p(99): the runbook's P99 cannot be judged.
        assert_eq!(r.latency_ms.p99, None);
        assert!(!r.passed);

        let handled = include_str!("../../tests/fixtures/k6/handle-summary.json");
        let r = import_k6(handled, "smoke", &thresholds()).unwrap();
        assert_eq!((r.requests, r.failures, r.vus), (6000, 13, Some(20)));
        assert_eq!(
            (r.latency_ms.p50, r.latency_ms.p95, r.latency_ms.p99),
            (25.6677, 75.4443, Some(127.5514))
        );
        assert!((r.duration_s - 6000.0 / 99.97943).abs() < 1e-9);
        // Latency within the runbook's limits; the 13 failed requests break "no failures".
        let verdicts: Vec<(String, Option<bool>)> = r
            .thresholds
            .iter()
            .map(|t| (t.threshold.clone(), t.passed))
            .collect();
        assert_eq!(
            verdicts,
            [
                ("http_req_duration p(95) < 100ms".to_string(), Some(true)),
                ("http_req_duration p(99) < 200ms".to_string(), Some(true)),
                ("http_req_failed rate <= 0%".to_string(), Some(false)),
            ]
        );
        assert!(!r.passed);
    }

    #[test]
    fn routes_parse() {
        assert_eq!(
            parse_route("POST /auth/login").unwrap().method,
            reqwest::Method::POST
        );
        assert!(parse_route("/health").is_err());
    }
}
