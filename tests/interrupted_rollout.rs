//! Deploy and rollback as transactions: kill -9 and SIGTERM at seeded random points of a
//! deploy or a rollback, then the next command. Every trial must end with exactly one
//! container under the service's name, of a recorded image, serving `/health`, the store
//! naming it as the active deployment, nothing left aside, and `PRAGMA integrity_check` ok.
//! The seed is printed (set DHI_TRIAL_SEED to replay).
mod common;
use common::*;
use std::time::Duration;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn seed() -> u64 {
    std::env::var("DHI_TRIAL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        })
}

/// The invariant after every trial; returns a description of what is wrong, if anything.
fn check_invariant(stage: &Stage) -> Result<String, String> {
    let ps = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("name={}", stage.name),
        "--format",
        "{{.Names}}",
    ]);
    let names: Vec<&str> = ps.stdout.lines().filter(|l| !l.is_empty()).collect();
    if names != [stage.name.as_str()] {
        return Err(format!(
            "containers {names:?}, want exactly [{}]",
            stage.name
        ));
    }
    let c = stage.inspect();
    if c["State"]["Running"] != true {
        return Err(format!("{} is not running", stage.name));
    }
    if !wait_for(|| stage.health().is_some(), Duration::from_secs(10)) {
        return Err("the service does not answer /health".into());
    }
    let db = rusqlite::Connection::open(stage.state_dir().join("state.db")).unwrap();
    let ok: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    if ok != "ok" {
        return Err(format!("integrity_check: {ok}"));
    }
    let active: Vec<(Option<String>, String)> = db
        .prepare("SELECT container_id, image_ref FROM deployments WHERE status='active' AND container_name=?1")
        .unwrap()
        .query_map([&stage.name], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let [(cid, image)] = active.as_slice() else {
        return Err(format!(
            "{} active deployments recorded: {active:?}",
            active.len()
        ));
    };
    if cid.as_deref() != c["Id"].as_str() {
        return Err(format!(
            "the store names container {cid:?} active, {} serves",
            c["Id"]
        ));
    }
    if image.as_str() != c["Config"]["Image"].as_str().unwrap_or("") {
        return Err(format!(
            "the store says {image}, the container runs {}",
            c["Config"]["Image"]
        ));
    }
    let starting: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM deployments WHERE status='starting'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    if starting != 0 {
        return Err(format!("{starting} deployment(s) still 'starting'"));
    }
    Ok(image.clone())
}

fn trials(kind: &str) {
    let a = good_image();
    let b = testsvc_image("dhi-test/authsvc:good-b", &["FAULT_LATENCY_MS=1"]);
    let stage = Stage::new();
    assert_eq!(stage.deploy(&a).run().code, 0);
    assert_eq!(stage.deploy(&b).run().code, 0);
    let seed = seed();
    let mut rng = Rng(seed);
    let n = 20;
    let mut survived = 0;
    let mut serving = b.clone();
    for t in 0..n {
        let other = if serving == a { b.clone() } else { a.clone() };
        let args: Vec<String> = match kind {
            "deploy" => vec!["deploy".into(), "--image".into(), other.clone()],
            _ => vec![
                "rollback".into(),
                "--to".into(),
                other.clone(),
                "--reason".into(),
                "trial".into(),
            ],
        };
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = stage.spawn(&argv);
        let delay = rng.next() % 1500;
        std::thread::sleep(Duration::from_millis(delay));
        let sig = if rng.next().is_multiple_of(2) {
            libc::SIGKILL
        } else {
            libc::SIGTERM
        };
        unsafe { libc::kill(child.id() as i32, sig) };
        let out = child.wait_with_output().unwrap();
        assert_ne!(
            out.status.code(),
            Some(101),
            "seed {seed} trial {t}: a panic\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The next command, chosen by the seed: it must reconcile before it does anything.
        let next = match rng.next() % 3 {
            0 => vec!["deploy", "--image", &a],
            1 => vec!["rollback", "--reason", "after an interrupted run"],
            _ => vec!["deploy", "--image", &b],
        };
        let r = stage.run(&next);
        assert!(
            [0, 3, 5].contains(&r.code),
            "seed {seed} trial {t} ({kind} killed after {delay}ms with {sig}), then {next:?}: exit {}\n{}",
            r.code,
            r.all()
        );
        match check_invariant(&stage) {
            Ok(image) => {
                survived += 1;
                serving = image;
            }
            Err(why) => panic!(
                "seed {seed} trial {t}: {kind} killed after {delay}ms with signal {sig}, then {next:?} (exit {}): {why}\n{}",
                r.code,
                r.all()
            ),
        }
        let st = stage.run(&["status"]);
        assert_eq!(
            st.code,
            0,
            "seed {seed} trial {t}: status after\n{}",
            st.all()
        );
    }
    record_reliability(
        &format!("{kind}-kill-trials.txt"),
        &format!("{kind} interrupted by kill -9/SIGTERM at random points: {survived}/{n} trials left one healthy recorded container (seed {seed})\n"),
        false,
    );
}

#[test]
fn deploys_killed_at_random_points_leave_one_healthy_recorded_container() {
    trials("deploy");
}

#[test]
fn rollbacks_killed_at_random_points_leave_one_healthy_recorded_container() {
    trials("rollback");
}

/// A rollback right after an interrupted deploy undoes that deploy: the last verified
/// container serves again; it does not go one step further back.
#[test]
fn a_rollback_after_an_interrupted_deploy_undoes_only_that_deploy() {
    let a = good_image();
    let b = testsvc_image("dhi-test/authsvc:good-b", &["FAULT_LATENCY_MS=1"]);
    let stage = Stage::new();
    assert_eq!(stage.deploy(&a).run().code, 0);
    assert_eq!(stage.deploy(&b).run().code, 0);
    let b_id = stage.inspect()["Id"].clone();
    // What a deploy of A killed between "set aside" and "verified" leaves: B aside and
    // stopped, an unverified container under the name, the attempt recorded as starting.
    let aside = format!("{}.previous", stage.name);
    assert_eq!(docker(&["rename", &stage.name, &aside]).code, 0);
    assert_eq!(docker(&["stop", "-t", "1", &aside]).code, 0);
    assert_eq!(
        docker(&[
            "run",
            "-d",
            "--name",
            &stage.name,
            "-p",
            &format!("{}:3000", stage.port),
            &a
        ])
        .code,
        0
    );
    let db = rusqlite::Connection::open(stage.state_dir().join("state.db")).unwrap();
    db.execute(
        "INSERT INTO deployments(kind, status, image_ref, container_name, previous_id, started_at)
         SELECT 'deploy', 'starting', ?1, ?2, MAX(id), '2026-01-01T00:00:00Z' FROM deployments",
        [&a, &stage.name],
    )
    .unwrap();
    drop(db);
    let r = stage.run(&[
        "rollback",
        "--reason",
        "the deploy was interrupted",
        "--output",
        "json",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.json()["undone_deployment"].is_i64(), "{}", r.all());
    assert_eq!(
        stage.inspect()["Id"],
        b_id,
        "B, the last verified, serves again (not A, one step further back)"
    );
    assert_eq!(check_invariant(&stage).unwrap(), b);
}
