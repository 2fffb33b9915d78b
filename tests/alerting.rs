//! "Alerting configured for all rollback triggers" and "Monitoring dashboards configured and
//! working", proven the way Prometheus users prove them: the generated rules pass `promtool
//! check rules` and `promtool test rules` and follow a change of the configuration; a real
//! Prometheus and a real Alertmanager (Debian's) load the generated files and deliver the
//! injected fault's alerts, and only those, to a webhook; a clean service sends none; the
//! monitor's own series alert when it dies; and the gate reports both criteria as measured.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::prometheus::Prometheus;
use common::recorder::Recorder;
use common::*;

fn run_tool(bin: &str, args: &[&str], dir: &Path) -> (bool, String) {
    let o = Command::new(bin)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{bin} is needed (bash scripts/setup.sh installs Debian's prometheus and prometheus-alertmanager): {e}"));
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// The shipped config with the test's windows, receivers and sources.
fn config(stage: &Stage, edit: impl Fn(&mut toml::Table)) -> PathBuf {
    short_window_config(stage, |t| {
        let a = t
            .entry("alerting")
            .or_insert(toml::Value::Table(Default::default()));
        let a = a.as_table_mut().unwrap();
        for (k, v) in [
            ("evaluation_interval", "1s"),
            ("group_wait", "1s"),
            ("group_interval", "2s"),
        ] {
            a.insert(k.into(), v.into());
        }
        edit(t);
    })
}

fn set(t: &mut toml::Table, path: &[&str], value: &str) {
    let mut table = t;
    for k in &path[..path.len() - 1] {
        table = table
            .entry(k.to_string())
            .or_insert(toml::Value::Table(Default::default()))
            .as_table_mut()
            .unwrap();
    }
    table.insert(path[path.len() - 1].into(), value.into());
}

fn alerts(stage: &Stage, cfg: &Path, out: &Path, extra: &[&str]) -> Run {
    let mut args = vec![
        "--config",
        path_str(cfg),
        "alerts",
        "--out",
        path_str(out),
        "--output",
        "json",
    ];
    args.extend_from_slice(extra);
    stage.run(&args)
}

fn prometheus_for(rules: &Path, am_port: u16, jobs: &[(&str, String)]) -> Prometheus {
    let mut scrape = String::new();
    for (job, target) in jobs {
        scrape += &format!(
            "  - job_name: {job}\n    scrape_interval: 1s\n    scrape_timeout: 900ms\n    static_configs:\n      - targets: [\"{target}\"]\n"
        );
    }
    Prometheus::with_config(
        &format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"127.0.0.1:{am_port}\"]\nscrape_configs:\n{scrape}",
            rules.display()
        ),
        None,
    )
}

/// The alerts Alertmanager posted to the generic webhook: (alertname, severity, service, status).
fn delivered(rec: &Recorder) -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    for (line, _, body) in rec.seen.lock().unwrap().iter() {
        if !line.starts_with("POST /generic") {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        for a in v["alerts"].as_array().unwrap() {
            let l = &a["labels"];
            let s = |k: &str| l[k].as_str().unwrap_or("").to_string();
            out.push((
                s("alertname"),
                s("severity"),
                s("service"),
                a["status"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

#[test]
fn generated_rules_pass_promtool_and_follow_the_configuration() {
    let stage = Stage::new();
    let out = stage.dir.path().join("alerting");
    let r = alerts(&stage, &stage.config_path(), &out, &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    let j = r.json();
    let n = j["alerts"].as_array().unwrap().len();
    assert_eq!(
        n,
        14,
        "12 runbook triggers and the monitor's two: {}",
        r.all()
    );
    let (ok, said) = run_tool("promtool", &["check", "rules", "dhi-stage.rules.yml"], &out);
    assert!(ok, "{said}");
    let (ok, said) = run_tool(
        "promtool",
        &["test", "rules", "dhi-stage.rules.test.yml"],
        &out,
    );
    assert!(ok, "{said}");
    let tests = std::fs::read_to_string(out.join("dhi-stage.rules.test.yml")).unwrap();
    let cases = tests.matches("\n  - name: ").count();
    let firing = tests.matches("- exp_labels:").count();
    let (ok, said) = run_tool("amtool", &["check-config", "alertmanager.yml"], &out);
    assert!(ok, "{said}");
    println!("alerting: {n} alerts; promtool test rules passed {cases} cases ({firing} expected alerts); amtool check-config passed");

    // A change of the configuration: the rules follow it, and the old tests fail against them.
    let changed = stage.write_config(|t| {
        t.replacen(
            "threshold = 2.0\nsustained_for = \"5m\"",
            "threshold = 7.5\nsustained_for = \"2m\"",
            1,
        )
    });
    let out2 = stage.dir.path().join("alerting-changed");
    assert_eq!(alerts(&stage, &changed, &out2, &[]).code, 0);
    let rules = std::fs::read_to_string(out2.join("dhi-stage.rules.yml")).unwrap();
    let expr = format!(
        r#"dhi_stage:error_rate_pct{{service=\"{}\"}} > 7.5"#,
        stage.name
    );
    assert!(rules.contains(&expr), "{rules}");
    assert!(rules.contains("for: 2m"), "{rules}");
    let (ok, said) = run_tool(
        "promtool",
        &["test", "rules", "dhi-stage.rules.test.yml"],
        &out2,
    );
    assert!(ok, "the regenerated tests pass: {said}");
    std::fs::copy(
        out.join("dhi-stage.rules.test.yml"),
        out2.join("old.test.yml"),
    )
    .unwrap();
    let (ok, said) = run_tool("promtool", &["test", "rules", "old.test.yml"], &out2);
    assert!(
        !ok,
        "the old expectations fail against the changed rules: {said}"
    );

    // The recording rule itself, from the service's raw counters (the runbook convention):
    // 10% of requests are 5xx, so the error-rate alerts fire after their window.
    std::fs::write(
        out.join("raw.test.yml"),
        r#"rule_files: ["dhi-stage.rules.yml"]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'http_requests_total{job="authentication-service",route="/auth/login",status="200"}'
        values: "0+90x20"
      - series: 'http_requests_total{job="authentication-service",route="/auth/login",status="500"}'
        values: "0+10x20"
      - series: 'http_requests_total{job="authentication-service",route="/health",status="500"}'
        values: "0+1000x20"
    promql_expr_test:
      - expr: 'round(dhi_stage:error_rate_pct, 0.001)'
        eval_time: 10m
        exp_samples:
          - labels: '{service="SERVICE"}'
            value: 10
    alert_rule_test:
      - eval_time: 4m
        alertname: DhiStageErrorRate
        exp_alerts: []
"#
        .replace("SERVICE", &stage.name),
    )
    .unwrap();
    let (ok, said) = run_tool("promtool", &["test", "rules", "raw.test.yml"], &out);
    assert!(
        ok,
        "the recorded error rate leaves the probes out and reads 10%: {said}"
    );
}

/// A service under test behind a real Prometheus and Alertmanager fed by `alerts`' files.
struct Scene {
    stage: Stage,
    rec: Recorder,
    cfg: PathBuf,
    am: common::alertmanager::Alertmanager,
    prom: Prometheus,
    _traffic: Traffic,
}

fn scene(image: &str, monitor_port: Option<u16>) -> Scene {
    let stage = Stage::new();
    assert_eq!(stage.deploy(image).run().code, 0);
    let rec = Recorder::start();
    let monitor = monitor_port.is_some();
    let base = |t: &mut toml::Table| {
        set(
            t,
            &["notify", "webhook_url"],
            &format!("http://127.0.0.1:{}/slack", rec.port),
        );
        set(
            t,
            &["alerting", "webhook_url"],
            &format!("http://127.0.0.1:{}/generic", rec.port),
        );
        set(t, &["monitoring", "prometheus", "rate_window"], "3s");
        if !monitor {
            // Memory from the service's own process series; nothing from a monitor.
            set(t, &["alerting", "monitor_selector"], "");
            set(
                t,
                &["monitoring", "prometheus", "queries", "memory_mib"],
                "max(process_resident_memory_bytes{$selector}) / 1048576",
            );
        }
    };
    let cfg = config(&stage, base);
    let out = stage.dir.path().join("alerting");
    let r = alerts(&stage, &cfg, &out, &[]);
    assert!(r.code == 0 || r.code == 3, "{}", r.all());
    let am = common::alertmanager::Alertmanager::start(&out.join("alertmanager.yml"));
    let mut jobs = vec![(
        "authentication-service",
        format!("127.0.0.1:{}", stage.port),
    )];
    if let Some(p) = monitor_port {
        jobs.push(("dhi-stage-monitor", format!("127.0.0.1:{p}")));
    }
    let prom = prometheus_for(&out.join("dhi-stage.rules.yml"), am.port, &jobs);
    // The same config, now naming the Prometheus and Alertmanager the gate measures.
    let (prom_url, am_url) = (prom.url(), am.url());
    let cfg = config(&stage, |t| {
        base(t);
        set(t, &["monitoring", "prometheus", "url"], &prom_url);
        set(t, &["alerting", "alertmanager_url"], &am_url);
    });
    let traffic = Traffic::start(&stage.base_url());
    Scene {
        stage,
        rec,
        cfg,
        am,
        prom,
        _traffic: traffic,
    }
}

/// The promotion criteria a command (`gate`, `report --week`) gives for the scene's service.
fn criteria_of(s: &Scene, command: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["--config", path_str(&s.cfg)];
    args.extend(command);
    args.extend(["--output", "json"]);
    let r = s.stage.run(&args);
    // Met (0) or not met (3): anything else is the command failing, not judging.
    assert!(r.code == 0 || r.code == 3, "{}", r.all());
    r.json()["criteria"].as_array().unwrap().clone()
}

/// The gate's criteria for the scene's service.
fn gate_criteria(s: &Scene) -> Vec<serde_json::Value> {
    criteria_of(s, &["gate", "--through-day", "1"])
}

#[test]
fn the_injected_faults_alerts_and_only_those_reach_the_webhook_and_a_clean_service_sends_none() {
    let faulty = testsvc_image("dhi-test/authsvc:errors-50pct", &["FAULT_ERROR_RATE=0.5"]);
    let bad = scene(&faulty, None);
    let clean = scene(&good_image(), None);
    let service = bad.stage.name.clone();

    // From the moment the breach began (Prometheus' activeAt) to the webhook's POST.
    let arrived = wait_for(|| !delivered(&bad.rec).is_empty(), Duration::from_secs(90));
    let at = chrono::Utc::now();
    assert!(
        arrived,
        "no alert reached the webhook: {} {}",
        bad.am.log(),
        bad.prom.log()
    );
    let body = http_get(&format!("{}/api/v1/alerts", bad.prom.url())).unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let active = v["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["labels"]["alertname"] == "DhiStageErrorRate")
        .and_then(|a| chrono::DateTime::parse_from_rfc3339(a["activeAt"].as_str()?).ok())
        .expect("the alert is active in Prometheus");
    let took = (at - active.with_timezone(&chrono::Utc)).num_milliseconds() as f64 / 1000.0;
    println!(
        "alerting: the error-rate alert reached the webhook {took:.1}s after the breach began (window 4s + evaluation 1s + group wait 1s = 6s)"
    );
    // Held for its window, then within an evaluation, the group wait and a little polling.
    assert!((4.0..=6.0 + 2.0).contains(&took), "{took}");
    std::thread::sleep(Duration::from_secs(4));
    let got = delivered(&bad.rec);
    // Only the fault's trigger, and its rollback severity inhibited by the immediate one.
    assert!(!got.is_empty());
    for (name, severity, svc, status) in &got {
        assert_eq!(
            (
                name.as_str(),
                severity.as_str(),
                svc.as_str(),
                status.as_str()
            ),
            ("DhiStageErrorRate", "immediate", service.as_str(), "firing"),
            "{got:?}"
        );
    }
    let slack = bad
        .rec
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(l, _, _)| l.starts_with("POST /slack"))
        .count();
    assert!(slack >= 1, "the Slack-compatible webhook got it too");
    let silent = clean.rec.seen.lock().unwrap().len();
    assert_eq!(
        silent,
        0,
        "the clean service sends nothing: {:?}",
        clean.rec.seen.lock().unwrap()
    );

    // The gate measures: dashboards from Prometheus' answers; alerting says what is missing.
    let criteria = gate_criteria(&bad);
    let find = |label: &str| {
        criteria
            .iter()
            .find(|c| c["criterion"].as_str().unwrap().starts_with(label))
            .unwrap()
            .clone()
    };
    let dash = find("Monitoring dashboards");
    assert_eq!(
        (dash["met"].as_bool(), dash["attested"].as_bool()),
        (Some(true), Some(false)),
        "{dash}"
    );
    let alerting = find("Alerting");
    assert_eq!(alerting["met"], false, "{alerting}");
    let ev = alerting["evidence"].as_str().unwrap();
    assert!(
        ev.starts_with("measured:")
            && ev.contains("container_crashes")
            && ev.contains("critical_cve"),
        "{ev}"
    );
    assert!(
        !ev.contains("not loaded"),
        "every alert that could be written is loaded: {ev}"
    );
}

#[test]
fn the_monitors_own_series_alert_when_it_dies_and_the_gate_measures_alerting_as_met() {
    let port = free_port();
    let s = scene(&good_image(), Some(port));
    let addr = format!("127.0.0.1:{port}");
    let mut monitor = s
        .stage
        .command(&[
            "--config",
            path_str(&s.cfg),
            "monitor",
            "--duration",
            "5m",
            "--listen",
            &addr,
            "--metrics-file",
            path_str(&s.stage.dir.path().join("monitor.prom")),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_for(
            || s.prom
                .query("dhi_stage_last_sample_timestamp_seconds")
                .len()
                == 1,
            Duration::from_secs(60)
        ),
        "Prometheus never scraped the monitor: {}",
        s.prom.log()
    );
    let file = std::fs::read_to_string(s.stage.dir.path().join("monitor.prom")).unwrap();
    assert!(file.contains("dhi_stage_trigger_fired{service="), "{file}");
    // Every trigger has an alert now; the drill goes through Alertmanager to our receiver.
    let d = s.stage.run(&[
        "--config",
        path_str(&s.cfg),
        "alerts",
        "--out",
        path_str(&s.stage.dir.path().join("alerting")),
        "--drill",
        "--output",
        "json",
    ]);
    assert_eq!(d.code, 0, "{}", d.all());
    assert_eq!(d.json()["drill"]["delivered"], true, "{}", d.all());
    assert!(
        delivered(&s.rec).iter().any(|a| a.0 == "DhiStageDrill"),
        "{:?}",
        delivered(&s.rec)
    );
    // A few seconds of watching a healthy service: nothing but the drill.
    std::thread::sleep(Duration::from_secs(8));
    let got: Vec<_> = delivered(&s.rec)
        .into_iter()
        .filter(|a| a.0 != "DhiStageDrill")
        .collect();
    assert!(
        got.is_empty(),
        "a healthy service under a live monitor sends nothing: {got:?}"
    );
    let criteria = gate_criteria(&s);
    let alerting = criteria
        .iter()
        .find(|c| c["criterion"].as_str().unwrap().starts_with("Alerting"))
        .unwrap();
    assert_eq!(alerting["met"], true, "{alerting}");
    let ev = alerting["evidence"].as_str().unwrap();
    assert!(
        ev.contains("all 12 trigger alerts loaded and healthy") && ev.contains("drill delivered"),
        "{ev}"
    );
    // The week page shows the same measurement, not the attestation.
    let shown = criteria_of(&s, &["report", "--week"])
        .into_iter()
        .find(|c| c["criterion"].as_str().unwrap().starts_with("Alerting"))
        .unwrap();
    assert_eq!(shown["met"], true, "{shown}");
    assert!(
        shown["evidence"]
            .as_str()
            .unwrap()
            .contains("all 12 trigger alerts loaded and healthy"),
        "{shown}"
    );

    // The monitor dies: its series go, and the alert says so.
    monitor.kill().unwrap();
    monitor.wait().unwrap();
    let killed = Instant::now();
    assert!(
        wait_for(
            || delivered(&s.rec)
                .iter()
                .any(|a| a.0 == "DhiStageMonitorDown"),
            Duration::from_secs(150)
        ),
        "no alert for a dead monitor: {:?} {}",
        delivered(&s.rec),
        s.am.log()
    );
    println!(
        "alerting: a killed monitor alerted {:.1}s later",
        killed.elapsed().as_secs_f64()
    );
}
