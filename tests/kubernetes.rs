//! `deploy --target kubernetes` and `rollback --target kubernetes` with kube's real client
//! against recorded API exchanges (responses in the shape a v1.33 API server returns, kept in
//! tests/fixtures/kube/), served on loopback and found through KUBECONFIG. No Kubernetes API
//! server runs on these machines: this proves the client's requests and its reading of the
//! answers, not a live cluster's behaviour.
mod common;
use common::kube_api::{fixture, FakeApi};
use common::*;

const DEPLOYMENT: &str =
    "/apis/apps/v1/namespaces/staging/deployments/authentication-service-staging-dhi";
const PODS: &str = "/api/v1/namespaces/staging/pods";
const REPLICA_SETS: &str = "/apis/apps/v1/namespaces/staging/replicasets";
const NEW: &str = "registry.example.com/authentication-service:staging-dhi-20261128";
const OLD: &str = "registry.example.com/authentication-service:staging-dhi-20261121";
const TOKEN: &str = "kube-token-canary-4471";

fn ok(name: &str) -> (u16, String) {
    (200, fixture(name))
}

fn run(stage: &Stage, api: &FakeApi, args: &[&str], config: Option<&std::path::Path>) -> Run {
    let kubeconfig = api.kubeconfig(stage.dir.path(), TOKEN);
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

#[test]
fn deploy_applies_server_side_waits_like_rollout_status_and_verifies_the_pods() {
    let stage = Stage::new();
    let api = FakeApi::start();
    api.route("PATCH", DEPLOYMENT, &[ok("deploy-applied.json")]);
    api.route(
        "GET",
        DEPLOYMENT,
        &[ok("deploy-progressing.json"), ok("deploy-complete.json")],
    );
    api.route("GET", PODS, &[ok("pods.json")]);
    let r = run(
        &stage,
        &api,
        &["deploy", "--target", "kubernetes", "--image", NEW],
        None,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let j = r.json();
    assert_eq!(j["rollout"]["state"], "done", "{j}");
    assert_eq!(j["revision"], 4);
    let checks = j["checks"].as_array().unwrap();
    // Two pods run the new image (the third runs the old one and is not judged), four checks each.
    assert_eq!(checks.len(), 8, "{j}");
    assert!(checks.iter().all(|c| c["ok"] == true), "{j}");

    let patches = api.requests("PATCH");
    assert_eq!(patches.len(), 1);
    let (target, head, body) = &patches[0];
    assert!(
        target.contains("fieldManager=dhi-stage") && target.contains("force=true"),
        "{target}"
    );
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("content-type: application/apply-patch+yaml"),
        "{head}"
    );
    assert!(
        head.contains(&format!("authorization: bearer {TOKEN}")),
        "{head}"
    );
    let applied: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(applied["kind"], "Deployment");
    let pod = &applied["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["image"], NEW);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["containers"][0]["securityContext"]["capabilities"]["drop"],
        serde_json::json!(["ALL"])
    );
    // The wait read the deployment until it was done: progressing, then complete.
    assert_eq!(
        api.requests("GET")
            .iter()
            .filter(|(t, ..)| t.starts_with(DEPLOYMENT))
            .count(),
        2
    );
    let (pods_target, ..) = api
        .requests("GET")
        .into_iter()
        .find(|(t, ..)| t.starts_with(PODS))
        .unwrap();
    assert!(
        pods_target.contains("labelSelector=app%3Dauthentication-service%2Cversion%3Ddhi"),
        "{pods_target}"
    );
    println!(
        "kubernetes deploy: 1 apply, 2 status reads, 1 pod list, {} checks passed",
        checks.len()
    );
}

#[test]
fn a_rollout_past_its_progress_deadline_fails_saying_so() {
    let stage = Stage::new();
    let api = FakeApi::start();
    api.route("PATCH", DEPLOYMENT, &[ok("deploy-applied.json")]);
    api.route("GET", DEPLOYMENT, &[ok("deploy-stuck.json")]);
    let r = run(
        &stage,
        &api,
        &["deploy", "--target", "kubernetes", "--image", NEW],
        None,
    );
    assert_eq!(r.code, 3, "{}", r.all());
    let j = r.json();
    assert_eq!(j["rollout"]["state"], "failed");
    assert!(
        j["rollout"]["detail"]
            .as_str()
            .unwrap()
            .contains("progress deadline"),
        "{j}"
    );
    assert!(
        api.requests("GET")
            .iter()
            .all(|(t, ..)| !t.starts_with(PODS)),
        "no verification of a failed rollout"
    );
}

#[test]
fn the_api_servers_refusal_is_said_in_its_words() {
    let stage = Stage::new();
    let api = FakeApi::start();
    api.route("PATCH", DEPLOYMENT, &[(403, fixture("forbidden.json"))]);
    let r = run(
        &stage,
        &api,
        &["deploy", "--target", "kubernetes", "--image", NEW],
        None,
    );
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
    let api = FakeApi::start();
    api.route(
        "GET",
        DEPLOYMENT,
        &[
            ok("deploy-complete.json"),
            ok("undo-progressing.json"),
            ok("undo-complete.json"),
        ],
    );
    api.route("GET", REPLICA_SETS, &[ok("replicasets.json")]);
    api.route("PATCH", DEPLOYMENT, &[ok("undo-patched.json")]);
    let r = run(
        &stage,
        &api,
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
        (Some(4), Some(3)),
        "{j}"
    );
    assert_eq!(j["to_image"], OLD);
    assert_eq!(j["target_ms"], 60_000);
    assert_eq!(j["within_target"], true);
    let ms = j["decision_to_ready_ms"].as_u64().unwrap();

    let patches = api.requests("PATCH");
    assert_eq!(patches.len(), 1);
    let (target, head, body) = &patches[0];
    let head = head.to_ascii_lowercase();
    // What kubectl sends: a JSON patch replacing the template and the annotations, so
    // nothing the bad revision added survives (a strategic merge would keep it).
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
    let template = &patch[0]["value"];
    assert_eq!(template["spec"]["containers"][0]["image"], OLD);
    assert!(
        template["metadata"]["labels"]
            .get("pod-template-hash")
            .is_none(),
        "{template}"
    );
    let ev = stage.events("rollback");
    assert_eq!(ev.last().unwrap()["kind"], "kubernetes");
    assert_eq!(ev.last().unwrap()["reason"], "p99 over budget");
    record_reliability(
        "kubernetes-undo.txt",
        &format!("kubernetes rollout undo (recorded API exchanges, no live cluster): revision 4 -> 3, decision to ready {ms} ms (target 60 s); the kubeconfig token in no output\n"),
        false,
    );
}

#[test]
fn a_production_rollback_without_approval_changes_nothing() {
    let stage = Stage::new();
    let api = FakeApi::start();
    api.route("GET", DEPLOYMENT, &[ok("deploy-complete.json")]);
    api.route("GET", REPLICA_SETS, &[ok("replicasets.json")]);
    api.route("PATCH", DEPLOYMENT, &[ok("undo-patched.json")]);
    let cfg = stage
        .write_config(|t| t.replace("environment = \"staging\"", "environment = \"production\""));
    let r = run(
        &stage,
        &api,
        &["rollback", "--target", "kubernetes"],
        Some(&cfg),
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.all().contains("--approved-by"), "{}", r.all());
    assert!(
        api.seen.lock().unwrap().is_empty(),
        "nothing reached the API server"
    );
    let r = run(
        &stage,
        &api,
        &["rollback", "--target", "kubernetes", "--approved-by", "cto"],
        Some(&cfg),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.json()["approved_by"], "cto");
}

#[test]
fn status_reads_the_rollout_and_every_pods_readiness_and_restarts() {
    let stage = Stage::new();
    let api = FakeApi::start();
    api.route("GET", DEPLOYMENT, &[ok("deploy-progressing.json")]);
    api.route("GET", PODS, &[ok("pods.json")]);
    let r = run(&stage, &api, &["status", "--target", "kubernetes"], None);
    // Mid-rollout (1 of 2 updated) is not ok: exit 3, saying why.
    assert_eq!(r.code, 3, "{}", r.all());
    let j = r.json();
    assert_eq!(j["rollout"]["state"], "waiting", "{j}");
    let pods = j["pods"].as_array().unwrap();
    assert_eq!(pods.len(), 3);
    assert!(
        pods.iter()
            .all(|p| p["ready"] == true && p["restarts"] == 0),
        "{j}"
    );
    assert_eq!(pods[2]["image"], OLD);
}

#[test]
fn the_monitor_reads_restarts_and_readiness_from_every_pod() {
    let stage = Stage::new();
    assert_eq!(stage.deploy(&good_image()).run().code, 0);
    let api = FakeApi::start();
    // Restarts 1, 2 and 0 across the three pods: the fleet restarted 3 times.
    let pods = fixture("pods.json")
        .replacen("\"restartCount\": 0", "\"restartCount\": 1", 1)
        .replacen("\"restartCount\": 0", "\"restartCount\": 2", 1);
    api.route("GET", PODS, &[(200, pods)]);
    let r = run(
        &stage,
        &api,
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
        serde_json::json!({"ready": 3, "total": 3}),
        "{s}"
    );
    assert_eq!(s["health_ok"], true, "the service itself was probed: {s}");
    let (target, ..) = api
        .requests("GET")
        .into_iter()
        .find(|(t, ..)| t.starts_with(PODS))
        .unwrap();
    assert!(
        target.contains("labelSelector=app%3Dauthentication-service%2Cversion%3Ddhi"),
        "{target}"
    );
}

#[test]
fn the_monitors_auto_rollback_on_kubernetes_is_a_rollout_undo_and_never_touches_docker() {
    // The service the monitor probes answers 503 on /health (an injected fault); it runs in
    // the engine only to be probed: the rollback must go to the cluster, not to it.
    let stage = Stage::new();
    assert_eq!(stage.deploy(&good_image()).run().code, 0);
    let before = stage.inspect()["Id"].clone();
    assert!(http(
        "POST",
        &format!("{}/admin/faults?health_unhealthy=1", stage.base_url())
    )
    .is_some());
    let api = FakeApi::start();
    api.route("GET", PODS, &[ok("pods.json")]);
    api.route(
        "GET",
        DEPLOYMENT,
        &[ok("deploy-complete.json"), ok("undo-complete.json")],
    );
    api.route("GET", REPLICA_SETS, &[ok("replicasets.json")]);
    api.route("PATCH", DEPLOYMENT, &[ok("undo-patched.json")]);
    let cfg = short_window_config(&stage, |_| {});
    let r = run(
        &stage,
        &api,
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
    let patches = api.requests("PATCH");
    assert_eq!(patches.len(), 1, "one undo request");
    assert!(patches[0]
        .1
        .to_ascii_lowercase()
        .contains("application/json-patch+json"));
    // Docker was not asked to roll anything back: the same container still serves.
    assert_eq!(stage.inspect()["Id"], before);
    assert!(stage.events("rollback").last().unwrap()["kind"] == "kubernetes");
}

/// The progressing answer with the controller's progress deadline set to `deadline_s`.
fn progressing(deadline_s: u64, renewed_at_s: u64) -> (u16, String) {
    let mut d: serde_json::Value =
        serde_json::from_str(&fixture("deploy-progressing.json")).unwrap();
    d["spec"]["progressDeadlineSeconds"] = deadline_s.into();
    for c in d["status"]["conditions"].as_array_mut().unwrap() {
        if c["type"] == "Progressing" {
            // The controller renews the condition on every step of progress.
            c["lastUpdateTime"] = format!(
                "2026-11-28T10:{:02}:{:02}Z",
                renewed_at_s / 60,
                renewed_at_s % 60
            )
            .into();
        }
    }
    (200, d.to_string())
}

#[test]
fn a_transient_api_server_failure_in_the_middle_of_the_wait_is_asked_again() {
    let stage = Stage::new();
    let api = FakeApi::start();
    api.route("PATCH", DEPLOYMENT, &[ok("deploy-applied.json")]);
    let unavailable = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the server is currently unable to handle the request","reason":"ServiceUnavailable","code":503}"#;
    api.route(
        "GET",
        DEPLOYMENT,
        &[
            ok("deploy-progressing.json"),
            (503, unavailable.to_string()),
            (500, "Internal Server Error".to_string()),
            ok("deploy-progressing.json"),
            ok("deploy-complete.json"),
        ],
    );
    api.route("GET", PODS, &[ok("pods.json")]);
    let r = run(
        &stage,
        &api,
        &["deploy", "--target", "kubernetes", "--image", NEW],
        None,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.json()["rollout"]["state"], "done");
    let reads = api
        .requests("GET")
        .iter()
        .filter(|(t, ..)| t.starts_with(DEPLOYMENT))
        .count();
    assert_eq!(reads, 5, "the two failures were asked again");
}

#[test]
fn a_slow_rollout_that_keeps_progressing_past_the_old_cap_is_waited_for() {
    // The controller's deadline is 1 s without progress; the old cap (deadline + 30 s from
    // the start) would have ended this wait at 31 s. The rollout renews its Progressing
    // condition every read for 34 s (at the 500 ms read interval), then completes.
    let stage = Stage::new();
    let api = FakeApi::start();
    let mut applied: serde_json::Value =
        serde_json::from_str(&fixture("deploy-applied.json")).unwrap();
    applied["spec"]["progressDeadlineSeconds"] = 1.into();
    api.route("PATCH", DEPLOYMENT, &[(200, applied.to_string())]);
    let mut reads: Vec<(u16, String)> = (0..68).map(|k| progressing(1, k)).collect();
    reads.push(ok("deploy-complete.json"));
    api.route("GET", DEPLOYMENT, &reads);
    api.route("GET", PODS, &[ok("pods.json")]);
    let started = std::time::Instant::now();
    let r = run(
        &stage,
        &api,
        &["deploy", "--target", "kubernetes", "--image", NEW],
        None,
    );
    let took = started.elapsed();
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.json()["rollout"]["state"], "done", "{}", r.all());
    assert!(
        took.as_secs() >= 31,
        "it progressed past the old cap: {took:?}"
    );
    println!(
        "kubernetes: a rollout progressing for {:.0} s was waited for (the old cap was 31 s)",
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
    let api = FakeApi::start();
    api.route("GET", DEPLOYMENT, &[ok("deploy-complete.json")]);
    api.route("GET", PODS, &[ok("pods.json")]);
    let (port, seen) = proxy();
    let kubeconfig = api.kubeconfig(stage.dir.path(), TOKEN);
    let text = std::fs::read_to_string(&kubeconfig).unwrap();
    let with_proxy = text.replace(
        &format!("    server: http://127.0.0.1:{}\n", api.port),
        &format!(
            "    server: http://127.0.0.1:{}\n    proxy-url: http://127.0.0.1:{port}\n",
            api.port
        ),
    );
    std::fs::write(&kubeconfig, with_proxy).unwrap();
    let r: Run = stage
        .command(&["status", "--target", "kubernetes", "--output", "json"])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap()
        .into();
    assert!(r.code == 0 || r.code == 3, "{}", r.all());
    assert_eq!(r.json()["rollout"]["state"], "done", "{}", r.all());
    let through = seen.lock().unwrap().clone();
    assert!(!through.is_empty(), "nothing went through the proxy");
    assert!(
        through
            .iter()
            .all(|l| l.contains(&format!("127.0.0.1:{}", api.port))),
        "{through:?}"
    );
    println!(
        "kubernetes: {} connection(s) through the kubeconfig's proxy-url: {through:?}",
        through.len()
    );
}

/// RFC 6902 as the API server applies it (`replace` and `add` at a JSON pointer).
fn apply_json_patch(doc: &mut serde_json::Value, patch: &serde_json::Value) -> Result<(), String> {
    for op in patch.as_array().ok_or("a JSON patch is a list")? {
        let path = op["path"].as_str().ok_or("an op without a path")?;
        let value = op["value"].clone();
        match op["op"].as_str() {
            Some("replace") => *doc.pointer_mut(path).ok_or(format!("replace: no {path}"))? = value,
            Some("add") => {
                let (parent, key) = path.rsplit_once('/').ok_or("add: a bad path")?;
                let p = doc.pointer_mut(parent).ok_or(format!("add: no {parent}"))?;
                p.as_object_mut()
                    .ok_or("add: not an object")?
                    .insert(key.to_string(), value);
            }
            other => return Err(format!("op {other:?} is not used by the undo")),
        }
    }
    Ok(())
}

/// A strategic merge as the API server applies it to a pod template: maps merge key by key,
/// and the lists Kubernetes merges by `name` (containers, env, volumes, volumeMounts) keep
/// the entries the patch leaves out. This is why an undo must not be one.
fn strategic_merge(doc: &mut serde_json::Value, patch: &serde_json::Value) {
    match (doc, patch) {
        (serde_json::Value::Object(d), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                strategic_merge(d.entry(k.clone()).or_insert(serde_json::Value::Null), v);
            }
        }
        (serde_json::Value::Array(d), serde_json::Value::Array(p))
            if p.iter().all(|e| e.get("name").is_some()) =>
        {
            for e in p {
                match d.iter_mut().find(|x| x.get("name") == e.get("name")) {
                    Some(x) => strategic_merge(x, e),
                    None => d.push(e.clone()),
                }
            }
        }
        (d, p) => *d = p.clone(),
    }
}

#[test]
fn the_undo_takes_back_everything_the_bad_revision_added() {
    use std::sync::{Arc, Mutex};
    // Revision 4 added an env var, a volume and its mount to revision 3's template.
    let sets: serde_json::Value = serde_json::from_str(&fixture("replicasets.json")).unwrap();
    let rs = |rev: &str| {
        sets["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == rev)
            .unwrap()
            .clone()
    };
    let without_hash = |mut t: serde_json::Value| {
        t["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove("pod-template-hash");
        t
    };
    let rev3 = without_hash(rs("3")["spec"]["template"].clone());
    let mut rev4 = rs("4")["spec"]["template"].clone();
    let c = &mut rev4["spec"]["containers"][0];
    c["env"] = serde_json::json!([{"name": "FEATURE_X", "value": "on"}]);
    c["volumeMounts"] = serde_json::json!([{"name": "scratch", "mountPath": "/scratch"}]);
    rev4["spec"]["volumes"] = serde_json::json!([{"name": "scratch", "emptyDir": {}}]);
    let mut items = sets.clone();
    for i in items["items"].as_array_mut().unwrap() {
        if i["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "4" {
            i["spec"]["template"] = rev4.clone();
        }
    }
    // The Deployment as the server keeps it, and a stand-in that applies what it is sent.
    let mut current: serde_json::Value =
        serde_json::from_str(&fixture("deploy-complete.json")).unwrap();
    current["spec"]["template"] = without_hash(rev4.clone());
    let state = Arc::new(Mutex::new(current.clone()));
    let api = FakeApi::start();
    let st = state.clone();
    api.handle(
        "GET",
        DEPLOYMENT,
        Arc::new(move |_, _| (200, st.lock().unwrap().to_string())),
    );
    let st = state.clone();
    api.handle(
        "PATCH",
        DEPLOYMENT,
        Arc::new(move |head, body| {
            let mut d = st.lock().unwrap();
            let patch: serde_json::Value = serde_json::from_str(body).unwrap();
            if head.to_ascii_lowercase().contains("application/json-patch+json") {
                if let Err(e) = apply_json_patch(&mut d, &patch) {
                    return (422, format!(r#"{{"kind":"Status","status":"Failure","message":"{e}","reason":"Invalid","code":422}}"#));
                }
            } else {
                strategic_merge(&mut d, &patch);
            }
            // A new generation the controller then rolls out (at once, here).
            let g = d["metadata"]["generation"].as_i64().unwrap() + 1;
            d["metadata"]["generation"] = g.into();
            d["status"]["observedGeneration"] = g.into();
            (200, d.to_string())
        }),
    );
    api.route("GET", REPLICA_SETS, &[(200, items.to_string())]);
    let stage = Stage::new();
    let r = run(
        &stage,
        &api,
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
    // `creationTimestamp: null` is how the API writes an absent time: the same object.
    fn no_nulls(v: &mut serde_json::Value) {
        if let Some(m) = v.as_object_mut() {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(no_nulls);
        } else if let Some(a) = v.as_array_mut() {
            a.iter_mut().for_each(no_nulls);
        }
    }
    let mut after = state.lock().unwrap()["spec"]["template"].clone();
    let mut want = rev3.clone();
    no_nulls(&mut after);
    no_nulls(&mut want);
    assert_eq!(
        after, want,
        "the template after the undo is revision 3's, exactly"
    );
    // The same undo as a strategic merge (what was sent before) keeps what revision 4 added.
    let mut merged = current.clone();
    strategic_merge(
        &mut merged,
        &serde_json::json!({"spec": {"template": rev3.clone()}}),
    );
    assert_ne!(
        merged["spec"]["template"], rev3,
        "a strategic merge would have left FEATURE_X and the volume"
    );
    assert!(merged.to_string().contains("FEATURE_X"));
    println!("kubernetes undo: the template equals revision 3's exactly after the JSON patch; a strategic merge would have kept the env var and the volume");
}
