//! Commands act on what was deployed (issue P): a deployment made with `--name/--port`
//! overrides is watched, and rolled back on its own name and port, by a cron line that names
//! nothing; and the suite runs beside the main job's leftovers without reading them.
mod common;
use common::*;

/// The stage's command with no target named at all (no `DHI_STAGE_CONTAINER/PORT`), as a
/// cron line `monitor --day N --auto-rollback` runs.
fn unnamed(stage: &Stage, args: &[&str]) -> Run {
    let mut c = stage.command(args);
    c.env_remove("DHI_STAGE_CONTAINER")
        .env_remove("DHI_STAGE_PORT");
    c.output().expect("run dhi-stage").into()
}

#[test]
fn monitor_without_overrides_rolls_back_the_overridden_deployment_on_its_own_port() {
    let good = good_image();
    let faulty = testsvc_image("dhi-test/authsvc:errors-50pct", &["FAULT_ERROR_RATE=0.5"]);
    let stage = Stage::new();
    let cfg = short_window_config(&stage, |_| {});
    let port = stage.port.to_string();
    let deploy = |image: &str| {
        unnamed(
            &stage,
            &[
                "--config",
                path_str(&cfg),
                "deploy",
                "--image",
                image,
                "--name",
                &stage.name,
                "--port",
                &port,
                "--output",
                "json",
            ],
        )
    };
    // The baseline, then the candidate, both with the documented per-command overrides.
    let r = deploy(&good);
    assert_eq!(r.code, 0, "{}", r.all());
    let r = deploy(&faulty);
    assert_eq!(r.code, 0, "{}", r.all());

    // status with no overrides acts on the recorded deployment, and says so.
    let st = unnamed(
        &stage,
        &["--config", path_str(&cfg), "status", "--output", "json"],
    );
    let j = st.json();
    assert_eq!(j["service"]["name"], stage.name.as_str(), "{}", st.all());
    assert_eq!(j["service"]["port"], stage.port, "{}", st.all());
    assert_eq!(j["service"]["source"], "recorded", "{}", st.all());
    assert!(
        st.stderr.contains(&format!("acting on {}", stage.name)),
        "one line on stderr says which service: {}",
        st.all()
    );

    let _traffic = Traffic::start(&stage.base_url());
    let r = unnamed(
        &stage,
        &[
            "--config",
            path_str(&cfg),
            "monitor",
            "--duration",
            "45s",
            "--auto-rollback",
            "--output",
            "json",
        ],
    );
    assert_eq!(
        r.code,
        4,
        "the trigger fired and the rollback succeeded: {}",
        r.all()
    );
    let j = r.json();
    assert_eq!(j["service"]["name"], stage.name.as_str(), "{}", r.all());
    assert_eq!(j["service"]["source"], "recorded", "{}", r.all());
    assert!(
        j["rollback"]["rollback"]["decision_to_healthy_ms"]
            .as_u64()
            .is_some(),
        "{}",
        r.all()
    );
    // The baseline runs under the overridden name, published on the overridden port.
    let c = stage.inspect();
    assert_eq!(c["Config"]["Image"], good.as_str());
    let bound = &c["HostConfig"]["PortBindings"]["3000/tcp"][0]["HostPort"];
    assert_eq!(bound, &port, "{c}");
    assert!(stage.health().is_some(), "the baseline answers on {port}");

    // An override that contradicts the recorded deployment is allowed, and said.
    let other = free_port().to_string();
    let st = unnamed(
        &stage,
        &[
            "--config",
            path_str(&cfg),
            "status",
            "--name",
            &stage.name,
            "--port",
            &other,
            "--output",
            "json",
        ],
    );
    let notes = st.json()["service"]["notes"].to_string();
    assert!(
        notes.contains(&format!("--port {other} differs")),
        "{}",
        st.all()
    );
}

#[test]
fn with_nothing_recorded_commands_fall_back_to_the_configuration_and_say_so() {
    let stage = Stage::new();
    let r = unnamed(&stage, &["gate", "--through-day", "1", "--output", "json"]);
    let j = r.json();
    assert_eq!(j["service"]["source"], "configuration", "{}", r.all());
    assert_eq!(j["service"]["name"], "auth-service-staging", "{}", r.all());
    assert_eq!(j["service"]["port"], 3002, "{}", r.all());
}

/// `scripts/test.sh` plants what the main job leaves (`scripts/decoy.sh`): a service named
/// auth-service-staging on 3002 and the runbook's baseline tag. This test checks they are
/// really there while the rest of the suite runs, and that a fresh stage does not see them.
#[test]
fn the_suite_runs_beside_the_main_jobs_leftovers() {
    assert!(
        std::env::var("DHI_TEST_DECOY").is_ok(),
        "run the suite with `bash scripts/test.sh`: it plants the main job's leftovers \
         (scripts/decoy.sh up) so that a test reading the machine instead of its own names fails"
    );
    let ps = docker(&[
        "ps",
        "--filter",
        "name=^auth-service-staging$",
        "--format",
        "{{.Ports}}",
    ]);
    let taken = std::net::TcpStream::connect("127.0.0.1:3002").is_ok();
    assert!(
        ps.stdout.contains("3002") || taken,
        "no decoy on 3002: {}",
        ps.all()
    );
    let baseline = format!("{}/authentication-service:baseline-distroless", registry());
    assert_eq!(
        docker(&["image", "inspect", &baseline]).code,
        0,
        "the baseline tag is present"
    );
    // A stage's preflight looks for its own baseline, not the main job's.
    let stage = Stage::new();
    let r = stage.run(&["preflight", "--output", "json"]);
    let target = r.json()["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "rollback target")
        .cloned()
        .unwrap();
    assert_eq!(target["status"], "fail", "{target}");
    assert!(
        target["detail"].as_str().unwrap().contains(&stage.repo),
        "{target}"
    );
}
