//! The runbook's Kubernetes path: apply the Deployment (server-side), wait as `kubectl rollout
//! status` waits, verify the pods' security context and image from the API; and
//! `kubectl rollout undo`: the previous ReplicaSet's pod template by revision, waited for and
//! timed from decision to ready against the runbook's 60 s target. The decisions (is the
//! rollout done, which revision is previous, are the pods hardened) are pure functions here,
//! tested with objects in the shape the API server returns; `cluster` does the calls.
// Without the `kubernetes` feature only the pure parts are built, and nothing calls them.
#![cfg_attr(not(feature = "kubernetes"), allow(dead_code, unused_imports))]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use serde::Serialize;

use super::{render_checks, Check};
use crate::config::Config;
pub use crate::engine::kubernetes::{pod_view, PodView};
use crate::exit::Code;
use crate::output::Render;

/// What `--target kubernetes` says in a build without the `kubernetes` feature.
#[cfg(not(feature = "kubernetes"))]
pub const WITHOUT_FEATURE: &str =
    "this dhi-stage was built without the `kubernetes` feature: rebuild with default features for --target kubernetes";

/// The annotation the deployment controller numbers revisions with.
pub const REVISION: &str = "deployment.kubernetes.io/revision";

/// Where a rollout is, in `kubectl rollout status`'s terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "detail", rename_all = "snake_case")]
pub enum Progress {
    Done,
    Waiting(String),
    Failed(String),
}

/// kubectl's rollout status over a Deployment as read back from the API.
pub fn rollout_status(d: &Deployment) -> Progress {
    let generation = d.metadata.generation.unwrap_or(0);
    let Some(status) = &d.status else {
        return Progress::Waiting("waiting for the deployment status".into());
    };
    if status.observed_generation.unwrap_or(0) < generation {
        return Progress::Waiting("waiting for the deployment spec update to be observed".into());
    }
    if let Some(c) = progressing(d) {
        if c.reason.as_deref() == Some(DEADLINE_EXCEEDED) {
            return Progress::Failed(format!(
                "deployment exceeded its progress deadline: {}",
                c.message.as_deref().unwrap_or("")
            ));
        }
    }
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < want {
        return Progress::Waiting(format!(
            "{updated} out of {want} new replicas have been updated"
        ));
    }
    if total > updated {
        return Progress::Waiting(format!(
            "{} old replicas are pending termination",
            total - updated
        ));
    }
    if available < updated {
        return Progress::Waiting(format!(
            "{available} of {updated} updated replicas are available"
        ));
    }
    Progress::Done
}

/// The Progressing condition's reason when the controller gave up on a rollout.
const DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";

/// The Deployment's Progressing condition, which the controller renews on progress and fails
/// at the deadline.
fn progressing(d: &Deployment) -> Option<&k8s_openapi::api::apps::v1::DeploymentCondition> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Progressing")
}

fn revision(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<i64> {
    meta.annotations.as_ref()?.get(REVISION)?.parse().ok()
}

/// Annotations `kubectl rollout undo` keeps from the Deployment rather than copying them from
/// the ReplicaSet (kubectl `pkg/polymorphichelpers/rollback.go`, `annotationsToSkip`).
const ANNOTATIONS_TO_SKIP: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

/// What `kubectl rollout undo` sends: a JSON patch that *replaces* `/spec/template` with the
/// earlier ReplicaSet's (so nothing the bad revision added survives) and `/metadata/annotations`
/// with the ReplicaSet's own (the change-cause) beside the Deployment's skipped ones.
pub fn undo_patch(
    template: &PodTemplateSpec,
    annotations: &BTreeMap<String, String>,
) -> serde_json::Value {
    serde_json::json!([
        {"op": "replace", "path": "/spec/template", "value": template},
        {"op": "replace", "path": "/metadata/annotations", "value": annotations},
    ])
}

/// Why an undo cannot or need not be sent, decided before any patch (kubectl's order).
pub fn undo_refusal(
    d: &Deployment,
    template: &PodTemplateSpec,
    to_revision: i64,
) -> Option<(Code, String)> {
    if d.spec.as_ref().and_then(|s| s.paused) == Some(true) {
        return Some((
            Code::CheckFailed,
            "you cannot roll back a paused deployment; resume it first with `kubectl rollout resume` and try again".into(),
        ));
    }
    let mut current = d
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    if let Some(labels) = current.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove("pod-template-hash");
    }
    (&current == template).then(|| {
        (
            Code::Ok,
            format!("skipped: the current template already matches revision {to_revision}"),
        )
    })
}

/// The Deployment's annotations after the undo (kubectl: its skipped ones, then the
/// ReplicaSet's others).
fn undo_annotations(d: &Deployment, rs: &ReplicaSet) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = d
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| ANNOTATIONS_TO_SKIP.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in rs.metadata.annotations.iter().flatten() {
        if !ANNOTATIONS_TO_SKIP.contains(&k.as_str()) {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

/// What `kubectl rollout undo` restores: the pod template of the newest ReplicaSet owned by
/// the Deployment with a revision below the current one, without the controller's
/// `pod-template-hash` label. (revision, its image, the template, the annotations to set.)
pub fn previous_template(
    d: &Deployment,
    replica_sets: &[ReplicaSet],
) -> Result<(i64, String, PodTemplateSpec, BTreeMap<String, String>), String> {
    let current = revision(&d.metadata)
        .ok_or("the deployment has no revision annotation yet: nothing to undo")?;
    let uid = d.metadata.uid.as_deref();
    let owned = |rs: &&ReplicaSet| {
        rs.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == "Deployment" && (Some(o.uid.as_str()) == uid || uid.is_none()))
    };
    let (rev, rs) = replica_sets
        .iter()
        .filter(owned)
        .filter_map(|rs| revision(&rs.metadata).map(|r| (r, rs)))
        .filter(|(r, _)| *r < current)
        .max_by_key(|(r, _)| *r)
        .ok_or(format!(
            "no earlier revision than {current} is kept (revisionHistoryLimit?): nothing to undo"
        ))?;
    let mut template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .ok_or(format!("revision {rev} has no pod template"))?;
    if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove("pod-template-hash");
    }
    let image = template
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    Ok((rev, image, template, undo_annotations(d, rs)))
}

/// Step 4 from the API: every pod running `image` is ready, non-root (65532), read-only,
/// without privilege escalation, with all capabilities dropped, and runs the image's digest
/// when the reference pins one.
pub fn verify_pods(pods: &[Pod], image: &str, cfg: &Config) -> Vec<Check> {
    let expected_uid = i64::from(cfg.security.expected_uid);
    let digest = image.split_once('@').map(|(_, d)| d.to_string());
    let mut checks = Vec::new();
    let ours: Vec<&Pod> = pods
        .iter()
        .filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .and_then(|c| c.image.as_deref())
                == Some(image)
        })
        .collect();
    if ours.is_empty() {
        checks.push(Check::new(
            "pods",
            Some(false),
            format!("no pod runs {image}"),
        ));
        return checks;
    }
    for p in ours {
        // Readiness, phase and image id read as `status` shows them.
        let PodView {
            name,
            phase,
            ready,
            image_id,
            ..
        } = pod_view(p);
        let spec = p.spec.clone().unwrap_or_default();
        let pod_sc = spec.security_context.clone().unwrap_or_default();
        let c = spec.containers.first().cloned().unwrap_or_default();
        let sc = c.security_context.clone().unwrap_or_default();
        checks.push(Check::new(&format!("{name} ready"), Some(ready), phase));
        let uid = sc.run_as_user.or(pod_sc.run_as_user);
        let non_root = sc.run_as_non_root.or(pod_sc.run_as_non_root) == Some(true);
        checks.push(Check::new(
            &format!("{name} runAsNonRoot, uid {expected_uid}"),
            Some(non_root && uid == Some(expected_uid)),
            format!("runAsNonRoot {non_root}, runAsUser {uid:?}"),
        ));
        let caps = sc
            .capabilities
            .as_ref()
            .and_then(|c| c.drop.clone())
            .unwrap_or_default();
        let hardened = sc.read_only_root_filesystem == Some(true)
            && sc.allow_privilege_escalation == Some(false)
            && crate::security::hardening::drops_all_capabilities(&caps);
        checks.push(Check::new(
            &format!("{name} read-only, no escalation, cap drop ALL"),
            Some(hardened),
            format!(
                "readOnlyRootFilesystem {:?}, allowPrivilegeEscalation {:?}, drop {caps:?}",
                sc.read_only_root_filesystem, sc.allow_privilege_escalation
            ),
        ));
        let digest_ok = match &digest {
            Some(d) => Some(image_id.ends_with(d.as_str())),
            None => (!image_id.is_empty()).then_some(true),
        };
        checks.push(Check::new(
            &format!("{name} image digest"),
            digest_ok,
            image_id,
        ));
    }
    checks
}

/// `deploy --target kubernetes`'s outcome.
#[derive(Debug, Serialize)]
pub struct KubeDeployed {
    pub ok: bool,
    pub target: &'static str,
    pub server: String,
    pub namespace: String,
    pub deployment: String,
    pub image: String,
    pub revision: Option<i64>,
    pub rollout: Progress,
    pub rollout_ms: u64,
    pub checks: Vec<Check>,
}

impl Render for KubeDeployed {
    fn code(&self) -> Code {
        Code::of_check(self.ok)
    }

    fn text(&self) -> String {
        let mut t = format!(
            "deploy {} to deployment/{} in {} ({})\n  rollout: {} after {}\n",
            self.image,
            self.deployment,
            self.namespace,
            self.server,
            progress_words(&self.rollout),
            crate::output::fmt_duration(Duration::from_millis(self.rollout_ms))
        );
        if !self.checks.is_empty() {
            t += &format!(
                "verification (Step 4, from the API):\n{}\n",
                render_checks(&self.checks)
            );
        }
        t + &format!(
            "revision {}: {}",
            self.revision.map(|r| r.to_string()).unwrap_or("-".into()),
            if self.ok {
                "rolled out and verified"
            } else {
                "NOT rolled out and verified"
            }
        )
    }
}

/// `rollback --target kubernetes`'s outcome.
#[derive(Debug, Serialize)]
pub struct KubeRolledBack {
    pub ok: bool,
    pub target: &'static str,
    pub deployment: String,
    pub from_revision: Option<i64>,
    pub to_revision: i64,
    pub to_image: String,
    pub reason: Option<String>,
    pub approved_by: Option<String>,
    pub rollout: Progress,
    pub decision_to_ready_ms: u64,
    pub target_ms: u64,
    pub within_target: bool,
    /// Nothing was sent: the current template already is the revision's (not timed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// The incident report and who was told, as after a Docker rollback.
    #[cfg(feature = "kubernetes")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident: Option<super::rollback::IncidentFiled>,
}

impl Render for KubeRolledBack {
    fn code(&self) -> Code {
        if self.ok {
            Code::Ok
        } else {
            Code::RollbackFailed
        }
    }

    fn text(&self) -> String {
        if let Some(why) = &self.skipped {
            return format!("rollout undo of deployment/{}: {why}", self.deployment);
        }
        format!(
            "rollout undo of deployment/{}: revision {} -> {} ({})\n  rollout: {}\n  decision-to-ready {}ms; runbook target < {} ({})",
            self.deployment,
            self.from_revision.map(|r| r.to_string()).unwrap_or("-".into()),
            self.to_revision,
            self.to_image,
            progress_words(&self.rollout),
            self.decision_to_ready_ms,
            humantime::format_duration(Duration::from_millis(self.target_ms)),
            if self.within_target { "met" } else { "MISSED" }
        ) + self.incident_text()
    }
}

impl KubeRolledBack {
    #[cfg(feature = "kubernetes")]
    fn incident_text(&self) -> &str {
        self.incident.as_ref().map_or("", |i| i.text.as_str())
    }

    #[cfg(not(feature = "kubernetes"))]
    fn incident_text(&self) -> &str {
        ""
    }
}

/// `status --target kubernetes`'s outcome: exit 0 when the rollout is done and every pod is
/// ready, 3 otherwise.
#[derive(Debug, Serialize)]
pub struct KubeStatus {
    pub ok: bool,
    pub deployment: String,
    pub namespace: String,
    pub revision: Option<i64>,
    pub rollout: Progress,
    pub pods: Vec<PodView>,
}

impl Render for KubeStatus {
    fn code(&self) -> Code {
        Code::of_check(self.ok)
    }

    fn text(&self) -> String {
        let mut t = format!(
            "=== deployment/{} in {} (revision {}) ===\nrollout: {}\n",
            self.deployment,
            self.namespace,
            self.revision.map(|r| r.to_string()).unwrap_or("-".into()),
            progress_words(&self.rollout)
        );
        for p in &self.pods {
            t += &format!(
                "  {:<48} {:<8} {:<9} restarts {:<3} {}\n",
                p.name,
                p.phase,
                if p.ready { "ready" } else { "NOT ready" },
                p.restarts,
                p.image
            );
        }
        t
    }
}

fn progress_words(p: &Progress) -> String {
    match p {
        Progress::Done => "successfully rolled out".into(),
        Progress::Waiting(w) => format!("NOT finished: {w}"),
        Progress::Failed(f) => format!("FAILED: {f}"),
    }
}

#[cfg(feature = "kubernetes")]
pub use self::live::{deploy, rollback, status};

#[cfg(feature = "kubernetes")]
mod live {
    use super::*;
    use crate::cluster::{Cluster, Seen};
    use crate::exit::failure;
    use crate::rollout::rollback::{approved, Approval, Context};
    use crate::store::events::RollbackDetail;
    use crate::store::{EventKind, Store};

    /// Waits as `kubectl rollout status` does: the Deployment listed by name, then watched from
    /// the list's resourceVersion, each event judged, until done or failed (the controller's
    /// Progressing condition says the progress deadline passed). A watch the server ends is
    /// resumed from the last resourceVersion seen; one answered 410 Gone (the version
    /// compacted away) is listed afresh. Its own cap, `limit`, is a safety net counted as the
    /// controller counts its deadline: from the last progress seen (replicas updated, ready or
    /// available, or the Progressing condition renewed), so a slow healthy rollout is waited
    /// for. A transient failure (HTTP 5xx or 429, a reset, no answer) is asked again with
    /// backoff, within the same cap.
    ///
    /// `written` is the Deployment as the apply or undo answered it: its progress deadline
    /// sets the cap, and a "deadline exceeded" condition it already carried belongs to the
    /// rollout before: the controller keeps that condition on an undo to an existing
    /// ReplicaSet until the new rollout progresses (`syncRolloutStatus`), so it is waited past,
    /// not read as this rollout failing (kubectl would fail at once here).
    async fn wait(
        cluster: &Cluster,
        name: &str,
        written: &Deployment,
        progress: &dyn Fn(&str),
    ) -> anyhow::Result<(Progress, Deployment)> {
        let mut w = Waiting {
            limit: limit(written),
            last_progress: Instant::now(),
            mark: None,
            backoff: RETRY_FIRST,
            stale: timed_out_stamp(written),
        };
        // Where to watch from, and the Deployment as last seen; None: list afresh.
        let mut from: Option<(String, Deployment)> = None;
        loop {
            let (rv, d) = match from.take() {
                Some(x) => x,
                None => match cluster.list_deployment(name).await {
                    Ok((Some(d), rv)) => (rv, d),
                    Ok((None, _)) => {
                        anyhow::bail!("deployment/{name} is gone (deleted during its rollout?)")
                    }
                    Err(e) => {
                        w.retry(e, progress).await?;
                        continue;
                    }
                },
            };
            if let Some(end) = w.judge(&d, progress) {
                return Ok((end, d));
            }
            from = match cluster.watch_deployment(name, &rv).await {
                Ok(watch) => match w.follow(watch, rv, d, progress).await? {
                    Next::Over(p, d) => return Ok((p, *d)),
                    Next::From(rv, d) => Some((rv, *d)),
                    Next::Relist => None,
                },
                // 410 Gone as the answer's status (not as an event): list afresh.
                Err(e) if crate::cluster::is_gone(&e) => {
                    progress(&format!("{e:#}; listing again"));
                    w.back_off().await;
                    None
                }
                Err(e) => {
                    w.retry(e, progress).await?;
                    Some((rv, d))
                }
            };
        }
    }

    /// The first wait before asking the API server again, doubled up to `RETRY_MAX`.
    const RETRY_FIRST: Duration = Duration::from_millis(500);
    const RETRY_MAX: Duration = Duration::from_secs(5);

    /// A rollout wait's bookkeeping: the cap, the last progress and the retry backoff.
    struct Waiting {
        limit: Duration,
        last_progress: Instant,
        mark: Option<String>,
        backoff: Duration,
        /// When the written Deployment's "deadline exceeded" condition was set, if it was.
        stale: Option<String>,
    }

    /// How a watch ended.
    enum Next {
        /// The wait is over: done, failed, or the cap passed.
        Over(Progress, Box<Deployment>),
        /// Watch again from this resourceVersion (the server ended the watch, or it broke).
        From(String, Box<Deployment>),
        /// 410 Gone: list afresh.
        Relist,
    }

    impl Waiting {
        fn left(&self) -> Duration {
            self.limit.saturating_sub(self.last_progress.elapsed())
        }

        /// The verdict on `d` if the wait is over: done, failed, or still waiting past the cap.
        fn judge(&mut self, d: &Deployment, progress: &dyn Fn(&str)) -> Option<Progress> {
            let mark = progress_mark(d);
            if self.mark.as_ref() != Some(&mark) {
                self.mark = Some(mark);
                self.last_progress = Instant::now();
            }
            let status = match rollout_status(d) {
                Progress::Failed(_) if self.stale.is_some() && timed_out_stamp(d) == self.stale => {
                    Progress::Waiting(
                        "the last rollout's \"progress deadline exceeded\" stands until this one progresses"
                            .into(),
                    )
                }
                p => p,
            };
            match status {
                Progress::Waiting(w) if !self.left().is_zero() => {
                    progress(&w);
                    None
                }
                p => Some(p),
            }
        }

        /// A transient failure waited out (with backoff) while the cap allows; else the error.
        async fn retry(&mut self, e: anyhow::Error, progress: &dyn Fn(&str)) -> anyhow::Result<()> {
            if !crate::cluster::is_transient(&e) || self.left().is_zero() {
                return Err(e);
            }
            progress(&format!(
                "{e:#}; asking again in {}",
                humantime::format_duration(self.backoff)
            ));
            self.back_off().await;
            Ok(())
        }

        /// Waits the backoff (within the cap) and doubles it.
        async fn back_off(&mut self) {
            tokio::time::sleep(self.backoff.min(self.left())).await;
            self.backoff = (self.backoff * 2).min(RETRY_MAX);
        }

        /// Reads one watch to its end: a verdict, or where to go on from.
        async fn follow(
            &mut self,
            mut watch: crate::cluster::Watch,
            mut rv: String,
            mut d: Deployment,
            progress: &dyn Fn(&str),
        ) -> anyhow::Result<Next> {
            let opened = Instant::now();
            loop {
                let Ok(next) = tokio::time::timeout(self.left(), watch.next()).await else {
                    // The cap passed with nothing new: the verdict on what was last seen.
                    return Ok(Next::Over(rollout_status(&d), Box::new(d)));
                };
                match next {
                    Ok(Some(Seen::Changed(nd))) => {
                        self.backoff = RETRY_FIRST;
                        rv = nd.metadata.resource_version.clone().unwrap_or(rv);
                        d = *nd;
                        if let Some(end) = self.judge(&d, progress) {
                            return Ok(Next::Over(end, Box::new(d)));
                        }
                    }
                    Ok(Some(Seen::Bookmark(at))) => rv = at,
                    Ok(Some(Seen::Deleted)) => anyhow::bail!(
                        "deployment/{} was deleted during its rollout",
                        d.metadata.name.unwrap_or_default()
                    ),
                    Ok(Some(Seen::Expired(why))) => {
                        progress(&format!("the watch expired ({why}); listing again"));
                        return Ok(Next::Relist);
                    }
                    // The server ended the watch (its timeout): watch again from here; one
                    // ended at once (a proxy closing it) is not reopened in a tight loop.
                    Ok(None) => {
                        if opened.elapsed() < Duration::from_secs(1) {
                            self.back_off().await;
                        }
                        return Ok(Next::From(rv, Box::new(d)));
                    }
                    Err(e) => {
                        self.retry(e, progress).await?;
                        return Ok(Next::From(rv, Box::new(d)));
                    }
                }
            }
        }
    }

    /// When the Progressing condition was last set, if it says the progress deadline passed.
    fn timed_out_stamp(d: &Deployment) -> Option<String> {
        progressing(d)
            .filter(|c| c.reason.as_deref() == Some(DEADLINE_EXCEEDED))
            .and_then(|c| c.last_update_time.as_ref())
            .map(|t| t.0.to_string())
    }

    /// What changes when a rollout progresses, as the controller judges progress.
    fn progress_mark(d: &Deployment) -> String {
        let renewed = progressing(d)
            .and_then(|c| c.last_update_time.as_ref())
            .map(|t| t.0.to_string());
        let s = d.status.clone().unwrap_or_default();
        format!(
            "{:?}/{:?}/{:?}/{:?}/{:?}/{renewed:?}",
            s.observed_generation,
            s.updated_replicas,
            s.ready_replicas,
            s.available_replicas,
            s.replicas
        )
    }

    fn limit(d: &Deployment) -> Duration {
        // The controller's own deadline (600 s unless set) without progress, and a little for
        // it to say so; capped at an hour, whatever the server says (2147483647 s would be 68
        // years).
        let deadline = d
            .spec
            .as_ref()
            .and_then(|s| s.progress_deadline_seconds)
            .unwrap_or(600);
        Duration::from_secs(deadline.clamp(1, MAX_PROGRESS_DEADLINE_S) as u64 + 30)
    }

    /// The longest progress deadline a wait honours.
    const MAX_PROGRESS_DEADLINE_S: i32 = 3600;

    pub async fn deploy(
        ctx: &Context<'_>,
        image: &str,
        progress: &dyn Fn(&str),
    ) -> anyhow::Result<KubeDeployed> {
        let cfg = ctx.config;
        let k = &cfg.kubernetes;
        let manifest = crate::engine::kubernetes::typed(cfg, image);
        let cluster = Cluster::connect(&k.namespace).await?;
        let started = Instant::now();
        progress(&format!(
            "applying deployment/{} ({})",
            k.deployment, cluster.server
        ));
        let applied = cluster.apply(&manifest).await?;
        // A paused Deployment takes the template and rolls nothing out (the pause is another
        // manager's field, kept by the apply): said now, not waited on for its deadline.
        let (rollout, d) = if applied.spec.as_ref().and_then(|s| s.paused) == Some(true) {
            let why = format!(
                "deployment/{0} is paused: the template is applied but will not roll out until `kubectl rollout resume deployment/{0} -n {1}`",
                k.deployment, k.namespace
            );
            (Progress::Failed(why), applied)
        } else {
            wait(&cluster, &k.deployment, &applied, progress).await?
        };
        let rollout_ms = started.elapsed().as_millis() as u64;
        let checks = if rollout == Progress::Done {
            let pods = cluster
                .pods(&crate::engine::kubernetes::selector(cfg))
                .await?;
            verify_pods(&pods, image, cfg)
        } else {
            Vec::new()
        };
        let ok = rollout == Progress::Done && super::super::checks_pass(&checks);
        let out = KubeDeployed {
            ok,
            target: "kubernetes",
            server: cluster.server.clone(),
            namespace: k.namespace.clone(),
            deployment: k.deployment.clone(),
            image: image.to_string(),
            revision: revision(&d.metadata),
            rollout,
            rollout_ms,
            checks,
        };
        Store::open(ctx.state_dir)?.event(EventKind::Deploy, None, &serde_json::json!({
            "target": "kubernetes", "deployment": out.deployment, "namespace": out.namespace,
            "image": out.image, "revision": out.revision, "ok": out.ok, "rollout_ms": out.rollout_ms,
        }))?;
        Ok(out)
    }

    pub async fn status(cfg: &Config) -> anyhow::Result<KubeStatus> {
        let k = &cfg.kubernetes;
        let cluster = Cluster::connect(&k.namespace).await?;
        let d = cluster.deployment(&k.deployment).await?;
        let pods: Vec<PodView> = cluster
            .pods(&crate::engine::kubernetes::selector(cfg))
            .await?
            .iter()
            .map(pod_view)
            .collect();
        let rollout = rollout_status(&d);
        let serving: Vec<&PodView> = pods.iter().filter(|p| !p.terminating).collect();
        Ok(KubeStatus {
            ok: rollout == Progress::Done && !serving.is_empty() && serving.iter().all(|p| p.ready),
            deployment: k.deployment.clone(),
            namespace: k.namespace.clone(),
            revision: revision(&d.metadata),
            rollout,
            pods,
        })
    }

    pub async fn rollback(
        ctx: &Context<'_>,
        approval: &Approval,
        reason: Option<String>,
        progress: &dyn Fn(&str),
    ) -> anyhow::Result<KubeRolledBack> {
        let decision = Instant::now();
        let decided_at_ms = chrono::Utc::now().timestamp_millis();
        let cfg = ctx.config;
        // The same rule as the Docker path: production needs a named approver.
        approved(cfg.environment, approval).map_err(|e| failure(Code::Usage, e))?;
        let k = &cfg.kubernetes;
        let cluster = Cluster::connect(&k.namespace).await?;
        let current = cluster.deployment(&k.deployment).await?;
        let rss = cluster
            .replica_sets(&crate::engine::kubernetes::selector(cfg))
            .await?;
        let (to_revision, to_image, template, annotations) = previous_template(&current, &rss)
            .map_err(|e| {
                failure(
                    Code::RollbackFailed,
                    format!("deployment/{}: {e}", k.deployment),
                )
            })?;
        match undo_refusal(&current, &template, to_revision) {
            Some((Code::Ok, why)) => {
                return Ok(KubeRolledBack {
                    ok: true,
                    target: "kubernetes",
                    deployment: k.deployment.clone(),
                    from_revision: revision(&current.metadata),
                    to_revision,
                    to_image,
                    reason,
                    approved_by: approval.recorded(),
                    rollout: Progress::Done,
                    decision_to_ready_ms: 0,
                    target_ms: cfg.rollback.kubernetes_target.as_millis() as u64,
                    within_target: true,
                    skipped: Some(why),
                    incident: None,
                })
            }
            Some((code, why)) => {
                return Err(failure(code, format!("deployment/{}: {why}", k.deployment)))
            }
            None => {}
        }
        progress(&format!(
            "deployment/{}: back to revision {to_revision} ({to_image})",
            k.deployment
        ));
        let patch = undo_patch(&template, &annotations);
        let patched = cluster.undo(&k.deployment, &patch).await?;
        let (rollout, _) = wait(&cluster, &k.deployment, &patched, progress).await?;
        let ms = decision.elapsed().as_millis() as u64;
        let target_ms = cfg.rollback.kubernetes_target.as_millis() as u64;
        let out = KubeRolledBack {
            ok: rollout == Progress::Done,
            target: "kubernetes",
            deployment: k.deployment.clone(),
            from_revision: revision(&current.metadata),
            to_revision,
            to_image,
            reason,
            approved_by: approval.recorded(),
            rollout,
            decision_to_ready_ms: ms,
            target_ms,
            within_target: ms <= target_ms,
            skipped: None,
            incident: None,
        };
        let record = incident(cfg, &out, approval, decided_at_ms, template_image(&current));
        let filed = filed(ctx, &out, &record).await?;
        Ok(KubeRolledBack {
            incident: Some(filed),
            ..out
        })
    }

    /// The undo recorded in the store, then the runbook's post-rollback actions (the incident
    /// report, the team told, the issue opened), as after a Docker rollback.
    async fn filed(
        ctx: &Context<'_>,
        out: &KubeRolledBack,
        record: &crate::store::events::IncidentDetail,
    ) -> anyhow::Result<super::super::rollback::IncidentFiled> {
        let store = Store::open(ctx.state_dir)?;
        store.event(
            EventKind::Rollback,
            None,
            &RollbackDetail {
                kind: Some("kubernetes".into()),
                to: Some(out.to_image.clone()),
                reason: out.reason.clone(),
                approved_by: out.approved_by.clone(),
                restored: out.ok,
                decision_to_healthy_ms: out.ok.then_some(out.decision_to_ready_ms),
                target_ms: Some(out.target_ms),
                ..Default::default()
            },
        )?;
        Ok(super::super::rollback::post_rollback(ctx.config, &store, record).await)
    }

    fn template_image(d: &Deployment) -> Option<String> {
        d.spec
            .as_ref()?
            .template
            .spec
            .as_ref()?
            .containers
            .first()?
            .image
            .clone()
    }

    /// The incident record of an undo, as the Docker rollback makes one: the service is
    /// probed at `verify.base_url` (the monitor's samples before and after are read from
    /// there); pod logs are not copied (they are the cluster's, `kubectl logs`).
    fn incident(
        cfg: &Config,
        out: &KubeRolledBack,
        approval: &Approval,
        decided_at_ms: i64,
        from: Option<String>,
    ) -> crate::store::events::IncidentDetail {
        let now_ms = chrono::Utc::now().timestamp_millis();
        crate::store::events::IncidentDetail {
            name: format!(
                "incident-{}",
                crate::store::events::at_ms(decided_at_ms).format("%Y%m%dT%H%M%S%.3fZ")
            ),
            service: format!("deployment/{}", out.deployment),
            target: cfg.verify.base_url.clone(),
            decided_at_ms,
            healthy_at_ms: out.ok.then_some(now_ms),
            from,
            to: out.to_image.clone(),
            automatic: matches!(approval, Approval::Automatic(_)),
            reason: out.reason.clone(),
            approved_by: out.approved_by.clone(),
            restored: out.ok,
            failure: (!out.ok).then(|| progress_words(&out.rollout)),
            decision_to_healthy_ms: out.decision_to_ready_ms,
            target_ms: out.target_ms,
            production: cfg.environment == crate::config::Environment::Production,
            logs: crate::store::events::LogExcerpt {
                not_read: Some(format!(
                    "pod logs stay in the cluster: kubectl logs -n {} deployment/{} --previous",
                    cfg.kubernetes.namespace, out.deployment
                )),
                ..Default::default()
            },
            after_until_ms: now_ms
                + if out.ok {
                    cfg.report.incident_after.as_millis() as i64
                } else {
                    0
                },
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(v: serde_json::Value) -> Deployment {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn rollout_status_reads_the_deployment_as_kubectl_does() {
        let d = |gen: i64, observed: i64, updated: i32, total: i32, available: i32| {
            from(serde_json::json!({
                "metadata": {"name": "d", "generation": gen},
                "spec": {"replicas": 2, "selector": {}, "template": {}},
                "status": {"observedGeneration": observed, "updatedReplicas": updated,
                           "replicas": total, "availableReplicas": available}
            }))
        };
        assert!(
            matches!(rollout_status(&d(3, 2, 2, 2, 2)), Progress::Waiting(w) if w.contains("spec update"))
        );
        assert!(
            matches!(rollout_status(&d(3, 3, 1, 3, 2)), Progress::Waiting(w) if w.contains("1 out of 2 new replicas"))
        );
        assert!(
            matches!(rollout_status(&d(3, 3, 2, 3, 2)), Progress::Waiting(w) if w.contains("1 old replicas"))
        );
        assert!(
            matches!(rollout_status(&d(3, 3, 2, 2, 1)), Progress::Waiting(w) if w.contains("1 of 2 updated replicas"))
        );
        assert_eq!(rollout_status(&d(3, 3, 2, 2, 2)), Progress::Done);
        let stuck = from(serde_json::json!({
            "metadata": {"name": "d", "generation": 3},
            "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": {"observedGeneration": 3, "updatedReplicas": 1, "replicas": 3, "availableReplicas": 2,
                "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                                "message": "ReplicaSet \"d-7c9\" has timed out progressing."}]}
        }));
        assert!(matches!(rollout_status(&stuck), Progress::Failed(f) if f.contains("timed out")));
    }

    #[test]
    fn undo_picks_the_newest_earlier_revision_without_the_hash_label() {
        let d = from(serde_json::json!({
            "metadata": {"name": "d", "uid": "u1", "annotations": {REVISION: "3"}},
            "spec": {"selector": {}, "template": {}}
        }));
        let rs = |rev: &str, image: &str, owner: &str| -> ReplicaSet {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("d-{rev}"), "annotations": {REVISION: rev},
                             "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "d", "uid": owner}]},
                "spec": {"selector": {}, "template": {
                    "metadata": {"labels": {"app": "a", "pod-template-hash": format!("h{rev}")}},
                    "spec": {"containers": [{"name": "a", "image": image}]}}}
            }))
            .unwrap()
        };
        let sets = [
            rs("1", "reg/a:v1", "u1"),
            rs("3", "reg/a:v3", "u1"),
            rs("2", "reg/a:v2", "u1"),
            rs("9", "x:9", "other"),
        ];
        let (rev, image, t, annotations) = previous_template(&d, &sets).unwrap();
        assert_eq!((rev, image.as_str()), (2, "reg/a:v2"));
        // The Deployment keeps its own revision annotation; the ReplicaSet's is not copied.
        assert_eq!(annotations.get(REVISION).map(String::as_str), Some("3"));
        let labels = t.clone().metadata.unwrap().labels.unwrap();
        assert!(!labels.contains_key("pod-template-hash"));
        assert_eq!(labels["app"], "a");
        assert!(previous_template(&d, &sets[1..2])
            .unwrap_err()
            .contains("no earlier revision"));
        // kubectl's JSON patch replaces the template whole: nothing the bad revision added
        // (an env var, a volume) can survive the undo, as it would a strategic merge.
        let patch = undo_patch(&t, &annotations);
        assert_eq!(patch[0]["op"], "replace");
        assert_eq!(patch[0]["path"], "/spec/template");
        assert_eq!(patch[1]["path"], "/metadata/annotations");
        assert!(undo_refusal(&d, &t, 2).is_none());
    }

    #[test]
    fn a_paused_deployment_is_refused_and_an_equal_template_is_a_no_op() {
        let t: PodTemplateSpec = serde_json::from_value(serde_json::json!({
            "metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "a", "image": "i:1"}]}
        }))
        .unwrap();
        let paused = from(serde_json::json!({
            "metadata": {"name": "d"}, "spec": {"paused": true, "selector": {}, "template": {}}
        }));
        let (code, why) = undo_refusal(&paused, &t, 1).unwrap();
        assert_eq!(code, Code::CheckFailed);
        assert!(why.contains("kubectl rollout resume"), "{why}");
        let same = from(serde_json::json!({
            "metadata": {"name": "d"},
            "spec": {"selector": {}, "template": {
                "metadata": {"labels": {"app": "a", "pod-template-hash": "h1"}},
                "spec": {"containers": [{"name": "a", "image": "i:1"}]}}}
        }));
        let (code, why) = undo_refusal(&same, &t, 1).unwrap();
        assert_eq!(code, Code::Ok);
        assert!(why.contains("already matches revision 1"), "{why}");
        let mut other = same.clone();
        other
            .spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .containers[0]
            .image = Some("i:2".into());
        assert_eq!(
            undo_refusal(&other, &t, 1),
            None,
            "a different template is undone"
        );
    }
}
