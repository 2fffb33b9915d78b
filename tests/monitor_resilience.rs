//! The monitor left alone for a week: an engine that goes away and comes back, a first
//! deployment with nothing recorded before it, and a monitor killed -9 at random points.
mod common;
use common::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A socat proxy in front of the engine's socket, so a test can cut the engine off from
/// one dhi-stage process without touching the engine every other test uses.
struct EngineProxy {
    sock: std::path::PathBuf,
    child: Option<Child>,
}

impl EngineProxy {
    fn start(dir: &std::path::Path) -> EngineProxy {
        let ok = Command::new("socat")
            .arg("-V")
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "socat is missing: these tests need it; run `sudo bash scripts/setup.sh` (installs socat)");
        let mut p = EngineProxy {
            sock: dir.join("engine.sock"),
            child: None,
        };
        p.up();
        p
    }
    fn up(&mut self) {
        let _ = std::fs::remove_file(&self.sock);
        let child = Command::new("socat")
            .arg(format!("UNIX-LISTEN:{},fork", self.sock.display()))
            .arg("UNIX-CONNECT:/var/run/docker.sock")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        assert!(wait_for(|| self.sock.exists(), Duration::from_secs(5)));
    }
    fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.sock);
    }
    fn host(&self) -> String {
        format!("unix://{}", self.sock.display())
    }
}

impl Drop for EngineProxy {
    fn drop(&mut self) {
        self.down();
    }
}

fn samples(stage: &Stage) -> Vec<(i64, Option<String>, Option<i64>)> {
    let db = rusqlite::Connection::open(stage.state_dir().join("state.db")).unwrap();
    let mut st = db
        .prepare("SELECT ts_ms, engine_error, memory_bytes FROM samples ORDER BY id")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn an_engine_outage_during_a_loop_is_recorded_and_the_loop_recovers() {
    let mut stage = Stage::new();
    assert_eq!(stage.deploy(&good_image()).run().code, 0);
    let mut proxy = EngineProxy::start(stage.dir.path());
    stage.extra_env.push(("DOCKER_HOST".into(), proxy.host()));
    let cfg = short_window_config(&stage, |_| {});
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
    std::thread::sleep(Duration::from_secs(4));
    let now_ms = || chrono::Utc::now().timestamp_millis();
    let down_at = now_ms();
    proxy.down();
    std::thread::sleep(Duration::from_secs(5));
    let up_at = now_ms();
    proxy.up();
    let r: Run = child.wait_with_output().unwrap().into();
    assert_eq!(
        r.code,
        0,
        "a healthy service: nothing fires, nothing is blind yet\n{}",
        r.all()
    );
    let s = samples(&stage);
    let cut: Vec<_> = s.iter().filter(|x| x.1.is_some()).collect();
    assert!(
        cut.len() >= 3,
        "the outage is recorded in the samples: {s:?}"
    );
    // A tick that began before the cut may have read memory before the engine went (a true
    // reading beside the error); one that began a second (one interval) into the outage, and
    // before the engine came back, read nothing from it and says so.
    let inside: Vec<_> = s
        .iter()
        .filter(|x| x.0 > down_at + 1000 && x.0 < up_at)
        .map(|x| (x.0 - down_at, x.1.is_some(), x.2.is_some()))
        .collect();
    assert!(
        inside.len() >= 3 && inside.iter().all(|x| x.1 && !x.2),
        "within the outage every sample has the engine's error and no memory reading \
         (ms after the cut, engine error, memory): {inside:?}"
    );
    let last = s.last().unwrap();
    assert!(
        last.1.is_none() && last.2.is_some(),
        "readings resume when the engine returns: {s:?}"
    );
    eprintln!(
        "engine outage: {} samples, {} without the engine, recovered",
        s.len(),
        cut.len()
    );
}

#[test]
fn a_cron_run_without_an_engine_still_samples_and_goes_blind_in_time() {
    let mut stage = Stage::new();
    assert_eq!(stage.deploy(&good_image()).run().code, 0);
    stage.extra_env.push((
        "DOCKER_HOST".into(),
        format!("unix://{}/none.sock", stage.dir.path().display()),
    ));
    let cfg = short_window_config(&stage, |t| {
        t["monitoring"]
            .as_table_mut()
            .unwrap()
            .insert("blind_margin".into(), "2s".into());
    });
    let mut codes = Vec::new();
    let started = std::time::Instant::now();
    let last = loop {
        let r = stage.run(&[
            "--config",
            path_str(&cfg),
            "monitor",
            "--once",
            "--output",
            "json",
        ]);
        codes.push(r.code);
        if r.code != 0 || started.elapsed() > Duration::from_secs(20) {
            break r;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(codes[0], 0, "{codes:?}");
    assert_eq!(last.code, 6, "{}", last.all());
    let j = last.json();
    assert_eq!(
        j["last_sample"]["health_ok"], true,
        "the service itself is still probed"
    );
    let blind: Vec<&str> = j["blind"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert!(blind.contains(&"memory"), "{blind:?}");
    let reason = j["blind"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "memory")
        .unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("no Docker Engine answers"), "{reason}");
}

#[test]
fn a_first_deployment_with_auto_rollback_restores_the_runbook_baseline() {
    let stage = Stage::new();
    let name = unique("fm-auth");
    let baseline = format!("{}/{name}:baseline-distroless", registry());
    require_registry(&registry());
    assert_eq!(docker(&["tag", &good_image(), &baseline]).code, 0);
    let push = docker(&["push", &baseline]);
    assert_eq!(push.code, 0, "{}", push.stderr);
    // The first deployment this state dir ever sees, of an image that will fail.
    assert_eq!(stage.deploy(&good_image()).run().code, 0);
    let cfg = short_window_config(&stage, |t| {
        let img = t["image"].as_table_mut().unwrap();
        img.insert("registry".into(), registry().into());
        img.insert("name".into(), name.clone().into());
    });
    let st = stage.run(&["--config", path_str(&cfg), "status", "--output", "json"]);
    assert_eq!(
        st.json()["rollback_target"]["image"],
        baseline.as_str(),
        "{}",
        st.all()
    );
    assert!(http(
        "POST",
        &format!("{}/admin/faults?error_rate=0.5", stage.base_url())
    )
    .is_some());
    let _traffic = Traffic::start(&stage.base_url());
    let r = stage.run(&[
        "--config",
        path_str(&cfg),
        "monitor",
        "--duration",
        "30s",
        "--auto-rollback",
        "--output",
        "json",
    ]);
    assert_eq!(r.code, 4, "{}", r.all());
    let j = r.json();
    assert_eq!(j["rollback_target"]["image"], baseline.as_str());
    assert!(
        j["rollback"]["target_source"]
            .as_str()
            .unwrap()
            .contains("runbook baseline"),
        "{}",
        r.all()
    );
    assert_eq!(stage.inspect()["Config"]["Image"], baseline.as_str());
    assert!(stage.health().is_some());
    // The baseline now serves: its samples have no day and are labelled as the baseline's.
    let m = stage.run(&[
        "--config",
        path_str(&cfg),
        "monitor",
        "--once",
        "--output",
        "json",
    ]);
    let mj = m.json();
    assert_eq!(mj["role"], "baseline", "{}", m.all());
    assert!(mj["day"].is_null());
    assert!(mj["last_sample"]["day"].is_null());
    let _ = docker(&["rmi", &baseline]);
}

/// kill -9 at seeded random points of a running monitor, then a fresh one: the store is
/// intact, at most the sample in flight is lost, and windows continue across the restart.
#[test]
fn a_monitor_killed_at_random_points_loses_at_most_the_sample_in_flight() {
    let stage = Stage::new();
    assert_eq!(stage.deploy(&good_image()).run().code, 0);
    // Requests of its own: the monitor's probes are left out of the error rate.
    let _traffic = Traffic::start(&stage.base_url());
    let cfg = short_window_config(&stage, |t| {
        t["monitoring"]
            .as_table_mut()
            .unwrap()
            .insert("interval".into(), "200ms".into());
    });
    let seed: u64 = std::env::var("DHI_TRIAL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let mut rng = seed;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let trials = 20;
    let mut survived = 0;
    for _ in 0..trials {
        let mut child = stage
            .command(&[
                "--config",
                path_str(&cfg),
                "monitor",
                "--duration",
                "60s",
                "-q",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300 + next() % 900));
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let _ = child.wait();
        let db = rusqlite::Connection::open(stage.state_dir().join("state.db")).unwrap();
        let ok: String = db
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok", "seed {seed}");
        survived += 1;
    }
    // Windows continue: the next run judges the error-rate window from the samples the
    // killed runs left (4 s of them exist), instead of starting from nothing.
    let r = stage.run(&[
        "--config",
        path_str(&cfg),
        "monitor",
        "--once",
        "--output",
        "json",
    ]);
    assert_eq!(r.code, 0, "seed {seed}\n{}", r.all());
    let rules = r.json()["rules"].as_array().unwrap().clone();
    let err = rules.iter().find(|x| x["name"] == "error_rate").unwrap();
    assert_ne!(
        err["verdict"], "inconclusive",
        "seed {seed}: the window spans the restarts: {err}"
    );
    let hf = rules
        .iter()
        .find(|x| x["name"] == "health_check_failure_rate")
        .unwrap();
    assert_eq!(hf["verdict"], "clear", "seed {seed}: {hf}");
    let n: i64 = rusqlite::Connection::open(stage.state_dir().join("state.db"))
        .unwrap()
        .query_row("SELECT COUNT(*) FROM samples", [], |r| r.get(0))
        .unwrap();
    let line = format!("monitor kill -9 trials: {survived}/{trials} survived (integrity ok), {n} samples kept, seed {seed}\n");
    record_reliability("monitor-kill-trials.txt", &line, false);
}
