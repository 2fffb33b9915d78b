//! The 7-day monitor: a loop that takes a sample, stores it, then evaluates every rollback
//! trigger over the stored samples (so windows span separate cron invocations). Sampling and
//! judging are separate: `sample` observes, `rules` decides, the caller renders each tick.

pub mod digest;
pub mod exposition;
pub mod period;
pub mod promql;
pub mod rules;
pub mod sample;

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::{CadenceStep, Metric, MonitoringConfig};
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
    /// Scrapes in a row, ending with this one, that gave no usable metrics: counted by the
    /// loop as they happen, since the history it keeps is slimmed past the scrape window.
    pub scrape_failures_in_a_row: usize,
    /// The run began before this monitor's first tick and its history: a lower bound.
    pub scrape_failures_at_least: bool,
    /// Set when an earlier sample is stamped later than this one: the clock stepped back.
    pub clock_stepped_back_ms: Option<i64>,
    pub blind: Vec<BlindRule>,
    pub results: Vec<RuleResult>,
    /// CRITICAL CVEs of the image under test, as the last scan says (None: no scan).
    pub critical_cves: Option<u32>,
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
    /// How long past its window a rule may stay without a verdict before it counts as blind.
    pub blind_margin: Duration,
    /// How long a deploy or rollback in progress may hold off sampling: a `starting`
    /// deployment older than this was interrupted (kill -9) and is not waited for.
    pub rollout_grace: Duration,
}

/// A rule that has had no verdict for longer than its window plus the margin: the monitor
/// cannot see what it is meant to watch.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BlindRule {
    pub name: String,
    pub severity: Severity,
    pub condition: String,
    pub inconclusive_since_ms: i64,
    pub for_s: f64,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub ticks: u64,
    pub last: Option<Tick>,
    pub fired: Vec<RuleResult>,
    /// Rules blind at the last tick.
    pub blind: Vec<BlindRule>,
    /// Rules that became blind during this run (to announce once).
    pub newly_blind: Vec<BlindRule>,
    pub interrupted: bool,
}

/// Runs until a trigger fires, the plan ends, or `cancel` is triggered (SIGINT/SIGTERM): a
/// tick in progress is finished, never half-stored. A cron run (`once`) continues from the
/// previous stored sample of the same target and deployment.
pub async fn run(
    store: &mut Store,
    sampler: &mut Sampler<'_>,
    cfg: &MonitoringConfig,
    plan: &Plan,
    cancel: &CancellationToken,
    resolve: &dyn Fn(&Store) -> Result<period::Identity>,
    mut on_tick: impl FnMut(&Tick),
) -> Result<Summary> {
    let started = tokio::time::Instant::now();
    let mut cursor = store
        .last_sample(&sampler.target, sampler.deployment_id)?
        .map(|prev| Cursor::resume(&prev))
        .unwrap_or_default();
    let mut n = 0;
    // (failed scrapes in a row, whether the run reaches back past what this process saw)
    let mut scrape_run = (0usize, false);
    let mut history: Vec<Sample> = Vec::new();
    let mut newly_blind: Vec<BlindRule> = Vec::new();
    let max_window = cfg
        .rollback_triggers
        .iter()
        .chain(&cfg.immediate_triggers)
        .map(|r| r.sustained_for)
        .max()
        .unwrap_or_default();
    let scrape_window = scrape_window(cfg);
    loop {
        let tick_started = tokio::time::Instant::now();
        // A deploy or rollback in progress replaces the container: its own restart is not
        // the service failing. Wait it out, then follow the deployment it made.
        if let Some(name) = sampler.container.clone() {
            if wait_out_rollout(store, &name, plan.rollout_grace, cancel).await? {
                let now = resolve(store)?;
                // A loop that runs past midnight of the period labels its samples anew.
                sampler.day = now.day;
                if now.deployment_id != sampler.deployment_id {
                    tracing::info!(
                        from = ?sampler.deployment_id,
                        to = ?now.deployment_id,
                        "a rollout replaced the deployment: following it"
                    );
                    sampler.follow(&now);
                    cursor = Cursor::default();
                }
            }
            if cancel.is_cancelled() && n > 0 {
                return Ok(Summary {
                    ticks: n,
                    last: None,
                    fired: Vec::new(),
                    blind: Vec::new(),
                    newly_blind,
                    interrupted: true,
                });
            }
        }
        let sample = sampler
            .take(&mut cursor, engine_budget(&plan.cadence))
            .await;
        store.insert_sample(&sample)?;
        n += 1;
        let interval = plan.cadence.interval_at(sample.ts_ms);
        // The history a tick judges reaches back to the longest window's anchor (the last
        // sample at or before now - window) and no further, so a tick costs the same in
        // hour one and hour 168. It is kept between ticks; only a clock that stepped back,
        // a new deployment or the first tick read it from the store.
        let window_start = sample.ts_ms - max_window.as_millis() as i64;
        let in_order = history.last().is_some_and(|l: &Sample| {
            l.ts_ms <= sample.ts_ms && l.deployment_id == sample.deployment_id
        });
        let clock = if in_order {
            history.push(sample.clone());
            let keep_from = history
                .iter()
                .rposition(|s| s.ts_ms <= window_start)
                .unwrap_or(0);
            history.drain(..keep_from);
            slim_history(&mut history, sample.ts_ms, scrape_window, interval);
            None
        } else {
            let since = store
                .anchor_ms(&sample.target, sampler.deployment_id, window_start)?
                .unwrap_or(window_start);
            history = store.samples_as_taken(&sample.target, since, sampler.deployment_id)?;
            judge_clock(&mut history, sample.ts_ms)
        };
        let cves =
            store.critical_cves(sampler.image_id.as_deref(), sampler.image_ref.as_deref())?;
        scrape_run = count_failed_scrapes(scrape_run, &sample, &history, n == 1);
        let mut results = evaluate_all(cfg, &history, sample.ts_ms, cves);
        if let Some(p) = &mut sampler.prometheus {
            // The templates follow the convention the scrape found (with `auto`).
            p.follow(sample.health_detail["metrics"]["convention"].as_str());
            let rules: Vec<(&crate::config::TriggerRule, Severity)> = cfg
                .rollback_triggers
                .iter()
                .map(|r| (r, Severity::Rollback))
                .chain(
                    cfg.immediate_triggers
                        .iter()
                        .map(|r| (r, Severity::Immediate)),
                )
                .collect();
            p.judge(&mut results, &rules, sample.ts_ms, interval).await;
        }
        // The tick's line shows what the rules read: PromQL's values with that source.
        let latest = |m: Metric| match &sampler.prometheus {
            Some(_) => results
                .iter()
                .find(|r| r.metric == m && r.severity == Severity::Rollback)
                .and_then(|r| r.value),
            None => rules::latest_interval(&history, m),
        };
        let margin = plan.blind_margin.max(interval * 2);
        let blind = blindness(store, sampler, &results, cfg, sample.ts_ms, margin)?;
        for b in &blind {
            if b.1
                && !newly_blind
                    .iter()
                    .any(|x| x.name == b.0.name && x.severity == b.0.severity)
            {
                newly_blind.push(b.0.clone());
            }
        }
        let tick = Tick {
            n,
            error_rate_pct: latest(Metric::ErrorRatePct),
            p95_ms: latest(Metric::P95LatencyMs),
            p99_ms: latest(Metric::P99LatencyMs),
            scrape_failures_in_a_row: scrape_run.0,
            scrape_failures_at_least: scrape_run.1,
            clock_stepped_back_ms: clock,
            blind: blind.iter().map(|b| b.0.clone()).collect(),
            sample,
            results,
            critical_cves: cves,
        };
        on_tick(&tick);
        let fired: Vec<RuleResult> = tick.fired().into_iter().cloned().collect();
        let done = !fired.is_empty()
            || plan.once
            || plan
                .duration
                .is_some_and(|d| started.elapsed() + interval > d);
        let summary = |last: Tick, fired, newly_blind, interrupted| Summary {
            ticks: n,
            blind: last.blind.clone(),
            last: Some(last),
            fired,
            newly_blind,
            interrupted,
        };
        if done {
            return Ok(summary(tick, fired, newly_blind, false));
        }
        let next = tick_started + interval;
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = cancel.cancelled() => return Ok(summary(tick, fired, newly_blind, true)),
        }
    }
}

/// The longest window of a rule that reads the scrape (error rate, latency).
fn scrape_window(cfg: &MonitoringConfig) -> Duration {
    cfg.rollback_triggers
        .iter()
        .chain(&cfg.immediate_triggers)
        .filter(|r| {
            matches!(
                r.metric,
                Metric::ErrorRatePct | Metric::P95LatencyMs | Metric::P99LatencyMs
            )
        })
        .map(|r| r.sustained_for)
        .max()
        .unwrap_or_default()
}

/// Past the longest window that reads scrapes (and room for its anchor), a sample of the
/// history keeps only its readings: an hour-long window at 1 s costs little memory.
/// How long a tick's engine (or cluster) reading may take: most of the interval, so a
/// stalled or dripping engine delays no tick past its next one (1 s at least, so a busy
/// engine on a 1 s interval still answers).
fn engine_budget(cadence: &Cadence) -> Duration {
    let interval = cadence.interval_at(chrono::Utc::now().timestamp_millis());
    (interval * 4 / 5).max(Duration::from_secs(1))
}

/// The run of failed scrapes after this sample. The first tick continues the run a previous
/// process left in the store (as far back as its history reaches: then it is a lower bound);
/// later ticks count, because the history they keep is slimmed and cannot.
fn count_failed_scrapes(
    run: (usize, bool),
    sample: &Sample,
    history: &[Sample],
    first: bool,
) -> (usize, bool) {
    if sample.usable_metrics().is_some() {
        return (0, false);
    }
    if !first {
        return (run.0 + 1, run.1);
    }
    let failed = history
        .iter()
        .rev()
        .take_while(|s| s.usable_metrics().is_none())
        .count()
        .max(1);
    (failed, history.len() > 1 && failed >= history.len())
}

fn slim_history(history: &mut [Sample], now_ms: i64, scrape_window: Duration, interval: Duration) {
    let margin = (interval * 2).max(Duration::from_secs(120));
    let slim_before = now_ms - (scrape_window + margin).as_millis() as i64;
    // The history is in time order and slimmed from the front: only the samples that
    // crossed the line since the last tick are touched, not the whole hour again.
    let crossed = history.partition_point(|s| s.ts_ms < slim_before);
    for s in history[..crossed].iter_mut().rev() {
        if s.is_slim() {
            break;
        }
        s.slim();
    }
}

/// Waits while a deploy or rollback of `name` is in progress (younger than `grace`).
/// Returns whether there was one, so the caller re-resolves what it watches; also true when
/// the active deployment may have changed between two ticks.
async fn wait_out_rollout(
    store: &Store,
    name: &str,
    grace: Duration,
    cancel: &CancellationToken,
) -> Result<bool> {
    let mut waited = false;
    loop {
        let Some(started) = store.rollout_in_progress(name)? else {
            // Re-resolving is cheap and catches a rollout that happened between two ticks.
            return Ok(true);
        };
        let age = (chrono::Utc::now() - started).to_std().unwrap_or_default();
        if age > grace {
            if !waited {
                tracing::warn!(deployment_started = %started, "a deploy or rollback was interrupted and never finished: sampling anyway");
            }
            return Ok(true);
        }
        waited = true;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = cancel.cancelled() => return Ok(true),
        }
    }
}

/// Orders the history as taken and drops readings "from the future": after the clock steps
/// back, samples stamped later than the newest one are not judged. Returns the size of the
/// step back, if one is in the history.
pub fn judge_clock(history: &mut Vec<Sample>, now_ms: i64) -> Option<i64> {
    let newest_stamp = history.iter().map(|s| s.ts_ms).max()?;
    history.retain(|s| s.ts_ms <= now_ms);
    // Stable: samples with equal stamps keep the order they were taken in.
    history.sort_by_key(|s| s.ts_ms);
    (newest_stamp > now_ms).then_some(newest_stamp - now_ms)
}

/// Updates the stored per-rule state and returns the rules that are blind now, each with
/// whether this is news (not yet announced).
fn blindness(
    store: &mut Store,
    sampler: &Sampler<'_>,
    results: &[RuleResult],
    cfg: &MonitoringConfig,
    now_ms: i64,
    margin: Duration,
) -> Result<Vec<(BlindRule, bool)>> {
    let sev = |s: Severity| match s {
        Severity::Rollback => "rollback",
        Severity::Immediate => "immediate",
    };
    let verdicts: Vec<(String, String, bool)> = results
        .iter()
        .map(|r| {
            (
                r.name.clone(),
                sev(r.severity).to_string(),
                !matches!(r.verdict, Verdict::Inconclusive { .. }),
            )
        })
        .collect();
    let states =
        store.update_rule_states(&sampler.target, sampler.deployment_id, now_ms, &verdicts)?;
    let mut out = Vec::new();
    for (r, st) in results.iter().zip(states) {
        let (Verdict::Inconclusive { reason }, Some(since)) =
            (&r.verdict, st.inconclusive_since_ms)
        else {
            continue;
        };
        let window = cfg
            .rollback_triggers
            .iter()
            .chain(&cfg.immediate_triggers)
            .find(|t| t.name == r.name)
            .map(|t| t.sustained_for)
            .unwrap_or_default();
        let allowed = (window + margin).as_millis() as i64;
        if now_ms - since > allowed {
            if !st.alerted {
                store.mark_blind_alerted(
                    &sampler.target,
                    sampler.deployment_id,
                    &r.name,
                    sev(r.severity),
                )?;
            }
            out.push((
                BlindRule {
                    name: r.name.clone(),
                    severity: r.severity,
                    condition: r.condition.clone(),
                    inconclusive_since_ms: since,
                    for_s: (now_ms - since) as f64 / 1000.0,
                    reason: reason.clone(),
                },
                !st.alerted,
            ));
        }
    }
    Ok(out)
}

pub fn evaluate_all(
    cfg: &MonitoringConfig,
    history: &[Sample],
    now_ms: i64,
    cves: Option<u32>,
) -> Vec<RuleResult> {
    cfg.rollback_triggers
        .iter()
        .map(|r| rules::evaluate(r, Severity::Rollback, history, now_ms, cves))
        .chain(
            cfg.immediate_triggers
                .iter()
                .map(|r| rules::evaluate(r, Severity::Immediate, history, now_ms, cves)),
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
        // The boundaries belong to the next step: hour 4 is already "hours 4-12".
        let just_before = |x: u64| Duration::from_secs(x * 3600 - 1);
        assert_eq!(
            production_interval(steps, just_before(4)),
            Duration::from_secs(300)
        );
        assert_eq!(production_interval(steps, h(4)), Duration::from_secs(900));
        assert_eq!(
            production_interval(steps, just_before(12)),
            Duration::from_secs(900)
        );
        assert_eq!(production_interval(steps, h(12)), Duration::from_secs(1800));
        assert_eq!(
            production_interval(steps, just_before(24)),
            Duration::from_secs(1800)
        );
        assert_eq!(production_interval(steps, h(24)), Duration::from_secs(3600));
    }

    /// Two hours at 5 s with 5xx, slow requests, failed probes and memory growth: every
    /// rule of the shipped config gives the same verdict and value on the slimmed history.
    #[test]
    fn a_slimmed_history_judges_like_the_whole_one() {
        let cfg = crate::config::parse(crate::config::DEFAULT_TOML, "t").unwrap();
        let m = &cfg.monitoring;
        let t0 = 1_790_000_000_000i64;
        let mut total = 0.0;
        let mut e5 = 0.0;
        let full: Vec<Sample> = (0..1440i64)
            .map(|i| {
                total += 50.0;
                e5 += if i > 1300 { 3.0 } else { 0.0 };
                let slow = if i > 1350 { 25.0 } else { 1.0 };
                Sample {
                    ts_ms: t0 + i * 5000,
                    target: "http://127.0.0.1:3002".into(),
                    container: Some("c".into()),
                    container_id: Some("id".into()),
                    role: Some("candidate".into()),
                    deployment_id: Some(1),
                    health_ok: i % 97 != 0,
                    health_detail: serde_json::json!({"status": "healthy"}),
                    metrics: Some(crate::probe::metrics::Snapshot {
                        requests_total: total,
                        requests_5xx: e5,
                        buckets: vec![
                            (0.1, total - slow * i as f64),
                            (0.5, total),
                            (f64::INFINITY, total),
                        ],
                        ..Default::default()
                    }),
                    memory_bytes: Some(60_000_000 + i as u64 * 20_000),
                    restart_count: Some(i / 700),
                    oom_killed: Some(false),
                    ..Default::default()
                }
            })
            .collect();
        let now = full.last().unwrap().ts_ms;
        let mut slim = full.clone();
        slim_history(&mut slim, now, scrape_window(m), Duration::from_secs(5));
        assert!(slim[0].metrics.is_none() && slim.last().unwrap().metrics.is_some());
        let a = evaluate_all(m, &full, now, Some(0));
        let b = evaluate_all(m, &slim, now, Some(0));
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(
                (&x.name, &x.verdict, x.value),
                (&y.name, &y.verdict, y.value)
            );
        }
        assert!(a.iter().any(|r| r.verdict == Verdict::Fired), "{a:?}");
    }
}

#[cfg(test)]
mod clock_tests {
    use super::*;

    #[test]
    fn a_clock_stepped_back_judges_no_sample_from_the_future() {
        let mk = |ts| crate::monitor::sample::Sample {
            ts_ms: ts,
            target: "t".into(),
            health_ok: true,
            memory_bytes: Some(ts as u64),
            ..Default::default()
        };
        // Taken in this order; the clock stepped back 50 s before the last one.
        let mut h = vec![mk(1_000), mk(2_000), mk(60_000), mk(61_000), mk(11_000)];
        let step = judge_clock(&mut h, 11_000);
        assert_eq!(step, Some(50_000));
        let left: Vec<i64> = h.iter().map(|s| s.ts_ms).collect();
        assert_eq!(left, vec![1_000, 2_000, 11_000]);
        assert_eq!(
            h.last().unwrap().memory_bytes,
            Some(11_000),
            "the latest taken is judged"
        );
        let mut ok = vec![mk(1_000), mk(2_000)];
        assert_eq!(judge_clock(&mut ok, 2_000), None);
    }
}
