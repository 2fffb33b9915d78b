//! Prometheus as the metrics source, against a real Prometheus scraping the test service:
//! on the same injected faults the PromQL path and the direct scrape reach the same verdicts,
//! and the error rate and P99 they report agree (0.5 percentage points; one histogram
//! bucket); a query without data is inconclusive and ends blind (exit 6), never clear; basic
//! auth and bearer tokens reach the server and never the output.
mod common;
use common::prometheus::Prometheus;
use common::recorder::Recorder;
use common::*;

use std::time::Duration;

/// testsvc's histogram bounds, in ms.
const BUCKETS_MS: [f64; 14] = [
    1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 150.0, 200.0, 300.0, 500.0, 750.0, 1000.0, 2500.0,
];

fn bucket_of(ms: f64) -> usize {
    BUCKETS_MS
        .iter()
        .position(|b| ms <= *b)
        .unwrap_or(BUCKETS_MS.len())
}

/// The short-window config with the Prometheus section filled in.
fn config(stage: &Stage, prometheus: &str, edit: impl Fn(&mut toml::Table)) -> std::path::PathBuf {
    let url = prometheus.to_string();
    short_window_config(stage, move |t| {
        let m = t["monitoring"].as_table_mut().unwrap();
        let mut p = toml::Table::new();
        p.insert("url".into(), url.clone().into());
        // Three 1 s scrapes per rate: short windows need short rates.
        p.insert("rate_window".into(), "3s".into());
        m.insert("prometheus".into(), p.into());
        edit(t);
    })
}

fn monitor(stage: &Stage, cfg: &std::path::Path, extra: &[&str]) -> Run {
    stage
        .call("monitor")
        .config(cfg)
        .args(&["--duration", "45s"])
        .args(extra)
        .json()
        .run()
}

fn fired(r: &Run, name: &str, severity: &str) -> serde_json::Value {
    r.json()["fired"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name && f["severity"] == severity)
        .unwrap_or_else(|| panic!("{name} ({severity}) did not fire: {}", r.all()))
        .clone()
}

fn fired_value(r: &Run, name: &str, severity: &str) -> f64 {
    fired(r, name, severity)["value"].as_f64().unwrap()
}

/// The mean of a fired rule's evidence across its window: one interval of the direct scrape
/// holds ~100 requests, so one 5%-error interval reads 4.5 or 5.4% by whole requests; over the
/// window both paths average the same traffic.
fn window_mean(r: &Run, name: &str, severity: &str) -> f64 {
    let f = fired(r, name, severity);
    let vals: Vec<f64> = f["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p[1].as_f64())
        .collect();
    vals.iter().sum::<f64>() / vals.len() as f64
}

/// The test service built with `fault`, deployed, scraped by a Prometheus of its own and
/// under traffic, once Prometheus holds `series`.
fn faulty_service(tag: &str, fault: &str, series: &str) -> (Stage, Prometheus, Traffic) {
    let image = testsvc_image(&format!("dhi-test/authsvc:{tag}"), &[fault]);
    let stage = Stage::new();
    assert_eq!(stage.deploy(&image).run().code, 0);
    let prom = Prometheus::start(&[format!("127.0.0.1:{}", stage.port)], None);
    let traffic = Traffic::start(&stage.base_url());
    wait_for_series(&prom, series);
    (stage, prom, traffic)
}

fn wait_for_series(p: &Prometheus, metric: &str) {
    let url = format!("{}/api/v1/query?query={metric}", p.url());
    let found = wait_for(
        || http_get(&url).is_some_and(|b| b.contains("\"value\"")),
        Duration::from_secs(20),
    );
    assert!(found, "prometheus never scraped {metric}: {}", p.log());
}

#[test]
fn the_promql_path_and_the_direct_scrape_agree_on_an_error_rate_fault() {
    let (stage, prom, _traffic) = faulty_service(
        "errors-5pct",
        "FAULT_ERROR_RATE=0.05",
        "http_requests_total",
    );
    // A 10 s window: enough requests that whole-request rounding stays under 0.2 pp.
    let cfg = config(&stage, &prom.url(), |t| set_window(t, "error_rate", "10s"));

    let direct = monitor(&stage, &cfg, &[]);
    assert_eq!(direct.code, 4, "{}", direct.all());
    let promql = monitor(&stage, &cfg, &["--metrics-source", "prometheus"]);
    assert_eq!(promql.code, 4, "{}", promql.all());
    let j = promql.json();
    assert_eq!(j["metrics_source"], "prometheus");
    assert_eq!(
        fired_exactly(&direct),
        fired_exactly(&promql),
        "the same verdicts"
    );
    for severity in ["rollback", "immediate"] {
        let (d, p) = (
            window_mean(&direct, "error_rate", severity),
            window_mean(&promql, "error_rate", severity),
        );
        println!(
            "error_rate ({severity}) over its window: direct scrape {d:.3}%, PromQL {p:.3}%, difference {:.3} pp (latest: {:.3}% vs {:.3}%)",
            (d - p).abs(),
            fired_value(&direct, "error_rate", severity),
            fired_value(&promql, "error_rate", severity)
        );
        assert!((d - p).abs() <= 0.5, "direct {d}% vs PromQL {p}%");
    }
    let rule = j["fired"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "error_rate")
        .unwrap()
        .clone();
    assert!(
        rule["condition"].as_str().unwrap().contains("(Prometheus)"),
        "{rule}"
    );
    assert!(rule["evidence"].as_array().unwrap().len() >= 4, "{rule}");
}

#[test]
fn the_promql_path_and_the_direct_scrape_agree_on_p99_within_one_bucket() {
    let (stage, prom, _traffic) = faulty_service(
        "slow-600",
        "FAULT_LATENCY_MS=600",
        "http_request_duration_seconds_bucket",
    );
    let cfg = config(&stage, &prom.url(), |_| {});
    let direct = monitor(&stage, &cfg, &[]);
    assert_eq!(direct.code, 4, "{}", direct.all());
    let promql = monitor(&stage, &cfg, &["--prometheus-url", &prom.url()]);
    assert_eq!(promql.code, 4, "{}", promql.all());
    assert_eq!(
        fired_exactly(&direct),
        fired_exactly(&promql),
        "the same verdicts"
    );
    let (d, p) = (
        fired_value(&direct, "p99_latency", "rollback"),
        fired_value(&promql, "p99_latency", "rollback"),
    );
    println!(
        "p99_latency: direct scrape {d:.1} ms (bucket {}), PromQL {p:.1} ms (bucket {})",
        bucket_of(d),
        bucket_of(p)
    );
    assert!(
        bucket_of(d).abs_diff(bucket_of(p)) <= 1,
        "direct {d} ms vs PromQL {p} ms are more than one bucket apart"
    );
}

#[test]
fn a_query_without_data_is_inconclusive_and_ends_blind() {
    let stage = Stage::new();
    assert_eq!(stage.deploy(&good_image()).run().code, 0);
    let prom = Prometheus::start(&[format!("127.0.0.1:{}", stage.port)], None);
    let _traffic = Traffic::start(&stage.base_url());
    let cfg = config(&stage, &prom.url(), |t| {
        let m = t["monitoring"].as_table_mut().unwrap();
        m.insert("blind_margin".into(), "2s".into());
        // A selector that matches no series: a fleet renamed, a job label mistyped.
        m["prometheus"]
            .as_table_mut()
            .unwrap()
            .insert("selector".into(), "job=\"no-such-job\"".into());
    });
    let r = stage
        .call("monitor")
        .config(&cfg)
        .args(&["--duration", "20s", "--metrics-source", "prometheus"])
        .json()
        .run();
    assert_eq!(r.code, 6, "blind, not ok: {}", r.all());
    let j = r.json();
    let error_rate = j["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "error_rate")
        .unwrap()
        .clone();
    assert_eq!(error_rate["verdict"], "inconclusive", "{error_rate}");
    assert!(
        error_rate["reason"].as_str().unwrap().contains("no data"),
        "{error_rate}"
    );
    assert!(
        j["blind"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["name"] == "error_rate"),
        "{j}"
    );
    println!(
        "no data: error_rate inconclusive ({}), monitor exit 6",
        error_rate["reason"]
    );
}

#[test]
fn basic_auth_and_bearer_tokens_reach_prometheus_and_never_the_output() {
    let stage = Stage::new();
    assert_eq!(stage.deploy(&good_image()).run().code, 0);
    let password = "prom-Pa55-canary-7731";
    let hash = std::process::Command::new("htpasswd")
        .args(["-nbB", "ops", password])
        .output()
        .expect("htpasswd (apache2-utils, installed by scripts/setup.sh)");
    let hash = String::from_utf8_lossy(&hash.stdout)
        .trim()
        .split_once(':')
        .unwrap()
        .1
        .to_string();
    let prom = Prometheus::start(
        &[format!("127.0.0.1:{}", stage.port)],
        Some(&format!("basic_auth_users:\n  ops: {hash}\n")),
    );
    let with_auth = |user: &str| {
        let user = user.to_string();
        config(&stage, &prom.url(), move |t| {
            let p = t["monitoring"]["prometheus"].as_table_mut().unwrap();
            p.insert("username".into(), user.clone().into());
            p.insert("password_env".into(), "DHI_TEST_PROM_PASSWORD".into());
        })
    };
    let once = |cfg: &std::path::Path, secret: &str| -> Run {
        let line = stage
            .call("monitor")
            .config(cfg)
            .args(&["--once", "--metrics-source", "prometheus", "-vv"])
            .json()
            .line();
        let args: Vec<&str> = line.iter().map(String::as_str).collect();
        stage
            .command(&args)
            .env("DHI_TEST_PROM_PASSWORD", secret)
            .env("DHI_TEST_PROM_TOKEN", secret)
            .output()
            .unwrap()
            .into()
    };
    // The right password: the query is answered (no 401 in any verdict).
    let r = once(&with_auth("ops"), password);
    assert!(
        !r.all().contains(password),
        "the password leaked: {}",
        r.all()
    );
    assert!(!r.stdout.contains("HTTP 401"), "{}", r.all());
    // A wrong one: every PromQL rule is inconclusive, saying 401, and still no secret.
    let r = once(&with_auth("ops"), "wrong-Pa55-canary-9914");
    assert!(!r.all().contains("wrong-Pa55-canary-9914"), "{}", r.all());
    let j = r.json();
    let reason = j["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "error_rate")
        .unwrap()["reason"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(reason.contains("401"), "{reason}");

    // A bearer token, seen by a recording endpoint standing in for a proxy in front of
    // Prometheus; the answer is not the API's JSON, which is said, and the token is not.
    let rec = Recorder::start();
    let token = "prom-token-canary-5520";
    let cfg = config(&stage, &format!("http://127.0.0.1:{}", rec.port), |t| {
        let p = t["monitoring"]["prometheus"].as_table_mut().unwrap();
        p.insert("bearer_token_env".into(), "DHI_TEST_PROM_TOKEN".into());
    });
    let r = once(&cfg, token);
    assert!(!r.all().contains(token), "the token leaked: {}", r.all());
    assert!(r.stdout.contains("not the Prometheus API"), "{}", r.all());
    let seen = rec.seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|(_, head, _)| head
            .to_ascii_lowercase()
            .contains(&format!("authorization: bearer {token}"))),
        "{seen:?}"
    );
    record_reliability(
        "prometheus-auth.txt",
        "Prometheus credentials: basic auth answered, a wrong password said HTTP 401, the bearer token reached the endpoint; 3 canary secrets, 0 found in any output\n",
        false,
    );
}

#[test]
fn the_daily_report_and_the_gate_read_the_same_source() {
    let (stage, prom, _traffic) = faulty_service(
        "errors-5pct",
        "FAULT_ERROR_RATE=0.05",
        "http_requests_total",
    );
    // Ten seconds of day 1 sampled directly, then reported from both sources.
    let scrape_cfg = config(&stage, &prom.url(), |_| {});
    let r = stage
        .call("monitor")
        .config(&scrape_cfg)
        .args(&["--duration", "10s", "--day", "1"])
        .run();
    assert!(r.code == 0 || r.code == 4, "{}", r.all());
    let day = |cfg: &std::path::Path| {
        let r = stage.report(1).config(cfg).json().run();
        assert!(r.code == 0 || r.code == 3, "{}", r.all());
        r.json()["metrics"].clone()
    };
    let scrape = day(&scrape_cfg);
    // (The same file, rewritten: the scrape report above was made before.)
    let prom_cfg = config(&stage, &prom.url(), |t| {
        t["monitoring"]
            .as_table_mut()
            .unwrap()
            .insert("metrics_source".into(), "prometheus".into());
    });
    let promql = day(&prom_cfg);
    assert_eq!(promql["metrics_source"], "prometheus", "{promql}");
    assert!(scrape.get("metrics_source").is_none(), "{scrape}");
    let (s, p) = (
        scrape["error_rate_pct"].as_f64().unwrap(),
        promql["error_rate_pct"].as_f64().unwrap(),
    );
    println!("day 1 error rate: stored scrapes {s:.3}%, Prometheus {p:.3}%");
    assert!((s - p).abs() <= 0.5, "scrape {s}% vs PromQL {p}%");
    // The gate reads the same figure: its error-rate evidence is PromQL's value.
    let g = stage.gate(1).config(&prom_cfg).json().run();
    assert_eq!(g.code, 3, "{}", g.all());
    let c = g.json()["criteria"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["criterion"].as_str().unwrap().starts_with("Error rate"))
        .unwrap()
        .clone();
    assert!(
        c["evidence"]
            .as_str()
            .unwrap()
            .contains(&format!("{p:.4}%")),
        "{c} (PromQL said {p:.4}%)"
    );
}
