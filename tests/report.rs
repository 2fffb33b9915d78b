//! report, gate, incidents and notifications against real runs.
mod common;
use common::*;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

/// An HTTP server on loopback that records every request (method, path, headers, body).
struct Recorder {
    port: u16,
    seen: Arc<Mutex<Vec<(String, String, String)>>>,
}

impl Recorder {
    fn start() -> Recorder {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let mut conn = conn;
                conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                    .ok();
                let mut buf = Vec::new();
                let mut tmp = [0u8; 8192];
                // Read headers, then Content-Length bytes of body.
                let (head, body) = loop {
                    let n = conn.read(&mut tmp).unwrap_or(0);
                    if n == 0 {
                        break (String::from_utf8_lossy(&buf).to_string(), String::new());
                    }
                    buf.extend_from_slice(&tmp[..n]);
                    if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..pos]).to_string();
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        while buf.len() < pos + 4 + len {
                            let n = conn.read(&mut tmp).unwrap_or(0);
                            if n == 0 {
                                break;
                            }
                            buf.extend_from_slice(&tmp[..n]);
                        }
                        break (head, String::from_utf8_lossy(&buf[pos + 4..]).to_string());
                    }
                };
                let first = head.lines().next().unwrap_or("").to_string();
                s2.lock().unwrap().push((first, head, body));
                let resp = r#"{"html_url":"https://github.invalid/o/r/issues/1"}"#;
                let _ = write!(conn, "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{resp}", resp.len());
            }
        });
        Recorder { port, seen }
    }
}

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
    assert_eq!(stage.deploy(&image).code, 0);
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

#[test]
fn gate_fails_on_missing_days_and_says_what_is_missing() {
    let stage = Stage::new();
    assert_eq!(stage.deploy(&good_image()).code, 0);
    assert_eq!(stage.run(&["monitor", "--once", "--day", "1"]).code, 0);
    let r = stage.run(&["gate", "--output", "json"]);
    assert_eq!(r.code, 3, "{}", r.all());
    let j = r.json();
    let health = j["criteria"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["criterion"].as_str().unwrap().starts_with("Health"))
        .unwrap()
        .clone();
    assert!(
        health["evidence"]
            .as_str()
            .unwrap()
            .contains("day 2: no data"),
        "{health}"
    );
    let text = stage.run(&["gate"]);
    assert!(text.stdout.contains("DO NOT PROMOTE"), "{}", text.all());
    assert!(text.stdout.contains("(attested)"));
}

#[test]
fn a_rollback_writes_an_incident_report_and_notifies() {
    let good = good_image();
    let next = testsvc_image("dhi-test/authsvc:next", &["FAULT_LATENCY_MS=1"]);
    let rec = Recorder::start();
    let stage = Stage::new();
    let cfg = stage.write_config(|t| {
        t.replace(
            "webhook_url = \"\"",
            &format!("webhook_url = \"http://127.0.0.1:{}/hook\"", rec.port),
        )
        .replace("github_repo = \"\"", "github_repo = \"acme/auth\"")
        .replace(
            "github_api = \"https://api.github.com\"",
            &format!("github_api = \"http://127.0.0.1:{}\"", rec.port),
        )
    });
    let c = path_str(&cfg);
    assert_eq!(
        stage.run(&["--config", c, "deploy", "--image", &good]).code,
        0
    );
    assert_eq!(
        stage.run(&["--config", c, "deploy", "--image", &next]).code,
        0
    );
    let token = "ghp_supersecrettoken123";
    let r: Run = stage
        .command(&[
            "--config",
            c,
            "-vv",
            "rollback",
            "--reason",
            "p99 over budget",
            "--output",
            "json",
        ])
        .env("GITHUB_TOKEN", token)
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        !r.stdout.contains(token) && !r.stderr.contains(token),
        "the token leaked"
    );
    let j = r.json();
    let report = j["incident"]["report"].as_str().unwrap().to_string();
    let md = std::fs::read_to_string(stage.dir.path().join(&report)).unwrap();
    assert!(
        md.contains("# Incident: rollback")
            && md.contains("p99 over budget")
            && md.contains("## Timeline")
            && md.contains("## Container log excerpt"),
        "{md}"
    );

    let seen = rec.seen.lock().unwrap().clone();
    let hook = seen
        .iter()
        .find(|(l, _, _)| l.starts_with("POST /hook"))
        .expect("webhook called");
    let payload: serde_json::Value = serde_json::from_str(&hook.2).unwrap();
    assert!(
        payload["text"].as_str().unwrap().contains("rollback of")
            && payload["dhi_stage"]["event"] == "rollback",
        "{payload}"
    );
    let issue = seen
        .iter()
        .find(|(l, _, _)| l.starts_with("POST /repos/acme/auth/issues"))
        .expect("GitHub issue opened");
    assert!(issue
        .1
        .to_ascii_lowercase()
        .contains(&format!("authorization: bearer {token}")));
    let body: serde_json::Value = serde_json::from_str(&issue.2).unwrap();
    assert_eq!(
        body["labels"],
        serde_json::json!(["incident", "rollback", "dhi-migration"])
    );
    assert_eq!(body["body"].as_str().unwrap(), md);
}

#[test]
fn a_notification_endpoint_that_is_down_does_not_change_the_rollback() {
    let good = good_image();
    let next = testsvc_image("dhi-test/authsvc:next", &["FAULT_LATENCY_MS=1"]);
    let stage = Stage::new();
    let dead = free_port();
    let cfg = stage.write_config(|t| {
        t.replace(
            "webhook_url = \"\"",
            &format!("webhook_url = \"http://127.0.0.1:{dead}/hook\""),
        )
    });
    let c = path_str(&cfg);
    assert_eq!(
        stage.run(&["--config", c, "deploy", "--image", &good]).code,
        0
    );
    assert_eq!(
        stage.run(&["--config", c, "deploy", "--image", &next]).code,
        0
    );
    let r = stage.run(&["--config", c, "rollback"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("notify webhook: FAILED"), "{}", r.all());
    assert_eq!(stage.inspect()["Config"]["Image"], good.as_str());
}
