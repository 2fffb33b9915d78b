//! The command tree, config errors, env-file semantics and the state lock, as users meet them.
mod common;
use common::*;

#[test]
fn help_shows_the_whole_tree() {
    let r: Run = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 0);
    for cmd in [
        "build",
        "push",
        "validate",
        "preflight",
        "deploy",
        "status",
        "monitor",
        "load",
        "rollback",
        "report",
        "gate",
        "completions",
        "man",
    ] {
        assert!(
            r.stdout.contains(&format!("  {cmd}")),
            "--help lacks {cmd}:\n{}",
            r.stdout
        );
    }
    for flag in [
        "--config",
        "--env-file",
        "--state-dir",
        "--output",
        "--verbose",
        "--quiet",
        "--log-format",
        "--lock-wait",
    ] {
        assert!(r.stdout.contains(flag), "--help lacks {flag}");
    }
    let r: Run = std::process::Command::new(BIN)
        .args(["deploy", "--help"])
        .output()
        .unwrap()
        .into();
    for flag in [
        "--image",
        "--name",
        "--port",
        "--wait",
        "--dry-run",
        "--no-rollback",
        "--allow-insecure",
    ] {
        assert!(r.stdout.contains(flag), "deploy --help lacks {flag}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let r: Run = std::process::Command::new(BIN)
        .args(["deploy", "--wait", "soon"])
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("soon"), "{}", r.all());
}

#[test]
fn completions_and_man_page() {
    let r: Run = std::process::Command::new(BIN)
        .args(["completions", "bash"])
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("dhi-stage") && r.stdout.contains("rollback"));
    let r: Run = std::process::Command::new(BIN)
        .arg("man")
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains(".TH") && r.stdout.contains("dhi-stage"));
}

#[test]
fn config_errors_name_file_line_and_key() {
    let stage = Stage::new();
    let cfg =
        stage.write_config(|t| t.replace("host_port = 3002", "host_port = 3002\nhost_prot = 4"));
    let line = std::fs::read_to_string(&cfg)
        .unwrap()
        .lines()
        .position(|l| l.starts_with("host_prot"))
        .unwrap()
        + 1;
    let r = stage.run(&["--config", path_str(&cfg), "deploy", "--dry-run"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains(&format!("custom.toml:{line}:")),
        "{}",
        r.all()
    );
    assert!(r.stderr.contains("host_prot"), "{}", r.all());

    let cfg =
        stage.write_config(|t| t.replace("stop_grace = \"2s\"", "stop_grace = \"two seconds\""));
    let line = std::fs::read_to_string(&cfg)
        .unwrap()
        .lines()
        .position(|l| l.contains("two seconds"))
        .unwrap()
        + 1;
    let r = stage.run(&["--config", path_str(&cfg), "deploy", "--dry-run"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains(&format!(":{line}:")) && r.stderr.contains("container.stop_grace"),
        "{}",
        r.all()
    );

    let r = stage.run(&[
        "--config",
        "/nonexistent/staging.toml",
        "deploy",
        "--dry-run",
    ]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("/nonexistent/staging.toml"),
        "{}",
        r.all()
    );
}

#[test]
fn overrides_come_from_flags_and_env() {
    let stage = Stage::new();
    let r = stage.run(&[
        "deploy",
        "--dry-run",
        "--image",
        "reg.example/x:1",
        "--output",
        "json",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    let j = r.json();
    assert_eq!(
        j["name"],
        stage.name.as_str(),
        "DHI_STAGE_CONTAINER applies"
    );
    assert_eq!(
        j["create_body"]["HostConfig"]["PortBindings"]["3000/tcp"][0]["HostPort"],
        stage.port.to_string()
    );
    let r = stage.run(&[
        "deploy",
        "--dry-run",
        "--image",
        "reg.example/x:1",
        "--name",
        "from-flag",
        "--port",
        "4444",
        "--output",
        "json",
    ]);
    let j = r.json();
    assert_eq!(j["name"], "from-flag");
    assert_eq!(
        j["create_body"]["HostConfig"]["PortBindings"]["3000/tcp"][0]["HostPort"],
        "4444"
    );
}

#[test]
fn env_file_reaches_the_container_exactly_as_docker_run_env_file() {
    // The cases where dotenv and Docker disagree: quotes, inline '#', trailing spaces,
    // ${VAR}, a bare KEY passed through from the caller, a bare KEY the caller lacks.
    let image = good_image();
    let stage = Stage::new();
    let content = "# comment\n\nPORT=3000\nQUOTED=\"with quotes\"\nSINGLE='single'\nHASH=value # not a comment\nTRAIL=trailing  \nEXPAND=${HOME}\nPASSED\nMISSING_FROM_CALLER\n  INDENTED=yes\nEMPTY=\n";
    std::fs::write(&stage.env_file, content).unwrap();
    let mut cmd = stage.command(&["deploy", "--image", &image]);
    cmd.env("PASSED", "from the caller")
        .env_remove("MISSING_FROM_CALLER");
    let r: Run = cmd.output().unwrap().into();
    assert_eq!(r.code, 0, "{}", r.all());
    let ours: Vec<String> =
        serde_json::from_value(stage.inspect()["Config"]["Env"].clone()).unwrap();

    // Docker's own reading of the same file, with the same caller environment.
    let theirs_name = unique("dhi-envref");
    let out: Run = std::process::Command::new("docker")
        .args([
            "create",
            "--name",
            &theirs_name,
            "--env-file",
            path_str(&stage.env_file),
            &image,
        ])
        .env("PASSED", "from the caller")
        .env_remove("MISSING_FROM_CALLER")
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 0, "{}", out.all());
    let theirs: Vec<String> =
        serde_json::from_value(docker_inspect(&theirs_name)["Config"]["Env"].clone()).unwrap();
    let _ = docker(&["rm", "-f", &theirs_name]);
    assert_eq!(ours, theirs);
    assert!(ours.contains(&"QUOTED=\"with quotes\"".to_string()));
    assert!(ours.contains(&"PASSED=from the caller".to_string()));
    assert!(!ours.iter().any(|e| e.starts_with("MISSING_FROM_CALLER")));
}

#[test]
fn a_missing_env_file_is_named() {
    let stage = Stage::new();
    let r = stage.run(&[
        "--env-file",
        "/nonexistent/.env.stg",
        "deploy",
        "--image",
        "x/y:z",
    ]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("/nonexistent/.env.stg"), "{}", r.all());
}

#[test]
fn a_held_state_lock_refuses_at_once_naming_the_holder_or_waits() {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let stage = Stage::new();
    std::fs::create_dir_all(stage.state_dir()).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(stage.state_dir().join("lock"))
        .unwrap();
    assert_eq!(
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    write!(f, "pid 4242 running `dhi-stage deploy` since test").unwrap();

    let started = std::time::Instant::now();
    let r = stage.run(&["rollback", "--to", "dhi-test/authsvc:good"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("pid 4242 running `dhi-stage deploy`"),
        "{}",
        r.all()
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "--lock-wait 0 must not wait"
    );

    // With --lock-wait, it proceeds once the holder lets go.
    let image = good_image();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(800));
        drop(f);
    });
    let r = stage.run(&["--lock-wait", "20s", "deploy", "--image", &image]);
    releaser.join().unwrap();
    assert_eq!(r.code, 0, "{}", r.all());
}

#[test]
fn log_format_json_puts_one_json_object_per_line_on_stderr() {
    let stage = Stage::new();
    let r = stage.run(&[
        "--log-format",
        "json",
        "-v",
        "deploy",
        "--dry-run",
        "--image",
        "x/y:1",
        "--output",
        "json",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    let lines: Vec<&str> = r.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "-v logs something");
    for l in lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v.get("level").is_some() && v.get("fields").is_some(), "{l}");
    }
    let _ = r.json();
    let quiet = stage.run(&["-q", "deploy", "--dry-run", "--image", "x/y:1"]);
    assert!(
        quiet.stderr.is_empty(),
        "-q prints nothing on stderr: {}",
        quiet.stderr
    );
}

#[test]
fn dry_run_kubernetes_renders_the_runbooks_deployment() {
    let stage = Stage::new();
    let r = stage.run(&[
        "deploy",
        "--dry-run",
        "--kubernetes",
        "--image",
        "reg.example/authentication-service:staging-dhi-20260211",
        "--output",
        "json",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    let d = r.json();
    assert_eq!(d["kind"], "Deployment");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "reg.example/authentication-service:staging-dhi-20260211"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
        true
    );
    let r = stage.run(&["deploy", "--kubernetes"]);
    assert_eq!(r.code, 2, "--kubernetes needs --dry-run: {}", r.all());
}

#[test]
fn an_unreachable_engine_is_named_with_how_to_start_one() {
    let stage = Stage::new();
    let r: Run = stage
        .command(&["deploy", "--image", "x/y:1"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("unix:///nonexistent/docker.sock")
            && r.stderr.contains("scripts/setup.sh"),
        "{}",
        r.all()
    );
}
