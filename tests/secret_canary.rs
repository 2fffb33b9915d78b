//! Secret hygiene proven with canaries: one canary secret in the env file, the registry
//! password, the webhook URL's query and the GitHub token, and a canary token in the
//! service's own logs. After a full run (deploy, dry run, status, preflight, monitor at every
//! verbosity and both log formats, a trigger with automatic rollback, incident, webhook,
//! GitHub issue, report in every format), neither canary appears in any stdout, stderr,
//! JSON, file written, payload sent, or in the state DB.
mod common;
use common::*;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

const CANARY: &str = "canary-5e1f0c7a9d3b";
const LOG_CANARY: &str = "tok-9f8e7d6c5b4a";

/// A loopback HTTP server that records every request body (the webhook and GitHub API).
fn recorder() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let b = bodies.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut s = s;
            let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            let (head_end, len) = loop {
                let Ok(n) = s.read(&mut chunk) else {
                    break (0, 0);
                };
                if n == 0 {
                    break (0, 0);
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0usize);
                    break (i + 4, len);
                }
            };
            while buf.len() < head_end + len {
                let Ok(n) = s.read(&mut chunk) else { break };
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            // Headers carry the GitHub token by design (Authorization); bodies must not.
            b.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[head_end.min(buf.len())..]).to_string());
            let body = r#"{"html_url":"http://127.0.0.1/issue/1"}"#;
            let _ = write!(s, "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        }
    });
    (port, bodies)
}

fn files_under(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                files_under(&p, out);
            } else {
                out.push(p);
            }
        }
    }
}

#[test]
fn no_canary_secret_appears_anywhere() {
    let (port, bodies) = recorder();
    let mut stage = Stage::new();
    std::fs::write(
        &stage.env_file,
        format!("NODE_ENV=staging\nPORT=3000\nTELEMETRY_MODE=otlp\nJWT_SECRET={CANARY}\nOTEL_EXPORTER_OTLP_ENDPOINT=http://otel:{CANARY}@127.0.0.1:9\nKONG_ADMIN_URL=http://admin:{CANARY}@127.0.0.1:9/status\n"),
    )
    .unwrap();
    stage.extra_env.push((
        "DHI_STAGE_WEBHOOK_URL".into(),
        format!("http://127.0.0.1:{port}/hook?token={CANARY}"),
    ));
    stage.extra_env.push(("GITHUB_TOKEN".into(), CANARY.into()));
    let reports = stage.dir.path().join("reports");
    let cfg = short_window_config(&stage, |t| {
        let n = t["notify"].as_table_mut().unwrap();
        n.insert("github_repo".into(), "org/auth".into());
        n.insert(
            "github_api".into(),
            format!("http://127.0.0.1:{port}").into(),
        );
        t["report"]
            .as_table_mut()
            .unwrap()
            .insert("dir".into(), reports.to_str().unwrap().into());
    });
    let c = path_str(&cfg);
    let mut runs: Vec<Run> = Vec::new();
    let a = good_image();
    let b = testsvc_image("dhi-test/authsvc:good-b", &["FAULT_LATENCY_MS=1"]);
    runs.push(stage.run(&["--config", c, "deploy", "--image", &a]));
    runs.push(stage.run(&["--config", c, "deploy", "--image", &b, "--output", "json"]));
    assert_eq!(
        runs.last().unwrap().code,
        0,
        "{}",
        runs.last().unwrap().all()
    );
    runs.push(stage.run(&["--config", c, "deploy", "--dry-run", "--image", &b]));
    runs.push(stage.run(&[
        "--config",
        c,
        "deploy",
        "--dry-run",
        "--image",
        &b,
        "--output",
        "json",
    ]));
    runs.push(stage.run(&["--config", c, "preflight", "-vv"]));
    runs.push(stage.run(&[
        "--config",
        c,
        "preflight",
        "--output",
        "json",
        "--log-format",
        "json",
        "-vv",
    ]));
    runs.push(stage.run(&["--config", c, "status", "--output", "json"]));
    // A registry password that is the canary (wrong, so the push is refused).
    let mut push = stage.command(&[
        "push",
        "--image",
        &a,
        "--registry",
        &auth_registry(),
        "--username",
        "dhi",
        "--password-stdin",
        "-vv",
    ]);
    push.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = push.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(CANARY.as_bytes())
        .unwrap();
    runs.push(child.wait_with_output().unwrap().into());
    // The service logs the log canary with every failed request; the monitor fires and rolls back.
    assert!(http(
        "POST",
        &format!("{}/admin/faults?error_rate=1", stage.base_url())
    )
    .is_some());
    let base = stage.base_url();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let traffic = std::thread::spawn(move || {
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            http(
                "POST",
                &format!("{base}/auth/login?access_token={LOG_CANARY}&password={LOG_CANARY}"),
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    });
    for v in ["-v", "-vv", "-vvv"] {
        runs.push(stage.run(&["--config", c, "monitor", "--once", v]));
    }
    runs.push(stage.run(&[
        "--config",
        c,
        "monitor",
        "--once",
        "--log-format",
        "json",
        "-vvv",
    ]));
    let m = stage.run(&[
        "--config",
        c,
        "monitor",
        "--duration",
        "30s",
        "--auto-rollback",
        "-vv",
    ]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    traffic.join().unwrap();
    assert_eq!(m.code, 4, "{}", m.all());
    assert!(m.stdout.contains("incident report:"), "{}", m.all());
    runs.push(m);
    for f in ["markdown", "json", "html"] {
        runs.push(stage.run(&[
            "--config",
            c,
            "report",
            "--day",
            "1",
            "--format",
            f,
            "--out",
            reports.to_str().unwrap(),
            "-vv",
        ]));
        runs.push(stage.run(&[
            "--config",
            c,
            "report",
            "--day",
            "1",
            "--format",
            f,
            "--out",
            reports.to_str().unwrap(),
            "--output",
            "json",
        ]));
    }
    runs.push(stage.run(&[
        "--config",
        c,
        "gate",
        "--through-day",
        "1",
        "--output",
        "json",
    ]));

    let mut leaks = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        for canary in [CANARY, LOG_CANARY] {
            if r.stdout.contains(canary) || r.stderr.contains(canary) {
                leaks.push(format!("run {i} printed {canary}:\n{}", r.all()));
            }
        }
    }
    let mut files = Vec::new();
    files_under(&reports, &mut files);
    files_under(&stage.state_dir(), &mut files);
    assert!(
        files
            .iter()
            .any(|f| f.to_string_lossy().contains("incident-")),
        "{files:?}"
    );
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for canary in [CANARY, LOG_CANARY] {
            if text.contains(canary) {
                leaks.push(format!("{} holds {canary}", f.display()));
            }
        }
    }
    let sent = bodies.lock().unwrap().clone();
    assert!(
        sent.len() >= 2,
        "the webhook and the GitHub issue were sent: {sent:?}"
    );
    assert!(
        sent.iter().any(|b| b.contains("error: POST /auth/login")),
        "the incident carries the log excerpt: {sent:?}"
    );
    for (i, b) in sent.iter().enumerate() {
        for canary in [CANARY, LOG_CANARY] {
            if b.contains(canary) {
                leaks.push(format!("payload {i} holds {canary}: {b}"));
            }
        }
    }
    record_reliability(
        "canary.txt",
        &format!(
            "secret canaries: {} runs, {} files, {} payloads checked; {} leak(s)\n",
            runs.len(),
            files.len(),
            sent.len(),
            leaks.len()
        ),
        false,
    );
    assert!(leaks.is_empty(), "{}", leaks.join("\n\n"));
}
