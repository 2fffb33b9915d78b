//! Samples in one pass: everything the daily report, the gate, the week page and the
//! monitor's targets read from a day's (or the last 24 hours') samples, accumulated sample by sample, so a day of 1 s samples (86,400) is read
//! once, never held in memory, and the result is stored (`day_digests`) and continued from
//! where it stopped the next time. Every number here is the one `monitor::rules` gives
//! for the same samples (the same deltas, pairs, buckets and fit), which the tests check.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::monitor::rules::{self, Fit};
use crate::probe::metrics::{bucket_increase, histogram_quantile, increase, Snapshot};
use crate::store::sample::Sample;
use crate::store::Store;

/// Bumped whenever the digest's meaning changes: a stored digest of another format is
/// recomputed from the samples, never misread.
pub const FORMAT: i64 = 1;

/// Chart points kept per series; beyond this, neighbouring points merge. The day chart's
/// plot is about 800 px wide: 720 points (one per 2 minutes of a day) is all it can show,
/// and the stored digest stays small enough to read back in a millisecond or two.
const CHART_POINTS: usize = 720;

/// Counter sums over consecutive usable scrapes (failed scrapes between two good ones
/// widen the interval, as in `rules::totals`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counters {
    pub total: f64,
    pub errors: f64,
    /// Bucket increases summed, in the order bounds were first seen (as `window_quantile`).
    #[serde(with = "crate::probe::metrics::num_pairs")]
    pub buckets: Vec<(f64, f64)>,
}

impl Counters {
    /// Adds the interval between two usable scrapes `a` and `m`, whose bucket increase is
    /// `inc` (taken once for the day, its hour and its chart points).
    fn add(&mut self, a: &Snapshot, m: &Snapshot, inc: &[(f64, f64)]) {
        let t = increase(a.requests_total, m.requests_total);
        self.total += t;
        self.errors += increase(a.requests_5xx, m.requests_5xx).min(t);
        if self.buckets.len() == inc.len() && self.buckets.iter().zip(inc).all(|(x, y)| x.0 == y.0)
        {
            // The same bounds as before, bucket for bucket (the usual case).
            self.buckets
                .iter_mut()
                .zip(inc)
                .for_each(|(x, y)| x.1 += y.1);
        } else {
            for (le, c) in inc {
                match self.buckets.iter_mut().find(|(l, _)| l == le) {
                    Some(slot) => slot.1 += c,
                    None => self.buckets.push((*le, *c)),
                }
            }
        }
    }

    /// (requests, 5xx) as `rules::totals`.
    pub fn totals(&self) -> (f64, f64) {
        (self.total, self.errors.min(self.total))
    }

    pub fn error_rate_pct(&self) -> Option<f64> {
        let (total, errors) = self.totals();
        (total > 0.0).then(|| errors / total * 100.0)
    }

    /// A quantile in ms of every request counted, as `rules::window_quantile`.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let mut acc = self.buckets.clone();
        acc.sort_by(|x, y| x.0.total_cmp(&y.0));
        histogram_quantile(q, &acc).map(|v| v * 1000.0)
    }
}

/// One hour of the day, for the week page's charts (each hour judged on its own samples).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Hour {
    pub start_ms: i64,
    pub n: u64,
    pub healthy: u64,
    pub counters: Counters,
    pub memory_max_mib: Option<f64>,
    /// Whether a usable scrape was seen in this hour (its intervals start from there).
    scraped: bool,
}

/// A stretch of failed health probes: when it began, how many, and the first one's reason.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FailureRun {
    pub at_ms: i64,
    pub probes: u64,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
enum Merge {
    Max,
    Last,
}

/// A chart series that keeps at most `CHART_POINTS` points: when full, the bin width
/// doubles and neighbours merge (the worst of them for a rate, the latest for a running
/// value), so a spike is never averaged away.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChartSeries {
    merge: Merge,
    width_ms: i64,
    pub points: Vec<(i64, f64)>,
}

impl ChartSeries {
    fn new(merge: Merge) -> ChartSeries {
        ChartSeries {
            merge,
            width_ms: 0,
            points: Vec::new(),
        }
    }

    fn push(&mut self, t: i64, v: f64) {
        let w = self.width_ms;
        let same_bin = |a: i64| w > 0 && a.div_euclid(w) == t.div_euclid(w);
        match self.points.last_mut() {
            Some(last) if same_bin(last.0) => match self.merge {
                Merge::Max if v > last.1 => *last = (t, v),
                Merge::Max => {}
                Merge::Last => *last = (t, v),
            },
            _ => self.points.push((t, v)),
        }
        if self.points.len() > CHART_POINTS {
            self.width_ms = (self.width_ms * 2).max(1000);
            let old = std::mem::take(&mut self.points);
            for (t, v) in old {
                self.push(t, v);
            }
        }
    }
}

/// The day's chart series (time in ms).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Charts {
    pub memory_mib: ChartSeries,
    pub p95_ms: ChartSeries,
    pub p99_ms: ChartSeries,
    pub error_rate_pct: ChartSeries,
    /// Health success so far today, as a running rate.
    pub health_running_pct: ChartSeries,
}

impl Default for Charts {
    fn default() -> Charts {
        Charts {
            memory_mib: ChartSeries::new(Merge::Max),
            p95_ms: ChartSeries::new(Merge::Max),
            p99_ms: ChartSeries::new(Merge::Max),
            error_rate_pct: ChartSeries::new(Merge::Max),
            health_running_pct: ChartSeries::new(Merge::Last),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DayDigest {
    pub samples: u64,
    pub healthy: u64,
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
    pub counters: Counters,
    /// The last usable scrape, where the next interval starts.
    prev: Option<Snapshot>,
    /// Error lines in the log after the day's first sample, and whether any sample read it.
    pub log_errors: i64,
    pub log_read: bool,
    pub memory_min_mib: Option<f64>,
    pub memory_max_mib: Option<f64>,
    pub memory_last_mib: Option<f64>,
    pub memory_fit: Fit,
    /// Restart counter (lowest, highest) per deployment: a new deployment starts at zero.
    pub restarts: BTreeMap<i64, (i64, i64)>,
    pub failures: Vec<FailureRun>,
    failing: bool,
    pub hours: Vec<Hour>,
    pub charts: Charts,
    /// The newest sample row included (where the next read continues).
    pub through_id: i64,
}

impl DayDigest {
    /// The digest of samples in time order (in tests: a day built in memory).
    #[cfg(test)]
    pub fn of(samples: &[Sample]) -> DayDigest {
        let mut d = DayDigest::default();
        samples.iter().for_each(|s| d.push(s));
        d
    }

    pub fn push(&mut self, s: &Sample) {
        let t = s.ts_ms;
        self.samples += 1;
        self.healthy += u64::from(s.health_ok);
        self.first_ms.get_or_insert(t);
        self.last_ms = Some(t);
        if s.health_ok {
            self.failing = false;
        } else if self.failing {
            if let Some(run) = self.failures.last_mut() {
                run.probes += 1;
            }
        } else {
            let d = &s.health_detail;
            let detail = d["error"]
                .as_str()
                .or_else(|| d["status"].as_str())
                .map(str::to_string)
                .unwrap_or_else(|| format!("HTTP {:?}", s.health_http_status));
            self.failures.push(FailureRun {
                at_ms: t,
                probes: 1,
                detail,
            });
            self.failing = true;
        }
        self.charts
            .health_running_pct
            .push(t, self.healthy as f64 / self.samples as f64 * 100.0);
        if self.samples > 1 {
            self.log_errors += s.log_errors.unwrap_or(0);
        }
        self.log_read |= s.log_errors.is_some();
        let mem = s.memory_mib();
        if let Some(m) = mem {
            self.memory_min_mib = Some(self.memory_min_mib.map_or(m, |x| x.min(m)));
            self.memory_max_mib = Some(self.memory_max_mib.map_or(m, |x| x.max(m)));
            self.memory_last_mib = Some(m);
            self.memory_fit.push(t, m);
            self.charts.memory_mib.push(t, m);
        }
        if let Some(c) = s.restart_count {
            // Samples without a deployment share one key (as the store's NULL).
            let e = self
                .restarts
                .entry(s.deployment_id.unwrap_or(i64::MIN))
                .or_insert((c, c));
            e.0 = e.0.min(c);
            e.1 = e.1.max(c);
        }
        let hour_start = t - t.rem_euclid(3_600_000);
        if self.hours.last().map(|h| h.start_ms) != Some(hour_start) {
            self.hours.push(Hour {
                start_ms: hour_start,
                ..Hour::default()
            });
        }
        let hour = self.hours.last_mut().expect("pushed above");
        hour.n += 1;
        hour.healthy += u64::from(s.health_ok);
        if let Some(m) = mem {
            hour.memory_max_mib = Some(hour.memory_max_mib.map_or(m, |x| x.max(m)));
        }
        if let Some(m) = s.usable_metrics() {
            if let Some(a) = &self.prev {
                let inc = bucket_increase(&a.buckets, &m.buckets);
                self.counters.add(a, m, &inc);
                if hour.scraped {
                    hour.counters.add(a, m, &inc);
                }
                let values = rules::interval_values_of(a, m, &inc);
                for (v, series) in values.into_iter().zip([
                    &mut self.charts.error_rate_pct,
                    &mut self.charts.p95_ms,
                    &mut self.charts.p99_ms,
                ]) {
                    if let Some(v) = v {
                        series.push(t, v);
                    }
                }
            }
            hour.scraped = true;
            match &mut self.prev {
                Some(p) => p.clone_from(m),
                None => self.prev = Some(m.clone()),
            }
        }
    }

    /// Restarts over the day, summed per deployment; None when no sample read the counter.
    pub fn restarts(&self) -> Option<i64> {
        (!self.restarts.is_empty()).then(|| self.restarts.values().map(|(lo, hi)| hi - lo).sum())
    }

    /// The runbook's log-based error rate: error lines in the log over requests served;
    /// None without requests or when no sample read the log.
    pub fn log_error_rate_pct(&self) -> Option<f64> {
        let (total, _) = self.counters.totals();
        (total > 0.0 && self.log_read).then(|| self.log_errors as f64 / total * 100.0)
    }

    pub fn health_success_rate_pct(&self) -> Option<f64> {
        (self.samples > 0).then(|| self.healthy as f64 / self.samples as f64 * 100.0)
    }
}

/// The digest of `day` from the store: the stored one when it is current, continued with
/// the rows written since, or computed afresh (clock stepped back, another format). The
/// result is stored again; a store that cannot be written to still gets its report.
pub fn of_day(store: &Store, day: u32) -> Result<DayDigest> {
    let Some(target) = store.day_target(day)? else {
        return Ok(DayDigest::default());
    };
    let newest = store.day_last_id(day, &target)?.unwrap_or(0);
    let mut d = match store.day_digest(day, &target)? {
        Some((FORMAT, through, json)) if through <= newest => {
            serde_json::from_str::<DayDigest>(&json).unwrap_or_default()
        }
        _ => DayDigest::default(),
    };
    if d.through_id == newest && newest > 0 {
        return Ok(d);
    }
    // Continue from the stored digest; a row older than what it holds (a clock stepped
    // back) means the order it was built in is wrong (deltas), so start over.
    let held_until = d.last_ms;
    let mut stepped_back = false;
    store.scan_day(day, &target, d.through_id, |id, s| {
        stepped_back |= held_until.is_some_and(|l| s.ts_ms < l);
        d.push(s);
        d.through_id = d.through_id.max(id);
    })?;
    if stepped_back {
        d = DayDigest::default();
        store.scan_day(day, &target, 0, |id, s| {
            d.push(s);
            d.through_id = d.through_id.max(id);
        })?;
    }
    if let Ok(json) = serde_json::to_string(&d) {
        if let Err(e) = store.put_day_digest(day, &target, FORMAT, d.through_id, &json) {
            tracing::debug!("day {day}'s digest not stored: {e:#}");
        }
    }
    Ok(d)
}

/// Brings the digests of `days` up to date on every core at once, each worker on its own
/// connection (SQLite reads in parallel under WAL): a week read cold takes about the time of
/// its slowest days, not their sum. Best effort: a day left out is digested by `of_day`.
pub fn prefetch(store: &Store, days: impl IntoIterator<Item = u32>) {
    let days: Vec<u32> = days.into_iter().collect();
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(days.len());
    let Some(dir) = store.dir() else { return };
    if workers < 2 {
        return;
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let Ok(store) = Store::open(&dir) else { return };
                while let Some(day) =
                    days.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                {
                    if let Err(e) = of_day(&store, *day) {
                        tracing::debug!("day {day} not digested ahead: {e:#}");
                    }
                }
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    // The whole-day computation, pair by pair over the samples held at once: what the
    // report did before the digest, kept here as the oracle the one pass must match.
    /// Consecutive pairs of usable scrapes: failed scrapes between them are skipped, so the
    /// increase across a gap is still counted (counters are cumulative).
    fn usable_pairs(samples: &[Sample]) -> impl Iterator<Item = (&Snapshot, &Snapshot)> {
        let good: Vec<&Snapshot> = samples.iter().filter_map(Sample::usable_metrics).collect();
        (1..good.len()).map(move |i| (good[i - 1], good[i]))
    }

    /// Request and 5xx increases summed over consecutive usable scrapes (resets handled).
    fn totals(samples: &[Sample]) -> (f64, f64) {
        let mut total = 0.0;
        let mut errors = 0.0;
        for (a, b) in usable_pairs(samples) {
            let t = increase(a.requests_total, b.requests_total);
            total += t;
            errors += increase(a.requests_5xx, b.requests_5xx).min(t);
        }
        (total, errors.min(total))
    }

    /// A quantile (ms) of all requests between the first and last sample.
    fn window_quantile(samples: &[Sample], q: f64) -> Option<f64> {
        let mut acc: Vec<(f64, f64)> = Vec::new();
        for (a, b) in usable_pairs(samples) {
            for (le, c) in bucket_increase(&a.buckets, &b.buckets) {
                match acc.iter_mut().find(|(l, _)| *l == le) {
                    Some(slot) => slot.1 += c,
                    None => acc.push((le, c)),
                }
            }
        }
        acc.sort_by(|x, y| x.0.total_cmp(&y.0));
        histogram_quantile(q, &acc).map(|v| v * 1000.0)
    }

    fn noisy_day() -> Vec<Sample> {
        let mut out = Vec::new();
        let mut total = 0.0;
        let mut e5 = 0.0;
        for i in 0..5000i64 {
            let n = (i * 7919 % 13) as f64;
            total += n;
            e5 += (i % 97 == 0) as u8 as f64;
            let fast = (total * 0.9).floor();
            out.push(Sample {
                ts_ms: 1_790_000_000_000 + i * 1000,
                deployment_id: Some(if i < 3000 { 1 } else { 2 }),
                health_ok: i % 501 != 0,
                // A restart at 2000 (counters reset) and a failed scrape every 37.
                metrics: (i % 37 != 0).then(|| Snapshot {
                    requests_total: if i >= 2000 { total - 1000.0 } else { total },
                    requests_5xx: e5,
                    buckets: vec![(0.01, fast), (0.1, total), (f64::INFINITY, total)],
                    ..Default::default()
                }),
                memory_bytes: Some(60_000_000 + (i as u64 % 17) * 10_000 + i as u64 * 100),
                restart_count: Some(i / 2000),
                log_errors: Some(i % 3),
                ..Default::default()
            });
        }
        out
    }

    #[test]
    fn one_pass_equals_the_rules_over_the_whole_day() {
        let s = noisy_day();
        let d = DayDigest::of(&s);
        assert_eq!(d.counters.totals(), totals(&s));
        for q in [0.5, 0.95, 0.99] {
            assert_eq!(d.counters.quantile_ms(q), window_quantile(&s, q));
        }
        let pts: Vec<(i64, f64)> = s
            .iter()
            .filter_map(|x| Some((x.ts_ms, x.memory_mib()?)))
            .collect();
        let (a, b) = (
            d.memory_fit.memory_trend(0.1).unwrap(),
            rules::memory_trend(&pts, 0.1).unwrap(),
        );
        assert!((a.0 - b.0).abs() < 1e-12 && a.1 == b.1);
        assert_eq!(d.restarts(), Some(2)); // one in each deployment
        assert_eq!(d.failures.len(), 10);
        // Hours each judged on their own samples.
        for h in &d.hours {
            let own: Vec<Sample> = s
                .iter()
                .filter(|x| x.ts_ms - x.ts_ms.rem_euclid(3_600_000) == h.start_ms)
                .cloned()
                .collect();
            assert_eq!(h.counters.totals(), totals(&own));
            assert_eq!(h.n as usize, own.len());
        }
    }

    #[test]
    fn continuing_a_digest_equals_computing_it_at_once() {
        let s = noisy_day();
        let whole = DayDigest::of(&s);
        let mut part = DayDigest::of(&s[..1234]);
        let json = serde_json::to_string(&part).unwrap();
        part = serde_json::from_str(&json).unwrap();
        s[1234..].iter().for_each(|x| part.push(x));
        assert_eq!(
            serde_json::to_string(&part).unwrap(),
            serde_json::to_string(&whole).unwrap()
        );
    }

    #[test]
    fn charts_stay_bounded_and_keep_the_worst_point() {
        let mut c = ChartSeries::new(Merge::Max);
        for i in 0..86_400i64 {
            c.push(i * 1000, if i == 50_001 { 900.0 } else { 10.0 });
        }
        assert!(c.points.len() <= CHART_POINTS, "{}", c.points.len());
        assert!(c.points.iter().any(|p| p.1 == 900.0));
        assert!(c.points.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
