//! status: the appendix's quick health check.
mod common;
use common::*;

#[test]
fn status_reports_health_metrics_resources_and_recent_errors() {
    let image = testsvc_image("dhi-test/authsvc:errors", &["FAULT_ERROR_RATE=0.5"]);
    let stage = Stage::new();
    assert_eq!(stage.deploy(&image).run().code, 0);
    for _ in 0..10 {
        http("POST", &format!("{}/auth/login", stage.base_url()));
    }
    let r = stage.run(&["status", "--output", "json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let j = r.json();
    assert_eq!(j["health"]["healthy"], true);
    assert_eq!(j["health"]["dependencies"]["kong"], "healthy");
    assert_eq!(j["metrics"]["requests_5xx"], 5.0);
    assert!(j["metrics"]["requests_total"].as_f64().unwrap() >= 10.0);
    let c = &j["container"];
    assert_eq!(c["running"], true);
    assert_eq!(c["restart_count"], 0);
    assert_eq!(c["oom_killed"], false);
    assert!(c["memory_bytes"].as_u64().unwrap() > 0);
    assert_eq!(c["errors_last_hour"], 5);
    assert!(c["recent_errors"][0]
        .as_str()
        .unwrap()
        .contains("error: POST /auth/login -> 500"));

    let text = stage.run(&["status"]);
    assert!(
        text.stdout.contains("health: healthy") && text.stdout.contains("resources: memory"),
        "{}",
        text.all()
    );
}

#[test]
fn status_of_a_missing_container_says_so_and_exits_3() {
    let stage = Stage::new();
    let r = stage.run(&["status"]);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(
        r.stdout.contains("NOT healthy") && r.stdout.contains("no container named"),
        "{}",
        r.all()
    );
}
