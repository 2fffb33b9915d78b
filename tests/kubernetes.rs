//! `deploy`, `status`, `rollback` and `monitor` with `--target kubernetes`, kube's real client
//! against `common::kube_sim`: a stand-in API server on loopback that keeps state, defaults
//! objects as the API server does, applies each patch type with its own semantics and plays
//! the Deployment controller, found through KUBECONFIG. Every object the client reads is
//! what that server made of what the client (or the test, as another field manager) did.
//! No Kubernetes API server runs on these machines: this proves the client's requests and
//! its reading of a server's answers, not a live cluster's behaviour.
mod common;
use common::kube_sim::{manifest, status, strategic_merge, Sim};
use common::*;
use std::time::{Duration, Instant};

const DEPLOYMENT: &str =
    "/apis/apps/v1/namespaces/staging/deployments/authentication-service-staging-dhi";
const PODS: &str = "/api/v1/namespaces/staging/pods";
const NEW: &str = "registry.example.com/authentication-service:staging-dhi-20261128";
const OLD: &str = "registry.example.com/authentication-service:staging-dhi-20261121";
const TOKEN: &str = "kube-token-canary-4471";

fn run(stage: &Stage, sim: &Sim, args: &[&str], config: Option<&std::path::Path>) -> Run {
    let kubeconfig = sim.kubeconfig(stage.dir.path(), TOKEN);
    let mut line: Vec<String> = Vec::new();
    if let Some(c) = config {
        line.extend(["--config".to_string(), path_str(c).to_string()]);
    }
    line.extend(args.iter().map(|s| s.to_string()));
    line.extend(["--output".into(), "json".into()]);
    let args: Vec<&str> = line.iter().map(String::as_str).collect();
    let r: Run = stage
        .command(&args)
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap()
        .into();
    assert!(
        !r.all().contains(TOKEN),
        "the cluster token leaked: {}",
        r.all()
    );
    r
}

fn deploy(stage: &Stage, sim: &Sim, image: &str) -> Run {
    run(
        stage,
        sim,
        &["deploy", "--target", "kubernetes", "--image", image],
        None,
    )
}

/// `deploy --target kubernetes` of each image in turn, each rolled out.
fn deployed(stage: &Stage, sim: &Sim, images: &[&str]) {
    for image in images {
        let r = deploy(stage, sim, image);
        assert_eq!(r.code, 0, "deploy {image}: {}", r.all());
    }
}

fn template_image(sim: &Sim) -> serde_json::Value {
    sim.world().deployment.as_ref().unwrap()["spec"]["template"]["spec"]["containers"][0]["image"]
        .clone()
}

#[test]
fn deploy_applies_server_side_watches_like_rollout_status_and_verifies_the_pods() {
    let stage = Stage::new();
    let sim = Sim::start();
    let started = Instant::now();
    let r = deploy(&stage, &sim, NEW);
    let took = started.elapsed();
    assert_eq!(r.code, 0, "{}", r.all());
    let j = r.json();
    assert_eq!(j["rollout"]["state"], "done", "{j}");
    assert_eq!(j["revision"], 1, "{j}");
    let checks = j["checks"].as_array().unwrap();
    // Two pods run the new image, four checks each.
    assert_eq!(checks.len(), 8, "{j}");
    assert!(checks.iter().all(|c| c["ok"] == true), "{j}");

    let patches = sim.requests("PATCH");
    assert_eq!(patches.len(), 1);
    let (target, head, body, code) = &patches[0];
    assert_eq!(*code, 201, "a server-side apply that creates answers 201");
    assert!(
        target.contains("fieldManager=dhi-stage") && target.contains("force=true"),
        "{target}"
    );
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("content-type: application/apply-patch+yaml"),
        "{head}"
    );
    assert!(head.contains("user-agent: dhi-stage/"), "{head}");
    assert!(
        head.contains(&format!("authorization: bearer {TOKEN}")),
        "{head}"
    );
    let applied: serde_json::Value = serde_json::from_str(body).unwrap();
    let pod = &applied["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["image"], NEW);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["containers"][0]["securityContext"]["capabilities"]["drop"],
        serde_json::json!(["ALL"])
    );
    // As kubectl rollout status: one list narrowed to the name, then a watch from the list's
    // resourceVersion; the Deployment is never polled.
    let reads = sim.deployment_reads();
    assert_eq!(reads[0], "list -> 200", "{reads:?}");
    assert!(
        reads[1].starts_with("watch ") && reads[1].ends_with("-> 200"),
        "{reads:?}"
    );
    assert!(!reads.iter().any(|r| r.starts_with("get")), "{reads:?}");
    let (list_target, ..) = sim
        .requests("GET")
        .into_iter()
        .find(|(t, ..)| t.contains("fieldSelector") && !t.contains("watch="))
        .unwrap();
    assert!(
        list_target.contains("fieldSelector=metadata.name%3Dauthentication-service-staging-dhi"),
        "{list_target}"
    );
    let (pods_target, ..) = sim
        .requests("GET")
        .into_iter()
        .find(|(t, ..)| t.starts_with(PODS))
        .unwrap();
    assert!(
        pods_target.contains("labelSelector=app%3Dauthentication-service%2Cversion%3Ddhi"),
        "{pods_target}"
    );
    // A second deploy updates: 200, the next revision.
    let r = run(
        &stage,
        &sim,
        &["deploy", "--target", "kubernetes", "--image", OLD],
        None,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.json()["revision"], 2, "{}", r.all());
    assert_eq!(sim.requests("PATCH")[1].3, 200);
    println!(
        "kubernetes deploy: 1 apply (201), {} reads of the deployment while waiting ({reads:?}), {} checks passed, {:.1} s",
        reads.len(),
        checks.len(),
        took.as_secs_f64()
    );
}

#[test]
fn a_rollout_past_its_progress_deadline_fails_saying_so() {
    let stage = Stage::new();
    let sim = Sim::start();
    {
        let mut w = sim.world();
        w.knobs.pods_become_ready = false;
        w.knobs.progress_deadline = Some(2);
    }
    let r = deploy(&stage, &sim, NEW);
    assert_eq!(r.code, 3, "{}", r.all());
    let j = r.json();
    assert_eq!(j["rollout"]["state"], "failed");
    let detail = j["rollout"]["detail"].as_str().unwrap();
    // Ours, then the controller's own words.
    assert!(
        detail.contains("progress deadline") && detail.contains("has timed out progressing"),
        "{j}"
    );
    assert!(
        sim.requests("GET")
            .iter()
            .all(|(t, ..)| !t.starts_with(PODS)),
        "no verification of a failed rollout"
    );
}

#[test]
fn the_api_servers_refusal_is_said_in_its_words() {
    let stage = Stage::new();
    let sim = Sim::start();
    sim.world().knobs.faults.push((
        "PATCH".into(),
        DEPLOYMENT.into(),
        1,
        403,
        status(
            403,
            "Forbidden",
            "deployments.apps \"authentication-service-staging-dhi\" is forbidden: User \"system:serviceaccount:ci:deployer\" cannot patch resource \"deployments\" in API group \"apps\" in the namespace \"staging\"",
        ),
    ));
    let r = deploy(&stage, &sim, NEW);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("cannot patch resource \"deployments\"") && r.stderr.contains("HTTP 403"),
        "{}",
        r.all()
    );
}

#[test]
fn rollback_undoes_to_the_previous_revision_and_times_it_against_60s() {
    let stage = Stage::new();
    let sim = Sim::start();
    deployed(&stage, &sim, &[OLD, NEW]);
    let r = run(
        &stage,
        &sim,
        &[
            "rollback",
            "--target",
            "kubernetes",
            "--reason",
            "p99 over budget",
        ],
        None,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let j = r.json();
    assert_eq!(
        (j["from_revision"].as_i64(), j["to_revision"].as_i64()),
        (Some(2), Some(1)),
        "{j}"
    );
    assert_eq!(j["to_image"], OLD);
    assert_eq!(j["target_ms"], 60_000);
    assert_eq!(j["within_target"], true);
    let ms = j["decision_to_ready_ms"].as_u64().unwrap();

    let patches: Vec<_> = sim
        .requests("PATCH")
        .into_iter()
        .filter(|(_, h, ..)| !h.to_ascii_lowercase().contains("apply-patch"))
        .collect();
    assert_eq!(patches.len(), 1);
    let (target, head, body, code) = &patches[0];
    assert_eq!(*code, 200);
    let head = head.to_ascii_lowercase();
    // What kubectl sends: a JSON patch replacing the template and the annotations.
    assert!(
        head.contains("content-type: application/json-patch+json"),
        "{head}"
    );
    assert!(target.contains("fieldManager=dhi-stage"), "{target}");
    assert!(head.contains("user-agent: dhi-stage/"), "{head}");
    let patch: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(patch[0]["op"], "replace", "{patch}");
    assert_eq!(patch[0]["path"], "/spec/template", "{patch}");
    assert_eq!(patch[1]["path"], "/metadata/annotations", "{patch}");
    assert!(
        patch[0]["value"]["metadata"]["labels"]
            .get("pod-template-hash")
            .is_none(),
        "{patch}"
    );
    // The server's side: the template matched revision 1's ReplicaSet, which the controller
    // adopted as revision 3 (no third ReplicaSet), and the pods run the old image again.
    let w = sim.world();
    assert_eq!(
        w.deployment.as_ref().unwrap()["spec"]["template"]["spec"]["containers"][0]["image"],
        OLD
    );
    assert_eq!(w.replica_sets.len(), 2, "no new ReplicaSet");
    let adopted = w
        .replica_sets
        .iter()
        .find(|rs| rs["spec"]["template"]["spec"]["containers"][0]["image"] == OLD)
        .unwrap();
    assert_eq!(
        adopted["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    let serving: Vec<_> = w
        .pods
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect();
    assert!(
        serving.len() == 2
            && serving
                .iter()
                .all(|p| p["spec"]["containers"][0]["image"] == OLD),
        "{serving:?}"
    );
    drop(w);
    let ev = stage.events("rollback");
    assert_eq!(ev.last().unwrap()["kind"], "kubernetes");
    assert_eq!(ev.last().unwrap()["reason"], "p99 over budget");
    // The runbook's incident report, as after a Docker rollback.
    let report = j["incident"]["report"]
        .as_str()
        .expect("an incident report");
    let md = std::fs::read_to_string(stage.dir.path().join(report)).unwrap();
    assert!(
        md.contains("deployment/authentication-service-staging-dhi")
            && md.contains(OLD)
            && md.contains("p99 over budget")
            && md.contains("kubectl logs -n staging"),
        "{md}"
    );
    assert!(stage
        .dir
        .path()
        .join(j["incident"]["html"].as_str().unwrap())
        .exists());
    record_reliability(
        "kubernetes-undo.txt",
        &format!("kubernetes rollout undo (kube's client against the stateful stand-in, no live cluster): revision 2 -> 1 (adopted as 3, no new ReplicaSet), decision to ready {ms} ms (target 60 s); the kubeconfig token in no output\n"),
        false,
    );
}

#[test]
fn a_production_rollback_without_approval_changes_nothing() {
    let stage = Stage::new();
    let sim = Sim::start();
    deployed(&stage, &sim, &[OLD, NEW]);
    let before = sim.seen.lock().unwrap().len();
    let cfg = stage
        .write_config(|t| t.replace("environment = \"staging\"", "environment = \"production\""));
    let r = run(
        &stage,
        &sim,
        &["rollback", "--target", "kubernetes"],
        Some(&cfg),
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.all().contains("--approved-by"), "{}", r.all());
    assert_eq!(
        sim.seen.lock().unwrap().len(),
        before,
        "nothing reached the API server"
    );
    assert_eq!(template_image(&sim), NEW);
    let r = run(
        &stage,
        &sim,
        &["rollback", "--target", "kubernetes", "--approved-by", "cto"],
        Some(&cfg),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.json()["approved_by"], "cto");
    assert_eq!(template_image(&sim), OLD);
}

#[test]
fn status_reads_the_rollout_and_leaves_terminating_pods_out_of_readiness() {
    let stage = Stage::new();
    let sim = Sim::start();
    // The old revision's pods stay terminating (their grace period) after the rollout.
    sim.world().knobs.keep_terminating = true;
    deployed(&stage, &sim, &[OLD, NEW]);
    let r = run(&stage, &sim, &["status", "--target", "kubernetes"], None);
    assert_eq!(r.code, 0, "{}", r.all());
    let j = r.json();
    assert_eq!(j["rollout"]["state"], "done", "{j}");
    let pods = j["pods"].as_array().unwrap();
    assert_eq!(pods.len(), 4, "{j}");
    let (leaving, serving): (Vec<_>, Vec<_>) = pods.iter().partition(|p| p["terminating"] == true);
    assert_eq!(leaving.len(), 2, "{j}");
    assert!(leaving.iter().all(|p| p["image"] == OLD), "{j}");
    assert!(
        serving
            .iter()
            .all(|p| p["ready"] == true && p["restarts"] == 0 && p["image"] == NEW),
        "{j}"
    );
}

#[test]
fn the_monitor_reads_restarts_and_readiness_from_every_pod() {
    let stage = Stage::new();
    assert_eq!(stage.deploy(&good_image()).run().code, 0);
    let sim = Sim::start();
    deployed(&stage, &sim, &[NEW]);
    // The kubelet counts restarts 1 and 2 on the two pods: the fleet restarted 3 times.
    {
        let mut w = sim.world();
        for (k, p) in w.pods.iter_mut().enumerate() {
            p["status"]["containerStatuses"][0]["restartCount"] = (k + 1).into();
        }
    }
    let r = run(
        &stage,
        &sim,
        &[
            "monitor",
            "--once",
            "--target",
            "kubernetes",
            "--base-url",
            &stage.base_url(),
        ],
        None,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let s = &r.json()["last_sample"];
    assert_eq!(s["restart_count"], 3, "{s}");
    assert_eq!(
        s["health_detail"]["pods"],
        serde_json::json!({"ready": 2, "total": 2}),
        "{s}"
    );
    assert_eq!(s["health_ok"], true, "the service itself was probed: {s}");
}

#[test]
fn the_monitors_auto_rollback_on_kubernetes_is_a_rollout_undo_and_never_touches_docker() {
    // The service the monitor probes answers 503 on /health (an injected fault); it runs in
    // the engine only to be probed: the rollback must go to the cluster, not to it.
    let stage = Stage::new();
    assert_eq!(stage.deploy(&good_image()).run().code, 0);
    let before = stage.inspect()["Id"].clone();
    let sim = Sim::start();
    deployed(&stage, &sim, &[OLD, NEW]);
    assert!(http(
        "POST",
        &format!("{}/admin/faults?health_unhealthy=1", stage.base_url())
    )
    .is_some());
    let cfg = short_window_config(&stage, |_| {});
    let r = run(
        &stage,
        &sim,
        &[
            "monitor",
            "--target",
            "kubernetes",
            "--auto-rollback",
            "--duration",
            "30s",
            "--base-url",
            &stage.base_url(),
        ],
        Some(&cfg),
    );
    assert_eq!(r.code, 4, "fired, and the undo succeeded: {}", r.all());
    let j = r.json();
    assert_eq!(j["rollback"]["target"], "kubernetes", "{j}");
    assert_eq!(j["rollback"]["to_image"], OLD, "{j}");
    let undos: Vec<_> = sim
        .requests("PATCH")
        .into_iter()
        .filter(|(_, h, ..)| {
            h.to_ascii_lowercase()
                .contains("application/json-patch+json")
        })
        .collect();
    assert_eq!(undos.len(), 1, "one undo request");
    assert_eq!(template_image(&sim), OLD);
    // Docker was not asked to roll anything back: the same container still serves.
    assert_eq!(stage.inspect()["Id"], before);
    assert!(stage.events("rollback").last().unwrap()["kind"] == "kubernetes");
}

#[test]
fn transient_api_server_failures_in_the_wait_are_asked_again() {
    let stage = Stage::new();
    let sim = Sim::start();
    {
        let mut w = sim.world();
        let unavailable = status(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        );
        w.knobs.faults.extend([
            (
                "PATCH".into(),
                DEPLOYMENT.into(),
                1,
                503,
                unavailable.clone(),
            ),
            ("GET".into(), PODS.into(), 1, 0, String::new()),
            (
                "GET".into(),
                "deployments?&fieldSelector".into(),
                1,
                500,
                "Internal Server Error".into(),
            ),
            ("GET".into(), "watch=true".into(), 1, 503, unavailable),
            // The connection closed with no answer (an API server restarting).
            ("GET".into(), "watch=true".into(), 1, 0, String::new()),
        ]);
    }
    let r = deploy(&stage, &sim, NEW);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.json()["rollout"]["state"], "done");
    let reads = sim.deployment_reads();
    assert_eq!(reads[0], "list -> 500", "{reads:?}");
    assert_eq!(reads[1], "list -> 200", "{reads:?}");
    assert!(
        reads[2].ends_with("-> 503") && reads[3].ends_with("-> 0"),
        "{reads:?}"
    );
    assert!(
        reads[4].starts_with("watch") && reads[4].ends_with("-> 200"),
        "{reads:?}"
    );
    // The apply and the pod list, each failing once, were sent again.
    let applies: Vec<u16> = sim.requests("PATCH").iter().map(|r| r.3).collect();
    assert_eq!(applies, [503, 201]);
    let pod_lists: Vec<u16> = sim
        .requests("GET")
        .iter()
        .filter(|r| r.0.starts_with(PODS))
        .map(|r| r.3)
        .collect();
    assert_eq!(pod_lists, [0, 200]);
    println!("kubernetes: a 500, a 503 and a dropped connection in the wait were asked again: {reads:?}; the apply (503, 201) and the pod list (dropped, 200) were sent again");
}

#[test]
fn a_watch_answered_410_gone_is_listed_afresh() {
    let stage = Stage::new();
    let sim = Sim::start();
    sim.world().knobs.expire_watches = 1;
    let r = deploy(&stage, &sim, NEW);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.json()["rollout"]["state"], "done");
    let reads = sim.deployment_reads();
    // The first watch's events were one ERROR 410: list again, watch from the new version.
    assert_eq!(reads[0], "list -> 200", "{reads:?}");
    assert!(reads[1].starts_with("watch "), "{reads:?}");
    assert_eq!(reads[2], "list -> 200", "{reads:?}");
    assert!(reads[3].starts_with("watch "), "{reads:?}");
    println!("kubernetes: a 410 Gone watch was listed afresh: {reads:?}");
}

#[test]
fn a_slow_rollout_that_keeps_progressing_past_the_old_cap_is_waited_for() {
    // The controller's deadline is 1 s without progress (set by an admission policy); the
    // old cap (deadline + 30 s from the start) would have ended this wait at 31 s. Eighteen
    // replicas, one controller step every 0.9 s: about 33 s of steady progress. The server
    // ends each watch after 4 s: the wait goes on from the last resourceVersion seen.
    let stage = Stage::new();
    let sim = Sim::start();
    {
        let mut w = sim.world();
        w.knobs.step = Duration::from_millis(900);
        w.knobs.progress_deadline = Some(1);
        w.knobs.watch_max = Duration::from_secs(4);
    }
    let cfg = stage.write_config(|t| t.replace("replicas = 2", "replicas = 18"));
    let started = Instant::now();
    let r = run(
        &stage,
        &sim,
        &["deploy", "--target", "kubernetes", "--image", NEW],
        Some(&cfg),
    );
    let took = started.elapsed();
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.json()["rollout"]["state"], "done", "{}", r.all());
    assert!(
        took.as_secs() >= 31,
        "it progressed past the old cap: {took:?}"
    );
    let reads = sim.deployment_reads();
    let watches = reads.iter().filter(|r| r.starts_with("watch")).count();
    assert_eq!(
        reads.iter().filter(|r| r.starts_with("list")).count(),
        1,
        "{reads:?}"
    );
    assert!(watches >= 5, "{reads:?}");
    println!(
        "kubernetes: a rollout progressing for {:.0} s was waited for (the old cap was 31 s), over {watches} watches resumed from their last resourceVersion",
        took.as_secs_f64()
    );
}

/// An HTTP proxy on loopback: CONNECT tunnels and absolute-form requests, each target kept.
fn proxy() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let seen = s2.clone();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && c.read(&mut b).unwrap_or(0) == 1 {
                    head.push(b[0]);
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let first = text.lines().next().unwrap_or("").to_string();
                seen.lock().unwrap().push(first.clone());
                let mut parts = first.split_whitespace();
                let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let host = if method == "CONNECT" {
                    target.to_string()
                } else {
                    target
                        .trim_start_matches("http://")
                        .split('/')
                        .next()
                        .unwrap_or("")
                        .to_string()
                };
                let Ok(mut up) = std::net::TcpStream::connect(&host) else {
                    return;
                };
                if method == "CONNECT" {
                    let _ = c.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
                } else {
                    // Origin-form to the server, the rest of the head as sent.
                    let path = format!(
                        "/{}",
                        target
                            .trim_start_matches("http://")
                            .split_once('/')
                            .map_or("", |x| x.1)
                    );
                    let rest = text.split_once("\r\n").map_or("", |x| x.1);
                    let _ = write!(up, "{method} {path} HTTP/1.1\r\n{rest}");
                }
                let (mut a, mut b2) = (c.try_clone().unwrap(), up.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut b2, &mut a);
                });
                let _ = std::io::copy(&mut c, &mut up);
            });
        }
    });
    (port, seen)
}

#[test]
fn a_cluster_reached_through_the_kubeconfigs_proxy_url_goes_through_it() {
    let stage = Stage::new();
    let sim = Sim::start();
    sim.roll_out(&manifest(NEW), "dhi-stage", Duration::from_secs(30));
    let (port, seen) = proxy();
    let kubeconfig = sim.kubeconfig(stage.dir.path(), TOKEN);
    let text = std::fs::read_to_string(&kubeconfig).unwrap();
    let with_proxy = text.replace(
        &format!("    server: http://127.0.0.1:{}\n", sim.port),
        &format!(
            "    server: http://127.0.0.1:{}\n    proxy-url: http://127.0.0.1:{port}\n",
            sim.port
        ),
    );
    std::fs::write(&kubeconfig, with_proxy).unwrap();
    let r: Run = stage
        .command(&["status", "--target", "kubernetes", "--output", "json"])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.json()["rollout"]["state"], "done", "{}", r.all());
    let through = seen.lock().unwrap().clone();
    assert!(!through.is_empty(), "nothing went through the proxy");
    assert!(
        through
            .iter()
            .all(|l| l.contains(&format!("127.0.0.1:{}", sim.port))),
        "{through:?}"
    );
    println!(
        "kubernetes: {} connection(s) through the kubeconfig's proxy-url: {through:?}",
        through.len()
    );
}

#[test]
fn the_undo_takes_back_everything_the_bad_revision_added() {
    // Revision 1 is dhi-stage's; revision 2, applied by another field manager, adds an env
    // var, a volume and its mount and changes the image.
    let stage = Stage::new();
    let sim = Sim::start();
    deployed(&stage, &sim, &[OLD]);
    let rev1 = {
        let w = sim.world();
        let mut t = w.replica_sets[0]["spec"]["template"].clone();
        t["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove("pod-template-hash");
        t
    };
    let mut rev2 = manifest(NEW);
    let pod = &mut rev2["spec"]["template"]["spec"];
    pod["containers"][0]["env"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "FEATURE_X", "value": "on"}));
    pod["containers"][0]["volumeMounts"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "scratch", "mountPath": "/scratch"}));
    pod["volumes"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "scratch", "emptyDir": {}}));
    rev2["metadata"]["annotations"] =
        serde_json::json!({"kubernetes.io/change-cause": "turn FEATURE_X on"});
    // As `kubectl apply --server-side --force-conflicts` would apply it.
    sim.roll_out(&rev2, "kubectl", Duration::from_secs(30));
    let before = sim.world().deployment.clone().unwrap();
    assert!(before.to_string().contains("FEATURE_X"));

    let r = run(
        &stage,
        &sim,
        &[
            "rollback",
            "--target",
            "kubernetes",
            "--reason",
            "FEATURE_X broke logins",
        ],
        None,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let w = sim.world();
    let after = w.deployment.as_ref().unwrap()["spec"]["template"].clone();
    assert_eq!(
        after, rev1,
        "the template after the undo is revision 1's, exactly"
    );
    assert_eq!(
        w.replica_sets.len(),
        2,
        "the template matched revision 1's ReplicaSet: no new revision was made"
    );
    // The annotations are revision 1's too: revision 2's change-cause is not kept.
    let annotations = &w.deployment.as_ref().unwrap()["metadata"]["annotations"];
    assert!(
        annotations.get("kubernetes.io/change-cause").is_none(),
        "{annotations}"
    );
    drop(w);
    // The same undo as a strategic merge (what was sent before) keeps what revision 2 added.
    let mut merged = before.clone();
    strategic_merge(
        &mut merged,
        &serde_json::json!({"spec": {"template": rev1.clone()}}),
    );
    assert_ne!(merged["spec"]["template"], rev1);
    assert!(merged.to_string().contains("FEATURE_X"));
    println!("kubernetes undo: the template equals revision 1's exactly after the JSON patch and matches its ReplicaSet; a strategic merge would have kept the env var and the volume");
}

#[test]
fn a_paused_deployment_is_refused_before_any_patch() {
    let stage = Stage::new();
    let sim = Sim::start();
    deployed(&stage, &sim, &[OLD, NEW]);
    // `kubectl rollout pause`: a merge patch setting spec.paused.
    let (code, _) = sim.world().patch(
        "application/merge-patch+json",
        r#"{"spec":{"paused":true}}"#,
    );
    assert_eq!(code, 200);
    let patches_before = sim.requests("PATCH").len();
    let r = run(
        &stage,
        &sim,
        &["rollback", "--target", "kubernetes", "--reason", "paused"],
        None,
    );
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(r.all().contains("kubectl rollout resume"), "{}", r.all());
    assert_eq!(sim.requests("PATCH").len(), patches_before, "no patch sent");
    assert_eq!(template_image(&sim), NEW);
}

#[test]
fn an_undo_after_a_rollout_past_its_deadline_is_waited_for_not_failed_at_once() {
    // One replica: the undo to the old ReplicaSet makes no progress in the controller's first
    // sync, which keeps the last rollout's "deadline exceeded" beside the new generation.
    let stage = Stage::new();
    let sim = Sim::start();
    let cfg = stage.write_config(|t| t.replace("replicas = 2", "replicas = 1"));
    let deploy_with = |image: &str| {
        run(
            &stage,
            &sim,
            &["deploy", "--target", "kubernetes", "--image", image],
            Some(&cfg),
        )
    };
    assert_eq!(deploy_with(OLD).code, 0);
    {
        let mut w = sim.world();
        w.knobs.pods_become_ready = false;
        w.knobs.progress_deadline = Some(2);
    }
    let r = deploy_with(NEW);
    assert_eq!(r.code, 3, "{}", r.all());
    let r = run(
        &stage,
        &sim,
        &["rollback", "--target", "kubernetes", "--reason", "stuck"],
        Some(&cfg),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.json()["rollout"]["state"], "done", "{}", r.all());
    assert_eq!(template_image(&sim), OLD);
    // What the wait saw: the undo's generation observed while the condition still said the
    // deadline passed (kubectl's check, and ours before, would have failed there).
    let stale = sim.history().into_iter().any(|d| {
        d["status"]["observedGeneration"] == d["metadata"]["generation"]
            && d["spec"]["template"]["spec"]["containers"][0]["image"] == OLD
            && d["status"]["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["reason"] == "ProgressDeadlineExceeded"))
    });
    assert!(
        stale,
        "the stand-in kept the stale condition: {:?}",
        sim.history().last()
    );
}

#[test]
fn a_deploy_to_a_paused_deployment_says_so_at_once() {
    let stage = Stage::new();
    let sim = Sim::start();
    deployed(&stage, &sim, &[OLD]);
    let (code, _) = sim.world().patch(
        "application/merge-patch+json",
        r#"{"spec":{"paused":true}}"#,
    );
    assert_eq!(code, 200);
    let started = Instant::now();
    let r = deploy(&stage, &sim, NEW);
    assert_eq!(r.code, 3, "{}", r.all());
    let j = r.json();
    assert_eq!(j["rollout"]["state"], "failed", "{j}");
    let detail = j["rollout"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("paused") && detail.contains("kubectl rollout resume"),
        "{j}"
    );
    assert!(started.elapsed() < Duration::from_secs(20), "not waited on");
    // The apply took the template and kept the pause (another manager's field).
    assert_eq!(template_image(&sim), NEW);
    assert_eq!(
        sim.world().deployment.as_ref().unwrap()["spec"]["paused"],
        true
    );
}

#[test]
fn a_watch_refused_410_gone_outright_is_listed_afresh() {
    let stage = Stage::new();
    let sim = Sim::start();
    sim.world().knobs.faults.push((
        "GET".into(),
        "watch=true".into(),
        1,
        410,
        status(410, "Gone", "too old resource version: 1 (1001)"),
    ));
    let r = deploy(&stage, &sim, NEW);
    assert_eq!(r.code, 0, "{}", r.all());
    let reads = sim.deployment_reads();
    assert_eq!(reads[0], "list -> 200", "{reads:?}");
    assert!(reads[1].ends_with("-> 410"), "{reads:?}");
    assert_eq!(reads[2], "list -> 200", "{reads:?}");
    assert!(
        reads[3].starts_with("watch") && reads[3].ends_with("-> 200"),
        "{reads:?}"
    );
}
