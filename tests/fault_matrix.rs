//! The fault matrix of issue F, in both of the monitor's modes: one long loop, and cron
//! (`monitor --once` per interval, each run a new process continuing from the store). Every
//! case injects its fault into a service the monitor has already watched healthy for a
//! while, then checks the *exact* outcome: which triggers fired (by name and severity), or
//! that nothing fired, or which rules went blind, and that it happened within the rule's
//! window plus one sampling interval plus a documented slack for the tick's own work.
//!
//! Each case writes one line to `target/reliability/fault-matrix.tsv` (printed by
//! `scripts/test.sh`), the measured detection time that RELIABILITY.md records.
mod common;
use common::*;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Loop,
    /// `--once` runs spaced this far apart.
    Cron(Duration),
}

#[derive(Clone, Copy)]
enum Inject {
    Fault(&'static str),
    Stop,
    Pause,
    /// `/admin/crash` whenever the service is back up, five times: a crash loop that
    /// starts from a healthy service (a start-time fault would break the warm-up).
    CrashLoop,
}

enum Expect {
    /// Exactly these (name, severity) fired, exit 4.
    Fired(&'static [(&'static str, &'static str)]),
    /// Nothing fired and nothing is blind, exit 0.
    Clear,
    /// Nothing fired; at least these rules are blind (and the reason says `because`), exit 6.
    Blind(&'static [&'static str], &'static str),
}

struct Case {
    name: &'static str,
    inject: Inject,
    traffic: bool,
    /// The window (s) the outcome waits for once the fault is in place.
    window_s: f64,
    expect: Expect,
    edit: fn(&mut toml::Table),
    /// The fired error rate must lie in this range (% of requests): the same number in
    /// both modes, and the one the service was told to produce.
    error_rate: Option<(f64, f64)>,
}

/// Healthy sampling before the fault: longer than the 4-5 s short windows, so those rules
/// have a verdict when the fault arrives (the 8 s health success rule covers 2 s after it).
const WARMUP: Duration = Duration::from_secs(6);
/// Time a tick may take beyond its interval: a probe timing out (1.5 s in the short
/// config) plus the scrape, the engine calls and, in cron mode, a process start.
const SLACK_S: f64 = 3.0;
/// How long after its timestamp a sample's readings may still be arriving.
const READING_SPAN_S: f64 = 1.0;

fn no_edit(_: &mut toml::Table) {}

/// Blindness cases: a 2 s margin, and no CVE rule (it is judged from `validate`'s scan,
/// which these cases do not run, so it would be blind from the start).
fn blind_quickly(t: &mut toml::Table) {
    t["monitoring"]
        .as_table_mut()
        .unwrap()
        .insert("blind_margin".into(), "2s".into());
    remove_rule(t, "critical_cve");
}

/// Probes during a restart fail for real; where another trigger is under test, the health
/// rules are given windows this run does not reach.
fn health_rules_out(t: &mut toml::Table) {
    set_window(t, "health_check_failure_rate", "1h");
    set_window(t, "health_check_success_rate", "1h");
}

struct Outcome {
    code: i32,
    json: serde_json::Value,
    detect_s: Option<f64>,
    all: String,
    /// Seconds of stored samples when the run ended: which windows were covered.
    history_s: f64,
}

/// The health-success rule's window in the short config (1h -> 8s). Any failed probe in a
/// covered window breaches it (< 99%), so a health fault detected once the samples span about
/// this long (a slow machine stretches the run before the fault) may fire it beside the faster
/// immediate trigger: a true reading, not an extra one. Before that it must not.
const SUCCESS_WINDOW_S: f64 = 8.0;

fn fired_set(j: &serde_json::Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = j["fired"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| {
                    (
                        f["name"].as_str().unwrap_or("?").to_string(),
                        f["severity"].as_str().unwrap_or("?").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn inject(stage: &Stage, how: Inject) {
    match how {
        Inject::Fault(q) => assert!(
            http("POST", &format!("{}/admin/faults?{q}", stage.base_url())).is_some(),
            "could not set fault {q}"
        ),
        Inject::Stop => assert_eq!(docker(&["stop", "-t", "0", &stage.name]).code, 0),
        Inject::Pause => assert_eq!(docker(&["pause", &stage.name]).code, 0),
        Inject::CrashLoop => {
            let base = stage.base_url();
            std::thread::spawn(move || {
                for _ in 0..5 {
                    wait_for(
                        || http_get(&format!("{base}/health")).is_some(),
                        Duration::from_secs(10),
                    );
                    http("POST", &format!("{base}/admin/crash"));
                }
            });
        }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn run_case(c: &Case, mode: Mode) -> Outcome {
    let stage = Stage::new();
    assert_eq!(stage.deploy(&good_image()).run().code, 0);
    // No case here is about memory growth (monitor_triggers.rs tests it), and its 5 s short
    // window can read a container's warm-up as growth: out of the way, like in the runbook's
    // 30 min window.
    let cfg = short_window_config(&stage, |t| {
        set_window(t, "memory_continuous_growth", "1h");
        (c.edit)(t);
    });
    let _traffic = c.traffic.then(|| Traffic::start(&stage.base_url()));
    let limit = Duration::from_secs_f64(WARMUP.as_secs_f64() + c.window_s + 15.0);
    let (code, json, all, t0) = match mode {
        Mode::Loop => {
            let secs = format!("{}s", limit.as_secs());
            let child = stage.spawn(&[
                "--config",
                path_str(&cfg),
                "monitor",
                "--duration",
                &secs,
                "--output",
                "json",
            ]);
            std::thread::sleep(WARMUP);
            let t0 = now_ms();
            inject(&stage, c.inject);
            let r: Run = child.wait_with_output().unwrap().into();
            (r.code, r.json(), r.all(), t0)
        }
        Mode::Cron(every) => {
            let started = Instant::now();
            let mut t0 = None;
            loop {
                let run_started = Instant::now();
                let r = stage.run(&[
                    "--config",
                    path_str(&cfg),
                    "monitor",
                    "--once",
                    "--output",
                    "json",
                ]);
                if r.code != 0 || started.elapsed() > limit {
                    break (r.code, r.json(), r.all(), t0.unwrap_or(i64::MAX));
                }
                if t0.is_none() && started.elapsed() >= WARMUP {
                    t0 = Some(now_ms());
                    inject(&stage, c.inject);
                }
                std::thread::sleep(every.saturating_sub(run_started.elapsed()));
            }
        }
    };
    if matches!(c.inject, Inject::Pause) {
        docker(&["unpause", &stage.name]);
    }
    let last_ts = json["last_sample"]["ts_ms"].as_i64().unwrap_or(0);
    let detect_s = (code != 0).then(|| (last_ts - t0) as f64 / 1000.0);
    let (first, last) = sample_span(&stage);
    Outcome {
        code,
        json,
        detect_s,
        all,
        history_s: (last - first) as f64 / 1000.0,
    }
}

fn record(c: &Case, mode: Mode, o: &Outcome, verdict: &str, bound_s: f64) {
    let mode = match mode {
        Mode::Loop => "loop".to_string(),
        Mode::Cron(d) => format!("cron/{}s", d.as_secs()),
    };
    let line = format!(
        "{}\t{mode}\t{verdict}\t{}\t{bound_s:.1}\n",
        c.name,
        o.detect_s
            .map(|d| format!("{d:.1}"))
            .unwrap_or_else(|| "-".into()),
    );
    record_reliability("fault-matrix.tsv", &line, true);
}

fn check(c: Case, mode: Mode) {
    let o = run_case(&c, mode);
    let spacing = match mode {
        Mode::Loop => 1.0,
        Mode::Cron(d) => d.as_secs_f64(),
    };
    let bound = c.window_s + spacing + SLACK_S;
    match c.expect {
        Expect::Fired(want) => {
            assert_eq!(o.code, 4, "{}: expected a trigger\n{}", c.name, o.all);
            let mut want: Vec<(String, String)> = want
                .iter()
                .map(|(n, s)| (n.to_string(), s.to_string()))
                .collect();
            // Near or past the success rule's window (the coverage anchor is the sample at or
            // before it), that rule may fire beside the immediate one; before, it may not.
            let success = (
                "health_check_success_rate".to_string(),
                "rollback".to_string(),
            );
            let health_fault = want.iter().any(|w| w.0 == "health_check_failure_rate");
            let covered = o.history_s >= SUCCESS_WINDOW_S - 1.0;
            if health_fault
                && covered
                && !want.contains(&success)
                && fired_set(&o.json).contains(&success)
            {
                want.push(success);
            }
            want.sort();
            assert_eq!(
                fired_set(&o.json),
                want,
                "{}: exact set of fired triggers\n{}",
                c.name,
                o.all
            );
            if let Some((lo, hi)) = c.error_rate {
                for f in o.json["fired"].as_array().unwrap() {
                    let v = f["value"].as_f64().unwrap();
                    assert!(
                        (lo..=hi).contains(&v),
                        "{}: error rate {v:.2}% outside {lo}-{hi}%",
                        c.name
                    );
                }
            }
            let d = o.detect_s.unwrap();
            // A sample is stamped when it starts and its readings arrive during the moments
            // after; one begun just before the fault can read it. Firing on the state before
            // the fault would show as about WARMUP early, far beyond this.
            assert!(
                d > -READING_SPAN_S,
                "{}: fired before the fault ({d:.1}s)\n{}",
                c.name,
                o.all
            );
            assert!(
                d <= bound,
                "{}: fired {d:.1}s after the fault, later than {bound:.1}s\n{}",
                c.name,
                o.all
            );
            record(
                &c,
                mode,
                &o,
                &format!(
                    "fired {:?}",
                    fired_set(&o.json)
                        .iter()
                        .map(|x| format!("{}/{}", x.0, x.1))
                        .collect::<Vec<_>>()
                ),
                bound,
            );
        }
        Expect::Clear => {
            assert_eq!(o.code, 0, "{}: expected nothing to fire\n{}", c.name, o.all);
            assert!(o.json["fired"].as_array().unwrap().is_empty());
            assert!(o.json["blind"].as_array().unwrap().is_empty(), "{}", o.all);
            record(&c, mode, &o, "clear", bound);
        }
        Expect::Blind(rules, because) => {
            assert_eq!(
                o.code, 6,
                "{}: expected blindness (exit 6)\n{}",
                c.name, o.all
            );
            assert!(o.json["fired"].as_array().unwrap().is_empty(), "{}", o.all);
            let blind = o.json["blind"].as_array().unwrap();
            for r in rules {
                let b = blind.iter().find(|b| b["name"] == *r);
                assert!(b.is_some(), "{}: {r} should be blind\n{}", c.name, o.all);
                let reason = b.unwrap()["reason"].as_str().unwrap();
                assert!(
                    reason.contains(because),
                    "{}: {r}'s reason {reason:?} should name {because:?}",
                    c.name
                );
            }
            // Blind from when the first asserted rule lost its verdict plus window + margin.
            // A rule keeps judging the scrapes it has until they slide out of its window (W),
            // so the bound is 2 W + margin + one interval + slack.
            let blind_at = rules
                .iter()
                .filter_map(|r| blind.iter().find(|b| b["name"] == *r))
                .filter_map(|b| b["inconclusive_since_ms"].as_i64())
                .min()
                .unwrap()
                + ((c.window_s + 2.0) * 1000.0) as i64;
            let t0 = o.json["last_sample"]["ts_ms"].as_i64().unwrap()
                - (o.detect_s.unwrap() * 1000.0) as i64;
            let d = (blind_at - t0) as f64 / 1000.0;
            let o = Outcome {
                detect_s: Some(d),
                ..o
            };
            let bound = bound + c.window_s + 2.0;
            assert!(
                d > 0.0 && d <= bound,
                "{}: blind {d:.1}s after the fault (bound {bound:.1}s)\n{}",
                c.name,
                o.all
            );
            record(&c, mode, &o, &format!("blind {rules:?}"), bound);
        }
    }
}

const ERROR_RATE: &[(&str, &str)] = &[("error_rate", "rollback"), ("error_rate", "immediate")];

fn burst_5xx() -> Case {
    Case {
        name: "5xx burst (5% of requests)",
        inject: Inject::Fault("error_rate=0.05"),
        traffic: true,
        window_s: 4.0,
        expect: Expect::Fired(ERROR_RATE),
        edit: no_edit,
        error_rate: Some((3.0, 7.0)),
    }
}
fn slow_p99() -> Case {
    Case {
        name: "slow responses (600 ms)",
        inject: Inject::Fault("latency_ms=600"),
        traffic: false,
        window_s: 4.0,
        expect: Expect::Fired(&[
            ("p95_latency", "rollback"),
            ("p99_latency", "rollback"),
            ("p99_latency", "immediate"),
        ]),
        edit: no_edit,
        error_rate: None,
    }
}
fn slow_p95_only() -> Case {
    // 180 ms lands in the (150 ms, 200 ms] bucket: P95 ~197 ms > 150, P99 ~199.5 ms < 500.
    Case {
        name: "slow responses (180 ms): P95 alone",
        inject: Inject::Fault("latency_ms=180"),
        traffic: false,
        window_s: 4.0,
        expect: Expect::Fired(&[("p95_latency", "rollback")]),
        edit: no_edit,
        error_rate: None,
    }
}
fn unhealthy() -> Case {
    // The failure *rate* over the window passes 10% with the first failed probe of the ~5
    // in a 4 s window, before the error rate's window (the 503 probes count as 5xx too:
    // the monitor's own probes are requests like any other) can be sustained.
    Case {
        name: "health unhealthy (503)",
        inject: Inject::Fault("health_unhealthy=1"),
        traffic: false,
        window_s: 4.0,
        expect: Expect::Fired(&[("health_check_failure_rate", "immediate")]),
        edit: no_edit,
        error_rate: None,
    }
}
fn degraded() -> Case {
    Case {
        name: "degraded dependency (reported, not fired)",
        inject: Inject::Fault("degraded_dep=kong"),
        traffic: false,
        window_s: 4.0,
        expect: Expect::Clear,
        edit: no_edit,
        error_rate: None,
    }
}
fn hang() -> Case {
    Case {
        name: "hang with connections open",
        inject: Inject::Fault("hang=1"),
        traffic: false,
        window_s: 4.0,
        expect: Expect::Fired(&[("health_check_failure_rate", "immediate")]),
        edit: no_edit,
        error_rate: None,
    }
}
fn garbage() -> Case {
    Case {
        name: "/metrics garbage lines (with 5% errors)",
        inject: Inject::Fault("metrics_mode=garbage&error_rate=0.05"),
        traffic: true,
        window_s: 4.0,
        expect: Expect::Fired(ERROR_RATE),
        edit: no_edit,
        error_rate: Some((3.0, 7.0)),
    }
}
fn exemplars() -> Case {
    Case {
        name: "/metrics with exemplars (with 5% errors)",
        inject: Inject::Fault("metrics_mode=exemplars&error_rate=0.05"),
        traffic: true,
        window_s: 4.0,
        expect: Expect::Fired(ERROR_RATE),
        edit: no_edit,
        error_rate: Some((3.0, 7.0)),
    }
}
fn flaky_50pct() -> Case {
    Case {
        name: "every other scrape fails, 50% errors",
        inject: Inject::Fault("metrics_mode=flaky&error_rate=0.5"),
        traffic: true,
        window_s: 4.0,
        expect: Expect::Fired(ERROR_RATE),
        edit: no_edit,
        error_rate: Some((40.0, 60.0)),
    }
}
fn missing() -> Case {
    Case {
        name: "/metrics missing (404)",
        inject: Inject::Fault("metrics_mode=missing"),
        traffic: true,
        window_s: 4.0,
        expect: Expect::Blind(&["error_rate", "p95_latency", "p99_latency"], "HTTP 404"),
        edit: blind_quickly,
        error_rate: None,
    }
}
fn oversized() -> Case {
    Case {
        name: "/metrics oversized (5 MiB)",
        inject: Inject::Fault("metrics_mode=oversized"),
        traffic: true,
        window_s: 4.0,
        expect: Expect::Blind(
            &["error_rate", "p95_latency", "p99_latency"],
            "larger than 4 MiB",
        ),
        edit: blind_quickly,
        error_rate: None,
    }
}
fn nan_counters() -> Case {
    Case {
        name: "/metrics counters NaN",
        inject: Inject::Fault("metrics_mode=nan"),
        traffic: true,
        window_s: 4.0,
        expect: Expect::Blind(&["error_rate"], "NaN"),
        edit: blind_quickly,
        error_rate: None,
    }
}
fn killed() -> Case {
    Case {
        name: "container stopped",
        inject: Inject::Stop,
        traffic: false,
        window_s: 4.0,
        expect: Expect::Fired(&[("health_check_failure_rate", "immediate")]),
        edit: no_edit,
        error_rate: None,
    }
}
fn paused() -> Case {
    Case {
        name: "container paused",
        inject: Inject::Pause,
        traffic: false,
        window_s: 4.0,
        expect: Expect::Fired(&[("health_check_failure_rate", "immediate")]),
        edit: no_edit,
        error_rate: None,
    }
}
fn oom() -> Case {
    // 200 MiB in a 128 MiB container: killed by the kernel before any reading shows 150 MiB.
    Case {
        name: "OOM-killed",
        inject: Inject::Fault("allocate_mb=200"),
        traffic: false,
        window_s: 0.0,
        expect: Expect::Fired(&[("memory", "immediate")]),
        edit: health_rules_out,
        error_rate: None,
    }
}
fn crash_loop() -> Case {
    Case {
        name: "crash loop",
        inject: Inject::CrashLoop,
        traffic: false,
        window_s: 8.0,
        expect: Expect::Fired(&[("container_crashes", "immediate")]),
        edit: |t| {
            health_rules_out(t);
            // Each restart resets the counters the latency and error rules read; what is
            // under test is the restart count.
            set_window(t, "memory_continuous_growth", "1h");
        },
        error_rate: None,
    }
}

fn health_success_rate_alone() -> Case {
    // The 1 h success-rate rule (8 s here) on its own: the failure-rate and error-rate rules
    // (which the same 503s would fire) are given windows this run does not reach.
    Case {
        name: "health unhealthy: success rate < 99% alone",
        inject: Inject::Fault("health_unhealthy=1"),
        traffic: false,
        window_s: 8.0,
        expect: Expect::Fired(&[("health_check_success_rate", "rollback")]),
        edit: |t| {
            set_window(t, "health_check_failure_rate", "1h");
            set_window(t, "error_rate", "1h");
        },
        error_rate: None,
    }
}
fn memory_over_100() -> Case {
    // 110 MiB more in a 128 MiB container: over the per-metric 100 MiB trigger, under the
    // limit (no OOM), and a step, not a trend.
    Case {
        name: "memory over 100 MiB (under the 128 MiB limit)",
        inject: Inject::Fault("allocate_mb=110"),
        traffic: false,
        window_s: 0.0,
        expect: Expect::Fired(&[("memory", "rollback")]),
        edit: no_edit,
        error_rate: None,
    }
}

macro_rules! matrix {
    ($($case:ident => $loop_name:ident, $cron_name:ident;)*) => {$(
        #[test]
        fn $loop_name() {
            check($case(), Mode::Loop);
        }
        #[test]
        fn $cron_name() {
            check($case(), Mode::Cron(Duration::from_secs(1)));
        }
    )*};
}

matrix! {
    burst_5xx => burst_5xx_loop, burst_5xx_cron;
    slow_p99 => slow_p99_loop, slow_p99_cron;
    slow_p95_only => slow_p95_only_loop, slow_p95_only_cron;
    unhealthy => unhealthy_loop, unhealthy_cron;
    degraded => degraded_loop, degraded_cron;
    hang => hang_loop, hang_cron;
    garbage => garbage_loop, garbage_cron;
    exemplars => exemplars_loop, exemplars_cron;
    flaky_50pct => flaky_50pct_loop, flaky_50pct_cron;
    missing => missing_loop, missing_cron;
    oversized => oversized_loop, oversized_cron;
    nan_counters => nan_counters_loop, nan_counters_cron;
    killed => killed_loop, killed_cron;
    paused => paused_loop, paused_cron;
    oom => oom_loop, oom_cron;
    crash_loop => crash_loop_loop, crash_loop_cron;
    health_success_rate_alone => health_success_rate_alone_loop, health_success_rate_alone_cron;
    memory_over_100 => memory_over_100_loop, memory_over_100_cron;
}

/// Cron every 3 s against 1 s configured interval and 4 s windows: judged at the samples'
/// own spacing, not "inconclusive forever".
#[test]
fn cron_spacing_larger_than_the_interval() {
    check(burst_5xx(), Mode::Cron(Duration::from_secs(3)));
}
