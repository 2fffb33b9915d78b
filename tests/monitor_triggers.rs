//! monitor: every rollback trigger fires for its fault, within its window plus one interval
//! and not before the window is covered; a healthy service fires nothing.
mod common;
use common::*;
use std::time::Duration;

/// Runs the monitor (1 s interval) until it exits; returns the run and the fired rule names.
fn monitor(stage: &Stage, cfg: &std::path::Path, extra: &[&str]) -> (Run, Vec<String>) {
    let mut args = vec![
        "--config",
        path_str(cfg),
        "monitor",
        "--duration",
        "45s",
        "--output",
        "json",
    ];
    args.extend_from_slice(extra);
    let r = stage.run(&args);
    let fired = r.json()["fired"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| f["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default();
    (r, fired)
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = p
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    v.sort();
    v
}

/// The trigger fired no sooner than its window and no later than window + interval (+ slack
/// for the tick's own work).
fn assert_fired_in_window(stage: &Stage, window_s: f64) {
    let (first, last) = sample_span(stage);
    let span = (last - first) as f64 / 1000.0;
    assert!(
        span >= window_s,
        "fired after {span:.2}s, before its {window_s}s window was covered"
    );
    assert!(
        span <= window_s + 1.0 + 1.5,
        "fired after {span:.2}s, later than {window_s}s + one interval"
    );
}

#[test]
fn error_rate_over_2_percent_for_the_window_fires() {
    let image = testsvc_image("dhi-test/authsvc:errors-5pct", &["FAULT_ERROR_RATE=0.05"]);
    let stage = Stage::new();
    assert_eq!(stage.deploy(&image).run().code, 0);
    let cfg = short_window_config(&stage, |_| {});
    let _traffic = Traffic::start(&stage.base_url());
    std::thread::sleep(Duration::from_millis(300));
    let (r, fired) = monitor(&stage, &cfg, &[]);
    assert_eq!(r.code, 4, "{}", r.all());
    assert_eq!(
        fired_exactly(&r),
        pairs(&[("error_rate", "rollback"), ("error_rate", "immediate")]),
        "{fired:?}\n{}",
        r.all()
    );
    let f = r.json()["fired"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "error_rate")
        .unwrap()
        .clone();
    let v = f["value"].as_f64().unwrap();
    assert!((3.0..=8.0).contains(&v), "about 5% errors, got {v}");
    assert_fired_in_window(&stage, 4.0);
    let ev = stage.events("trigger");
    assert!(
        ev.iter()
            .any(|e| e["rule"] == "error_rate" && e["evidence"].as_array().unwrap().len() >= 4),
        "{ev:?}"
    );
}

#[test]
fn p99_latency_over_500ms_fires() {
    let image = testsvc_image("dhi-test/authsvc:slow-600", &["FAULT_LATENCY_MS=600"]);
    let stage = Stage::new();
    assert_eq!(stage.deploy(&image).run().code, 0);
    let cfg = short_window_config(&stage, |_| {});
    let (r, fired) = monitor(&stage, &cfg, &[]);
    assert_eq!(r.code, 4, "{}", r.all());
    // 600 ms lands in the (500 ms, 750 ms] bucket: P95 and P99 both over, together.
    assert_eq!(
        fired_exactly(&r),
        pairs(&[
            ("p95_latency", "rollback"),
            ("p99_latency", "rollback"),
            ("p99_latency", "immediate")
        ]),
        "{fired:?}\n{}",
        r.all()
    );
    assert_fired_in_window(&stage, 4.0);
}

#[test]
fn continuous_memory_growth_fires() {
    let image = testsvc_image(
        "dhi-test/authsvc:leak",
        &["FAULT_MEM_GROWTH_MB_PER_MIN=240"],
    );
    let stage = Stage::new();
    assert_eq!(stage.deploy(&image).run().code, 0);
    // The one test with a short growth window (240 MiB/min is no warm-up).
    let cfg = short_window_config(&stage, |t| set_window(t, "memory_continuous_growth", "5s"));
    let (r, fired) = monitor(&stage, &cfg, &[]);
    assert_eq!(r.code, 4, "{}", r.all());
    assert_eq!(
        fired_exactly(&r),
        pairs(&[("memory_continuous_growth", "rollback")]),
        "{fired:?}\n{}",
        r.all()
    );
    // Not too early: the window was covered. Not late: within an interval (and the tick's
    // own work) of the first sample at which the stored readings support the trigger. The
    // service's growth is what it is under load (a starved allocator grows in bursts, and a
    // burst is no straight line), so lateness is measured from the evidence, not the clock.
    let (first, last) = sample_span(&stage);
    assert!(
        (last - first) as f64 / 1000.0 >= 5.0,
        "fired before its window was covered"
    );
    let evidence =
        growth_evidence_at(&stage, 5_000, 0.1).expect("the stored readings support the trigger");
    assert!(
        last <= evidence + 1_000 + 1_500,
        "fired {} ms after the readings supported it (one interval is 1000 ms)",
        last - evidence
    );
}

/// The first sample at which the stored memory readings of the `window_ms` before it support
/// the growth trigger, computed here by ordinary least squares: a slope over `threshold`
/// MiB/min, R² of at least 0.8, a rise across the window of 1 MiB and 5% of the level.
fn growth_evidence_at(stage: &Stage, window_ms: i64, threshold: f64) -> Option<i64> {
    let db = rusqlite::Connection::open(stage.state_dir().join("state.db")).unwrap();
    let pts: Vec<(i64, f64)> = db
        .prepare(
            "SELECT ts_ms, memory_bytes FROM samples WHERE memory_bytes IS NOT NULL ORDER BY ts_ms",
        )
        .unwrap()
        .query_map([], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? as f64 / 1048576.0))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    pts.iter().map(|p| p.0).find(|&t| {
        let w: Vec<(f64, f64)> = pts
            .iter()
            .filter(|(x, _)| *x >= t - window_ms && *x <= t)
            .map(|(x, y)| ((*x - t) as f64 / 60_000.0, *y))
            .collect();
        if w.len() < 3 || t - pts[0].0 < window_ms {
            return false;
        }
        let n = w.len() as f64;
        let (mx, my) = (
            w.iter().map(|p| p.0).sum::<f64>() / n,
            w.iter().map(|p| p.1).sum::<f64>() / n,
        );
        let sxy: f64 = w.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
        let sxx: f64 = w.iter().map(|(x, _)| (x - mx).powi(2)).sum();
        let syy: f64 = w.iter().map(|(_, y)| (y - my).powi(2)).sum();
        let slope = sxy / sxx;
        let r2 = sxy * sxy / (sxx * syy);
        let rise = slope * (w.last().unwrap().0 - w[0].0);
        slope > threshold && r2 >= 0.8 && rise >= 1.0 && rise >= 0.05 * my
    })
}

#[test]
fn a_crash_loop_fires_the_restart_trigger() {
    let image = good_image();
    let stage = Stage::new();
    std::fs::write(&stage.env_file, "PORT=3000\nFAULT_CRASH_AFTER_S=1.5\n").unwrap();
    assert_eq!(stage.deploy(&image).run().code, 0);
    // Only the restart count may decide here: health blips during restarts are expected.
    let cfg = short_window_config(&stage, |t| {
        set_window(t, "health_check_failure_rate", "1h");
        set_window(t, "health_check_success_rate", "1h");
        set_window(t, "memory_continuous_growth", "1h");
    });
    let (r, fired) = monitor(&stage, &cfg, &[]);
    assert_eq!(r.code, 4, "{}", r.all());
    assert_eq!(fired, vec!["container_crashes".to_string()], "{}", r.all());
    assert!(r.json()["fired"][0]["value"].as_f64().unwrap() > 3.0);
}

#[test]
fn health_reporting_unhealthy_fires() {
    let stage = Stage::new();
    assert_eq!(stage.deploy(&good_image()).run().code, 0);
    assert!(http(
        "POST",
        &format!("{}/admin/faults?health_unhealthy=1", stage.base_url())
    )
    .is_some());
    let cfg = short_window_config(&stage, |_| {});
    let (r, fired) = monitor(&stage, &cfg, &[]);
    assert_eq!(r.code, 4, "{}", r.all());
    // Unhealthy from the first sample: the health rules judge the probes. The monitor's own
    // 503 probes are left out of the error rate ([monitoring.metrics] exclude_probes, the
    // stand-in's counter has a route label), so the error rate does not fire on them.
    assert_eq!(
        fired_exactly(&r),
        pairs(&[("health_check_failure_rate", "immediate")]),
        "{fired:?}\n{}",
        r.all()
    );
    assert_fired_in_window(&stage, 4.0);
    // Not a substring match: the body says "unhealthy" and the probes count as failed.
    assert_eq!(r.json()["last_sample"]["health_ok"], false);
}

#[test]
fn a_degraded_dependency_is_reported_without_firing() {
    let stage = Stage::new();
    assert_eq!(stage.deploy(&good_image()).run().code, 0);
    assert!(http(
        "POST",
        &format!("{}/admin/faults?degraded_dep=kong", stage.base_url())
    )
    .is_some());
    let cfg = short_window_config(&stage, |_| {});
    let r = stage.run(&["--config", path_str(&cfg), "monitor", "--duration", "3s"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("DEGRADED kong=degraded"), "{}", r.all());
    let j = stage
        .run(&[
            "--config",
            path_str(&cfg),
            "monitor",
            "--once",
            "--output",
            "json",
        ])
        .json();
    assert_eq!(
        j["last_sample"]["health_detail"]["dependencies"]["kong"],
        "degraded"
    );
}

#[test]
fn a_hung_service_fires_through_probe_timeouts() {
    let stage = Stage::new();
    assert_eq!(stage.deploy(&good_image()).run().code, 0);
    assert!(http("POST", &format!("{}/admin/faults?hang=1", stage.base_url())).is_some());
    let cfg = short_window_config(&stage, |_| {});
    let (r, fired) = monitor(&stage, &cfg, &[]);
    assert_eq!(r.code, 4, "{}", r.all());
    // Hung probes complete no request: the error rate has no traffic (inconclusive), only
    // the health rule can judge.
    assert_eq!(
        fired_exactly(&r),
        pairs(&[("health_check_failure_rate", "immediate")]),
        "{fired:?}\n{}",
        r.all()
    );
    assert_eq!(
        r.json()["last_sample"]["health_detail"]["error"],
        "timed out"
    );
}

#[test]
fn a_killed_container_fires() {
    let stage = Stage::new();
    assert_eq!(stage.deploy(&good_image()).run().code, 0);
    assert_eq!(docker(&["stop", "-t", "0", &stage.name]).code, 0);
    let cfg = short_window_config(&stage, |_| {});
    let (r, fired) = monitor(&stage, &cfg, &[]);
    assert_eq!(r.code, 4, "{}", r.all());
    assert_eq!(
        fired_exactly(&r),
        pairs(&[("health_check_failure_rate", "immediate")]),
        "{fired:?}\n{}",
        r.all()
    );
    let last = &r.json()["last_sample"];
    assert!(
        last["memory_bytes"].is_null(),
        "a stopped container has no memory reading, not zero"
    );
}

#[test]
fn a_healthy_service_fires_nothing_even_across_a_restart() {
    let stage = Stage::new();
    assert_eq!(stage.deploy(&good_image()).run().code, 0);
    let cfg = short_window_config(&stage, |t| {
        // Probes that land in the restart's gap are real failures, not false positives: the
        // health rules are left out; the counter-based ones (errors, latency) are what a
        // counter reset could fool. The restarted process's warm-up is no leak either (the
        // 5 s growth window would read it as one; the runbook's is 30 min).
        set_window(t, "health_check_failure_rate", "1h");
        set_window(t, "health_check_success_rate", "1h");
        set_window(t, "memory_continuous_growth", "1h");
    });
    let _traffic = Traffic::start(&stage.base_url());
    let base = stage.base_url();
    let crasher = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(6));
        http("POST", &format!("{base}/admin/crash"));
    });
    let r = stage.run(&[
        "--config",
        path_str(&cfg),
        "monitor",
        "--duration",
        "14s",
        "--output",
        "json",
    ]);
    crasher.join().unwrap();
    assert_eq!(r.code, 0, "{}", r.all());
    let j = r.json();
    assert!(j["fired"].as_array().unwrap().is_empty(), "{}", r.all());
    assert_eq!(j["last_sample"]["restart_count"], 1, "the crash did happen");
    let err = j["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "error_rate")
        .unwrap()
        .clone();
    assert_eq!(
        err["verdict"], "clear",
        "the counter reset is not read as errors: {err}"
    );
}

#[test]
fn auto_rollback_restores_the_baseline_end_to_end() {
    let good = good_image();
    let faulty = testsvc_image("dhi-test/authsvc:errors-50pct", &["FAULT_ERROR_RATE=0.5"]);
    let stage = Stage::new();
    assert_eq!(stage.deploy(&good).run().code, 0);
    assert_eq!(
        stage.deploy(&faulty).run().code,
        0,
        "health is fine, so it deploys"
    );
    let cfg = short_window_config(&stage, |_| {});
    let _traffic = Traffic::start(&stage.base_url());
    let (r, fired) = monitor(&stage, &cfg, &["--auto-rollback"]);
    assert_eq!(r.code, 4, "{}", r.all());
    assert_eq!(
        fired_exactly(&r),
        pairs(&[("error_rate", "rollback"), ("error_rate", "immediate")]),
        "{fired:?}"
    );
    let j = r.json();
    assert!(
        j["rollback"]["rollback"]["decision_to_healthy_ms"]
            .as_u64()
            .unwrap()
            < 30_000,
        "{}",
        r.all()
    );
    assert_eq!(stage.inspect()["Config"]["Image"], good.as_str());
    assert!(stage.health().is_some());
    assert!(!stage.events("trigger").is_empty());
    let rb = stage.events("rollback");
    assert!(
        rb.last().unwrap()["reason"]
            .as_str()
            .unwrap()
            .contains("error_rate"),
        "{rb:?}"
    );
}

#[test]
fn separate_once_invocations_build_one_window() {
    let stage = Stage::new();
    assert_eq!(stage.deploy(&good_image()).run().code, 0);
    assert!(http(
        "POST",
        &format!("{}/admin/faults?health_unhealthy=1", stage.base_url())
    )
    .is_some());
    let cfg = short_window_config(&stage, |t| {
        // cron-like spacing: each invocation takes its own ~1 s, so allow 2 s between samples.
        t["monitoring"]
            .as_table_mut()
            .unwrap()
            .insert("interval".into(), "2s".into());
    });
    let mut codes = Vec::new();
    for _ in 0..8 {
        let r = stage.run(&[
            "--config",
            path_str(&cfg),
            "monitor",
            "--once",
            "--day",
            "2",
        ]);
        codes.push(r.code);
        if r.code == 4 {
            assert!(
                r.stdout
                    .contains("TRIGGER FIRED: health_check_failure_rate"),
                "{}",
                r.all()
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        codes.first(),
        Some(&0),
        "the first invocation cannot cover a window: {codes:?}"
    );
    assert_eq!(codes.last(), Some(&4), "{codes:?}");
    let db = rusqlite::Connection::open(stage.state_dir().join("state.db")).unwrap();
    let day: i64 = db
        .query_row("SELECT MIN(day) FROM samples", [], |r| r.get(0))
        .unwrap();
    assert_eq!(day, 2);
}

#[test]
fn any_http_service_without_a_container() {
    let stage = Stage::new();
    assert_eq!(stage.deploy(&good_image()).run().code, 0);
    let cfg = short_window_config(&stage, |_| {});
    let mut cmd = stage.command(&[
        "--config",
        path_str(&cfg),
        "monitor",
        "--once",
        "--base-url",
        &stage.base_url(),
        "--output",
        "json",
    ]);
    cmd.env_remove("DHI_STAGE_CONTAINER");
    let r: Run = cmd.output().unwrap().into();
    assert_eq!(r.code, 0, "{}", r.all());
    let j = r.json();
    assert!(j["container"].is_null());
    assert_eq!(j["last_sample"]["health_ok"], true);
    assert!(
        j["last_sample"]["memory_bytes"].is_null() && j["last_sample"]["restart_count"].is_null()
    );
}

#[test]
fn sigterm_ends_the_monitor_cleanly_with_a_summary() {
    let stage = Stage::new();
    assert_eq!(stage.deploy(&good_image()).run().code, 0);
    let cfg = short_window_config(&stage, |_| {});
    let child = stage
        .command(&[
            "--config",
            path_str(&cfg),
            "monitor",
            "--duration",
            "60s",
            "--output",
            "json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let started = std::time::Instant::now();
    let r: Run = child.wait_with_output().unwrap().into();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "it stops within a tick"
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let j = r.json();
    assert_eq!(j["interrupted"], true);
    let taken = j["samples"].as_u64().unwrap();
    assert!(taken >= 2, "{}", r.all());
    // Every tick it reported is in the store: nothing half-written.
    let db = rusqlite::Connection::open(stage.state_dir().join("state.db")).unwrap();
    let stored: i64 = db
        .query_row("SELECT COUNT(*) FROM samples", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored as u64, taken);
}
