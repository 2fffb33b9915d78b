//! build and push against the real engine and the real local registries.
mod common;
use common::*;

#[test]
fn build_reports_size_within_the_limit_and_tags_the_image() {
    let ctx = testsvc_context();
    let stage = Stage::new();
    let tag = format!("dhi-test/build:{}", unique("ok"));
    let r = stage.run(&[
        "build",
        "--context",
        path_str(&ctx),
        "--tag",
        &tag,
        "--output",
        "json",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    let j = r.json();
    assert_eq!(j["size_within_limit"], true);
    assert_eq!(j["max_size_mb"], 58.0);
    // The engine agrees on id and size, independently of our output.
    let inspect = docker_inspect(&tag);
    assert_eq!(inspect["Id"], j["id"]);
    assert_eq!(inspect["Size"], j["size_bytes"]);
    let _ = docker(&["rmi", &tag]);
}

#[test]
fn build_over_the_size_limit_exits_3() {
    let ctx = testsvc_context();
    let stage = Stage::new();
    let tag = format!("dhi-test/build:{}", unique("big"));
    // The test service is ~3.2 MB; a 1 MB limit must fail the check.
    let r = stage.run(&[
        "build",
        "--context",
        path_str(&ctx),
        "--tag",
        &tag,
        "--max-size",
        "1",
    ]);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(r.stdout.contains("exceeds the 1 MB limit"), "{}", r.all());
    let _ = docker(&["rmi", &tag]);
}

#[test]
fn build_honours_dockerignore() {
    let stage = Stage::new();
    let ctx = stage.dir.path().join("ctx");
    std::fs::create_dir_all(ctx.join("secrets")).unwrap();
    std::fs::write(ctx.join("secrets/key.pem"), "x").unwrap();
    std::fs::write(ctx.join(".dockerignore"), "secrets\n").unwrap();
    // COPY of an ignored path fails in the engine: proof the file never left this machine.
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY secrets/key.pem /key.pem\n",
    )
    .unwrap();
    let r = stage.run(&[
        "build",
        "--context",
        path_str(&ctx),
        "--tag",
        "dhi-test/ignored:x",
    ]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("key.pem"), "{}", r.all());
}

#[test]
fn build_with_bad_input_is_a_usage_error() {
    let stage = Stage::new();
    let r = stage.run(&["build", "--context", "/nonexistent/ctx"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("/nonexistent/ctx"), "{}", r.all());
    let r = stage.run(&[
        "build",
        "--context",
        path_str(&testsvc_context()),
        "--tag",
        "Bad Tag!",
    ]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("invalid image reference"), "{}", r.all());
}

#[test]
fn push_records_the_digest_and_the_image_pulls_back_by_digest() {
    let _serial = registry_push_lock();
    let reg = registry();
    require_registry(&reg);
    let image = good_image();
    let stage = Stage::new();
    let tag = unique("push");
    let r = stage.run(&[
        "push",
        "--image",
        &image,
        "--registry",
        &reg,
        "--tag",
        &tag,
        "--output",
        "json",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    let j = r.json();
    let digest = j["digest"].as_str().unwrap().to_string();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    assert_eq!(j["reference"], format!("{reg}/{}:{tag}", stage.repo));

    let db = rusqlite::Connection::open(stage.state_dir().join("state.db")).unwrap();
    let stored: String = db
        .query_row(
            "SELECT digest FROM images WHERE action='push' AND reference=?1",
            [j["reference"].as_str().unwrap()],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored, digest);

    // Pull it back by digest from the registry, after dropping the local tag.
    let pinned = format!("{reg}/{}@{digest}", stage.repo);
    let _ = docker(&["rmi", j["reference"].as_str().unwrap()]);
    let pull = docker(&["pull", &pinned]);
    assert_eq!(pull.code, 0, "{}", pull.all());
    let _ = docker(&["rmi", &pinned]);
}

#[test]
fn push_default_tag_is_staging_dhi_utc_date() {
    let _serial = registry_push_lock();
    let reg = registry();
    require_registry(&reg);
    let image = good_image();
    let stage = Stage::new();
    let before = chrono::Utc::now().format("%Y%m%d").to_string();
    let r = stage.run(&[
        "push",
        "--image",
        &image,
        "--registry",
        &reg,
        "--output",
        "json",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    // The date before and after the push: a run across midnight UTC may have either.
    let after = chrono::Utc::now().format("%Y%m%d").to_string();
    let dates = [before, after];
    let got = r.json()["reference"].as_str().unwrap().to_string();
    assert!(
        dates
            .iter()
            .any(|d| got == format!("{reg}/{}:staging-dhi-{d}", stage.repo)),
        "{got} is not staging-dhi-<UTC date> ({dates:?})"
    );
}

#[test]
fn push_with_bad_credentials_reports_the_registry_message() {
    let reg = auth_registry();
    require_registry(&reg);
    let image = good_image();
    let stage = Stage::new();
    let mut cmd = stage.command(&[
        "push",
        "--image",
        &image,
        "--registry",
        &reg,
        "--tag",
        "denied",
        "--username",
        "dhi",
        "--password-stdin",
    ]);
    let out = run_with_stdin(&mut cmd, "wrong-password\n");
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.to_lowercase().contains("unauthorized")
            || out.stderr.contains("authentication required"),
        "{}",
        out.all()
    );
    assert!(
        !out.stderr.contains("wrong-password") && !out.stdout.contains("wrong-password"),
        "the password leaked: {}",
        out.all()
    );

    // The right password through stdin works ...
    let out = run_with_stdin(
        &mut stage.command(&[
            "push",
            "--image",
            &image,
            "--registry",
            &reg,
            "--tag",
            "allowed",
            "--username",
            "dhi",
            "--password-stdin",
        ]),
        "dhi-secret\n",
    );
    assert_eq!(out.code, 0, "{}", out.all());

    // ... and so does the standard Docker config file.
    let cfg_dir = stage.dir.path().join("docker-config");
    std::fs::create_dir_all(&cfg_dir).unwrap();
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode("dhi:dhi-secret");
    std::fs::write(
        cfg_dir.join("config.json"),
        format!(r#"{{"auths":{{"{reg}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
    let out: Run = stage
        .command(&[
            "push",
            "--image",
            &image,
            "--registry",
            &reg,
            "--tag",
            "from-config",
        ])
        .env("DOCKER_CONFIG", &cfg_dir)
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 0, "{}", out.all());
}

#[test]
fn push_of_a_bad_reference_is_a_usage_error() {
    let stage = Stage::new();
    let r = stage.run(&["push", "--image", "NOT A REF", "--output", "json"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert_eq!(r.json()["exit_code"], 2);
    let r = stage.run(&[
        "push",
        "--image",
        "dhi-test/does-not-exist:nope",
        "--registry",
        &registry(),
    ]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("dhi-stage build"), "{}", r.all());
}

fn run_with_stdin(cmd: &mut std::process::Command, input: &str) -> Run {
    use std::io::Write;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap().into()
}
