//! The runbook's rollback triggers and targets, evaluated over stored samples. Pure: given
//! the samples and the clock, the verdict is fixed, so every trigger is unit-tested here.
//!
//! "Sustained for W" means: samples reach back to `now - W` (the window is covered, with no
//! gap wider than three intervals), and the condition held on every sample in it. A rate
//! (health, error rate, latency) is computed per interval from counter deltas; the health
//! success rate is the share of healthy probes over the whole window. A window that is not
//! covered, or has no data, is *inconclusive*: never a silent pass, never a trigger.

use serde::Serialize;

use crate::config::{Comparison, Metric, Targets, TriggerRule};
use crate::monitor::digest::DayDigest;
use crate::monitor::sample::Sample;
use crate::probe::metrics::{
    bucket_increase, histogram_quantile, increase, quantile_bucket, Snapshot,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// A per-metric "Rollback Trigger".
    Rollback,
    /// One of the "Immediate Rollback Triggers".
    Immediate,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Rollback => "rollback",
            Severity::Immediate => "immediate",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Fired,
    Clear,
    Inconclusive { reason: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleResult {
    pub name: String,
    pub severity: Severity,
    pub metric: Metric,
    pub condition: String,
    #[serde(flatten)]
    pub verdict: Verdict,
    /// The value the verdict rests on (the latest, or the window's).
    pub value: Option<f64>,
    /// (timestamp ms, value) across the window: the evidence printed with a trigger.
    pub evidence: Vec<(i64, Option<f64>)>,
    /// For a latency quantile, the histogram bucket `(lower, upper]` in ms that holds the
    /// latest value: all the service's buckets can say of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket_ms: Option<(f64, f64)>,
}

/// Memory growth counts as "continuous" only when the straight line fits this well ...
pub const GROWTH_MIN_R2: f64 = 0.8;
/// ... and the line rises at least this much across the window (MB), and 5% of the level:
/// a service warming up by a few hundred KB in seconds has a steep, well-fitting slope too.
pub const GROWTH_MIN_MB: f64 = 1.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryTrend {
    Increasing,
    Decreasing,
    Stable,
}

/// The trend of (ms, MB) points: slope in MB/min and what it amounts to, given the slope
/// threshold. None with fewer than three points.
pub fn memory_trend(points: &[(i64, f64)], threshold: f64) -> Option<(f64, MemoryTrend)> {
    let mut fit = Fit::default();
    points.iter().for_each(|(t, y)| fit.push(*t, *y));
    fit.memory_trend(threshold)
}

/// A least-squares line fitted one point at a time (Welford's updates): a day of 1 s
/// memory readings is fitted in one pass without holding the points, and the result is
/// the same as fitting them all at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Fit {
    pub n: u64,
    /// The first point's time (ms) and the last's: x is minutes since the first.
    pub t0: i64,
    pub t_last: i64,
    mean_x: f64,
    mean_y: f64,
    sxx: f64,
    syy: f64,
    sxy: f64,
}

impl Fit {
    pub fn push(&mut self, t_ms: i64, y: f64) {
        if self.n == 0 {
            self.t0 = t_ms;
        }
        self.t_last = t_ms;
        self.n += 1;
        let x = (t_ms - self.t0) as f64 / 60_000.0;
        let n = self.n as f64;
        let dx = x - self.mean_x;
        let dy = y - self.mean_y;
        self.mean_x += dx / n;
        self.mean_y += dy / n;
        self.sxx += dx * (x - self.mean_x);
        self.syy += dy * (y - self.mean_y);
        self.sxy += dx * (y - self.mean_y);
    }

    /// Slope per minute and R²; None with fewer than three points or all at one time.
    pub fn trend(&self) -> Option<(f64, f64)> {
        if self.n < 3 || self.sxx == 0.0 {
            return None;
        }
        let slope = self.sxy / self.sxx;
        let r2 = if self.syy == 0.0 {
            0.0
        } else {
            (self.sxy * self.sxy) / (self.sxx * self.syy)
        };
        Some((slope, r2))
    }

    /// The memory verdict of the fitted points (see `memory_trend`).
    pub fn memory_trend(&self, threshold: f64) -> Option<(f64, MemoryTrend)> {
        let (slope, r2) = self.trend()?;
        let minutes = (self.t_last - self.t0) as f64 / 60_000.0;
        let change = (slope * minutes).abs();
        let real = r2 >= GROWTH_MIN_R2 && change >= GROWTH_MIN_MB && change >= 0.05 * self.mean_y;
        let word = if real && slope > threshold {
            MemoryTrend::Increasing
        } else if real && slope < -threshold {
            MemoryTrend::Decreasing
        } else {
            MemoryTrend::Stable
        };
        Some((slope, word))
    }
}

pub fn describe(rule: &TriggerRule) -> String {
    let op = match rule.op {
        Comparison::Lt => "<",
        Comparison::Gt => ">",
    };
    let unit = unit(rule.metric);
    let window = match (rule.sustained_for.is_zero(), rule.metric) {
        (true, _) => String::new(),
        (false, Metric::RestartsInWindow) => {
            format!(" in {}", humantime::format_duration(rule.sustained_for))
        }
        (false, _) => format!(" for {}", humantime::format_duration(rule.sustained_for)),
    };
    format!(
        "{} {op} {}{unit}{window}",
        label(rule.metric),
        rule.threshold
    )
}

/// The runbook's words for a metric.
pub fn label(m: Metric) -> &'static str {
    match m {
        Metric::HealthCheckSuccessRatePct => "health check success rate",
        Metric::HealthCheckFailureRatePct => "health check failure rate",
        Metric::ErrorRatePct => "error rate",
        Metric::P95LatencyMs => "P95 latency",
        Metric::P99LatencyMs => "P99 latency",
        Metric::MemoryMib => "memory",
        Metric::MemoryGrowth => "memory growth",
        Metric::RestartsInWindow => "restart count",
        Metric::CriticalCves => "CRITICAL CVEs",
    }
}

fn unit(m: Metric) -> &'static str {
    match m {
        Metric::HealthCheckSuccessRatePct
        | Metric::HealthCheckFailureRatePct
        | Metric::ErrorRatePct => "%",
        Metric::P95LatencyMs | Metric::P99LatencyMs => "ms",
        Metric::MemoryMib => "MiB",
        Metric::MemoryGrowth => "MiB/min",
        Metric::RestartsInWindow | Metric::CriticalCves => "",
    }
}

fn breaches(op: Comparison, value: f64, threshold: f64) -> bool {
    match op {
        Comparison::Lt => value < threshold,
        Comparison::Gt => value > threshold,
    }
}

/// Per-interval values. Counter metrics (error rate, P95, P99) are computed between
/// consecutive *usable* scrapes: a failed scrape between two good ones widens the interval
/// instead of dropping it, so gaps cannot hide errors (counters are cumulative). Readings
/// (health, memory) are taken at each sample. The first point has no interval: None.
pub fn per_interval(samples: &[Sample], metric: Metric) -> Vec<(i64, Option<f64>)> {
    if is_counter_metric(metric) {
        let mut prev: Option<&Snapshot> = None;
        let mut out = Vec::new();
        for s in samples {
            let Some(m) = s.usable_metrics() else {
                continue;
            };
            out.push((s.ts_ms, prev.and_then(|a| counter_value(a, m, metric))));
            prev = Some(m);
        }
        out
    } else {
        samples
            .iter()
            .map(|s| (s.ts_ms, reading(s, metric)))
            .collect()
    }
}

/// The value over the interval that ended with the latest sample, if its scrape was usable.
pub fn latest_interval(samples: &[Sample], metric: Metric) -> Option<f64> {
    let last = samples.last()?;
    if !is_counter_metric(metric) {
        return reading(last, metric);
    }
    // Only the last two usable scrapes matter: found from the end, not by walking the window.
    let b = last.usable_metrics()?;
    let a = samples[..samples.len() - 1]
        .iter()
        .rev()
        .find_map(Sample::usable_metrics)?;
    counter_value(a, b, metric)
}

fn is_counter_metric(m: Metric) -> bool {
    matches!(
        m,
        Metric::ErrorRatePct | Metric::P95LatencyMs | Metric::P99LatencyMs
    )
}

fn reading(s: &Sample, metric: Metric) -> Option<f64> {
    match metric {
        Metric::MemoryMib => s.memory_mib(),
        Metric::HealthCheckSuccessRatePct => Some(if s.health_ok { 100.0 } else { 0.0 }),
        Metric::HealthCheckFailureRatePct => Some(if s.health_ok { 0.0 } else { 100.0 }),
        _ => None,
    }
}

/// Error rate or a latency quantile between two scrapes; None without traffic or when a
/// counter is not a number (a NaN rate is unknown, never "clear").
pub fn counter_value(a: &Snapshot, b: &Snapshot, metric: Metric) -> Option<f64> {
    let [error_rate, p95, p99] = interval_values(a, b);
    match metric {
        Metric::ErrorRatePct => error_rate,
        Metric::P95LatencyMs => p95,
        Metric::P99LatencyMs => p99,
        _ => None,
    }
}

/// Error rate (%), P95 and P99 (ms) between two scrapes, the histogram's increase taken
/// once for both quantiles.
pub fn interval_values(a: &Snapshot, b: &Snapshot) -> [Option<f64>; 3] {
    interval_values_of(a, b, &bucket_increase(&a.buckets, &b.buckets))
}

/// The same, given the histogram's increase `inc` between them.
pub fn interval_values_of(a: &Snapshot, b: &Snapshot, inc: &[(f64, f64)]) -> [Option<f64>; 3] {
    let finite = |v: Option<f64>| v.filter(|v| v.is_finite());
    let total = increase(a.requests_total, b.requests_total);
    let errors = increase(a.requests_5xx, b.requests_5xx).min(total);
    let error_rate = finite((total > 0.0).then(|| errors / total * 100.0));
    let q = |q: f64| finite(histogram_quantile(q, inc).map(|v| v * 1000.0));
    [error_rate, q(0.95), q(0.99)]
}

/// The samples that make up the window ending now: from the last sample at or before
/// `now - w` (the anchor, the window's left edge) to the latest, whatever their spacing.
/// Err when the samples do not reach back over the window at all.
pub fn covered_window<'a, T: Timed>(
    samples: &'a [T],
    now_ms: i64,
    w_ms: i64,
    what: &str,
) -> Result<&'a [T], String> {
    let start = now_ms - w_ms;
    let Some(anchor) = samples.iter().rposition(|s| s.ts() <= start) else {
        return Err(match samples.first() {
            None => format!("no {what} yet"),
            Some(first) => format!(
                "window not covered yet: {what} reach back {:.0}s of {:.0}s",
                (now_ms - first.ts()) as f64 / 1000.0,
                w_ms as f64 / 1000.0
            ),
        });
    };
    Ok(&samples[anchor..])
}

/// Anything with a timestamp: a sample, or a reference to one.
pub trait Timed {
    fn ts(&self) -> i64;
}

impl Timed for Sample {
    fn ts(&self) -> i64 {
        self.ts_ms
    }
}

impl Timed for &Sample {
    fn ts(&self) -> i64 {
        self.ts_ms
    }
}

/// The latest reason the metrics could not be used, for an inconclusive verdict.
fn metrics_gap_reason(samples: &[Sample]) -> String {
    let failed = samples
        .iter()
        .rev()
        .take_while(|s| s.usable_metrics().is_none())
        .count();
    match samples.iter().rev().find(|s| s.usable_metrics().is_none()) {
        Some(s) if failed > 0 => format!(
            "{}{failed} consecutive scrape(s) without usable metrics ({})",
            // The slice is the rule's window: a run that fills it began earlier.
            if failed == samples.len() {
                "at least "
            } else {
                ""
            },
            s.scrape_error
                .clone()
                .unwrap_or_else(|| "a counter is NaN, infinite or negative".into())
        ),
        _ => "no usable metrics".into(),
    }
}

pub fn evaluate(
    rule: &TriggerRule,
    severity: Severity,
    samples: &[Sample],
    now_ms: i64,
    critical_cves: Option<u32>,
) -> RuleResult {
    let mut r = RuleResult {
        name: rule.name.clone(),
        severity,
        metric: rule.metric,
        condition: describe(rule),
        verdict: Verdict::Inconclusive {
            reason: "no samples".into(),
        },
        value: None,
        evidence: Vec::new(),
        bucket_ms: None,
    };
    let w_ms = rule.sustained_for.as_millis() as i64;
    let inconclusive = |reason: String| Verdict::Inconclusive { reason };
    let judge = |v: f64| {
        if let Some(reason) = implausible(rule.metric, v) {
            Verdict::Inconclusive { reason }
        } else if breaches(rule.op, v, rule.threshold) {
            Verdict::Fired
        } else {
            Verdict::Clear
        }
    };
    match rule.metric {
        Metric::CriticalCves => {
            r.value = critical_cves.map(f64::from);
            r.verdict = match critical_cves {
                None => inconclusive("no CVE scan recorded (run `dhi-stage validate`)".into()),
                Some(n) => judge(f64::from(n)),
            };
        }
        Metric::RestartsInWindow => {
            // A count: it can fire before the window is covered, once it is over.
            let counted: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.restart_count.is_some())
                .collect();
            let base_idx = counted
                .iter()
                .rposition(|s| s.ts_ms <= now_ms - w_ms)
                .unwrap_or(0);
            let win = &counted[base_idx.min(counted.len())..];
            r.evidence = win
                .iter()
                .map(|s| (s.ts_ms, s.restart_count.map(|c| c as f64)))
                .collect();
            let known: Vec<f64> = r.evidence.iter().filter_map(|(_, c)| *c).collect();
            match known.last() {
                None => r.verdict = inconclusive(engine_gap_reason(samples)),
                Some(last) => {
                    let restarts = last - known.iter().cloned().fold(f64::INFINITY, f64::min);
                    r.value = Some(restarts);
                    r.verdict = judge(restarts);
                }
            }
        }
        Metric::MemoryGrowth => {
            let with_memory: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.memory_bytes.is_some())
                .collect();
            match covered_window(&with_memory, now_ms, w_ms, "memory readings") {
                Err(e) if with_memory.is_empty() => {
                    r.verdict = inconclusive(format!("{e}: {}", engine_gap_reason(samples)))
                }
                Err(e) => r.verdict = inconclusive(e),
                Ok(win) => {
                    let pts: Vec<(i64, f64)> = win
                        .iter()
                        .filter_map(|s| Some((s.ts_ms, s.memory_mib()?)))
                        .collect();
                    r.evidence = pts.iter().map(|(t, v)| (*t, Some(*v))).collect();
                    match memory_trend(&pts, rule.threshold) {
                        None => {
                            r.verdict = inconclusive("too few memory readings for a trend".into())
                        }
                        Some((slope, word)) => {
                            r.value = Some(slope);
                            r.verdict = if word == MemoryTrend::Increasing {
                                Verdict::Fired
                            } else {
                                Verdict::Clear
                            };
                        }
                    }
                }
            }
        }
        Metric::HealthCheckSuccessRatePct | Metric::HealthCheckFailureRatePct => {
            let win = if w_ms == 0 {
                Ok(&samples[samples.len().saturating_sub(1)..])
            } else {
                covered_window(samples, now_ms, w_ms, "samples")
            };
            match win {
                Err(e) => r.verdict = inconclusive(e),
                Ok([]) => r.verdict = inconclusive("no samples".into()),
                Ok(win) => {
                    let vals = per_interval(win, rule.metric);
                    let rate = vals.iter().filter_map(|(_, v)| *v).sum::<f64>() / vals.len() as f64;
                    r.value = Some(rate);
                    r.evidence = vals;
                    r.verdict = judge(rate);
                }
            }
        }
        Metric::MemoryMib if w_ms == 0 => {
            let last = samples.last();
            r.value = last.and_then(Sample::memory_mib);
            r.evidence = last.map(|s| (s.ts_ms, r.value)).into_iter().collect();
            // The container was killed for memory: the limit was hit before any reading
            // could show it, so the immediate memory trigger fires on the kill itself.
            let oom =
                severity == Severity::Immediate && last.is_some_and(|s| s.oom_killed == Some(true));
            r.verdict = match r.value {
                _ if oom => Verdict::Fired,
                None => inconclusive(format!(
                    "no memory reading in the latest sample: {}",
                    engine_gap_reason(&samples[samples.len().saturating_sub(1)..])
                )),
                Some(v) => judge(v),
            };
            if oom {
                r.condition = format!("{} (or OOM-killed)", r.condition);
            }
        }
        Metric::ErrorRatePct | Metric::P95LatencyMs | Metric::P99LatencyMs | Metric::MemoryMib => {
            // Counters: the usable scrapes; memory: the samples with a reading.
            let counter = is_counter_metric(rule.metric);
            let usable: Vec<&Sample> = samples
                .iter()
                .filter(|s| {
                    if counter {
                        s.usable_metrics().is_some()
                    } else {
                        s.memory_bytes.is_some()
                    }
                })
                .collect();
            if w_ms == 0 {
                let last_two = &usable[usable.len().saturating_sub(2)..];
                let owned: Vec<Sample> = last_two.iter().map(|s| (*s).clone()).collect();
                let vals = per_interval(&owned, rule.metric);
                let latest_is_usable = last_two
                    .last()
                    .zip(samples.last())
                    .is_some_and(|(a, b)| a.ts_ms == b.ts_ms);
                let last = vals
                    .last()
                    .and_then(|(_, v)| *v)
                    .filter(|_| latest_is_usable);
                r.evidence = vals.last().cloned().into_iter().collect();
                r.value = last;
                r.verdict = match last {
                    None if !latest_is_usable && counter => {
                        inconclusive(metrics_gap_reason(samples))
                    }
                    None => inconclusive("no reading in the latest sample".into()),
                    Some(v) => judge(v),
                };
                return r;
            }
            match covered_window(&usable, now_ms, w_ms, "usable scrapes") {
                Err(e) if usable.is_empty() && counter => {
                    r.verdict = inconclusive(format!("{e}: {}", metrics_gap_reason(samples)))
                }
                Err(e) => r.verdict = inconclusive(e),
                Ok(win) if win.len() < 2 => {
                    r.verdict = inconclusive(if counter {
                        metrics_gap_reason(samples)
                    } else {
                        engine_gap_reason(samples)
                    })
                }
                Ok(win) => {
                    let owned: Vec<Sample> = win.iter().map(|s| (*s).clone()).collect();
                    // The anchor's own point is the window's left edge, not an interval in it.
                    let vals: Vec<(i64, Option<f64>)> = per_interval(&owned, rule.metric)
                        .into_iter()
                        .skip(1)
                        .collect();
                    r.value = vals.last().and_then(|(_, v)| *v);
                    r.verdict = sustained(rule, &vals);
                    if let Some(q) = quantile_of(rule.metric) {
                        let buckets = interval_buckets(&owned, q);
                        r.bucket_ms = buckets.last().copied().flatten();
                        r.verdict = as_far_as_buckets_say(rule, r.verdict, &buckets);
                    }
                    r.evidence = vals;
                }
            }
        }
    }
    r
}

fn quantile_of(m: Metric) -> Option<f64> {
    match m {
        Metric::P95LatencyMs => Some(0.95),
        Metric::P99LatencyMs => Some(0.99),
        _ => None,
    }
}

/// Per interval of the window (as `per_interval`, anchor skipped), the bucket in ms that
/// holds the quantile.
fn interval_buckets(samples: &[Sample], q: f64) -> Vec<Option<(f64, f64)>> {
    let usable: Vec<&Snapshot> = samples.iter().filter_map(Sample::usable_metrics).collect();
    usable
        .windows(2)
        .map(|w| {
            let inc = bucket_increase(&w[0].buckets, &w[1].buckets);
            quantile_bucket(q, &inc).map(|(lo, hi)| (lo * 1000.0, hi * 1000.0))
        })
        .collect()
}

/// Honest quantiles: a verdict a histogram's buckets cannot support becomes inconclusive.
/// Fired needs every interval's bucket wholly past the threshold; clear needs one wholly on
/// the right side. A P95 known only to lie in (100, 500] ms is neither over nor under 200.
fn as_far_as_buckets_say(
    rule: &TriggerRule,
    verdict: Verdict,
    buckets: &[Option<(f64, f64)>],
) -> Verdict {
    let t = rule.threshold;
    type Side = fn((f64, f64), f64) -> bool;
    let (past, within): (Side, Side) = match rule.op {
        Comparison::Gt => (|(lo, _), t| lo >= t, |(_, hi), t| hi <= t),
        Comparison::Lt => (|(_, hi), t| hi <= t, |(lo, _), t| lo >= t),
    };
    let known: Vec<(f64, f64)> = buckets.iter().flatten().copied().collect();
    let straddling = known.iter().find(|b| !past(**b, t) && !within(**b, t));
    let doubt = |b: &(f64, f64)| {
        Verdict::Inconclusive {
        reason: format!(
            "the quantile lies in the bucket ({:.0}, {}] ms, which straddles the {t} ms threshold: the service's histogram is too coarse to judge it",
            b.0,
            if b.1.is_finite() { format!("{:.0}", b.1) } else { "+Inf".into() }
        ),
    }
    };
    match (&verdict, straddling) {
        (Verdict::Fired, Some(b)) => doubt(b),
        (Verdict::Clear, Some(b)) if !known.iter().any(|b| within(*b, t)) => doubt(b),
        _ => verdict,
    }
}

/// "Sustained for the window": every interval of a covered window breaches. An interval
/// without a value (no traffic: 0/0) cannot breach, so a window of only those is inconclusive,
/// never clear. Shared by the direct scrape and the Prometheus source.
pub fn sustained(rule: &TriggerRule, vals: &[(i64, Option<f64>)]) -> Verdict {
    let known: Vec<f64> = vals.iter().filter_map(|(_, v)| *v).collect();
    // Garbage in the window (a negative rate, a ratio over 100%, +Inf) is never judged.
    if let Some(reason) = known.iter().find_map(|v| implausible(rule.metric, *v)) {
        return Verdict::Inconclusive { reason };
    }
    let all_breach = known.iter().all(|v| breaches(rule.op, *v, rule.threshold));
    if known.is_empty() {
        Verdict::Inconclusive {
            reason: "no traffic in the window (or no numeric counters) to compute it from".into(),
        }
    } else if all_breach && known.len() == vals.len() {
        Verdict::Fired
    } else if all_breach {
        Verdict::Inconclusive {
            reason: "breached whenever measured, but some intervals had no traffic".into(),
        }
    } else {
        Verdict::Clear
    }
}

/// Why a value cannot be a reading of `metric` (not finite, or out of its unit's range), for
/// an inconclusive verdict: every number that enters a rule passes here, from a scrape or
/// from Prometheus, so a lying source is never read as "clear".
pub fn implausible(metric: Metric, v: f64) -> Option<String> {
    let what = match metric {
        Metric::HealthCheckSuccessRatePct | Metric::HealthCheckFailureRatePct => "a health rate",
        Metric::ErrorRatePct => "an error rate",
        Metric::P95LatencyMs | Metric::P99LatencyMs => "a latency",
        Metric::MemoryMib => "a memory reading",
        Metric::MemoryGrowth => "a memory growth",
        Metric::RestartsInWindow => "a restart count",
        Metric::CriticalCves => "a CVE count",
    };
    if !v.is_finite() {
        return Some(format!("{what} of {v} is not a number to judge"));
    }
    let percent = matches!(
        metric,
        Metric::HealthCheckSuccessRatePct
            | Metric::HealthCheckFailureRatePct
            | Metric::ErrorRatePct
    );
    if percent && !(0.0..=100.0).contains(&v) {
        return Some(format!("{what} of {v}% is impossible (outside 0-100%)"));
    }
    // Memory may shrink; nothing else that is measured can be below zero.
    if metric != Metric::MemoryGrowth && v < 0.0 {
        return Some(format!("{what} of {v} is impossible (negative)"));
    }
    None
}

/// Why the latest samples have no container readings.
fn engine_gap_reason(samples: &[Sample]) -> String {
    match samples.iter().rev().find_map(|s| s.engine_error.clone()) {
        Some(e) => format!("no container readings: {e}"),
        None => "no container to read from".into(),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetResult {
    pub target: String,
    pub met: Option<bool>,
    pub value: Option<f64>,
    pub detail: String,
}

/// The runbook's targets over a set of samples (a day, the last 24 hours), read in one
/// pass into `d`: met, not met, or no data.
pub fn targets(t: &Targets, d: &DayDigest) -> Vec<TargetResult> {
    let mut out = Vec::new();
    let (n, healthy) = (d.samples, d.healthy);
    let rate = d.health_success_rate_pct();
    out.push(TargetResult {
        target: format!(
            "health check success rate {}%",
            t.health_check_success_rate_pct
        ),
        met: rate.map(|r| r >= t.health_check_success_rate_pct),
        value: rate,
        detail: format!("{healthy}/{n} probes healthy"),
    });
    let (total, errors) = d.counters.totals();
    let err = d.counters.error_rate_pct();
    out.push(TargetResult {
        target: format!("error rate < {}%", t.error_rate_pct),
        met: err.map(|e| e < t.error_rate_pct),
        value: err,
        detail: format!("{errors} 5xx of {total} requests"),
    });
    // The runbook's own variant: error lines in the container log over requests served.
    let log_errors = d.log_errors;
    let log_rate = d.log_error_rate_pct();
    out.push(TargetResult {
        target: format!("error rate (log-based) < {}%", t.error_rate_pct),
        met: log_rate.map(|e| e < t.error_rate_pct),
        value: log_rate,
        detail: format!("{log_errors} error log lines over {total} requests"),
    });
    for (q, limit, label) in [(0.95, t.p95_latency, "P95"), (0.99, t.p99_latency, "P99")] {
        let v = d.counters.quantile_ms(q);
        let ms = limit.as_secs_f64() * 1000.0;
        out.push(TargetResult {
            target: format!("{label} latency <= {ms}ms"),
            met: v.map(|v| v <= ms),
            value: v,
            detail: v
                .map(|v| format!("{v:.1}ms from the service's histogram"))
                .unwrap_or("no requests".into()),
        });
    }
    let range = d.memory_min_mib.zip(d.memory_max_mib);
    out.push(TargetResult {
        target: format!("memory {}-{}MB", t.memory_min_mib, t.memory_max_mib),
        met: range.map(|(lo, hi)| lo >= t.memory_min_mib && hi <= t.memory_max_mib),
        value: d.memory_last_mib,
        detail: match range {
            None => "no container readings".into(),
            Some((lo, hi)) => format!("{lo:.1}-{hi:.1}MB"),
        },
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_readings_are_named_and_possible_ones_pass() {
        let table = [
            (Metric::ErrorRatePct, -5.0, true),
            (Metric::ErrorRatePct, 100.5, true),
            (Metric::ErrorRatePct, 2.5, false),
            (Metric::P99LatencyMs, -1e308, true),
            (Metric::P99LatencyMs, f64::INFINITY, true),
            (Metric::P99LatencyMs, 250.0, false),
            (Metric::RestartsInWindow, -6.0, true),
            (Metric::MemoryGrowth, -3.0, false),
            (Metric::MemoryMib, f64::NAN, true),
        ];
        for (m, v, bad) in table {
            assert_eq!(implausible(m, v).is_some(), bad, "{m:?} {v}");
        }
    }
    use crate::probe::metrics::Snapshot;
    use std::time::Duration;

    fn sample(t_s: i64, ok: bool, total: f64, e5xx: f64, mem_mb: f64) -> Sample {
        Sample {
            ts_ms: t_s * 1000,
            day: Some(1),
            deployment_id: Some(1),
            target: "t".into(),
            container: Some("c".into()),
            health_ok: ok,
            health_http_status: Some(200),
            health_latency_ms: Some(1.0),
            health_detail: serde_json::Value::Null,
            metrics: Some(Snapshot {
                requests_total: total,
                requests_5xx: e5xx,
                buckets: vec![(0.1, total), (f64::INFINITY, total)],
                ..Default::default()
            }),
            memory_bytes: Some((mem_mb * crate::monitor::sample::MIB) as u64),
            cpu_pct: None,
            restart_count: Some(0),
            oom_killed: Some(false),
            log_errors: Some(0),
            ..Default::default()
        }
    }

    fn rule(metric: Metric, op: Comparison, threshold: f64, secs: u64) -> TriggerRule {
        TriggerRule {
            name: "r".into(),
            metric,
            op,
            threshold,
            sustained_for: Duration::from_secs(secs),
        }
    }

    #[test]
    fn error_rate_fires_only_once_the_window_is_covered() {
        let r = rule(Metric::ErrorRatePct, Comparison::Gt, 2.0, 300);
        // 5% errors every 30 s.
        let s: Vec<Sample> = (0..=10)
            .map(|i| sample(i * 30, true, i as f64 * 100.0, i as f64 * 5.0, 60.0))
            .collect();
        let at = |n: usize| evaluate(&r, Severity::Immediate, &s[..=n], s[n].ts_ms, None).verdict;
        assert!(
            matches!(at(9), Verdict::Inconclusive { .. }),
            "270 s of 300 s"
        );
        assert_eq!(at(10), Verdict::Fired);
    }

    #[test]
    fn one_clean_interval_keeps_the_error_rate_trigger_clear() {
        let r = rule(Metric::ErrorRatePct, Comparison::Gt, 2.0, 300);
        let mut s: Vec<Sample> = (0..=10)
            .map(|i| sample(i * 30, true, i as f64 * 100.0, i as f64 * 5.0, 60.0))
            .collect();
        // No new errors in the interval ending at sample 6.
        for x in s.iter_mut().skip(6) {
            x.metrics.as_mut().unwrap().requests_5xx -= 5.0;
        }
        assert_eq!(
            evaluate(&r, Severity::Immediate, &s, s[10].ts_ms, None).verdict,
            Verdict::Clear
        );
    }

    #[test]
    fn counter_reset_is_not_a_negative_rate() {
        let r = rule(Metric::ErrorRatePct, Comparison::Gt, 2.0, 60);
        let s = vec![
            sample(0, true, 1000.0, 0.0, 60.0),
            sample(30, true, 1100.0, 0.0, 60.0),
            sample(60, true, 50.0, 0.0, 60.0),
        ];
        let res = evaluate(&r, Severity::Immediate, &s, 60_000, None);
        assert_eq!(res.verdict, Verdict::Clear);
        assert_eq!(res.value, Some(0.0));
    }

    #[test]
    fn health_success_rate_over_the_hour() {
        let r = rule(
            Metric::HealthCheckSuccessRatePct,
            Comparison::Lt,
            99.0,
            3600,
        );
        let s: Vec<Sample> = (0..=120)
            .map(|i| sample(i * 30, i % 50 != 7, 0.0, 0.0, 60.0))
            .collect();
        let res = evaluate(&r, Severity::Rollback, &s, s[120].ts_ms, None);
        assert_eq!(
            res.verdict,
            Verdict::Fired,
            "3 failures in 121 probes is 97.5%"
        );
        let s: Vec<Sample> = (0..=120)
            .map(|i| sample(i * 30, i != 7, 0.0, 0.0, 60.0))
            .collect();
        assert_eq!(
            evaluate(&r, Severity::Rollback, &s, s[120].ts_ms, None).verdict,
            Verdict::Clear
        );
    }

    #[test]
    fn sparse_samples_judge_the_window_at_their_own_resolution() {
        // Cron every 5 minutes against a 5-minute window: one interval spans it.
        let r = rule(Metric::ErrorRatePct, Comparison::Gt, 2.0, 300);
        let s = vec![
            sample(0, true, 0.0, 0.0, 60.0),
            sample(400, true, 100.0, 50.0, 60.0),
        ];
        let res = evaluate(&r, Severity::Immediate, &s, 400_000, None);
        assert_eq!(res.verdict, Verdict::Fired);
        assert_eq!(res.value, Some(50.0));
        // Only when the samples do not reach back over the window at all: inconclusive.
        assert!(matches!(
            evaluate(&r, Severity::Immediate, &s[1..], 400_000, None).verdict,
            Verdict::Inconclusive { .. }
        ));
    }

    #[test]
    fn failed_scrapes_between_good_ones_do_not_hide_errors() {
        // 50% errors; every other scrape fails.
        let r = rule(Metric::ErrorRatePct, Comparison::Gt, 2.0, 4);
        let s: Vec<Sample> = (0..=10)
            .map(|i| {
                let mut x = sample(i, true, i as f64 * 100.0, i as f64 * 50.0, 60.0);
                if i % 2 == 1 {
                    x.metrics = None;
                    x.scrape_error = Some("/metrics answered HTTP 500".into());
                }
                x
            })
            .collect();
        let res = evaluate(&r, Severity::Immediate, &s[..=10], 10_000, None);
        assert_eq!(res.verdict, Verdict::Fired, "{res:?}");
        assert_eq!(res.value, Some(50.0));
        assert_eq!(DayDigest::of(&s).counters.totals(), (1000.0, 500.0));
        // The latest scrape failed: the window still rests on the good ones before it.
        let res = evaluate(&r, Severity::Immediate, &s[..=9], 9_000, None);
        assert_eq!(res.verdict, Verdict::Fired, "{res:?}");
        // Nothing but failures: inconclusive, with the reason.
        let none: Vec<Sample> = s
            .iter()
            .cloned()
            .map(|mut x| {
                x.metrics = None;
                x.scrape_error = Some("/metrics answered HTTP 404".into());
                x
            })
            .collect();
        match evaluate(&r, Severity::Immediate, &none, 10_000, None).verdict {
            Verdict::Inconclusive { reason } => assert!(reason.contains("HTTP 404"), "{reason}"),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn a_nan_counter_is_unknown_not_clear() {
        let r = rule(Metric::ErrorRatePct, Comparison::Gt, 2.0, 2);
        let mut s: Vec<Sample> = (0..=4)
            .map(|i| sample(i, true, i as f64 * 100.0, 0.0, 60.0))
            .collect();
        for x in &mut s {
            x.metrics.as_mut().unwrap().requests_5xx = f64::NAN;
        }
        assert!(matches!(
            evaluate(&r, Severity::Immediate, &s, 4_000, None).verdict,
            Verdict::Inconclusive { .. }
        ));
    }

    #[test]
    fn an_oom_kill_fires_the_immediate_memory_trigger() {
        let r = rule(Metric::MemoryMib, Comparison::Gt, 150.0, 0);
        let mut s = vec![
            sample(0, true, 0.0, 0.0, 60.0),
            sample(1, true, 0.0, 0.0, 20.0),
        ];
        s[1].oom_killed = Some(true);
        let res = evaluate(&r, Severity::Immediate, &s, 1_000, None);
        assert_eq!(res.verdict, Verdict::Fired);
        assert!(res.condition.contains("OOM"), "{}", res.condition);
        // The per-metric (rollback) memory rule is about the level only.
        let res = evaluate(&r, Severity::Rollback, &s, 1_000, None);
        assert_eq!(res.verdict, Verdict::Clear);
    }

    #[test]
    fn memory_level_and_growth() {
        let over = rule(Metric::MemoryMib, Comparison::Gt, 150.0, 0);
        let s = vec![
            sample(0, true, 0.0, 0.0, 120.0),
            sample(30, true, 0.0, 0.0, 151.0),
        ];
        assert_eq!(
            evaluate(&over, Severity::Immediate, &s, 30_000, None).verdict,
            Verdict::Fired
        );
        let growth = rule(Metric::MemoryGrowth, Comparison::Gt, 0.1, 600);
        let rising: Vec<Sample> = (0..=20)
            .map(|i| sample(i * 30, true, 0.0, 0.0, 60.0 + i as f64))
            .collect();
        let res = evaluate(&growth, Severity::Rollback, &rising, rising[20].ts_ms, None);
        assert_eq!(res.verdict, Verdict::Fired);
        assert!(
            (res.value.unwrap() - 2.0).abs() < 1e-9,
            "1 MB per 30 s = 2 MB/min"
        );
        // A warm-up: 0.4 MB to 1.0 MB in seconds is a steep, clean line, but no leak.
        let warmup: Vec<Sample> = (0..=6)
            .map(|i| sample(i, true, 0.0, 0.0, 0.4 + i as f64 * 0.1))
            .collect();
        let quick = rule(Metric::MemoryGrowth, Comparison::Gt, 0.1, 5);
        assert_eq!(
            evaluate(&quick, Severity::Rollback, &warmup, 6_000, None).verdict,
            Verdict::Clear
        );
        let flat: Vec<Sample> = (0..=20)
            .map(|i| sample(i * 30, true, 0.0, 0.0, 60.0 + (i % 2) as f64 * 0.3))
            .collect();
        assert_eq!(
            evaluate(&growth, Severity::Rollback, &flat, flat[20].ts_ms, None).verdict,
            Verdict::Clear
        );
    }

    #[test]
    fn restarts_in_ten_minutes() {
        let r = rule(Metric::RestartsInWindow, Comparison::Gt, 3.0, 600);
        let mut s: Vec<Sample> = (0..5)
            .map(|i| sample(i * 30, true, 0.0, 0.0, 60.0))
            .collect();
        for (i, x) in s.iter_mut().enumerate() {
            x.restart_count = Some(i as i64);
        }
        assert_eq!(
            evaluate(&r, Severity::Immediate, &s, 120_000, None).verdict,
            Verdict::Fired
        );
        assert_eq!(
            evaluate(&r, Severity::Immediate, &s[..4], 90_000, None).verdict,
            Verdict::Clear
        );
    }

    #[test]
    fn latency_quantile_per_interval() {
        let r = rule(Metric::P99LatencyMs, Comparison::Gt, 500.0, 60);
        let mk = |t: i64, n: f64| {
            let mut x = sample(t, true, n, 0.0, 60.0);
            x.metrics.as_mut().unwrap().buckets = vec![(0.5, 0.0), (1.0, n), (f64::INFINITY, n)];
            x
        };
        let s = vec![mk(0, 0.0), mk(30, 10.0), mk(60, 20.0)];
        let res = evaluate(&r, Severity::Immediate, &s, 60_000, None);
        assert_eq!(res.verdict, Verdict::Fired);
        assert!(res.value.unwrap() > 500.0);
    }

    #[test]
    fn p95_and_p99_are_different_quantiles() {
        // 97% of requests under 10 ms, 3% at 600 ms: P95 is fast, P99 is slow.
        let mk = |t: i64, n: f64| {
            let mut x = sample(t, true, n, 0.0, 60.0);
            x.metrics.as_mut().unwrap().buckets = vec![
                (0.01, n * 0.97),
                (0.5, n * 0.97),
                (0.75, n),
                (f64::INFINITY, n),
            ];
            x
        };
        let s = vec![mk(0, 0.0), mk(30, 1000.0), mk(60, 2000.0)];
        let p99 = evaluate(
            &rule(Metric::P99LatencyMs, Comparison::Gt, 500.0, 60),
            Severity::Immediate,
            &s,
            60_000,
            None,
        );
        let p95 = evaluate(
            &rule(Metric::P95LatencyMs, Comparison::Gt, 150.0, 60),
            Severity::Rollback,
            &s,
            60_000,
            None,
        );
        assert_eq!((p99.verdict, p95.verdict), (Verdict::Fired, Verdict::Clear));
        assert!(
            (p99.value.unwrap() - 666.666).abs() < 0.01,
            "{:?}",
            p99.value
        );
        assert!(p95.value.unwrap() < 10.0, "{:?}", p95.value);
    }

    #[test]
    fn critical_cve() {
        let r = rule(Metric::CriticalCves, Comparison::Gt, 0.0, 0);
        assert_eq!(
            evaluate(&r, Severity::Immediate, &[], 0, Some(1)).verdict,
            Verdict::Fired
        );
        assert_eq!(
            evaluate(&r, Severity::Immediate, &[], 0, Some(0)).verdict,
            Verdict::Clear
        );
        assert!(matches!(
            evaluate(&r, Severity::Immediate, &[], 0, None).verdict,
            Verdict::Inconclusive { .. }
        ));
    }
}
