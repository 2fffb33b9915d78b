//! A Kubernetes API server stand-in on loopback that replays recorded exchanges: each route
//! (method and path) answers its recorded responses in order (the last one repeats), and
//! every request is kept (method, path with query, headers, body) for the test to check what
//! the client sent. The client under test is kube's real one, found through KUBECONFIG.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub struct Exchange {
    pub method: String,
    pub target: String,
    pub head: String,
    pub body: String,
}

type Routes = Vec<(String, String, VecDeque<(u16, String)>)>;

/// A route answered by code (a stand-in that keeps state): (head, body) -> (status, body).
pub type Handler = Arc<dyn Fn(&str, &str) -> (u16, String) + Send + Sync>;
type Handlers = Vec<(String, String, Handler)>;

pub struct FakeApi {
    pub port: u16,
    routes: Arc<Mutex<Routes>>,
    handlers: Arc<Mutex<Handlers>>,
    pub seen: Arc<Mutex<Vec<Exchange>>>,
}

pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(super::root().join("tests/fixtures/kube").join(name)).unwrap()
}

impl FakeApi {
    pub fn start() -> FakeApi {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let routes: Arc<Mutex<Routes>> = Arc::default();
        let handlers: Arc<Mutex<Handlers>> = Arc::default();
        let seen: Arc<Mutex<Vec<Exchange>>> = Arc::default();
        let (r2, h2, s2) = (routes.clone(), handlers.clone(), seen.clone());
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let (r3, h3, s3) = (r2.clone(), h2.clone(), s2.clone());
                std::thread::spawn(move || serve(conn, &r3, &h3, &s3));
            }
        });
        FakeApi {
            port,
            routes,
            handlers,
            seen,
        }
    }

    /// `method` requests to `path` are answered by `f` (checked before recorded routes).
    pub fn handle(&self, method: &str, path: &str, f: Handler) {
        self.handlers
            .lock()
            .unwrap()
            .push((method.to_string(), path.to_string(), f));
    }

    /// `method` requests whose path (without query) is `path` answer `responses` in order.
    pub fn route(&self, method: &str, path: &str, responses: &[(u16, String)]) {
        self.routes.lock().unwrap().push((
            method.to_string(),
            path.to_string(),
            responses.iter().cloned().collect(),
        ));
    }

    pub fn requests(&self, method: &str) -> Vec<(String, String, String)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.method == method)
            .map(|e| (e.target.clone(), e.head.clone(), e.body.clone()))
            .collect()
    }

    /// A kubeconfig pointing at this server, with a bearer token.
    pub fn kubeconfig(&self, dir: &Path, token: &str) -> PathBuf {
        let p = dir.join("kubeconfig");
        std::fs::write(
            &p,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{}\nusers:\n- name: ci\n  user:\n    token: {token}\ncontexts:\n- name: staging\n  context:\n    cluster: fake\n    user: ci\n    namespace: staging\ncurrent-context: staging\n",
                self.port
            ),
        )
        .unwrap();
        p
    }
}

fn serve(
    mut conn: std::net::TcpStream,
    routes: &Mutex<Routes>,
    handlers: &Mutex<Handlers>,
    seen: &Mutex<Vec<Exchange>>,
) {
    conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok();
    loop {
        let Some((head, body)) = super::read_request(&mut conn) else {
            return;
        };
        let first = head.lines().next().unwrap_or("").to_string();
        let mut parts = first.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let path = target.split('?').next().unwrap_or("").to_string();
        let handler = handlers
            .lock()
            .unwrap()
            .iter()
            .find(|(m, p, _)| *m == method && *p == path)
            .map(|(_, _, f)| f.clone());
        let answer = handler.map(|f| f(&head, &body)).or_else(|| {
            let mut r = routes.lock().unwrap();
            r.iter_mut()
                .find(|(m, p, _)| *m == method && *p == path)
                .map(|(_, _, q)| {
                    if q.len() > 1 {
                        q.pop_front().unwrap()
                    } else {
                        q.front().cloned().unwrap()
                    }
                })
        });
        seen.lock().unwrap().push(Exchange {
            method,
            target,
            head,
            body,
        });
        let (code, body) = answer.unwrap_or((
            404,
            r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"not recorded","reason":"NotFound","code":404}"#.into(),
        ));
        let reason = if code < 300 { "OK" } else { "Error" };
        let _ = write!(
            conn,
            "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
    }
}
