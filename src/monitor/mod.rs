//! The 7-day monitor: a loop that takes a sample, stores it, then evaluates every rollback
//! trigger over the stored samples (so windows span separate cron invocations). Sampling and
//! judging are separate: `sample` observes, `rules` decides, the caller renders each tick.

pub mod rules;
pub mod sample;

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::{CadenceStep, MonitoringConfig};
use crate::store::Store;
use rules::{RuleResult, Severity, Verdict};
use sample::{Cursor, Sample, Sampler};

#[derive(Debug, Clone, Serialize)]
pub struct Tick {
    pub n: u64,
    pub sample: Sample,
    /// Error rate, P95 and P99 over the interval that ended with this sample.
    pub error_rate_pct: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub results: Vec<RuleResult>,
}

impl Tick {
    pub fn fired(&self) -> Vec<&RuleResult> {
        self.results
            .iter()
            .filter(|r| r.verdict == Verdict::Fired)
            .collect()
    }
}

pub enum Cadence {
    Fixed(Duration),
    /// The production schedule, by time since the deployment started.
    Production {
        steps: Vec<CadenceStep>,
        deployed_at_ms: i64,
    },
}

impl Cadence {
    pub fn interval_at(&self, now_ms: i64) -> Duration {
        match self {
            Cadence::Fixed(d) => *d,
            Cadence::Production {
                steps,
                deployed_at_ms,
            } => production_interval(
                steps,
                Duration::from_millis((now_ms - deployed_at_ms).max(0) as u64),
            ),
        }
    }
}

/// 5 min in hours 1-4, 15 min in 4-12, 30 min in 12-24, hourly on days 2-7 (from config).
pub fn production_interval(steps: &[CadenceStep], age: Duration) -> Duration {
    steps
        .iter()
        .find(|s| age < s.until)
        .or(steps.last())
        .map(|s| s.interval)
        .unwrap_or(Duration::from_secs(3600))
}

pub struct Plan {
    pub cadence: Cadence,
    pub once: bool,
    pub duration: Option<Duration>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub ticks: u64,
    pub last: Option<Tick>,
    pub fired: Vec<RuleResult>,
    pub interrupted: bool,
}

/// Runs until a trigger fires, the plan ends, or `cancel` is triggered (SIGINT/SIGTERM): a
/// tick in progress is finished, never half-stored.
pub async fn run(
    store: &Store,
    sampler: &Sampler<'_>,
    cfg: &MonitoringConfig,
    plan: &Plan,
    cancel: &CancellationToken,
    mut on_tick: impl FnMut(&Tick),
) -> Result<Summary> {
    let started = tokio::time::Instant::now();
    let mut cursor = Cursor::default();
    let mut n = 0;
    let mut last;
    let max_window = cfg
        .rollback_triggers
        .iter()
        .chain(&cfg.immediate_triggers)
        .map(|r| r.sustained_for)
        .max()
        .unwrap_or_default();
    loop {
        let tick_started = tokio::time::Instant::now();
        let sample = sampler.take(&mut cursor).await;
        store.insert_sample(&sample)?;
        n += 1;
        let interval = plan.cadence.interval_at(sample.ts_ms);
        let since = sample.ts_ms - (max_window + interval * 4).as_millis() as i64;
        let history = store.samples(&sample.target, since, sampler.deployment_id)?;
        let cves = store.critical_cves(sampler.image_ref.as_deref())?;
        let results = evaluate_all(cfg, &history, sample.ts_ms, interval, cves);
        let last_two = &history[history.len().saturating_sub(2)..];
        let now = |m| {
            rules::per_interval(last_two, m)
                .last()
                .and_then(|(_, v)| *v)
        };
        let tick = Tick {
            n,
            sample,
            error_rate_pct: now(crate::config::Metric::ErrorRatePct),
            p95_ms: now(crate::config::Metric::P95LatencyMs),
            p99_ms: now(crate::config::Metric::P99LatencyMs),
            results,
        };
        on_tick(&tick);
        let fired: Vec<RuleResult> = tick.fired().into_iter().cloned().collect();
        last = Some(tick);
        if !fired.is_empty() {
            return Ok(Summary {
                ticks: n,
                last,
                fired,
                interrupted: false,
            });
        }
        if plan.once
            || plan
                .duration
                .is_some_and(|d| started.elapsed() + interval > d)
        {
            return Ok(Summary {
                ticks: n,
                last,
                fired,
                interrupted: false,
            });
        }
        let next = tick_started + interval;
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = cancel.cancelled() => return Ok(Summary { ticks: n, last, fired, interrupted: true }),
        }
    }
}

pub fn evaluate_all(
    cfg: &MonitoringConfig,
    history: &[Sample],
    now_ms: i64,
    interval: Duration,
    cves: Option<u32>,
) -> Vec<RuleResult> {
    let iv = interval.as_millis() as i64;
    cfg.rollback_triggers
        .iter()
        .map(|r| rules::evaluate(r, Severity::Rollback, history, now_ms, iv, cves))
        .chain(
            cfg.immediate_triggers
                .iter()
                .map(|r| rules::evaluate(r, Severity::Immediate, history, now_ms, iv, cves)),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_cadence_follows_the_runbook() {
        let cfg = crate::config::parse(crate::config::DEFAULT_TOML, "t").unwrap();
        let steps = &cfg.monitoring.production_cadence;
        let h = |x: u64| Duration::from_secs(x * 3600);
        assert_eq!(production_interval(steps, h(0)), Duration::from_secs(300));
        assert_eq!(production_interval(steps, h(5)), Duration::from_secs(900));
        assert_eq!(production_interval(steps, h(13)), Duration::from_secs(1800));
        assert_eq!(production_interval(steps, h(30)), Duration::from_secs(3600));
        assert_eq!(
            production_interval(steps, h(24 * 9)),
            Duration::from_secs(3600)
        );
    }
}
