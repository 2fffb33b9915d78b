//! A realistic validation week, written through the store's own calls (deployments, events,
//! validations, test results, samples) with the store's clock set to the past: what the
//! week page, the report and the gate are tested and benchmarked on, at any sampling
//! interval. Deterministic for a given seed, so two layouts of the store see the same week.
//!
//! The week: the baseline serves, the candidate is deployed and validated (12/12, no
//! HIGH/CRITICAL CVE after VEX, SBOM, provenance), smoke and load runs pass, a rollback
//! drill passes on day 2, the container restarts once on day 2 (counters reset), a 5xx burst
//! on day 3 fires `error_rate` and the monitor rolls back to the baseline for 30 minutes
//! before the candidate is redeployed, two health probes fail on day 4, and the scrape is
//! refused for 10 minutes on day 5 (a blind stretch).

use std::time::Duration;

use anyhow::{bail, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

use crate::config::Config;
use crate::monitor::sample::Sample;
use crate::probe::metrics::Snapshot;
use crate::store::events::{
    BlindDetail, BlindRuleDetail, DrillDetail, RollbackDetail, TriggerDetail,
};
use crate::store::{DeploymentKind, DeploymentStatus, EventKind};
use crate::store::{NewDeployment, Store};

pub struct Options {
    pub days: u32,
    pub interval: Duration,
    pub seed: u64,
    /// Put markup and script into what the service and its logs say (health details, the
    /// rollback reason), as a hostile or broken service could.
    pub hostile: bool,
    /// The end of the week (the last sample); the week starts `days` before it.
    pub end: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
pub struct Written {
    pub samples: u64,
    pub deployments: u32,
    pub events: u32,
    pub period_start: DateTime<Utc>,
    pub candidate: String,
}

/// What a hostile health body puts in its error text (a test looks for it as text).
pub const HOSTILE: &str = "<script>document.title='pwned'</script><img src=x onerror=alert(1)>";

/// The runbook's latency buckets (seconds) and the share of requests at or under each.
const BUCKETS: &[(f64, f64)] = &[
    (0.001, 0.0),
    (0.0025, 0.01),
    (0.005, 0.06),
    (0.01, 0.30),
    (0.025, 0.74),
    (0.05, 0.955),
    (0.1, 0.992),
    (0.15, 0.997),
    (0.2, 0.9985),
    (0.3, 0.9993),
    (0.5, 0.9997),
    (0.75, 0.9999),
    (1.0, 1.0),
    (2.5, 1.0),
    (f64::INFINITY, 1.0),
];

/// A small deterministic generator (xorshift64*): the same seed gives the same week.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Where in the week (offset from the period start) each scripted episode happens.
struct Script {
    restart_at: i64,
    burst: (i64, i64),
    baseline: (i64, i64),
    unhealthy: (i64, i64),
    scrape_refused: (i64, i64),
}

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

impl Script {
    fn for_days(days: u32) -> Script {
        // Episodes sit on days 2-5 when the week has them; a shorter week gets them
        // squeezed into its own length so every generated week has a rollback and a trigger.
        let span = days as i64 * DAY;
        let at = |day: i64, hour: i64| ((day - 1) * DAY + hour * HOUR).min(span - 2 * HOUR);
        let burst_start = at(3, 14);
        let burst_end = burst_start + 6 * 60_000;
        Script {
            restart_at: at(2, 6),
            burst: (burst_start, burst_end),
            baseline: (burst_end, burst_end + 30 * 60_000),
            unhealthy: (at(4, 9), at(4, 9) + 2 * 60_000),
            scrape_refused: (at(5, 10), at(5, 10) + 10 * 60_000),
        }
    }
}

pub fn write_week(store: &mut Store, cfg: &Config, o: &Options) -> Result<Written> {
    if o.days == 0 || o.days > 60 {
        bail!("--days must be 1-60, not {}", o.days);
    }
    if o.interval < Duration::from_secs(1) || o.interval > Duration::from_secs(3600) {
        bail!("--interval must be 1s-1h");
    }
    let interval_ms = o.interval.as_millis() as i64;
    let start = o.end - chrono::Duration::days(o.days as i64);
    let at = |off: i64| start + chrono::Duration::milliseconds(off);
    let script = Script::for_days(o.days);
    let name = cfg.container.name.clone();
    let baseline = cfg.baseline_ref();
    let candidate = cfg.staging_ref(start.date_naive());
    let cand_id = format!("sha256:{:064x}", o.seed.wrapping_mul(0x9E37_79B9) | 1);
    let base_id = format!("sha256:{:064x}", o.seed.wrapping_add(7));
    let mut events = 0u32;
    let deploy = |store: &mut Store,
                  when: DateTime<Utc>,
                  kind: DeploymentKind,
                  image: &str,
                  image_id: &str,
                  previous: Option<i64>|
     -> Result<i64> {
        store.set_clock(Some(when));
        let id = store.insert_deployment(&NewDeployment {
            kind,
            image_ref: image.into(),
            image_id: Some(image_id.into()),
            digest: Some(format!("{image}@{image_id}")),
            container_name: name.clone(),
            previous_id: previous,
            insecure: false,
            host_port: Some(cfg.container.host_port),
            base_url: Some(cfg.verify.base_url.clone()),
        })?;
        store.set_container(id, &format!("{id:064x}"))?;
        let healthy = when + chrono::Duration::milliseconds(1_100);
        store.mark_healthy(id, healthy)?;
        store.set_clock(Some(healthy));
        store.finish_deployment(
            id,
            DeploymentStatus::Active,
            Some(&json!({"synthetic": true})),
        )?;
        Ok(id)
    };

    let base_dep = deploy(
        store,
        at(-2 * HOUR),
        DeploymentKind::Deploy,
        &baseline,
        &base_id,
        None,
    )?;
    let first = deploy(
        store,
        at(0),
        DeploymentKind::Deploy,
        &candidate,
        &cand_id,
        Some(base_dep),
    )?;
    store.set_clock(Some(at(-3 * HOUR)));
    store.record_image("push", &candidate, Some(&cand_id), Some(48_000_000), None)?;
    store.set_clock(Some(at(10 * 60_000)));
    let validated = [
        ("score", json!({"score": 12, "of": 12})),
        ("sbom", json!({"format": "cyclonedx", "components": 143})),
        ("provenance", json!({"verified": true})),
        (
            "cve",
            json!({"before": {"critical": 1, "high": 2, "medium": 3, "low": 4},
                   "after_vex": {"critical": 0, "high": 0, "medium": 2, "low": 4}, "suppressed": 3}),
        ),
    ];
    for (kind, detail) in &validated {
        store.record_validation(Some(&candidate), Some(&cand_id), kind, true, detail)?;
    }
    for day in 1..=o.days {
        let day_at = (day as i64 - 1) * DAY;
        store.set_clock(Some(at(day_at + 2 * HOUR)));
        for (profile, p95, p99) in [("smoke", 38.0, 71.0), ("load", 61.0, 118.0)] {
            store.record_test_result(
                Some(day),
                &format!("load:{profile}"),
                true,
                &json!({"latency_ms": {"p95": p95 + day as f64, "p99": p99 + day as f64},
                        "failure_rate_pct": 0.0}),
            )?;
        }
        store.record_test_result(
            Some(day),
            "e2e",
            true,
            &json!({"passed": cfg.promotion.e2e_expected, "failed": 0, "skipped": 0,
                    "total": cfg.promotion.e2e_expected}),
        )?;
    }
    if o.days >= 2 {
        store.set_clock(Some(at(DAY + 3 * HOUR)));
        store.event(
            EventKind::Drill,
            Some(first),
            &DrillDetail {
                rollback_to: Some(baseline.clone()),
                rollback_decision_to_healthy_ms: Some(1240),
                forward_to: Some(candidate.clone()),
                forward_to_healthy_ms: Some(1310),
                passed: true,
                target_ms: Some(cfg.rollback.docker_target.as_millis() as u64),
            },
        )?;
        events += 1;
    }

    let target = cfg.verify.base_url.clone();
    let mut rng = Rng(o.seed | 1);
    let mut counters = Snapshot::default();
    let mut restarts = 0i64;
    let mut deployment = first;
    let mut samples = 0u64;
    let mut phase = 0; // 0 candidate, 1 baseline serving, 2 candidate again
    let reason = if o.hostile {
        format!("monitor: error_rate {HOSTILE}")
    } else {
        "monitor: error_rate > 2% for 5m".to_string()
    };
    let total_ms = o.days as i64 * DAY;
    let mut off = 0i64;
    let mut triggered = false;
    let mut blind_noted = false;
    while off < total_ms {
        // Scripted episodes: the trigger and rollback, the redeploy, the blind stretch.
        if !triggered && off >= script.burst.1 {
            triggered = true;
            store.set_clock(Some(at(script.burst.1 - 1_000)));
            store.event(
                EventKind::Trigger,
                Some(deployment),
                &TriggerDetail {
                    rule: "error_rate".into(),
                    severity: "rollback".into(),
                    condition: "error_rate_pct > 2 for 5m".into(),
                    value: Some(5.1),
                    evidence: Vec::new(),
                    day: Some(3.min(o.days)),
                },
            )?;
            let rb = deploy(
                store,
                at(script.baseline.0),
                DeploymentKind::Rollback,
                &baseline,
                &base_id,
                Some(base_dep),
            )?;
            store.event(
                EventKind::Rollback,
                Some(rb),
                &RollbackDetail {
                    kind: Some("rollback".into()),
                    from: Some(candidate.clone()),
                    to: Some(baseline.clone()),
                    reason: Some(reason.to_string()),
                    approved_by: Some("monitor --auto-rollback".into()),
                    decision_to_healthy_ms: Some(1130),
                    restored: true,
                    target_ms: Some(cfg.rollback.docker_target.as_millis() as u64),
                    stop_ms: Some(240),
                    sigkill_needed: Some(false),
                    ..Default::default()
                },
            )?;
            events += 2;
            deployment = rb;
            phase = 1;
            counters = Snapshot::default();
        }
        if phase == 1 && off >= script.baseline.1 {
            deployment = deploy(
                store,
                at(script.baseline.1),
                DeploymentKind::Deploy,
                &candidate,
                &cand_id,
                Some(deployment),
            )?;
            phase = 2;
            counters = Snapshot::default();
            restarts = 0;
        }
        if !blind_noted && off >= script.scrape_refused.0 + 5 * 60_000 + 2 * 60_000 {
            blind_noted = true;
            store.set_clock(Some(at(off)));
            store.event(
                EventKind::Blind,
                Some(deployment),
                &BlindDetail {
                    rules: vec![BlindRuleDetail {
                        name: "error_rate".into(),
                        severity: "rollback".into(),
                        condition: "error_rate_pct > 2 for 5m".into(),
                        inconclusive_since_ms: Some(at(script.scrape_refused.0).timestamp_millis()),
                        for_s: Some(420.0),
                        reason: "/metrics answered HTTP 503".into(),
                    }],
                    day: Some(5.min(o.days)),
                },
            )?;
            events += 1;
        }
        // One batch per simulated hour: a crash mid-generation loses at most that hour.
        let hour_end = (off / HOUR + 1) * HOUR;
        store.batch(|store| {
            while off < hour_end.min(total_ms) {
                if phase == 1 && off >= script.baseline.1 {
                    break;
                }
                if !triggered && off >= script.burst.1 {
                    break;
                }
                if off == script.restart_at - script.restart_at % interval_ms {
                    restarts += 1;
                    counters = Snapshot::default();
                }
                let ts = at(off);
                let burst = (script.burst.0..script.burst.1).contains(&off);
                let unhealthy = (script.unhealthy.0..script.unhealthy.1).contains(&off);
                let refused = (script.scrape_refused.0..script.scrape_refused.1).contains(&off);
                // About 20 requests a second, with a daily swell.
                let hour_of_day = (off % DAY) as f64 / HOUR as f64;
                let rps = 20.0 + 8.0 * (std::f64::consts::TAU * (hour_of_day - 9.0) / 24.0).sin();
                let n = (rps * interval_ms as f64 / 1000.0 * (0.8 + 0.4 * rng.next())).round();
                let err_share = if burst { 0.05 } else { 0.000_02 };
                let errors = (n * err_share + rng.next() * 0.999).floor().min(n);
                counters.requests_total += n + 1.0;
                counters.requests_5xx += errors + f64::from(u8::from(unhealthy));
                counters.duration_count += n;
                counters.duration_sum += n * 0.019;
                if counters.buckets.is_empty() {
                    counters.buckets = BUCKETS.iter().map(|(le, _)| (*le, 0.0)).collect();
                }
                for (b, (_, share)) in counters.buckets.iter_mut().zip(BUCKETS) {
                    b.1 += (n * share).floor();
                }
                let mib = 62.0
                    + 6.0 * (std::f64::consts::TAU * hour_of_day / 24.0).sin()
                    + 2.0 * rng.next();
                let error_text = if o.hostile {
                    format!("kong: connection refused {HOSTILE}")
                } else {
                    "kong: connection refused".into()
                };
                let s = Sample {
                    ts_ms: ts.timestamp_millis(),
                    day: (phase != 1).then_some((off / DAY) as u32 + 1),
                    deployment_id: Some(deployment),
                    role: Some(if phase == 1 { "baseline" } else { "candidate" }.into()),
                    target: target.clone(),
                    container: Some(name.clone()),
                    container_id: Some(format!("{deployment:064x}")),
                    health_ok: !unhealthy,
                    health_http_status: Some(if unhealthy { 503 } else { 200 }),
                    health_latency_ms: Some(1.5 + rng.next() * 2.0),
                    health_detail: if unhealthy {
                        json!({"status": "unhealthy", "dependencies": {"kong": "unhealthy", "telemetry": "healthy"}, "error": error_text})
                    } else {
                        json!({"status": "healthy", "dependencies": {"kong": "healthy", "telemetry": "healthy"}, "error": null})
                    },
                    metrics: (!refused).then(|| counters.clone()),
                    scrape_error: refused.then(|| "/metrics answered HTTP 503".to_string()),
                    memory_bytes: Some((mib * crate::monitor::sample::MIB) as u64),
                    cpu_pct: Some(2.0 + 3.0 * rng.next()),
                    restart_count: Some(restarts),
                    oom_killed: Some(false),
                    log_errors: Some(if burst { errors as i64 } else { 0 }),
                    ..Sample::default()
                };
                store.insert_sample(&s)?;
                samples += 1;
                off += interval_ms;
            }
            Ok(())
        })?;
    }
    store.set_clock(None);
    let deployments = store.deployments()?.len() as u32;
    Ok(Written {
        samples,
        deployments,
        events,
        period_start: start,
        candidate,
    })
}
