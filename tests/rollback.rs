//! rollback: restore the recorded baseline or --to REF, fast, under the state lock; the
//! incident report and the notifications that follow one.
mod common;
use common::recorder::Recorder;
use common::*;

#[test]
fn rollback_restores_the_recorded_baseline_and_times_it() {
    let good = good_image();
    let next = testsvc_image("dhi-test/authsvc:next", &["FAULT_LATENCY_MS=1"]);
    let stage = Stage::new();
    assert_eq!(stage.deploy(&good).run().code, 0);
    assert_eq!(stage.deploy(&next).run().code, 0);
    assert_eq!(stage.inspect()["Config"]["Image"], next.as_str());
    let r = stage.rollback().reason("test trigger").json().run();
    assert_eq!(r.code, 0, "{}", r.all());
    let j = r.json();
    assert_eq!(stage.inspect()["Config"]["Image"], good.as_str());
    assert!(stage.health().is_some());
    let ms = j["rollback"]["decision_to_healthy_ms"].as_u64().unwrap();
    assert!(ms < 30_000, "runbook target: {ms}ms");
    assert_eq!(j["within_target"], true);
    let ev = stage.events("rollback");
    assert_eq!(ev.last().unwrap()["reason"], "test trigger");
    assert_eq!(ev.last().unwrap()["to"], good.as_str());

    // Rolling back to what already runs healthy is a no-op that says so.
    let r = stage.rollback().to(&good).run();
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("nothing to do"), "{}", r.all());
}

#[test]
fn rollback_to_an_explicit_reference() {
    let good = good_image();
    let baseline = testsvc_image(
        "dhi-test/authentication-service:baseline-distroless",
        &["BUN_VERSION=1.3.0"],
    );
    let stage = Stage::new();
    assert_eq!(stage.deploy(&good).run().code, 0);
    let r = stage.rollback().to(&baseline).run();
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("decision-to-healthy"), "{}", r.all());
    assert_eq!(stage.inspect()["Config"]["Image"], baseline.as_str());
    assert_eq!(
        stage.inspect()["HostConfig"]["ReadonlyRootfs"],
        true,
        "same hardened spec"
    );
}

#[test]
fn rollback_with_nothing_recorded_targets_the_runbook_baseline_and_says_when_it_is_missing() {
    let stage = Stage::new();
    let cfg = stage.write_config(|t| {
        t.replace(
            "name = \"authentication-service\"",
            &format!("name = \"{}\"", unique("never-pushed")),
        )
    });
    let r = stage.rollback().config(&cfg).run();
    assert_eq!(r.code, 5, "{}", r.all());
    assert!(
        r.stderr.contains("runbook baseline")
            && r.stderr.contains(":baseline-distroless")
            && r.stderr.contains("--to"),
        "{}",
        r.all()
    );
    // Nothing was touched: no deployment attempt is recorded.
    let db = rusqlite::Connection::open(stage.state_dir().join("state.db")).unwrap();
    let n: i64 = db
        .query_row("SELECT COUNT(*) FROM deployments", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0);
}

#[test]
fn a_baseline_that_never_gets_healthy_exits_5_and_keeps_the_running_one() {
    let good = good_image();
    let bad = testsvc_image("dhi-test/authsvc:unhealthy", &["FAULT_HEALTH_UNHEALTHY=1"]);
    let stage = Stage::new();
    assert_eq!(stage.deploy(&good).run().code, 0);
    let r = stage.rollback().to(&bad).wait("2s").run();
    assert_eq!(r.code, 5, "{}", r.all());
    assert!(r.stdout.contains("put back and is running"), "{}", r.all());
    assert_eq!(stage.inspect()["Config"]["Image"], good.as_str());
    assert!(wait_for(
        || stage.health().is_some(),
        std::time::Duration::from_secs(5)
    ));
}

#[test]
fn a_service_ignoring_sigterm_does_not_stall_the_rollback() {
    let stubborn = testsvc_image(
        "dhi-test/authsvc:ignore-sigterm",
        &["FAULT_IGNORE_SIGTERM=1"],
    );
    let good = good_image();
    let stage = Stage::new();
    assert_eq!(stage.deploy(&stubborn).run().code, 0);
    let started = std::time::Instant::now();
    let r = stage.rollback().to(&good).json().run();
    let took = started.elapsed();
    assert_eq!(r.code, 0, "{}", r.all());
    let j = r.json();
    assert_eq!(j["rollback"]["sigkill_needed"], true, "{}", r.all());
    // Docker's default grace is 10 s; the rollback's is 500 ms, then SIGKILL.
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
    let text = stage.rollback().to(&stubborn).run();
    assert_eq!(text.code, 0, "{}", text.all());
    let again = stage.rollback().to(&good).run();
    assert!(
        again.stdout.contains("ignored SIGTERM"),
        "the wait is explained: {}",
        again.all()
    );
}

#[test]
fn a_rollback_drill_rolls_back_and_restores_forward() {
    let good = good_image();
    let next = testsvc_image("dhi-test/authsvc:next", &["FAULT_LATENCY_MS=1"]);
    let stage = Stage::new();
    assert_eq!(stage.deploy(&good).run().code, 0);
    assert_eq!(stage.deploy(&next).run().code, 0);
    let r = stage.rollback().arg("--drill").json().run();
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        stage.inspect()["Config"]["Image"],
        next.as_str(),
        "restored forward"
    );
    let drills = stage.events("drill");
    assert_eq!(drills.len(), 1);
    assert_eq!(drills[0]["passed"], true);
    assert_eq!(drills[0]["rollback_to"], good.as_str());
}

#[test]
fn production_rollback_needs_approval() {
    let stage = Stage::new();
    let cfg = stage
        .write_config(|t| t.replace("environment = \"staging\"", "environment = \"production\""));
    let r = stage.rollback().config(&cfg).to("x/y:z").run();
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("--approved-by"), "{}", r.all());
}

#[test]
fn a_second_rollback_waits_for_the_lock_holder() {
    let good = good_image();
    let next = testsvc_image("dhi-test/authsvc:next", &["FAULT_LATENCY_MS=1"]);
    let stage = Stage::new();
    assert_eq!(stage.deploy(&good).run().code, 0);
    assert_eq!(stage.deploy(&next).run().code, 0);
    // Two rollbacks at once: one proceeds, the other is refused naming the first.
    let a = stage
        .command(&["rollback", "--to", &good])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let b = stage
        .command(&["rollback", "--to", &good])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (a, b): (Run, Run) = (
        a.wait_with_output().unwrap().into(),
        b.wait_with_output().unwrap().into(),
    );
    let codes = [a.code, b.code];
    assert!(codes.contains(&0), "{}\n{}", a.all(), b.all());
    let refused = if a.code == 0 { &b } else { &a };
    // Either refused on the lock, or (if the first finished first) a no-op.
    assert!(
        (refused.code == 1 && refused.stderr.contains("running `dhi-stage rollback`"))
            || (refused.code == 0 && refused.stdout.contains("nothing to do")),
        "{}",
        refused.all()
    );
    assert_eq!(stage.inspect()["Config"]["Image"], good.as_str());
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
    assert_eq!(stage.deploy(&good).config(&cfg).run().code, 0);
    assert_eq!(stage.deploy(&next).config(&cfg).run().code, 0);
    let c = path_str(&cfg);
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
            && md.contains("## Logs of the replaced container"),
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
    // The issue carries the report; the report, written again, names the issue it opened.
    assert!(
        body["body"]
            .as_str()
            .unwrap()
            .starts_with("# Incident: rollback"),
        "{body}"
    );
    assert!(
        md.contains("- [x] Create GitHub issue: #1 opened (https://github.invalid/o/r/issues/1)"),
        "{md}"
    );
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
    assert_eq!(stage.deploy(&good).config(&cfg).run().code, 0);
    assert_eq!(stage.deploy(&next).config(&cfg).run().code, 0);
    let r = stage.rollback().config(&cfg).run();
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("notify webhook: FAILED"), "{}", r.all());
    assert_eq!(stage.inspect()["Config"]["Image"], good.as_str());
}
