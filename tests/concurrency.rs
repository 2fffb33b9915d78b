//! Operators, cron and CI at once: two rollbacks and a deploy started together, two first
//! opens of a new state dir, and a monitor watching while a rollback replaces the container.
mod common;
use common::*;
use std::time::Duration;

#[test]
fn two_first_opens_of_a_new_state_dir_serialise() {
    let mut failures = Vec::new();
    // Three at once, twenty times: the journal-mode race it guards against lost about one
    // process in a hundred before the fix.
    for i in 0..20 {
        let stage = Stage::new();
        let args = [
            "monitor",
            "--once",
            "--base-url",
            "http://127.0.0.1:9",
            "--output",
            "json",
        ];
        let all = [stage.spawn(&args), stage.spawn(&args), stage.spawn(&args)];
        for (n, c) in all.into_iter().enumerate() {
            let r: Run = c.wait_with_output().unwrap().into();
            if r.code != 0 || r.stderr.contains("already exists") {
                failures.push(format!("round {i} process {n}: {}", r.all()));
            }
        }
        let db = rusqlite::Connection::open(stage.state_dir().join("state.db")).unwrap();
        let v: i64 = db
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        let n: i64 = db
            .query_row("SELECT COUNT(*) FROM samples", [], |r| r.get(0))
            .unwrap();
        if v != 4 || n != 3 {
            failures.push(format!("round {i}: schema version {v}, {n} samples"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn two_rollbacks_and_a_deploy_at_once_are_serialised() {
    let a = good_image();
    let b = testsvc_image("dhi-test/authsvc:good-b", &["FAULT_LATENCY_MS=1"]);
    let stage = Stage::new();
    assert_eq!(stage.deploy(&a).run().code, 0);
    assert_eq!(stage.deploy(&b).run().code, 0);
    let wait = ["--lock-wait", "60s"];
    // Explicit targets: a second rollback after the first would otherwise walk one step
    // further back, to a baseline this test has not pushed.
    let mut r1 = vec!["rollback", "--to", &a, "--reason", "one"];
    r1.extend(wait);
    let mut r2 = vec!["rollback", "--to", &b, "--reason", "two"];
    r2.extend(wait);
    let mut d = vec!["deploy", "--image", &b];
    d.extend(wait);
    let children = [stage.spawn(&r1), stage.spawn(&r2), stage.spawn(&d)];
    for c in children {
        let r: Run = c.wait_with_output().unwrap().into();
        assert_eq!(
            r.code,
            0,
            "each waits for the lock and then succeeds\n{}",
            r.all()
        );
    }
    // One container, serving, of the image the store says is active.
    let ps = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("name={}", stage.name),
        "--format",
        "{{.Names}}",
    ]);
    assert_eq!(ps.stdout.trim(), stage.name, "exactly one container");
    assert!(wait_for(
        || stage.health().is_some(),
        Duration::from_secs(10)
    ));
    let db = rusqlite::Connection::open(stage.state_dir().join("state.db")).unwrap();
    let (cid, image): (String, String) = db
        .query_row(
            "SELECT container_id, image_ref FROM deployments WHERE status='active' AND container_name=?1",
            [&stage.name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(stage.inspect()["Id"], cid.as_str());
    assert_eq!(stage.inspect()["Config"]["Image"], image.as_str());
    // Serialised: no deployment started before the one before it finished.
    let spans: Vec<(String, Option<String>)> = db
        .prepare("SELECT started_at, finished_at FROM deployments ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for w in spans.windows(2) {
        let prev_end = w[0].1.clone().unwrap_or_default();
        assert!(w[1].0 >= prev_end, "overlapping rollouts: {spans:?}");
    }
}

#[test]
fn a_monitor_during_a_rollback_does_not_fire_on_its_restart_and_follows_it() {
    let a = good_image();
    let b = testsvc_image("dhi-test/authsvc:good-b", &["FAULT_LATENCY_MS=1"]);
    let stage = Stage::new();
    assert_eq!(stage.deploy(&a).run().code, 0);
    assert_eq!(stage.deploy(&b).run().code, 0);
    // Short windows, where one failed probe during the swap would fire the immediate
    // health trigger (1 of ~5 probes in 4 s is over 10%). The 5 s growth window of the short
    // config reads the new container's warm-up (1 to 2 MiB in seconds) as growth (seen in
    // CI); the runbook's 30 min does not. Growth has its own test; here it is out of reach.
    let cfg = short_window_config(&stage, |t| set_window(t, "memory_continuous_growth", "1h"));
    let args = [
        "--config",
        path_str(&cfg),
        "monitor",
        "--duration",
        "16s",
        "--output",
        "json",
    ];
    let child = stage.spawn(&args);
    std::thread::sleep(Duration::from_secs(6));
    let rb = stage.run(&["rollback", "--reason", "while monitored"]);
    assert_eq!(rb.code, 0, "{}", rb.all());
    let r: Run = child.wait_with_output().unwrap().into();
    assert_eq!(
        r.code,
        0,
        "nothing fires on the rollback's own restart\n{}",
        r.all()
    );
    let j = r.json();
    assert!(j["fired"].as_array().unwrap().is_empty(), "{}", r.all());
    let db = rusqlite::Connection::open(stage.state_dir().join("state.db")).unwrap();
    let active: i64 = db
        .query_row(
            "SELECT id FROM deployments WHERE status='active'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        j["last_sample"]["deployment_id"], active,
        "the monitor follows the new deployment"
    );
    assert_eq!(j["last_sample"]["container_id"], stage.inspect()["Id"]);
    let failed_probes: i64 = db
        .query_row("SELECT COUNT(*) FROM samples WHERE health_ok=0", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(failed_probes, 0, "no sample was taken mid-swap");
}
