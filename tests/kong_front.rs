//! The switch strategy with Kong as the front. No Kong can run here, so its Admin API is a
//! stand-in on loopback that answers in the documented shapes of Kong 3.x (Admin API
//! reference: "Upstream Object" `PUT /upstreams/{name}`, "Target Object" `GET|POST
//! /upstreams/{name}/targets`, `PATCH /upstreams/{name}/targets/{target}`, and "Show Upstream
//! Health for Node" `GET /upstreams/{name}/health` with `data[].health` HEALTHY/UNHEALTHY) and
//! applies them with their semantics: a target's weight is what it routes, and its health is
//! an active check of the target's health path, as Kong's active health checker makes it.
//! The test checks the exchanges a real Kong would see, in order, and the waits between them.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

#[derive(Default)]
struct KongState {
    upstream: Option<Value>,
    /// (target, weight)
    targets: Vec<(String, u64)>,
    /// (ms since start, method, path, body)
    seen: Vec<(u128, String, String, Value)>,
}

struct FakeKong {
    port: u16,
    state: Arc<Mutex<KongState>>,
}

fn healthy(target: &str) -> bool {
    http_get(&format!("http://{target}/health")).is_some()
}

fn target_obj(t: &str, w: u64) -> Value {
    json!({"id": format!("id-{t}"), "target": t, "weight": w, "upstream": {"id": "up-1"}, "created_at": 1733222400.0, "updated_at": 1733222400.0, "tags": null})
}

fn answer(st: &mut KongState, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        ("PUT", ["upstreams", name]) => {
            let up = json!({"id": "up-1", "name": name, "algorithm": "round-robin", "healthchecks": body["healthchecks"].clone()});
            st.upstream = Some(up.clone());
            (200, up)
        }
        (_, ["upstreams", ..]) if st.upstream.is_none() => (404, json!({"message": "Not found"})),
        ("GET", ["upstreams", _, "targets"]) => (
            200,
            json!({"data": st.targets.iter().map(|(t, w)| target_obj(t, *w)).collect::<Vec<_>>(), "next": null}),
        ),
        ("POST", ["upstreams", _, "targets"]) => {
            let t = body["target"].as_str().unwrap().to_string();
            let w = body["weight"].as_u64().unwrap_or(100);
            st.targets.push((t.clone(), w));
            (201, target_obj(&t, w))
        }
        ("PATCH", ["upstreams", _, "targets", t]) => {
            match st.targets.iter_mut().find(|(x, _)| x == t) {
                Some(slot) => {
                    slot.1 = body["weight"].as_u64().unwrap();
                    (200, target_obj(t, slot.1))
                }
                None => (404, json!({"message": "Not found"})),
            }
        }
        ("GET", ["upstreams", _, "health"]) => (
            200,
            json!({"node_id": "node-1", "data": st.targets.iter().map(|(t, w)| {
                let mut o = target_obj(t, *w);
                o["health"] = json!(if healthy(t) { "HEALTHY" } else { "UNHEALTHY" });
                o
            }).collect::<Vec<_>>(), "next": null}),
        ),
        _ => (404, json!({"message": "Not found"})),
    }
}

impl FakeKong {
    fn start() -> FakeKong {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(KongState::default()));
        let (s, started) = (state.clone(), Instant::now());
        std::thread::spawn(move || {
            for mut conn in l.incoming().flatten() {
                conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
                let Some((head, body)) = read_request(&mut conn) else {
                    continue;
                };
                let line = head.lines().next().unwrap_or("").to_string();
                let mut it = line.split(' ');
                let (method, path) = (
                    it.next().unwrap_or("").to_string(),
                    it.next().unwrap_or("").to_string(),
                );
                let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                let (status, out) = {
                    let mut st = s.lock().unwrap();
                    st.seen.push((
                        started.elapsed().as_millis(),
                        method.clone(),
                        path.clone(),
                        body.clone(),
                    ));
                    answer(&mut st, &method, &path, &body)
                };
                let text = out.to_string();
                let _ = write!(conn, "HTTP/1.1 {status} X\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}", text.len());
            }
        });
        FakeKong { port, state }
    }

    /// The weight changes, in order: (ms, target, weight).
    fn patches(&self) -> Vec<(u128, String, u64)> {
        self.state
            .lock()
            .unwrap()
            .seen
            .iter()
            .filter(|(_, m, _, _)| m == "PATCH")
            .map(|(t, _, p, b)| {
                (
                    *t,
                    p.rsplit('/').next().unwrap().to_string(),
                    b["weight"].as_u64().unwrap(),
                )
            })
            .collect()
    }
}

#[test]
fn kong_switches_by_target_weight_and_waits_out_its_propagation() {
    let kong = FakeKong::start();
    let stage = Stage::new();
    let (a, b) = (free_port(), free_port());
    let cfg = stage.write_config(|t| {
        t.replace("strategy = \"recreate\"", "strategy = \"switch\"")
            .replace("front = \"haproxy\"", "front = \"kong\"")
            .replace("slots = [3101, 3102]", &format!("slots = [{a}, {b}]"))
            .replace(
                "kong_admin_url = \"http://127.0.0.1:8001\"",
                &format!("kong_admin_url = \"http://127.0.0.1:{}\"", kong.port),
            )
            .replace("kong_propagation = \"5s\"", "kong_propagation = \"1s\"")
            .replace("drain_timeout = \"30s\"", "drain_timeout = \"1s\"")
    });
    let c = path_str(&cfg);
    let up = stage.run(&["--config", c, "front", "up", "--output", "json"]);
    assert_eq!(up.code, 0, "{}", up.all());
    {
        let st = kong.state.lock().unwrap();
        let u = st.upstream.as_ref().expect("the upstream was created");
        assert_eq!(u["healthchecks"]["active"]["http_path"], "/health", "{u}");
        assert_eq!(
            st.targets,
            vec![(format!("127.0.0.1:{a}"), 0), (format!("127.0.0.1:{b}"), 0)]
        );
    }
    let (ta, tb) = (format!("127.0.0.1:{a}"), format!("127.0.0.1:{b}"));
    assert_eq!(stage.deploy(&good_image()).config(&cfg).run().code, 0);
    let v2 = testsvc_image("dhi-test/authsvc:v2", &["FAULT_LATENCY_MS=1"]);
    let d = stage.deploy(&v2).config(&cfg).run();
    assert_eq!(d.code, 0, "{}", d.all());
    let r = stage
        .rollback()
        .config(&cfg)
        .arg("--output")
        .arg("json")
        .run();
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        r.json()["switch"]["warm"],
        true,
        "a switch back to the warm slot: {}",
        r.all()
    );
    let p = kong.patches();
    let seq: Vec<(String, u64)> = p.iter().map(|(_, t, w)| (t.clone(), *w)).collect();
    assert_eq!(
        seq,
        vec![
            (ta.clone(), 100), // deploy v1: slot 1 takes traffic
            (tb.clone(), 100), // deploy v2: slot 2 first...
            (ta.clone(), 0),   // ...then slot 1 off, after the propagation
            (ta.clone(), 100), // rollback: the warm slot 1 back...
            (tb.clone(), 0),   // ...then slot 2 off
        ],
        "{p:?}"
    );
    for pair in [(1, 2), (3, 4)] {
        let waited = p[pair.1].0 - p[pair.0].0;
        assert!(
            waited >= 1000,
            "Kong's propagation (1 s here) is waited out before draining: {waited} ms"
        );
    }
    assert_eq!(stage.inspect()["Config"]["Image"], good_image().as_str());
    println!(
        "kong: {} Admin API exchanges; switches waited {} ms and {} ms for propagation",
        kong.state.lock().unwrap().seen.len(),
        p[2].0 - p[1].0,
        p[4].0 - p[3].0
    );
}
