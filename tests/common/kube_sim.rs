//! A Kubernetes API server stand-in that keeps state and plays the Deployment controller, so
//! what the client reads is what a server would send after what the client did, not a
//! guess written by hand:
//! - objects go through the API server's defaulting (`defaults`, ported from
//!   kubernetes/kubernetes `pkg/apis/apps/v1/defaults.go` and `pkg/apis/core/v1/defaults.go`)
//!   on k8s-openapi's own types;
//! - one resourceVersion counter for everything, bumped on every write; create answers 201;
//! - server-side apply, RFC 6902 JSON patches (the json-patch crate), merge patches and
//!   strategic merges each applied with their own semantics;
//! - a controller that rolls out as the Deployment controller does (a ReplicaSet per
//!   template, `pod-template-hash` labels, owner references, surge and unavailability,
//!   revision annotations, an undo adopting the old ReplicaSet, the Progressing condition and
//!   its deadline), one step per `Knobs::step`;
//! - list with field and label selectors, and watches streamed in chunks from a
//!   resourceVersion, ended after `timeoutSeconds`, answered 410 Gone when compacted away.
//!
//! What it does not reproduce: the exact `pod-template-hash` values (Kubernetes hashes a Go
//! printing of the template; this hashes its JSON, consistently), managedFields' field sets,
//! scheduling, admission beyond the default tolerations, and timing.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// One request the stand-in answered, with the status it answered (0: the connection was
/// closed instead).
pub struct Exchange {
    pub method: String,
    pub target: String,
    pub head: String,
    pub body: String,
    pub code: u16,
}

pub const NAMESPACE: &str = "staging";

/// How the stand-in behaves; change through `Sim::world`.
pub struct Knobs {
    /// One controller step (a pod created, made ready, or an old one retired) this often.
    pub step: Duration,
    /// Whether new pods ever become ready (false: the rollout stalls until its deadline).
    pub pods_become_ready: bool,
    /// Answered before anything else: (method, a substring of the target, how many times,
    /// status code, body). Code 0 closes the connection without an answer.
    pub faults: Vec<(String, String, usize, u16, String)>,
    /// The next this-many watches are answered 410 Gone (their version compacted away).
    pub expire_watches: usize,
    /// The server ends a watch after this, whatever the client's `timeoutSeconds`.
    pub watch_max: Duration,
    /// Set on every applied Deployment, as a mutating admission policy would.
    pub progress_deadline: Option<i64>,
    /// Retired pods stay listed, terminating, until this is cleared (their grace period).
    pub keep_terminating: bool,
}

pub struct World {
    rv: u64,
    serial: u64,
    pub deployment: Option<Value>,
    pub replica_sets: Vec<Value>,
    pub pods: Vec<Value>,
    /// The Deployment's watch events: (resourceVersion, type, object).
    history: Vec<(u64, &'static str, Value)>,
    pub knobs: Knobs,
}

type Shared = Arc<(Mutex<World>, Condvar)>;

pub struct Sim {
    pub port: u16,
    shared: Shared,
    pub seen: Arc<Mutex<Vec<Exchange>>>,
}

impl Sim {
    pub fn start() -> Sim {
        let world = World {
            rv: 1000,
            serial: 0,
            deployment: None,
            replica_sets: Vec::new(),
            pods: Vec::new(),
            history: Vec::new(),
            knobs: Knobs {
                step: Duration::from_millis(150),
                pods_become_ready: true,
                faults: Vec::new(),
                expire_watches: 0,
                watch_max: Duration::from_secs(300),
                progress_deadline: None,
                keep_terminating: false,
            },
        };
        let shared: Shared = Arc::new((Mutex::new(world), Condvar::new()));
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<Exchange>>> = Arc::default();
        let (s2, seen2) = (shared.clone(), seen.clone());
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let (s3, seen3) = (s2.clone(), seen2.clone());
                std::thread::spawn(move || serve(conn, &s3, &seen3));
            }
        });
        let weak = Arc::downgrade(&shared);
        std::thread::spawn(move || controller(weak));
        Sim { port, shared, seen }
    }

    /// The world, to read or change (knobs, a pod's restarts).
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.shared.0.lock().unwrap()
    }

    /// Applies `manifest` as a server-side apply by `manager` would, and waits until the
    /// controller has rolled it out (or `within` passes).
    pub fn roll_out(&self, manifest: &Value, manager: &str, within: Duration) {
        {
            let mut w = self.world();
            w.apply(manifest, manager).unwrap();
        }
        self.shared.1.notify_all();
        let t = Instant::now();
        while t.elapsed() < within {
            if self.world().complete() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the stand-in's rollout did not complete within {within:?}");
    }

    /// Requests seen with `method`: (target, head, body, answered status).
    pub fn requests(&self, method: &str) -> Vec<(String, String, String, u16)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.method == method)
            .map(|e| (e.target.clone(), e.head.clone(), e.body.clone(), e.code))
            .collect()
    }

    /// The Deployment as each of its watch events carried it, oldest first.
    pub fn history(&self) -> Vec<Value> {
        self.world().history.iter().map(|h| h.2.clone()).collect()
    }

    /// The Deployment's path in the order they were asked: `list`, `watch <from>` or `get`.
    pub fn deployment_reads(&self) -> Vec<String> {
        let prefix = format!("/apis/apps/v1/namespaces/{NAMESPACE}/deployments");
        self.requests("GET")
            .into_iter()
            .filter(|(t, ..)| t.starts_with(&prefix))
            .map(|(t, _, _, code)| {
                let q = query(&t);
                let kind = if q.contains_key("watch") {
                    format!("watch {}", q.get("resourceVersion").map_or("", |v| v))
                } else if t.contains('?') {
                    "list".to_string()
                } else {
                    "get".to_string()
                };
                format!("{kind} -> {code}")
            })
            .collect()
    }

    /// A kubeconfig pointing at this server, with a bearer token.
    pub fn kubeconfig(&self, dir: &Path, token: &str) -> PathBuf {
        let p = dir.join("kubeconfig");
        std::fs::write(
            &p,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster:\n    server: http://127.0.0.1:{}\nusers:\n- name: ci\n  user:\n    token: {token}\ncontexts:\n- name: staging\n  context:\n    cluster: sim\n    user: ci\n    namespace: {NAMESPACE}\ncurrent-context: staging\n",
                self.port
            ),
        )
        .unwrap();
        p
    }
}

/// The runbook's Deployment as `dhi-stage deploy --dry-run --target kubernetes` renders it.
pub fn manifest(image: &str) -> Value {
    let out = std::process::Command::new(super::BIN)
        .args([
            "deploy",
            "--dry-run",
            "--target",
            "kubernetes",
            "--image",
            image,
            "--output",
            "json",
        ])
        .env(
            "DHI_STAGE_STATE_DIR",
            std::env::temp_dir().join(format!("kube-sim-manifest-{}", std::process::id())),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A Status object in the API server's shape.
pub fn status(code: u16, reason: &str, message: &str) -> String {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
    .to_string()
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// fnv32a, the hash family the controller's `ComputeHash` uses.
fn fnv32a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x01000193)
    })
}

/// `rand.SafeEncodeString`: the alphabet Kubernetes uses for hashes and name suffixes.
fn safe_encode(s: &str) -> String {
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| ALPHA[b as usize % ALPHA.len()] as char)
        .collect()
}

fn template_hash(template: &Value) -> String {
    safe_encode(&fnv32a(template.to_string().as_bytes()).to_string())
}

/// A template as the ReplicaSets compare it: without the hash label.
fn bare_template(t: &Value) -> Value {
    let mut t = t.clone();
    if let Some(l) = t["metadata"]["labels"].as_object_mut() {
        l.remove("pod-template-hash");
    }
    t
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn revision_of(o: &Value) -> i64 {
    o["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn pod_ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn terminating(o: &Value) -> bool {
    !o["metadata"]["deletionTimestamp"].is_null()
}

fn owner_name(o: &Value) -> String {
    o["metadata"]["ownerReferences"][0]["name"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// "25%" of `of`, rounded up (surge) or down (unavailable), or a plain number.
fn scaled(v: &Value, of: i64, up: bool) -> i64 {
    match v {
        Value::String(s) if s.ends_with('%') => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            if up {
                (pct * of + 99) / 100
            } else {
                pct * of / 100
            }
        }
        other => int(other),
    }
}

impl World {
    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn uid(&mut self) -> String {
        self.serial += 1;
        format!(
            "5f0c{:04x}-6b1e-4d2a-9c3f-{:012x}",
            self.serial,
            self.serial * 7919
        )
    }

    fn record_deployment(&mut self, kind: &'static str) {
        let rv = self.bump();
        let d = self.deployment.as_mut().unwrap();
        d["metadata"]["resourceVersion"] = rv.to_string().into();
        let d = d.clone();
        self.history.push((rv, kind, d));
    }

    fn stamp(&mut self, o: &mut Value) {
        let rv = self.bump();
        o["metadata"]["resourceVersion"] = rv.to_string().into();
    }

    /// Server-side apply: the applied object, defaulted; created (201) if new, else its
    /// spec, labels and annotations taken as the manager applied them (forced), a new
    /// generation if the spec changed (200).
    pub fn apply(&mut self, applied: &Value, manager: &str) -> Result<(u16, Value), String> {
        let mut typed: k8s_openapi::api::apps::v1::Deployment =
            serde_json::from_value(applied.clone())
                .map_err(|e| format!("not a Deployment: {e}"))?;
        if let (Some(s), Some(d)) = (typed.spec.as_mut(), self.knobs.progress_deadline) {
            s.progress_deadline_seconds = Some(d as i32);
        }
        // What the manager applied (with the admission policy's change), before defaulting.
        let applied_spec = serde_json::to_value(&typed.spec).unwrap();
        defaults::deployment(&mut typed);
        let defaulted = serde_json::to_value(&typed).unwrap();
        let managed = json!([{"manager": manager, "operation": "Apply", "apiVersion": "apps/v1",
                              "time": now(), "fieldsType": "FieldsV1", "fieldsV1": {}}]);
        if let Some(d) = self.deployment.as_mut() {
            // The applied fields taken over (forced); fields only other managers set (a
            // pause, an annotation) kept. Lists are replaced whole (the manifest's are atomic
            // or keyed by name, and the manifest lists every entry).
            let mut spec = d["spec"].clone();
            json_patch::merge(&mut spec, &strip_nulls(applied_spec));
            let mut typed_spec: k8s_openapi::api::apps::v1::DeploymentSpec =
                serde_json::from_value(spec).map_err(|e| format!("not a DeploymentSpec: {e}"))?;
            let mut whole = k8s_openapi::api::apps::v1::Deployment {
                spec: Some(typed_spec.clone()),
                ..Default::default()
            };
            defaults::deployment(&mut whole);
            typed_spec = whole.spec.unwrap();
            let spec = serde_json::to_value(typed_spec).unwrap();
            let changed = d["spec"] != spec;
            d["spec"] = spec;
            for k in ["labels", "annotations"] {
                if let Some(m) = defaulted["metadata"][k].as_object() {
                    for (key, v) in m {
                        d["metadata"][k][key] = v.clone();
                    }
                }
            }
            d["metadata"]["managedFields"] = managed;
            if changed {
                d["metadata"]["generation"] = (int(&d["metadata"]["generation"]) + 1).into();
            }
            self.record_deployment("MODIFIED");
            return Ok((200, self.deployment.clone().unwrap()));
        }
        let mut d = defaulted;
        let uid = self.uid();
        let meta = d["metadata"].as_object_mut().unwrap();
        meta.insert("namespace".into(), NAMESPACE.into());
        meta.insert("uid".into(), uid.into());
        meta.insert("generation".into(), 1.into());
        meta.insert("creationTimestamp".into(), now().into());
        meta.insert("managedFields".into(), managed);
        d["status"] = json!({});
        self.deployment = Some(d);
        self.record_deployment("ADDED");
        Ok((201, self.deployment.clone().unwrap()))
    }

    /// A PATCH of the Deployment by its content type, with that type's semantics.
    pub fn patch(&mut self, content_type: &str, body: &str) -> (u16, String) {
        let Some(current) = self.deployment.clone() else {
            return (404, status(404, "NotFound", "deployments.apps not found"));
        };
        let Ok(p) = serde_json::from_str::<Value>(body) else {
            return (400, status(400, "BadRequest", "the patch is not JSON"));
        };
        let mut next = current.clone();
        let applied = match content_type {
            "application/json-patch+json" => serde_json::from_value::<json_patch::Patch>(p)
                .map_err(|e| e.to_string())
                .and_then(|p| json_patch::patch(&mut next, &p).map_err(|e| e.to_string())),
            "application/merge-patch+json" => {
                json_patch::merge(&mut next, &p);
                Ok(())
            }
            "application/strategic-merge-patch+json" => {
                strategic_merge(&mut next, &p);
                Ok(())
            }
            other => return (415, status(415, "UnsupportedMediaType", &format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json ({other})"))),
        };
        if let Err(e) = applied {
            return (422, status(422, "Invalid", &e));
        }
        let mut typed: k8s_openapi::api::apps::v1::Deployment = match serde_json::from_value(next) {
            Ok(t) => t,
            Err(e) => return (422, status(422, "Invalid", &e.to_string())),
        };
        defaults::deployment(&mut typed);
        let mut next = serde_json::to_value(&typed).unwrap();
        next["status"] = current["status"].clone();
        if next["spec"] != current["spec"] {
            next["metadata"]["generation"] = (int(&current["metadata"]["generation"]) + 1).into();
        }
        self.deployment = Some(next);
        self.record_deployment("MODIFIED");
        (200, self.deployment.clone().unwrap().to_string())
    }

    /// Whether the rollout of the current generation is complete.
    pub fn complete(&self) -> bool {
        let Some(d) = &self.deployment else {
            return false;
        };
        let want = int(&d["spec"]["replicas"]);
        let s = &d["status"];
        int(&s["observedGeneration"]) >= int(&d["metadata"]["generation"])
            && int(&s["updatedReplicas"]) == want
            && int(&s["replicas"]) == want
            && int(&s["availableReplicas"]) == want
            && (self.knobs.keep_terminating || self.pods.iter().all(|p| !terminating(p)))
    }

    /// The ReplicaSet whose template is the Deployment's, made (next revision) if none; and
    /// whether it was made now.
    fn new_replica_set(&mut self, d: &Value) -> (String, bool) {
        let template = bare_template(&d["spec"]["template"]);
        let newest = self.replica_sets.iter().map(revision_of).max().unwrap_or(0);
        if let Some(i) = self
            .replica_sets
            .iter()
            .position(|rs| bare_template(&rs["spec"]["template"]) == template)
        {
            // An undo: the old ReplicaSet is adopted and becomes the newest revision.
            if revision_of(&self.replica_sets[i]) < newest {
                let mut rs = self.replica_sets[i].clone();
                let was = revision_of(&rs).to_string();
                let a = &mut rs["metadata"]["annotations"];
                let history = match a["deployment.kubernetes.io/revision-history"].as_str() {
                    Some(h) => format!("{h},{was}"),
                    None => was,
                };
                a["deployment.kubernetes.io/revision-history"] = history.into();
                a["deployment.kubernetes.io/revision"] = (newest + 1).to_string().into();
                self.stamp(&mut rs);
                self.replica_sets[i] = rs;
            }
            let name = self.replica_sets[i]["metadata"]["name"].as_str().unwrap();
            return (name.to_string(), false);
        }
        let hash = template_hash(&template);
        let name = format!("{}-{hash}", d["metadata"]["name"].as_str().unwrap());
        let mut t = template.clone();
        t["metadata"]["labels"]["pod-template-hash"] = hash.clone().into();
        let mut selector = d["spec"]["selector"].clone();
        selector["matchLabels"]["pod-template-hash"] = hash.into();
        let want = int(&d["spec"]["replicas"]);
        let surge = scaled(
            &d["spec"]["strategy"]["rollingUpdate"]["maxSurge"],
            want,
            true,
        );
        let uid = self.uid();
        // `SetNewReplicaSetAnnotations`: the Deployment's own annotations (change-cause…),
        // less kubectl's and the controller's, then the controller's.
        let mut annotations = d["metadata"]["annotations"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        annotations.retain(|k, _| {
            k != "kubectl.kubernetes.io/last-applied-configuration"
                && !k.starts_with("deployment.kubernetes.io/")
        });
        annotations.insert(
            "deployment.kubernetes.io/desired-replicas".into(),
            want.to_string().into(),
        );
        annotations.insert(
            "deployment.kubernetes.io/max-replicas".into(),
            (want + surge).to_string().into(),
        );
        annotations.insert(
            "deployment.kubernetes.io/revision".into(),
            (newest + 1).to_string().into(),
        );
        let mut rs = json!({
            "metadata": {
                "name": name, "namespace": NAMESPACE, "uid": uid, "generation": 1,
                "creationTimestamp": now(), "labels": t["metadata"]["labels"].clone(),
                "annotations": annotations,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                    "name": d["metadata"]["name"].clone(), "uid": d["metadata"]["uid"].clone(),
                    "controller": true, "blockOwnerDeletion": true}],
            },
            "spec": {"replicas": 0, "selector": selector, "template": t},
            "status": {"replicas": 0, "observedGeneration": 1},
        });
        self.stamp(&mut rs);
        self.replica_sets.push(rs);
        (name, true)
    }

    fn pods_of(&self, rs: &str) -> impl Iterator<Item = &Value> {
        let rs = rs.to_string();
        self.pods.iter().filter(move |p| owner_name(p) == rs)
    }

    fn create_pod(&mut self, rs_name: &str) {
        let rs = self
            .replica_sets
            .iter()
            .find(|r| r["metadata"]["name"] == rs_name)
            .unwrap()
            .clone();
        self.serial += 1;
        let suffix = safe_encode(&format!("{:05}", self.serial * 7 + 3));
        let uid = self.uid();
        let mut spec: k8s_openapi::api::core::v1::PodSpec =
            serde_json::from_value(rs["spec"]["template"]["spec"].clone()).unwrap();
        defaults::pod_spec(&mut spec);
        let mut spec = serde_json::to_value(&spec).unwrap();
        // What the pod's admission and the scheduler add.
        spec["enableServiceLinks"] = true.into();
        spec["serviceAccountName"] = "default".into();
        spec["serviceAccount"] = "default".into();
        spec["nodeName"] = "staging-node-1".into();
        spec["priority"] = 0.into();
        spec["preemptionPolicy"] = "PreemptLowerPriority".into();
        spec["tolerations"] = json!([
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
        ]);
        let containers: Vec<Value> = spec["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": false,
                           "restartCount": 0, "started": false,
                           "state": {"waiting": {"reason": "ContainerCreating"}}})
            })
            .collect();
        let mut pod = json!({
            "metadata": {
                "name": format!("{rs_name}-{suffix}"), "namespace": NAMESPACE, "uid": uid,
                "creationTimestamp": now(), "generateName": format!("{rs_name}-"),
                "labels": rs["spec"]["template"]["metadata"]["labels"].clone(),
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs_name,
                    "uid": rs["metadata"]["uid"].clone(), "controller": true, "blockOwnerDeletion": true}],
            },
            "spec": spec,
            "status": {"phase": "Pending", "hostIP": "10.0.0.11",
                       "podIP": format!("10.244.0.{}", self.serial % 250 + 2), "startTime": now(),
                       "qosClass": "Burstable",
                       "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": now()},
                                      {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "lastTransitionTime": now()}],
                       "containerStatuses": containers},
        });
        self.stamp(&mut pod);
        self.pods.push(pod);
    }

    /// The pod running: ready, each container started with its own container ID and the
    /// image's digest (the same image, the same digest).
    fn make_ready(&mut self, i: usize) {
        self.serial += 1;
        let serial = self.serial;
        let mut pod = self.pods[i].clone();
        pod["status"]["phase"] = "Running".into();
        pod["status"]["conditions"] = json!([
            {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": now()},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now()},
            {"type": "Ready", "status": "True", "lastTransitionTime": now()},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now()},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now()}
        ]);
        for (k, c) in pod["status"]["containerStatuses"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .enumerate()
        {
            let image = c["image"].as_str().unwrap_or("").to_string();
            let repo = image.rsplit_once(':').map_or(image.as_str(), |x| x.0);
            let digest = format!("{:08x}", fnv32a(image.as_bytes())).repeat(8);
            let id = format!(
                "{:016x}",
                fnv32a(format!("{serial}/{k}").as_bytes()) as u64 * 0x9e37_79b9
            )
            .repeat(4);
            c["imageID"] = format!("{repo}@sha256:{digest}").into();
            c["containerID"] = format!("containerd://{id}").into();
            c["ready"] = true.into();
            c["started"] = true.into();
            c["state"] = json!({"running": {"startedAt": now()}});
        }
        self.stamp(&mut pod);
        self.pods[i] = pod;
    }

    /// One step of the Deployment controller and the ReplicaSet controller and kubelet
    /// behind it. Returns whether anything changed.
    fn reconcile(&mut self) -> bool {
        let Some(d) = self.deployment.clone() else {
            return false;
        };
        if d["spec"]["paused"] == true {
            return self.paused(&d);
        }
        let (new_rs, created) = self.new_replica_set(&d);
        let generation = int(&d["metadata"]["generation"]);
        if int(&d["status"]["observedGeneration"]) < generation {
            let revision = self
                .replica_sets
                .iter()
                .find(|r| r["metadata"]["name"] == new_rs)
                .map(|r| r["metadata"]["annotations"]["deployment.kubernetes.io/revision"].clone())
                .unwrap();
            let dd = self.deployment.as_mut().unwrap();
            dd["status"]["observedGeneration"] = generation.into();
            dd["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = revision;
            // `getNewReplicaSet`: a created ReplicaSet restarts the Progressing condition; an
            // existing one (an undo) sets it only if there is none, so a "deadline
            // exceeded" from the rollout before stands until this one progresses.
            if created {
                let msg = format!("Created new replica set \"{new_rs}\"");
                self.set_progressing("True", "NewReplicaSetCreated", &msg, true);
            } else if self.progressing().is_null() {
                let msg = format!("Found new replica set \"{new_rs}\"");
                self.set_progressing("True", "FoundNewReplicaSet", &msg, true);
            }
            self.refresh_status(&new_rs);
            self.record_deployment("MODIFIED");
            return true;
        }
        let before = d["status"].clone();
        let acted = self.step(&d, &new_rs);
        let complete = self.refresh_status(&new_rs)
            && (self.knobs.keep_terminating || self.pods.iter().all(|p| !terminating(p)));
        self.rollout_condition(&d, &before, &new_rs, complete);
        let changed = self.deployment.as_ref().unwrap()["status"] != before;
        if changed {
            self.record_deployment("MODIFIED");
        }
        acted || changed
    }

    /// `syncRolloutStatus`: the Progressing condition after a step, from the status before it.
    /// Progress (more updated, ready or available replicas, fewer old ones) renews it; no
    /// progress past the deadline since it was last renewed fails it; a complete rollout says
    /// so once.
    fn rollout_condition(&mut self, d: &Value, before: &Value, new_rs: &str, complete: bool) {
        let now_s = self.deployment.as_ref().unwrap()["status"].clone();
        let cond = self.progressing();
        if int(&now_s["replicas"]) == int(&now_s["updatedReplicas"])
            && cond["reason"] == "NewReplicaSetAvailable"
        {
            return;
        }
        let old = |s: &Value| int(&s["replicas"]) - int(&s["updatedReplicas"]);
        let progressed = ["updatedReplicas", "readyReplicas", "availableReplicas"]
            .iter()
            .any(|k| int(&now_s[*k]) > int(&before[*k]))
            || old(&now_s) < old(before);
        if complete {
            let msg = format!("ReplicaSet \"{new_rs}\" has successfully progressed.");
            self.set_progressing("True", "NewReplicaSetAvailable", &msg, false);
        } else if progressed {
            let msg = format!("ReplicaSet \"{new_rs}\" is progressing.");
            self.set_progressing("True", "ReplicaSetUpdated", &msg, true);
        } else if cond["reason"] != "ProgressDeadlineExceeded" {
            let deadline = int(&d["spec"]["progressDeadlineSeconds"]);
            let last =
                chrono::DateTime::parse_from_rfc3339(cond["lastUpdateTime"].as_str().unwrap_or(""))
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .unwrap_or_else(|_| chrono::Utc::now());
            if (chrono::Utc::now() - last).num_seconds() > deadline {
                let msg = format!("ReplicaSet \"{new_rs}\" has timed out progressing.");
                self.set_progressing("False", "ProgressDeadlineExceeded", &msg, false);
            }
        }
    }

    /// A paused Deployment: its generation observed and the pause said, nothing rolled out
    /// (`checkPausedConditions`).
    fn paused(&mut self, d: &Value) -> bool {
        let generation = int(&d["metadata"]["generation"]);
        let observed = int(&d["status"]["observedGeneration"]) >= generation;
        if observed && self.progressing()["reason"] == "DeploymentPaused" {
            return false;
        }
        self.deployment.as_mut().unwrap()["status"]["observedGeneration"] = generation.into();
        self.set_progressing("Unknown", "DeploymentPaused", "Deployment is paused", false);
        self.record_deployment("MODIFIED");
        true
    }

    fn progressing(&self) -> Value {
        self.deployment.as_ref().unwrap()["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Progressing").cloned())
            .unwrap_or(Value::Null)
    }

    /// One action of the rollout, in the controllers' order: a retired pod removed, a new
    /// pod made ready, a new pod created within the surge, an old pod retired within the
    /// unavailability allowed.
    fn step(&mut self, d: &Value, new_rs: &str) -> bool {
        let want = int(&d["spec"]["replicas"]);
        let ru = &d["spec"]["strategy"]["rollingUpdate"];
        let surge = scaled(&ru["maxSurge"], want, true);
        let unavailable = scaled(&ru["maxUnavailable"], want, false);
        if !self.knobs.keep_terminating {
            if let Some(i) = self.pods.iter().position(terminating) {
                self.pods.remove(i);
                self.bump();
                return true;
            }
        }
        if self.knobs.pods_become_ready {
            if let Some(i) = self
                .pods
                .iter()
                .position(|p| owner_name(p) == new_rs && !pod_ready(p))
            {
                self.make_ready(i);
                return true;
            }
        }
        // Terminating pods are no longer the ReplicaSets' (they count as neither).
        let active = |p: &&Value| !terminating(p);
        let live = self.pods.iter().filter(active).count() as i64;
        let new_count = self.pods_of(new_rs).filter(active).count() as i64;
        let ready = self
            .pods
            .iter()
            .filter(active)
            .filter(|p| pod_ready(p))
            .count() as i64;
        if new_count < want && live < want + surge {
            self.scale(new_rs, new_count + 1);
            self.create_pod(new_rs);
            return true;
        }
        let old = self
            .pods
            .iter()
            .position(|p| owner_name(p) != new_rs && !terminating(p));
        if let Some(i) = old {
            if ready > want - unavailable || !pod_ready(&self.pods[i]) {
                let rs = owner_name(&self.pods[i]);
                let left = self.pods_of(&rs).filter(active).count() as i64 - 1;
                self.scale(&rs, left);
                let mut pod = self.pods[i].clone();
                pod["metadata"]["deletionTimestamp"] = now().into();
                pod["metadata"]["deletionGracePeriodSeconds"] = 30.into();
                self.stamp(&mut pod);
                self.pods[i] = pod;
                return true;
            }
        }
        false
    }

    fn scale(&mut self, rs: &str, replicas: i64) {
        if let Some(i) = self
            .replica_sets
            .iter()
            .position(|r| r["metadata"]["name"] == rs)
        {
            let mut r = self.replica_sets[i].clone();
            r["spec"]["replicas"] = replicas.into();
            r["metadata"]["generation"] = (int(&r["metadata"]["generation"]) + 1).into();
            self.stamp(&mut r);
            self.replica_sets[i] = r;
        }
    }

    /// The ReplicaSets' and the Deployment's status counted from the pods, as the
    /// controllers count them; returns whether the rollout is complete.
    fn refresh_status(&mut self, new_rs: &str) -> bool {
        for i in 0..self.replica_sets.len() {
            let name = self.replica_sets[i]["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_string();
            let live = self.pods_of(&name).filter(|p| !terminating(p)).count();
            let ready = self
                .pods_of(&name)
                .filter(|p| !terminating(p) && pod_ready(p))
                .count();
            let rs = &mut self.replica_sets[i];
            rs["status"] = json!({"replicas": live, "fullyLabeledReplicas": live,
                                  "readyReplicas": ready, "availableReplicas": ready,
                                  "observedGeneration": rs["metadata"]["generation"].clone()});
        }
        let d = self.deployment.as_ref().unwrap();
        let want = int(&d["spec"]["replicas"]);
        let unavailable_ok = scaled(
            &d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
            want,
            false,
        );
        let live: Vec<&Value> = self.pods.iter().filter(|p| !terminating(p)).collect();
        let updated = live.iter().filter(|p| owner_name(p) == new_rs).count() as i64;
        let ready = live.iter().filter(|p| pod_ready(p)).count() as i64;
        let total = live.len() as i64;
        let available = ready >= want - unavailable_ok;
        let mut conditions: Vec<Value> = d["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        // The Available condition changes (and its times with it) only when it flips.
        let flag = if available { "True" } else { "False" };
        if !conditions
            .iter()
            .any(|c| c["type"] == "Available" && c["status"] == flag)
        {
            conditions.retain(|c| c["type"] != "Available");
            conditions.insert(0, json!({"type": "Available", "status": flag,
                "reason": if available {"MinimumReplicasAvailable"} else {"MinimumReplicasUnavailable"},
                "message": if available {"Deployment has minimum availability."} else {"Deployment does not have minimum availability."},
                "lastUpdateTime": now(), "lastTransitionTime": now()}));
        }
        let mut s = json!({"observedGeneration": d["status"]["observedGeneration"].clone(),
            "replicas": total, "updatedReplicas": updated, "readyReplicas": ready,
            "availableReplicas": ready, "conditions": conditions});
        // `unavailableReplicas`: the desired replicas (or all there are) not available.
        let unavailable = total.max(want) - ready;
        if unavailable > 0 {
            s["unavailableReplicas"] = unavailable.into();
        }
        let complete = updated == want && total == want && ready == want;
        self.deployment.as_mut().unwrap()["status"] = s;
        complete
    }

    /// `SetDeploymentCondition`: the same status and reason is left as it is unless `renew`
    /// (progress renews its lastUpdateTime); the transition time kept while the status holds.
    fn set_progressing(&mut self, status: &str, reason: &str, message: &str, renew: bool) {
        let current = self.progressing();
        if !renew && current["status"] == status && current["reason"] == reason {
            return;
        }
        let since = if current["status"] == status {
            current["lastTransitionTime"].clone()
        } else {
            now().into()
        };
        let d = self.deployment.as_mut().unwrap();
        let mut conditions: Vec<Value> = d["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        conditions.retain(|c| c["type"] != "Progressing");
        conditions.push(
            json!({"type": "Progressing", "status": status, "reason": reason,
            "message": message, "lastUpdateTime": now(), "lastTransitionTime": since}),
        );
        d["status"]["conditions"] = conditions.into();
    }
}

/// A JSON merge patch treats null as "remove"; an applied object's nulls mean "not set".
fn strip_nulls(mut v: Value) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.retain(|_, x| !x.is_null());
        for x in m.values_mut() {
            *x = strip_nulls(std::mem::take(x));
        }
    }
    v
}

/// A strategic merge as the API server applies it to a pod template: maps merge key by key,
/// and the lists Kubernetes merges by `name` (containers, env, volumes, volumeMounts) keep
/// the entries the patch leaves out.
pub fn strategic_merge(doc: &mut Value, patch: &Value) {
    match (doc, patch) {
        (Value::Object(d), Value::Object(p)) => {
            for (k, v) in p {
                strategic_merge(d.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (Value::Array(d), Value::Array(p)) if p.iter().all(|e| e.get("name").is_some()) => {
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

fn controller(world: std::sync::Weak<(Mutex<World>, Condvar)>) {
    loop {
        let Some(shared) = world.upgrade() else {
            return;
        };
        let step = {
            let mut w = shared.0.lock().unwrap();
            if w.reconcile() {
                shared.1.notify_all();
            }
            w.knobs.step
        };
        drop(shared);
        std::thread::sleep(step);
    }
}

fn query(target: &str) -> BTreeMap<String, String> {
    let q = target.split_once('?').map_or("", |x| x.1);
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

fn matches_labels(o: &Value, selector: Option<&String>) -> bool {
    selector.is_none_or(|s| {
        s.split(',').filter(|t| !t.is_empty()).all(|term| {
            let (k, v) = term.split_once('=').unwrap_or((term, ""));
            o["metadata"]["labels"][k] == v
        })
    })
}

/// A list as the API server sends it: the collection's resourceVersion, items without their
/// own kind and apiVersion.
fn list(kind: &str, api_version: &str, rv: u64, mut items: Vec<Value>) -> String {
    for i in &mut items {
        if let Some(o) = i.as_object_mut() {
            o.remove("kind");
            o.remove("apiVersion");
        }
    }
    json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": rv.to_string()},
           "items": items})
    .to_string()
}

enum Answer {
    Body(u16, String),
    Watch(u64, Duration, bool),
    Hang,
}

fn route(w: &mut World, method: &str, target: &str, head: &str, body: &str) -> Answer {
    let path = target.split('?').next().unwrap_or("");
    let q = query(target);
    if let Some(f) = w
        .knobs
        .faults
        .iter_mut()
        .find(|f| f.0 == method && target.contains(&f.1) && f.2 > 0)
    {
        f.2 -= 1;
        return if f.3 == 0 {
            Answer::Hang
        } else {
            Answer::Body(f.3, f.4.clone())
        };
    }
    let deployments = format!("/apis/apps/v1/namespaces/{NAMESPACE}/deployments");
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    let name = w
        .deployment
        .as_ref()
        .map(|d| d["metadata"]["name"].as_str().unwrap().to_string());
    let not_found = || Answer::Body(404, status(404, "NotFound", "deployments.apps not found"));
    match (method, path) {
        ("GET", p)
            if p == deployments && q.get("watch").is_some_and(|v| v == "true" || v == "1") =>
        {
            let from: u64 = q
                .get("resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let timeout = q
                .get("timeoutSeconds")
                .and_then(|v| v.parse().ok())
                .map_or(w.knobs.watch_max, Duration::from_secs)
                .min(w.knobs.watch_max);
            Answer::Watch(
                from,
                timeout,
                q.get("allowWatchBookmarks").is_some_and(|v| v == "true"),
            )
        }
        ("GET", p) if p == deployments => {
            let wanted = q
                .get("fieldSelector")
                .and_then(|f| f.strip_prefix("metadata.name=").map(str::to_string));
            let items: Vec<Value> = w
                .deployment
                .iter()
                .filter(|d| {
                    wanted
                        .as_ref()
                        .is_none_or(|n| d["metadata"]["name"] == n.as_str())
                })
                .cloned()
                .collect();
            Answer::Body(200, list("DeploymentList", "apps/v1", w.rv, items))
        }
        ("GET", p) if p.starts_with(&format!("{deployments}/")) => match &w.deployment {
            Some(d) if Some(&p[deployments.len() + 1..]) == name.as_deref() => {
                Answer::Body(200, d.to_string())
            }
            _ => not_found(),
        },
        ("PATCH", p) if p.starts_with(&format!("{deployments}/")) => {
            if content_type.starts_with("application/apply-patch") {
                let manager = q.get("fieldManager").cloned().unwrap_or_default();
                if manager.is_empty() {
                    return Answer::Body(422, status(422, "Invalid", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"));
                }
                let Ok(applied) = serde_json::from_str::<Value>(body) else {
                    return Answer::Body(
                        400,
                        status(400, "BadRequest", "the apply body is not JSON"),
                    );
                };
                return match w.apply(&applied, &manager) {
                    Ok((code, d)) => Answer::Body(code, d.to_string()),
                    Err(e) => Answer::Body(422, status(422, "Invalid", &e)),
                };
            }
            if Some(&p[deployments.len() + 1..]) != name.as_deref() {
                return not_found();
            }
            let (code, text) = w.patch(&content_type, body);
            Answer::Body(code, text)
        }
        ("GET", p) if p == format!("/apis/apps/v1/namespaces/{NAMESPACE}/replicasets") => {
            let items = w
                .replica_sets
                .iter()
                .filter(|r| matches_labels(r, q.get("labelSelector")))
                .cloned()
                .collect();
            Answer::Body(200, list("ReplicaSetList", "apps/v1", w.rv, items))
        }
        ("GET", p) if p == format!("/api/v1/namespaces/{NAMESPACE}/pods") => {
            let items = w
                .pods
                .iter()
                .filter(|r| matches_labels(r, q.get("labelSelector")))
                .cloned()
                .collect();
            Answer::Body(200, list("PodList", "v1", w.rv, items))
        }
        _ => Answer::Body(
            404,
            status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        ),
    }
}

fn serve(mut conn: std::net::TcpStream, shared: &Shared, seen: &Mutex<Vec<Exchange>>) {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
    loop {
        let Some((head, body)) = super::read_request(&mut conn) else {
            return;
        };
        let first = head.lines().next().unwrap_or("").to_string();
        let mut parts = first.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let answer = route(
            &mut shared.0.lock().unwrap(),
            &method,
            &target,
            &head,
            &body,
        );
        shared.1.notify_all();
        let code = match &answer {
            Answer::Hang => 0,
            Answer::Body(code, _) => *code,
            Answer::Watch(..) => 200,
        };
        seen.lock().unwrap().push(Exchange {
            method,
            target,
            head,
            body,
            code,
        });
        let sent = match answer {
            Answer::Hang => return,
            Answer::Body(code, text) => {
                let reason = match code {
                    200 => "OK",
                    201 => "Created",
                    _ => "Error",
                };
                write!(conn, "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}", text.len())
            }
            Answer::Watch(from, timeout, bookmarks) => {
                stream_watch(&mut conn, shared, from, timeout, bookmarks)
            }
        };
        if sent.is_err() {
            return;
        }
    }
}

fn chunk(conn: &mut std::net::TcpStream, line: &str) -> std::io::Result<()> {
    write!(conn, "{:x}\r\n{line}\n\r\n", line.len() + 1)
}

/// A watch as the API server streams it: one JSON event per line in chunks, from `from`,
/// until `timeout`; a bookmark at the end when asked for; 410 Gone for a version compacted
/// away (`Knobs::expire_watches`).
fn stream_watch(
    conn: &mut std::net::TcpStream,
    shared: &Shared,
    from: u64,
    timeout: Duration,
    bookmarks: bool,
) -> std::io::Result<()> {
    write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )?;
    let expired = {
        let mut w = shared.0.lock().unwrap();
        if w.knobs.expire_watches > 0 {
            w.knobs.expire_watches = w.knobs.expire_watches.saturating_sub(1);
            Some(w.rv)
        } else {
            None
        }
    };
    if let Some(now_rv) = expired {
        let gone: Value = serde_json::from_str(&status(
            410,
            "Expired",
            &format!("too old resource version: {from} ({now_rv})"),
        ))
        .unwrap();
        chunk(conn, &json!({"type": "ERROR", "object": gone}).to_string())?;
        return write!(conn, "0\r\n\r\n");
    }
    let started = Instant::now();
    let mut sent = from;
    loop {
        let (events, rv) = {
            let w = shared.0.lock().unwrap();
            let w = if w.history.iter().all(|h| h.0 <= sent) {
                shared
                    .1
                    .wait_timeout(w, Duration::from_millis(100))
                    .unwrap()
                    .0
            } else {
                w
            };
            let events: Vec<(u64, &str, Value)> =
                w.history.iter().filter(|h| h.0 > sent).cloned().collect();
            (events, w.rv)
        };
        for (rv, kind, object) in events {
            chunk(conn, &json!({"type": kind, "object": object}).to_string())?;
            sent = rv;
        }
        if started.elapsed() >= timeout {
            if bookmarks {
                let b = json!({"type": "BOOKMARK", "object": {"kind": "Deployment", "apiVersion": "apps/v1",
                    "metadata": {"resourceVersion": rv.to_string(),
                                 "annotations": {"k8s.io/initial-events-end": "false"}}}});
                chunk(conn, &b.to_string())?;
            }
            return write!(conn, "0\r\n\r\n");
        }
    }
}

/// The API server's defaulting, on k8s-openapi's types (the fields dhi-stage's manifest and
/// the stand-in's objects use), from kubernetes/kubernetes `pkg/apis/apps/v1/defaults.go`
/// (`SetDefaults_Deployment`) and `pkg/apis/core/v1/defaults.go` (`SetDefaults_PodSpec`,
/// `_Container`, `_Probe`, `_HTTPGetAction`, `_Volume`, and the generated `ContainerPort`
/// protocol).
pub mod defaults {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{Container, PodSecurityContext, PodSpec, Probe};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    pub fn deployment(d: &mut Deployment) {
        let spec = d.spec.get_or_insert_with(Default::default);
        spec.replicas.get_or_insert(1);
        let strategy = spec.strategy.get_or_insert_with(Default::default);
        let kind = strategy.type_.get_or_insert_with(|| "RollingUpdate".into());
        if kind == "RollingUpdate" {
            let ru = strategy.rolling_update.get_or_insert_with(Default::default);
            ru.max_unavailable
                .get_or_insert(IntOrString::String("25%".into()));
            ru.max_surge
                .get_or_insert(IntOrString::String("25%".into()));
        }
        spec.revision_history_limit.get_or_insert(10);
        spec.progress_deadline_seconds.get_or_insert(600);
        if let Some(p) = spec.template.spec.as_mut() {
            pod_spec(p);
        }
    }

    pub fn pod_spec(p: &mut PodSpec) {
        p.dns_policy.get_or_insert_with(|| "ClusterFirst".into());
        p.restart_policy.get_or_insert_with(|| "Always".into());
        p.security_context
            .get_or_insert_with(PodSecurityContext::default);
        p.termination_grace_period_seconds.get_or_insert(30);
        p.scheduler_name
            .get_or_insert_with(|| "default-scheduler".into());
        p.containers.iter_mut().for_each(container);
        for v in p.volumes.iter_mut().flatten() {
            if v.empty_dir.is_none() && v.config_map.is_none() && v.secret.is_none() {
                v.empty_dir = Some(Default::default());
            }
        }
    }

    fn container(c: &mut Container) {
        let image = c.image.clone().unwrap_or_default();
        let last = image.rsplit('/').next().unwrap_or("");
        let tag = last.split_once(':').map(|x| x.1);
        c.image_pull_policy.get_or_insert_with(|| {
            if matches!(tag, None | Some("latest")) && !image.contains('@') {
                "Always".into()
            } else {
                "IfNotPresent".into()
            }
        });
        c.termination_message_path
            .get_or_insert_with(|| "/dev/termination-log".into());
        c.termination_message_policy
            .get_or_insert_with(|| "File".into());
        for port in c.ports.iter_mut().flatten() {
            port.protocol.get_or_insert_with(|| "TCP".into());
        }
        for p in [
            &mut c.liveness_probe,
            &mut c.readiness_probe,
            &mut c.startup_probe,
        ]
        .into_iter()
        .flatten()
        {
            probe(p);
        }
    }

    fn probe(p: &mut Probe) {
        p.timeout_seconds.get_or_insert(1);
        p.period_seconds.get_or_insert(10);
        p.success_threshold.get_or_insert(1);
        p.failure_threshold.get_or_insert(3);
        if let Some(h) = p.http_get.as_mut() {
            h.path.get_or_insert_with(|| "/".into());
            h.scheme.get_or_insert_with(|| "HTTP".into());
        }
    }
}
