//! The daily report against real runs: figures that match the samples, and the page.
mod common;
use common::*;

/// Independent numbers from the samples table: (health %, memory min MB, memory max MB, 5xx, requests).
fn from_samples(stage: &Stage, day: u32) -> (f64, f64, f64, f64, f64) {
    let db = rusqlite::Connection::open(stage.state_dir().join("state.db")).unwrap();
    let mut st = db
        .prepare("SELECT health_ok, memory_bytes, metrics FROM samples WHERE day=?1 ORDER BY ts_ms")
        .unwrap();
    let rows: Vec<(bool, Option<i64>, Option<Vec<u8>>)> = st
        .query_map([day], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let ok = rows.iter().filter(|r| r.0).count() as f64 / rows.len() as f64 * 100.0;
    let mems: Vec<f64> = rows
        .iter()
        .filter_map(|r| r.1.map(|b| b as f64 / 1_048_576.0))
        .collect();
    let counters: Vec<(f64, f64)> = rows
        .iter()
        .filter_map(|r| r.2.as_ref())
        .map(|m| {
            let v = common::scrape::scrape(&db, m);
            (
                v["requests_total"].as_f64().unwrap(),
                v["requests_5xx"].as_f64().unwrap(),
            )
        })
        .collect();
    let inc = |a: f64, b: f64| if b >= a { b - a } else { b };
    let total: f64 = counters.windows(2).map(|w| inc(w[0].0, w[1].0)).sum();
    let errors: f64 = counters.windows(2).map(|w| inc(w[0].1, w[1].1)).sum();
    (
        ok,
        mems.iter().cloned().fold(f64::INFINITY, f64::min),
        mems.iter().cloned().fold(0.0, f64::max),
        errors,
        total,
    )
}

#[test]
fn a_real_day_reported_matches_the_samples_and_renders() {
    let image = testsvc_image("dhi-test/authsvc:errors-1pct", &["FAULT_ERROR_RATE=0.01"]);
    let stage = Stage::new();
    assert_eq!(stage.deploy(&image).run().code, 0);
    let cfg = short_window_config(&stage, |t| {
        for name in [
            "error_rate",
            "health_check_failure_rate",
            "health_check_success_rate",
            "memory_continuous_growth",
        ] {
            set_window(t, name, "1h");
        }
    });
    {
        let _traffic = Traffic::start(&stage.base_url());
        let r = stage.run(&[
            "--config",
            path_str(&cfg),
            "monitor",
            "--day",
            "1",
            "--duration",
            "6s",
        ]);
        assert_eq!(r.code, 0, "{}", r.all());
    }
    assert_eq!(
        stage
            .run(&[
                "--config",
                path_str(&cfg),
                "load",
                "--profile",
                "load",
                "--vus",
                "2",
                "--ramp",
                "0s",
                "--duration",
                "1s"
            ])
            .code,
        3,
        "1% errors fail 0% failures"
    );
    let junit = stage.dir.path().join("e2e.xml");
    let cases: String = (0..146)
        .map(|i| format!("<testcase name=\"t{i}\"/>"))
        .collect();
    std::fs::write(
        &junit,
        format!(
            "<testsuites><testsuite name=\"e2e\" tests=\"146\">{cases}</testsuite></testsuites>"
        ),
    )
    .unwrap();
    let out = stage.dir.path().join("reports");
    let r = stage.run(&[
        "--config",
        path_str(&cfg),
        "report",
        "--day",
        "1",
        "--out",
        path_str(&out),
        "--e2e-junit",
        path_str(&junit),
        "--output",
        "json",
    ]);
    assert_eq!(r.code, 3, "1% errors: investigate\n{}", r.all());
    let j = r.json();
    let m = &j["metrics"];
    let (health, mem_lo, mem_hi, errors, total) = from_samples(&stage, 1);
    assert!((m["health_success_rate_pct"].as_f64().unwrap() - health).abs() < 1e-9);
    assert!(
        (m["error_rate_pct"].as_f64().unwrap() - errors / total * 100.0).abs() < 1e-9,
        "{m}"
    );
    assert!((m["memory_min_mib"].as_f64().unwrap() - mem_lo).abs() < 1e-9);
    assert!((m["memory_max_mib"].as_f64().unwrap() - mem_hi).abs() < 1e-9);
    assert_eq!(m["restarts"], 0);
    let md = std::fs::read_to_string(out.join("day-1.md")).unwrap();
    assert!(md.starts_with("# DHI Staging Validation Report - Day 1/7"));
    assert!(
        md.contains("- E2E Tests: 146/146")
            && md.contains("- K6 Smoke Tests: no data")
            && md.contains("- K6 Load Tests: Fail"),
        "{md}"
    );
    assert!(
        md.contains(&format!("- Health Check Success Rate: {health:.2}%")),
        "{md}"
    );
    assert!(md.contains("- [x] Investigate issues"), "{md}");

    // Charts: valid SVG with the expected series and threshold lines.
    for (file, series, lines) in [
        (
            "day-1-memory.svg",
            vec!["memory"],
            vec!["rollback 100 MiB", "immediate 150 MiB"],
        ),
        (
            "day-1-latency.svg",
            vec!["P95", "P99"],
            vec!["P95 target 100ms", "P99 target 200ms"],
        ),
        (
            "day-1-health.svg",
            vec!["health success % (running)", "error rate % (per interval)"],
            vec!["rollback: error 2%"],
        ),
    ] {
        let text = std::fs::read_to_string(out.join(file)).unwrap();
        let doc = roxmltree::Document::parse(&text)
            .unwrap_or_else(|e| panic!("{file} is not valid XML: {e}"));
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        let found: Vec<&str> = doc
            .descendants()
            .filter_map(|n| n.attribute("data-series"))
            .collect();
        assert_eq!(found, series, "{file}");
        let thresholds: Vec<&str> = doc
            .descendants()
            .filter_map(|n| n.attribute("data-threshold"))
            .collect();
        assert_eq!(thresholds, lines, "{file}");
        let points: usize = doc
            .descendants()
            .filter_map(|n| n.attribute("data-points"))
            .map(|p| p.parse::<usize>().unwrap())
            .max()
            .unwrap();
        assert!(points >= 3, "{file}: series carry the day's samples");
    }

    // One self-contained page, opened in headless Chromium, screenshot taken.
    let r = stage.run(&[
        "--config",
        path_str(&cfg),
        "report",
        "--day",
        "1",
        "--out",
        path_str(&out),
        "--format",
        "html",
    ]);
    assert_eq!(r.code, 3, "{}", r.all());
    let html = out.join("day-1.html");
    let page = std::fs::read_to_string(&html).unwrap();
    assert_eq!(page.matches("<svg").count(), 3, "charts inline");
    let shot = stage.dir.path().join("report.png");
    let chromium = chromium(
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1000,2200".into(),
            format!("file://{}", html.display()),
        ],
        &stage.dir.path().join("chrome"),
    );
    assert!(
        chromium.status.success(),
        "{}",
        String::from_utf8_lossy(&chromium.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "a real screenshot, {} bytes",
        png.len()
    );
}
