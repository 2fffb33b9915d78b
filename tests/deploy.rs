//! deploy: the runbook's hardened `docker run`, health polling, Step 4 verification, and the
//! automatic restore of the previous container.
mod common;
use common::*;

#[test]
fn deploy_applies_every_hardening_field_as_docker_inspect_shows() {
    let image = good_image();
    let stage = Stage::new();
    let r = stage.deploy(&image).run();
    assert_eq!(r.code, 0, "{}", r.all());
    let j = r.json();
    assert!(j["start_to_healthy_ms"].as_u64().unwrap() < 30_000);
    let c = stage.inspect();
    let hc = &c["HostConfig"];
    assert_eq!(c["Config"]["User"], "65532:65532");
    assert_eq!(hc["ReadonlyRootfs"], true);
    assert_eq!(hc["CapDrop"], serde_json::json!(["ALL"]));
    assert_eq!(
        hc["SecurityOpt"],
        serde_json::json!(["no-new-privileges:true"])
    );
    assert_eq!(hc["Tmpfs"]["/tmp"], "noexec,nosuid,size=100m");
    assert_eq!(hc["Tmpfs"]["/app/profiles"], "noexec,nosuid,size=50m");
    assert_eq!(hc["RestartPolicy"]["Name"], "unless-stopped");
    assert_eq!(
        hc["PortBindings"]["3000/tcp"][0]["HostPort"],
        stage.port.to_string()
    );
    assert_eq!(hc["Memory"], 128 * 1024 * 1024);
    assert_eq!(hc["NanoCpus"], 500_000_000);
    assert_eq!(hc["PidsLimit"], 256);
    assert_eq!(c["State"]["Running"], true);
    // Serving, and the secret from the env file never shows in our output.
    assert!(stage.health().unwrap().contains("\"healthy\""));
    assert!(!r.stdout.contains("s3cr3t-value") && !r.stderr.contains("s3cr3t-value"));
    // Step 4 lines: `id` is absent from a FROM scratch image, so it says not checkable.
    let checks = j["checks"].as_array().unwrap();
    let id_check = checks.iter().find(|c| c["check"] == "user (id)").unwrap();
    assert!(
        id_check["ok"].is_null()
            && id_check["detail"]
                .as_str()
                .unwrap()
                .contains("not checkable")
    );
    let bun = checks
        .iter()
        .find(|c| c["check"].as_str().unwrap().contains("bun --version"))
        .unwrap();
    assert_eq!(bun["ok"], true);
    assert_eq!(bun["detail"], "1.3.0");
}

#[test]
fn dry_run_prints_exactly_what_deploy_creates() {
    let image = good_image();
    let stage = Stage::new();
    let dry = stage.run(&["deploy", "--dry-run", "--image", &image, "--output", "json"]);
    assert_eq!(dry.code, 0, "{}", dry.all());
    assert!(
        docker(&["inspect", &stage.name]).code != 0,
        "--dry-run must not create anything"
    );
    assert!(
        !dry.stdout.contains("s3cr3t-value"),
        "env values are redacted"
    );
    let body = dry.json()["create_body"].clone();
    assert_eq!(stage.deploy(&image).run().code, 0);
    let c = stage.inspect();
    let hc = &c["HostConfig"];
    let want = &body["HostConfig"];
    for key in [
        "CapDrop",
        "SecurityOpt",
        "Tmpfs",
        "ReadonlyRootfs",
        "Memory",
        "MemoryReservation",
        "NanoCpus",
        "PidsLimit",
        "PortBindings",
    ] {
        assert_eq!(hc[key], want[key], "HostConfig.{key}");
    }
    assert_eq!(hc["RestartPolicy"]["Name"], want["RestartPolicy"]["Name"]);
    assert_eq!(c["Config"]["User"], body["User"]);
    assert_eq!(c["Config"]["Image"], body["Image"]);
    assert_eq!(c["Config"]["StopTimeout"], body["StopTimeout"]);
    let keys = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap().split('=').next().unwrap().to_string())
            .collect()
    };
    let env_keys = keys(&c["Config"]["Env"]);
    for k in keys(&body["Env"]) {
        assert!(
            env_keys.contains(&k),
            "{k} missing from the container's env"
        );
    }
}

#[test]
fn a_new_image_that_never_gets_healthy_is_replaced_by_the_previous_container() {
    let good = good_image();
    let bad = testsvc_image("dhi-test/authsvc:unhealthy", &["FAULT_HEALTH_UNHEALTHY=1"]);
    let stage = Stage::new();
    assert_eq!(stage.deploy(&good).run().code, 0);
    let before = stage.inspect()["Id"].clone();
    let r = stage.run(&[
        "deploy", "--image", &bad, "--wait", "3s", "--output", "json",
    ]);
    assert_eq!(r.code, 3, "{}", r.all());
    assert_eq!(r.json()["restored"], true);
    // The very same previous container is back under its name, serving.
    assert_eq!(stage.inspect()["Id"], before);
    assert_eq!(stage.inspect()["Config"]["Image"], good.as_str());
    assert!(stage
        .health()
        .is_some_and(|b| b.contains("\"status\":\"healthy\"")));
    assert!(
        docker(&["inspect", &format!("{}.previous", stage.name)]).code != 0,
        "nothing left aside"
    );
    let rollbacks = stage.events("rollback");
    assert_eq!(rollbacks.len(), 1);
    assert_eq!(rollbacks[0]["automatic"], true);
    assert_eq!(rollbacks[0]["restored"], true);
    // A rollback now still targets the good deployment's own baseline, not the failed one.
    let st = stage.run(&["status", "--output", "json"]);
    assert_eq!(st.json()["container"]["image"], good.as_str());
}

#[test]
fn a_crash_at_start_fails_fast_and_restores() {
    let good = good_image();
    let crash = testsvc_image("dhi-test/authsvc:crash", &["FAULT_CRASH_AT_START=1"]);
    let stage = Stage::new();
    assert_eq!(stage.deploy(&good).run().code, 0);
    let started = std::time::Instant::now();
    let r = stage.run(&["deploy", "--image", &crash, "--wait", "20s"]);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(
        r.stdout.contains("exited"),
        "says the container exited: {}",
        r.all()
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "a dead container is noticed before the wait runs out"
    );
    assert!(stage.health().is_some());
}

#[test]
fn a_wrong_bun_version_fails_verification_and_restores() {
    let good = good_image();
    let wrong = testsvc_image("dhi-test/authsvc:bun-1.2.0", &["BUN_VERSION=1.2.0"]);
    let stage = Stage::new();
    assert_eq!(stage.deploy(&good).run().code, 0);
    let r = stage.run(&["deploy", "--image", &wrong, "--output", "json"]);
    assert_eq!(r.code, 3, "{}", r.all());
    let j = r.json();
    assert!(
        j["reason"].as_str().unwrap().contains("bun --version"),
        "{}",
        r.all()
    );
    assert!(
        j["reason"].as_str().unwrap().contains("1.2.0"),
        "{}",
        r.all()
    );
    assert_eq!(stage.inspect()["Config"]["Image"], good.as_str());
}

#[test]
fn no_rollback_leaves_the_failed_container_for_inspection() {
    let wrong = testsvc_image("dhi-test/authsvc:bun-1.2.0", &["BUN_VERSION=1.2.0"]);
    let stage = Stage::new();
    let r = stage.run(&["deploy", "--image", &wrong, "--no-rollback"]);
    assert_eq!(r.code, 3, "{}", r.all());
    assert_eq!(stage.inspect()["Config"]["Image"], wrong.as_str());
}

#[test]
fn an_unhardened_spec_is_refused_unless_allowed_and_then_recorded() {
    let good = good_image();
    let stage = Stage::new();
    let cfg = stage.write_config(|t| t.replace("read_only = true", "read_only = false"));
    let r = stage.run(&["--config", path_str(&cfg), "deploy", "--image", &good]);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(
        r.stderr.contains("--read-only") && r.stderr.contains("--allow-insecure"),
        "{}",
        r.all()
    );
    assert!(docker(&["inspect", &stage.name]).code != 0);
    let r = stage.run(&[
        "--config",
        path_str(&cfg),
        "deploy",
        "--image",
        &good,
        "--allow-insecure",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    let db = rusqlite::Connection::open(stage.state_dir().join("state.db")).unwrap();
    let insecure: bool = db
        .query_row(
            "SELECT insecure FROM deployments ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(insecure);
}

#[test]
fn a_container_left_aside_by_an_interrupted_run_is_recovered() {
    let good = good_image();
    let bad = testsvc_image("dhi-test/authsvc:unhealthy", &["FAULT_HEALTH_UNHEALTHY=1"]);
    let stage = Stage::new();
    assert_eq!(stage.deploy(&good).run().code, 0);
    let id = stage.inspect()["Id"].clone();
    // What a deploy killed between "set aside" and "start the new one" leaves behind.
    let aside = format!("{}.previous", stage.name);
    assert_eq!(docker(&["rename", &stage.name, &aside]).code, 0);
    assert_eq!(docker(&["stop", "-t", "1", &aside]).code, 0);
    let r = stage.run(&["deploy", "--image", &bad, "--wait", "2s"]);
    assert_eq!(r.code, 3, "{}", r.all());
    assert_eq!(
        stage.inspect()["Id"],
        id,
        "the container that served last is back under its name"
    );
    assert!(wait_for(
        || stage.health().is_some(),
        std::time::Duration::from_secs(5)
    ));
}
