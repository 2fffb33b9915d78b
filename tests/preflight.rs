//! preflight: the runbook's infrastructure requirements against real local servers.
mod common;
use common::*;

/// A tiny HTTP server on loopback standing in for Kong's admin API.
fn http_stub() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            use std::io::{Read, Write};
            let mut s = s;
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
        }
    });
    port
}

fn closed_port() -> u16 {
    free_port()
}

#[test]
fn all_requirements_met_and_secrets_never_printed() {
    let stage = Stage::new();
    let kong = http_stub();
    let otel = http_stub();
    let redis = std::env::var("DHI_REDIS_PORT").unwrap_or_else(|_| "6399".into());
    std::fs::write(
        &stage.env_file,
        format!("NODE_ENV=staging\nTELEMETRY_MODE=otlp\nOTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:{otel}\nKONG_ADMIN_URL=http://127.0.0.1:{kong}/status\nREDIS_URL=redis://:hunter2@127.0.0.1:{redis}\nJWT_SECRET=top-secret-value\n"),
    )
    .unwrap();
    // The rollback target (no deployment recorded: the runbook baseline) is in the engine.
    let name = unique("pf-auth");
    let cfg = stage.write_config(|t| {
        t.replace(
            "name = \"authentication-service\"",
            &format!("name = \"{name}\""),
        )
    });
    let baseline = format!("127.0.0.1:5000/{name}:baseline-distroless");
    assert_eq!(docker(&["tag", &good_image(), &baseline]).code, 0);
    let r = stage.run(&["--config", path_str(&cfg), "preflight", "--output", "json"]);
    let _ = docker(&["rmi", &baseline]);
    assert_eq!(r.code, 0, "{}", r.all());
    let checks = r.json()["checks"].as_array().unwrap().clone();
    assert_eq!(checks.len(), 10, "{checks:?}");
    // The shipped config's immediate memory trigger (150 MiB) is above its 128 MiB limit:
    // the one warning, and everything else passes.
    let (warn, pass): (Vec<_>, Vec<_>) = checks.iter().partition(|c| c["status"] == "warn");
    assert!(pass.iter().all(|c| c["status"] == "pass"), "{checks:?}");
    assert_eq!(warn.len(), 1, "{checks:?}");
    assert!(warn[0]["detail"]
        .as_str()
        .unwrap()
        .contains("memory > 150 MiB"));
    let target = checks
        .iter()
        .find(|c| c["check"] == "rollback target")
        .unwrap();
    assert!(
        target["detail"].as_str().unwrap().contains(&baseline),
        "{target}"
    );
    let redis_line = checks
        .iter()
        .find(|c| c["check"] == "Redis (optional)")
        .unwrap();
    assert!(
        redis_line["detail"].as_str().unwrap().contains("+PONG"),
        "a real redis-server answered: {redis_line}"
    );
    for secret in ["hunter2", "top-secret-value"] {
        assert!(
            !r.stdout.contains(secret) && !r.stderr.contains(secret),
            "{secret} leaked"
        );
    }
}

#[test]
fn missing_things_fail_and_redis_only_warns() {
    let mut stage = Stage::new();
    // The staging port is taken by something that is not our container.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    stage.port = squatter.local_addr().unwrap().port();
    let kong = http_stub();
    std::fs::write(
        &stage.env_file,
        format!("NODE_ENV=staging\nOTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:{}\nKONG_ADMIN_URL=http://127.0.0.1:{kong}\nREDIS_URL=redis://127.0.0.1:{}\n", closed_port(), closed_port()),
    )
    .unwrap();
    let r = stage.run(&["preflight", "--output", "json"]);
    assert_eq!(r.code, 3, "{}", r.all());
    let status = |name: &str| {
        r.json()["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == name)
            .unwrap()["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(status("env file"), "fail", "TELEMETRY_MODE is missing");
    assert!(r.stdout.contains("TELEMETRY_MODE"));
    assert_eq!(status("OpenTelemetry collector"), "fail");
    assert_eq!(status("Redis (optional)"), "warn");
    assert_eq!(status("staging port"), "fail");
    assert_eq!(status("Kong API Gateway"), "pass");
    // Nothing deployed and no baseline pushed: nowhere to roll back to.
    assert_eq!(status("rollback target"), "fail");
}

#[test]
fn the_port_held_by_our_own_container_is_fine() {
    let stage = Stage::new();
    assert_eq!(stage.deploy(&good_image()).run().code, 0);
    let r = stage.run(&["preflight", "--output", "json"]);
    let port = r.json()["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "staging port")
        .unwrap()
        .clone();
    assert_eq!(port["status"], "pass", "{port}");
    assert!(port["detail"]
        .as_str()
        .unwrap()
        .contains("held by our container"));
}
