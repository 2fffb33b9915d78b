//! rollback: restore the recorded baseline or --to REF, fast, under the state lock.
mod common;
use common::*;

#[test]
fn rollback_restores_the_recorded_baseline_and_times_it() {
    let good = good_image();
    let next = testsvc_image("dhi-test/authsvc:next", &["FAULT_LATENCY_MS=1"]);
    let stage = Stage::new();
    assert_eq!(stage.deploy(&good).code, 0);
    assert_eq!(stage.deploy(&next).code, 0);
    assert_eq!(stage.inspect()["Config"]["Image"], next.as_str());
    let r = stage.run(&["rollback", "--reason", "test trigger", "--output", "json"]);
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
    let r = stage.run(&["rollback", "--to", &good]);
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
    assert_eq!(stage.deploy(&good).code, 0);
    let r = stage.run(&["rollback", "--to", &baseline]);
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
    let r = stage.run(&["--config", path_str(&cfg), "rollback"]);
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
    assert_eq!(stage.deploy(&good).code, 0);
    let r = stage.run(&["rollback", "--to", &bad, "--wait", "2s"]);
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
    assert_eq!(stage.deploy(&stubborn).code, 0);
    let started = std::time::Instant::now();
    let r = stage.run(&["rollback", "--to", &good, "--output", "json"]);
    let took = started.elapsed();
    assert_eq!(r.code, 0, "{}", r.all());
    let j = r.json();
    assert_eq!(j["rollback"]["sigkill_needed"], true, "{}", r.all());
    // Docker's default grace is 10 s; the rollback's is 500 ms, then SIGKILL.
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
    let text = stage.run(&["rollback", "--to", &stubborn]);
    assert_eq!(text.code, 0, "{}", text.all());
    let again = stage.run(&["rollback", "--to", &good]);
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
    assert_eq!(stage.deploy(&good).code, 0);
    assert_eq!(stage.deploy(&next).code, 0);
    let r = stage.run(&["rollback", "--drill", "--output", "json"]);
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
    let r = stage.run(&["--config", path_str(&cfg), "rollback", "--to", "x/y:z"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("--approved-by"), "{}", r.all());
}

#[test]
fn a_second_rollback_waits_for_the_lock_holder() {
    let good = good_image();
    let next = testsvc_image("dhi-test/authsvc:next", &["FAULT_LATENCY_MS=1"]);
    let stage = Stage::new();
    assert_eq!(stage.deploy(&good).code, 0);
    assert_eq!(stage.deploy(&next).code, 0);
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
