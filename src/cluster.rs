//! The Kubernetes API as `kubectl` uses it, and nothing more: server-side apply of the
//! Deployment, reading it back, its ReplicaSets and its pods, and setting its pod template
//! (what `kubectl rollout undo` does). Policy-free, like `engine/`: what to apply, when a
//! rollout is done and which revision to go back to are decided in `rollout::kubernetes`.
//! The cluster is found as kubectl finds it (`KUBECONFIG`, `~/.kube/config`, else the
//! in-cluster service account).

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{GetParams, ListParams, ObjectList, Patch, PatchParams, WatchParams};
use kube::core::WatchEvent;
use kube::{Client, Config};
use serde::de::DeserializeOwned;

/// Who owns the fields dhi-stage applies (server-side apply's field manager).
pub const FIELD_MANAGER: &str = "dhi-stage";
/// Every call to the API server ends within this, however slowly its answer drips in
/// (`read_timeout` is per read: it alone lets a server hold a call for ever).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one watch runs before the server ends it and it is resumed from the last
/// resourceVersion: under the 30 s read timeout, so a quiet rollout is a clean end, not a
/// timed-out read.
const WATCH_SECONDS: u32 = 25;
/// An answer larger than this is refused: a Deployment or a list of the Deployment's pods
/// and ReplicaSets is a few hundred KB even at hundreds of replicas.
pub const MAX_BODY: usize = 16 << 20;

pub struct Cluster {
    client: Client,
    namespace: String,
    /// The API server, for messages (userinfo and secret query values masked).
    pub server: String,
    /// How long one call may take in all (a monitor tick bounds its own reading tighter).
    deadline: Duration,
}

impl Cluster {
    pub async fn connect(namespace: &str) -> Result<Cluster> {
        let mut config = tokio::time::timeout(CALL_TIMEOUT, Config::infer())
            .await
            .map_err(|_| anyhow!("reading the Kubernetes configuration took over {}s", CALL_TIMEOUT.as_secs()))?
            .map_err(|e| {
                anyhow!(
                    "no Kubernetes cluster configured ({}); set KUBECONFIG or run inside the cluster",
                    crate::redact::urls(&e.to_string())
                )
            })?;
        remember_credentials(&config);
        config.connect_timeout = Some(Duration::from_secs(10));
        config.read_timeout = Some(CALL_TIMEOUT);
        config.write_timeout = Some(CALL_TIMEOUT);
        let server = crate::redact::urls(&config.cluster_url.to_string());
        let client = Client::try_from(config)
            .with_context(|| format!("cannot build a client for the API server {server}"))?;
        Ok(Cluster {
            client,
            namespace: namespace.to_string(),
            server,
            deadline: CALL_TIMEOUT,
        })
    }

    fn request<K: kube::Resource<DynamicType = ()>>(&self) -> kube::core::Request {
        kube::core::Request::new(K::url_path(&(), Some(&self.namespace)))
    }

    /// Server-side apply, forcing ownership of the fields dhi-stage manages (as
    /// `kubectl apply --server-side --force-conflicts --field-manager dhi-stage`).
    pub async fn apply(&self, d: &Deployment) -> Result<Deployment> {
        let name = d.metadata.name.clone().unwrap_or_default();
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        let doing = format!("applying deployment {name}");
        let req = self
            .request::<Deployment>()
            .patch(&name, &pp, &Patch::Apply(d));
        self.call(&doing, req).await
    }

    pub async fn deployment(&self, name: &str) -> Result<Deployment> {
        let req = self
            .request::<Deployment>()
            .get(name, &GetParams::default());
        self.call(&format!("reading deployment {name}"), req).await
    }

    pub async fn replica_sets(&self, selector: &str) -> Result<Vec<ReplicaSet>> {
        let req = self
            .request::<ReplicaSet>()
            .list(&ListParams::default().labels(selector));
        let list: ObjectList<ReplicaSet> = self
            .call(&format!("listing replica sets {selector}"), req)
            .await?;
        Ok(list.items)
    }

    pub async fn pods(&self, selector: &str) -> Result<Vec<Pod>> {
        let req = self
            .request::<Pod>()
            .list(&ListParams::default().labels(selector));
        let list: ObjectList<Pod> = self.call(&format!("listing pods {selector}"), req).await?;
        Ok(list.items)
    }

    /// `kubectl rollout undo`'s request: a JSON patch (RFC 6902) replacing the pod template
    /// and the annotations (`rollout::kubernetes::undo_patch`), under field manager
    /// `dhi-stage`, which starts a new rollout.
    pub async fn undo(&self, name: &str, json_patch: &serde_json::Value) -> Result<Deployment> {
        let url = format!(
            "{}/{name}?fieldManager={FIELD_MANAGER}",
            <Deployment as kube::Resource>::url_path(&(), Some(&self.namespace))
        );
        let req = http::Request::patch(url)
            .header("Content-Type", "application/json-patch+json")
            .header("Accept", "application/json")
            .body(serde_json::to_vec(json_patch)?)
            .map_err(|e| anyhow!("building the undo request: {e}"));
        let doing = format!("rolling back deployment {name}");
        match req {
            Ok(r) => self.call(&doing, Ok(r)).await,
            Err(e) => Err(e),
        }
    }

    /// kubectl's way of following one object: a list narrowed to its name by a field
    /// selector, whose resourceVersion (the collection's, current even when the Deployment
    /// has not changed for days) is where a watch starts.
    pub async fn list_deployment(&self, name: &str) -> Result<(Option<Deployment>, String)> {
        let req = self
            .request::<Deployment>()
            .list(&ListParams::default().fields(&format!("metadata.name={name}")));
        let list: ObjectList<Deployment> = self
            .call(&format!("reading deployment {name}"), req)
            .await?;
        let rv = list.metadata.resource_version.unwrap_or_default();
        Ok((list.items.into_iter().next(), rv))
    }

    /// A watch on one Deployment from `resource_version` (`?watch=true`), which the server
    /// ends after `WATCH_SECONDS`; `Watch::next` reads its events.
    pub async fn watch_deployment(&self, name: &str, resource_version: &str) -> Result<Watch> {
        let doing = format!("watching deployment {name}");
        let wp = WatchParams::default()
            .fields(&format!("metadata.name={name}"))
            .timeout(WATCH_SECONDS);
        let req = self
            .request::<Deployment>()
            .watch(&wp, resource_version)
            .map_err(|e| anyhow!("{doing}: {e}"))?;
        let res = tokio::time::timeout(self.deadline, self.send(&doing, req))
            .await
            .map_err(|_| self.late(&doing))??;
        Ok(Watch {
            body: res.into_body(),
            buf: Vec::new(),
            doing,
        })
    }

    /// One call: sent, its body read up to `MAX_BODY`, decoded, all within the deadline. A
    /// transient failure (5xx, 429, a reset) is sent again, up to `CALL_ATTEMPTS` times in
    /// all, inside the same deadline: every call dhi-stage makes is idempotent (reads, a
    /// server-side apply of the same object, a JSON patch of `replace`s), so one that reached
    /// the server before the connection broke does no harm sent twice.
    async fn call<T: DeserializeOwned>(
        &self,
        doing: &str,
        req: std::result::Result<http::Request<Vec<u8>>, kube::core::request::Error>,
    ) -> Result<T> {
        let req = req.map_err(|e| anyhow!("{doing}: {e}"))?;
        let exchange = async {
            let (mut pause, mut attempt) = (Duration::from_millis(250), 1);
            loop {
                match self.once(doing, copy(&req)).await {
                    Err(e) if is_transient(&e) && attempt < CALL_ATTEMPTS => {
                        tracing::debug!("{e:#}; sending it again in {pause:?}");
                        tokio::time::sleep(pause).await;
                        pause *= 2;
                        attempt += 1;
                    }
                    r => return r,
                }
            }
        };
        tokio::time::timeout(self.deadline, exchange)
            .await
            .map_err(|_| self.late(doing))?
    }

    async fn once<T: DeserializeOwned>(
        &self,
        doing: &str,
        req: http::Request<Vec<u8>>,
    ) -> Result<T> {
        let res = self.send(doing, req).await?;
        let body = read_bounded(res.into_body(), MAX_BODY)
            .await
            .map_err(|e| said_while(doing, e))?;
        serde_json::from_slice(&body).map_err(|e| {
            anyhow!("{doing}: the API server's answer is not the expected object ({e})")
        })
    }

    /// The request sent with dhi-stage's User-Agent; a refusal read (bounded) into the API
    /// server's own words, marked transient when asking again may help.
    async fn send(
        &self,
        doing: &str,
        mut req: http::Request<Vec<u8>>,
    ) -> Result<http::Response<kube::client::Body>> {
        // Audit logs and managedFields name who called.
        req.headers_mut().insert(
            http::header::USER_AGENT,
            http::HeaderValue::from_static(concat!("dhi-stage/", env!("CARGO_PKG_VERSION"))),
        );
        let res = self
            .client
            .send(req.map(kube::client::Body::from))
            .await
            .map_err(|e| match &e {
                kube::Error::Api(_) => api_error(e, doing),
                // Not an answer at all (reset, refused mid-restart): worth asking again.
                _ => transient(api_error(e, doing)),
            })?;
        let status = res.status();
        if status.is_success() {
            return Ok(res);
        }
        let body = read_bounded(res.into_body(), MAX_BODY)
            .await
            .map_err(|e| said_while(doing, e))?;
        let e = status_error(doing, status.as_u16(), &body);
        if status.as_u16() == 410 {
            return Err(mark(Kind::Gone, e));
        }
        let again = status.is_server_error() || status.as_u16() == 429;
        Err(if again { transient(e) } else { e })
    }

    fn late(&self, doing: &str) -> anyhow::Error {
        transient(anyhow!(
            "{doing}: the API server {} did not answer in full within {}s",
            self.server,
            self.deadline.as_secs_f64()
        ))
    }
}

/// What a watch on one Deployment saw next.
pub enum Seen {
    /// The Deployment as it now is (added or modified); its resourceVersion is where to resume.
    Changed(Box<Deployment>),
    /// Nothing changed up to this resourceVersion (a bookmark).
    Bookmark(String),
    Deleted,
    /// 410 Gone: the version asked for is older than the server keeps; list again.
    Expired(String),
}

/// The events of one watch, newline-delimited JSON as the API server streams them.
pub struct Watch {
    body: kube::client::Body,
    buf: Vec<u8>,
    doing: String,
}

impl Watch {
    /// The next event, or `None` when the server ended the watch. One event over `MAX_BODY`
    /// is refused; a broken stream is transient (resume from the last resourceVersion).
    pub async fn next(&mut self) -> Result<Option<Seen>> {
        use http_body_util::BodyExt;
        loop {
            if let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return self.event(&line).map(Some);
            }
            let Some(frame) = self.body.frame().await else {
                if self.buf.iter().all(u8::is_ascii_whitespace) {
                    return Ok(None);
                }
                let rest = std::mem::take(&mut self.buf);
                return self.event(&rest).map(Some);
            };
            let frame =
                frame.map_err(|e| transient(anyhow!("{}: the watch broke: {e}", self.doing)))?;
            if let Some(data) = frame.data_ref() {
                if self.buf.len() + data.len() > MAX_BODY {
                    return Err(anyhow!(
                        "{}: a watch event is larger than {} MiB; refused",
                        self.doing,
                        MAX_BODY >> 20
                    ));
                }
                self.buf.extend_from_slice(data);
            }
        }
    }

    fn event(&self, line: &[u8]) -> Result<Seen> {
        let event: WatchEvent<Deployment> = serde_json::from_slice(line).map_err(|e| {
            anyhow!(
                "{}: the API server's watch event is not the expected object ({e})",
                self.doing
            )
        })?;
        Ok(match event {
            WatchEvent::Added(d) | WatchEvent::Modified(d) => Seen::Changed(Box::new(d)),
            WatchEvent::Bookmark(b) => Seen::Bookmark(b.metadata.resource_version),
            WatchEvent::Deleted(_) => Seen::Deleted,
            WatchEvent::Error(s) if s.code == 410 => Seen::Expired(s.message),
            WatchEvent::Error(s) => {
                let e = anyhow!(
                    "{}: the API server said {} ({}, HTTP {})",
                    self.doing,
                    s.message,
                    s.reason,
                    s.code
                );
                if s.code >= 500 || s.code == 429 {
                    return Err(transient(e));
                }
                return Err(e);
            }
        })
    }
}

/// How many times one call is sent at most when its failures are transient.
const CALL_ATTEMPTS: u32 = 3;

/// A request again (`http::Request` is not `Clone`): method, URI, headers and body.
fn copy(r: &http::Request<Vec<u8>>) -> http::Request<Vec<u8>> {
    let mut c = http::Request::new(r.body().clone());
    *c.method_mut() = r.method().clone();
    *c.uri_mut() = r.uri().clone();
    *c.version_mut() = r.version();
    *c.headers_mut() = r.headers().clone();
    c
}

/// The kubeconfig's token, password and the server URL's credentials, for `redact::scrub`.
fn remember_credentials(config: &Config) {
    use secrecy::ExposeSecret;
    let a = &config.auth_info;
    let user = a.username.as_deref();
    let mut forms = crate::redact::url_credentials(&config.cluster_url.to_string());
    if let Some(p) = &config.proxy_url {
        forms.extend(crate::redact::url_credentials(&p.to_string()));
    }
    if let Some(t) = &a.token {
        forms.extend(crate::redact::credential_forms(None, t.expose_secret()));
    }
    if let Some(p) = &a.password {
        forms.extend(crate::redact::credential_forms(user, p.expose_secret()));
    }
    crate::redact::remember(forms);
}

/// A reading error prefixed with what was being done, still transient if it was.
fn said_while(doing: &str, e: anyhow::Error) -> anyhow::Error {
    let said = anyhow!("{doing}: {e:#}");
    if is_transient(&e) {
        transient(said)
    } else {
        said
    }
}

/// The body, refused (not cut: a cut object would decode as something else) past `max`. A
/// broken stream is transient; an answer too large is not (it would be as large again).
async fn read_bounded(mut body: kube::client::Body, max: usize) -> Result<Vec<u8>> {
    use http_body_util::BodyExt;
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| transient(anyhow!("reading the answer: {e}")))?;
        if let Some(data) = frame.data_ref() {
            if buf.len() + data.len() > max {
                return Err(anyhow!(
                    "the answer is larger than {} MiB; refused",
                    max >> 20
                ));
            }
            buf.extend_from_slice(data);
        }
    }
    Ok(buf)
}

/// What a failure means to whoever would ask again, carried inside the error.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// Worth asking again: the API server overloaded or restarting (HTTP 429, 5xx), the
    /// connection reset, no answer in time.
    Transient,
    /// HTTP 410 Gone: the resourceVersion asked for is older than the server keeps (a watch
    /// is listed afresh).
    Gone,
}

#[derive(Debug)]
struct Marked(Kind, String);

impl std::fmt::Display for Marked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl std::error::Error for Marked {}

fn mark(kind: Kind, e: anyhow::Error) -> anyhow::Error {
    anyhow::Error::new(Marked(kind, format!("{e:#}")))
}

fn marked(e: &anyhow::Error, kind: Kind) -> bool {
    e.chain()
        .any(|c| c.downcast_ref::<Marked>().is_some_and(|m| m.0 == kind))
}

/// Whether `e` is worth retrying (see `Kind::Transient`).
pub fn is_transient(e: &anyhow::Error) -> bool {
    marked(e, Kind::Transient)
}

/// Whether `e` is a 410 Gone (see `Kind::Gone`).
pub fn is_gone(e: &anyhow::Error) -> bool {
    marked(e, Kind::Gone)
}

fn transient(e: anyhow::Error) -> anyhow::Error {
    mark(Kind::Transient, e)
}

/// A refusal in the API server's own words (its Status message, reason and code) when it
/// sent one, else the start of what it sent.
fn status_error(doing: &str, code: u16, body: &[u8]) -> anyhow::Error {
    match serde_json::from_slice::<kube::core::Status>(body) {
        Ok(s) if !s.message.is_empty() => anyhow!(
            "{doing}: the API server said {} ({}, HTTP {code})",
            s.message,
            s.reason
        ),
        _ => {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
            anyhow!(
                "{doing}: the API server answered HTTP {code}: {}",
                text.trim()
            )
        }
    }
}

/// A failure to send, in words (the API server's own words are read by `status_error`).
fn api_error(e: kube::Error, doing: &str) -> anyhow::Error {
    match e {
        kube::Error::Api(s) => anyhow!(
            "{doing}: the API server said {} ({}, HTTP {})",
            s.message,
            s.reason,
            s.code
        ),
        other => anyhow!("{doing}: {}", crate::redact::urls(&other.to_string())),
    }
}
