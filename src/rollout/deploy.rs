//! Steps 3-4 of the runbook: replace the staging container with the hardened one, wait for
//! `/health`, verify (user, read-only, capabilities, version), and on any failure put the
//! previous container back. A signal cannot cut it mid-swap: the swap is finished or undone.

use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;
use serde_json::json;

use super::rollback::Context;
use super::{checks_pass, render_checks, Check, Reconciled, SetAside, WaitResult};
use crate::engine::spec::{hardened, DeploySpec};
use crate::engine::Engine;
use crate::exit::{failure, Code};
use crate::lock::StateLock;
use crate::output::Render;
use crate::probe::health::HealthResult;
use crate::store::events::RollbackDetail;
use crate::store::NewDeployment;
use crate::store::{DeploymentKind, DeploymentStatus, EventKind};

pub struct Request {
    pub image: String,
    /// How long to wait for `/health` [default: config].
    pub wait: Option<Duration>,
    /// Leave a failed container in place instead of restoring the previous one.
    pub no_rollback: bool,
    /// Deploy even when the spec lacks the runbook's hardening (logged and recorded).
    pub allow_insecure: bool,
    /// `--strategy` for this run [default: `[rollout] strategy`].
    pub strategy: Option<crate::config::Strategy>,
}

/// `deploy`'s outcome, as the JSON a CI job reads (`ok` tells which) and the text a person reads.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Deployed {
    Active(Box<Active>),
    Failed(Box<Failed>),
}

#[derive(Debug, Serialize)]
pub struct Active {
    pub ok: bool,
    pub deployment_id: i64,
    pub image: String,
    pub image_id: Option<String>,
    pub digest: Option<String>,
    pub container_id: String,
    pub start_to_healthy_ms: u128,
    pub checks: Vec<Check>,
    pub health: Option<HealthResult>,
    pub previous_deployment: Option<i64>,
    pub previous_container: Option<SetAside>,
    /// The switch strategy's slots, front and timings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switch: Option<super::switch::Switched>,
    #[serde(skip)]
    pub story: Story,
}

#[derive(Debug, Serialize)]
pub struct Failed {
    pub ok: bool,
    pub deployment_id: i64,
    pub reason: String,
    pub checks: Vec<Check>,
    pub restored: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_ms: Option<u128>,
    /// The switch strategy: false, the front never sent it a request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received_traffic: Option<bool>,
    #[serde(skip)]
    pub restore: Restore,
    #[serde(skip)]
    pub story: Story,
}

/// What happened to the previous container after a failed deploy.
#[derive(Debug, Default)]
pub enum Restore {
    /// `--no-rollback`: the failed container stays; the previous one is stopped under this name.
    #[default]
    LeftInPlace,
    NoPrevious,
    /// The switch strategy: the candidate never received traffic; the old slot serves on.
    NeverSwitched,
    Healthy,
    Unhealthy(String),
    Failed(String),
}

/// What the text tells beyond the JSON: the container name, reconciling, the set-aside one.
#[derive(Debug, Default)]
pub struct Story {
    pub name: String,
    pub image: String,
    pub reconciled: Vec<String>,
    pub previous: Option<SetAside>,
    pub previous_ref: Option<String>,
    pub probes: u32,
    pub warnings: Vec<String>,
}

pub async fn deploy(ctx: &Context<'_>, r: &Request, progress: &dyn Fn(&str)) -> Result<Deployed> {
    let cfg = ctx.config;
    let env = crate::envfile::read_for_container(&cfg.env_file)?;
    let spec = DeploySpec::from_config(cfg, &r.image, env);
    let gaps = hardening(&spec, r.allow_insecure)?;

    let interrupt = super::Interrupt::install();
    let _lock = StateLock::acquire(ctx.state_dir, "deploy", ctx.lock_wait)?;
    let engine = Engine::connect().await?;
    let inspected = engine.ensure_image(&r.image, progress).await?;
    if r.strategy.unwrap_or(cfg.rollout.strategy) == crate::config::Strategy::Switch {
        let insecure = !gaps.is_empty();
        return deploy_switch(ctx, r, spec, &engine, insecure, &interrupt, progress).await;
    }
    let mut store = crate::store::Store::open(ctx.state_dir)?;
    let Reconciled { actions, .. } =
        super::reconcile(&engine, &mut store, &spec.name, &spec.restart).await?;
    if interrupt.interrupted() {
        return Err(failure(
            Code::Operational,
            "interrupted by SIGINT/SIGTERM before anything was changed",
        ));
    }
    let previous = store.active_deployment(&spec.name)?;
    let digest = crate::engine::repo_digest(&inspected);
    let id = record_start(&store, r, &spec, cfg, &inspected, previous.as_ref(), &gaps)?;

    progress(&format!("starting {} from {}", spec.name, r.image));
    let started = Instant::now();
    let swap = swap_recorded(&engine, &mut store, &spec, cfg.container.stop_grace, id).await?;
    let client = crate::probe::health::client(cfg.verify.probe_timeout);
    let limit = r.wait.unwrap_or(cfg.verify.startup_wait);
    let (url, poll) = (cfg.health_url(), cfg.verify.poll_interval);
    let wait = interrupt
        .wait_healthy(&engine, &client, &swap.new_id, &url, limit, poll)
        .await;
    let to_healthy = started.elapsed();

    // After the swap every failure takes the restore path, a failed check as much as an
    // engine error while checking.
    let (checks, verify_error) = verify_new(&engine, cfg, &spec, &wait).await;
    let verified = wait.healthy && verify_error.is_none() && checks_pass(&checks);
    let verification = json!({"wait": wait, "checks": checks});
    store.event(EventKind::Verify, Some(id), &json!({"passed": verified, "checks": checks, "healthy": wait.healthy, "reason": wait.reason}))?;
    let story = Story {
        name: spec.name.clone(),
        image: r.image.clone(),
        reconciled: actions,
        previous: swap.old.clone(),
        previous_ref: previous
            .as_ref()
            .map(|p| format!("#{} {}", p.id, p.image_ref)),
        probes: wait.probes,
        warnings: Vec::new(),
    };

    if verified {
        let active = Active {
            ok: true,
            deployment_id: id,
            image: r.image.clone(),
            image_id: inspected.id,
            digest,
            container_id: swap.new_id.clone(),
            start_to_healthy_ms: to_healthy.as_millis(),
            checks,
            health: wait.last,
            previous_deployment: previous.as_ref().map(|p| p.id),
            previous_container: swap.old.clone(),
            switch: None,
            story,
        };
        return activate(&engine, &mut store, &swap, active, &verification).await;
    }

    let why = failure_reason(&wait, verify_error, &checks);
    let failed = Failed {
        ok: false,
        deployment_id: id,
        reason: why.clone(),
        checks,
        restored: false,
        restore_ms: None,
        received_traffic: None,
        restore: Restore::LeftInPlace,
        story,
    };
    if r.no_rollback {
        store.finish_deployment(id, DeploymentStatus::Failed, Some(&verification))?;
        store.event(
            EventKind::Deploy,
            Some(id),
            &json!({"phase": "failed", "reason": why, "restored": false}),
        )?;
        return Ok(Deployed::Failed(Box::new(failed)));
    }

    let probe = Probe {
        client: &client,
        url: &url,
        limit,
        poll,
    };
    restore_previous(
        &engine,
        &mut store,
        &swap,
        previous.as_ref(),
        failed,
        &verification,
        &probe,
    )
    .await
}

/// The new container is verified: recorded healthy before the old one goes (a run killed
/// between the two is finished by the next one's reconcile instead of undone), then active.
async fn activate(
    engine: &Engine,
    store: &mut crate::store::Store,
    swap: &super::Swap,
    mut a: Active,
    verification: &serde_json::Value,
) -> Result<Deployed> {
    let id = a.deployment_id;
    store.mark_healthy(id, chrono::Utc::now())?;
    if let Err(e) = super::commit(engine, swap).await {
        tracing::warn!("the previous container could not be removed: {e:#}");
        let warning = format!("the previous container stays aside: {e:#}");
        a.story.warnings.push(warning);
    }
    store.finish_deployment(id, DeploymentStatus::Active, Some(verification))?;
    let event = json!({"phase": "active", "start_to_healthy_ms": a.start_to_healthy_ms});
    store.event(EventKind::Deploy, Some(id), &event)?;
    Ok(Deployed::Active(Box::new(a)))
}

/// How the restored container is waited for.
struct Probe<'a> {
    client: &'a reqwest::Client,
    url: &'a str,
    limit: Duration,
    poll: Duration,
}

/// The new container failed: the previous one is put back and waited for (not
/// interruptible: this is what puts service back), and both are recorded.
async fn restore_previous(
    engine: &Engine,
    store: &mut crate::store::Store,
    swap: &super::Swap,
    previous: Option<&crate::store::Deployment>,
    mut failed: Failed,
    verification: &serde_json::Value,
    p: &Probe<'_>,
) -> Result<Deployed> {
    let id = failed.deployment_id;
    let restore_started = Instant::now();
    let restored = super::restore(engine, swap).await;
    let mut restore_wait = None;
    if let Ok(true) = restored {
        restore_wait =
            Some(super::wait_healthy(engine, p.client, &swap.name, p.url, p.limit, p.poll).await);
    }
    store.finish_deployment(id, DeploymentStatus::Failed, Some(verification))?;
    let restore_ok = matches!(&restore_wait, Some(w) if w.healthy);
    if let (true, Some(p)) = (restore_ok, previous) {
        store.reactivate(p.id)?;
    }
    let restore_ms = restore_started.elapsed().as_millis();
    let detail = RollbackDetail {
        automatic: Some(true),
        reason: Some(failed.reason.clone()),
        restored: restore_ok,
        restore_ms: Some(restore_ms as u64),
        to: swap.old.as_ref().map(|o| o.image.clone()),
        ..Default::default()
    };
    store.event(EventKind::Rollback, Some(id), &detail)?;
    failed.restored = restore_ok;
    failed.restore_ms = Some(restore_ms);
    failed.restore = match (restored, restore_wait) {
        (Ok(false), _) => Restore::NoPrevious,
        (Ok(true), Some(w)) if w.healthy => Restore::Healthy,
        (Ok(true), w) => Restore::Unhealthy(w.and_then(|w| w.reason).unwrap_or_default()),
        (Err(e), _) => Restore::Failed(format!("{e:#}")),
    };
    Ok(Deployed::Failed(Box::new(failed)))
}

/// The deploy, recorded before anything changes (`starting`, with what it replaces).
fn record_start(
    store: &crate::store::Store,
    r: &Request,
    spec: &DeploySpec,
    cfg: &crate::config::Config,
    inspected: &bollard::models::ImageInspect,
    previous: Option<&crate::store::Deployment>,
    gaps: &[String],
) -> Result<i64> {
    let id = store.insert_deployment(&NewDeployment {
        kind: DeploymentKind::Deploy,
        image_ref: r.image.clone(),
        image_id: inspected.id.clone(),
        digest: crate::engine::repo_digest(inspected),
        container_name: spec.name.clone(),
        previous_id: previous.map(|p| p.id),
        insecure: !gaps.is_empty(),
        host_port: Some(spec.host_port),
        base_url: Some(cfg.verify.base_url.clone()),
    })?;
    let start = json!({"phase": "start", "image": r.image, "insecure_gaps": gaps, "previous_deployment": previous.map(|p| p.id)});
    store.event(EventKind::Deploy, Some(id), &start)?;
    Ok(id)
}

/// The spec's gaps against the runbook's hardening: refused unless `--allow-insecure`, which
/// is logged (and recorded on the deployment).
fn hardening(spec: &DeploySpec, allow_insecure: bool) -> Result<Vec<String>> {
    let gaps = spec.hardening_gaps();
    if !gaps.is_empty() && !allow_insecure {
        return Err(failure(
            Code::CheckFailed,
            format!("refusing to deploy without the runbook's hardening: {}; fix the config or pass --allow-insecure", gaps.join("; ")),
        ));
    }
    if !gaps.is_empty() {
        tracing::warn!(gaps = ?gaps, "deploying WITHOUT the runbook's hardening (--allow-insecure)");
    }
    Ok(gaps)
}

/// The swap, recorded: the new container's id on the deployment, or the deployment failed.
async fn swap_recorded(
    engine: &Engine,
    store: &mut crate::store::Store,
    spec: &DeploySpec,
    grace: Duration,
    id: i64,
) -> Result<super::Swap> {
    match super::swap(engine, spec, grace).await {
        Ok(swap) => {
            store.set_container(id, &swap.new_id)?;
            Ok(swap)
        }
        Err(e) => {
            let error = json!({"error": format!("{e:#}")});
            store.finish_deployment(id, DeploymentStatus::Failed, Some(&error))?;
            let event = json!({"phase": "failed", "error": format!("{e:#}")});
            store.event(EventKind::Deploy, Some(id), &event)?;
            Err(e)
        }
    }
}

/// Step 4 on a healthy container: the checks, or why they could not run.
async fn verify_new(
    engine: &Engine,
    cfg: &crate::config::Config,
    spec: &DeploySpec,
    wait: &WaitResult,
) -> (Vec<Check>, Option<String>) {
    if !wait.healthy {
        return (Vec::new(), None);
    }
    match super::verify(engine, cfg, spec, wait.last.as_ref()).await {
        Ok(c) => (c, None),
        Err(e) => (
            Vec::new(),
            Some(format!("verification could not run: {e:#}")),
        ),
    }
}

/// `deploy` with the switch strategy: the new container in the idle slot, verified there,
/// then the front switched to it; a candidate that fails never receives traffic.
async fn deploy_switch(
    ctx: &Context<'_>,
    r: &Request,
    spec: DeploySpec,
    engine: &Engine,
    insecure: bool,
    interrupt: &super::Interrupt,
    progress: &dyn Fn(&str),
) -> Result<Deployed> {
    use super::switch;
    let cfg = ctx.config;
    let (front, _) = switch::front_of(cfg, ctx.state_dir).await?;
    let mut store = crate::store::Store::open(ctx.state_dir)?;
    let reconciled = switch::reconcile(engine, &mut store, &front, cfg).await?;
    let reaped = switch::reap(engine, &store, &front, cfg).await?;
    let previous = store.active_deployment(&cfg.container.name)?;
    progress(&format!("starting {} in the idle slot", r.image));
    let candidate = switch::Candidate {
        spec,
        kind: DeploymentKind::Deploy,
        previous: previous.as_ref().map(|p| p.id),
        insecure,
        wait: r.wait.unwrap_or(cfg.verify.startup_wait),
        started: Instant::now(),
        interrupt,
    };
    let story = Story {
        name: cfg.container.name.clone(),
        image: r.image.clone(),
        reconciled: reconciled.iter().chain(&reaped).cloned().collect(),
        previous_ref: previous
            .as_ref()
            .map(|p| format!("#{} {}", p.id, p.image_ref)),
        ..Story::default()
    };
    Ok(
        match switch::start_and_switch(engine, &mut store, &front, cfg, candidate).await? {
            Ok(sw) => Deployed::Active(Box::new(Active {
                ok: true,
                deployment_id: sw.deployment_id,
                image: r.image.clone(),
                image_id: None,
                digest: None,
                container_id: sw.container_id.clone(),
                start_to_healthy_ms: sw.start_to_healthy_ms,
                checks: sw.checks.clone(),
                health: sw.health.clone(),
                previous_deployment: previous.as_ref().map(|p| p.id),
                previous_container: None,
                switch: Some(sw),
                story,
            })),
            Err(ns) => Deployed::Failed(Box::new(Failed {
                ok: false,
                deployment_id: ns.deployment_id,
                reason: ns.reason,
                checks: ns.checks,
                restored: false,
                restore_ms: None,
                received_traffic: Some(false),
                restore: Restore::NeverSwitched,
                story,
            })),
        },
    )
}

fn failure_reason(wait: &WaitResult, verify_error: Option<String>, checks: &[Check]) -> String {
    if !wait.healthy {
        return wait.reason.clone().unwrap_or_else(|| "not healthy".into());
    }
    if let Some(e) = verify_error {
        return e;
    }
    let failed: Vec<_> = checks
        .iter()
        .filter(|c| c.ok == Some(false))
        .map(|c| format!("{} ({})", c.check, c.detail))
        .collect();
    format!("verification failed: {}", failed.join("; "))
}

impl Story {
    fn head(&self) -> String {
        let mut text = format!("deploy {} as {}\n", self.image, self.name);
        for a in &self.reconciled {
            text += &format!("  reconciled: {a}\n");
        }
        if let Some(old) = &self.previous {
            text += &format!(
                "  previous container {} ({}) set aside, stopped in {}ms{}\n",
                &old.id[..12.min(old.id.len())],
                old.image,
                old.stop_ms,
                if old.sigkill_needed {
                    " (SIGTERM ignored: killed after the stop grace)"
                } else {
                    ""
                }
            );
        }
        for w in &self.warnings {
            text += &format!("  warning: {w}\n");
        }
        text
    }
}

impl Render for Deployed {
    fn code(&self) -> Code {
        match self {
            Deployed::Active(_) => Code::Ok,
            Deployed::Failed(f) => match f.restore {
                Restore::Unhealthy(_) | Restore::Failed(_) => Code::RollbackFailed,
                _ => Code::CheckFailed,
            },
        }
    }

    fn text(&self) -> String {
        match self {
            Deployed::Active(a) => {
                let mut text = a.story.head();
                text += &format!(
                    "  healthy after {} ({} probes)\n",
                    crate::output::fmt_duration(Duration::from_millis(
                        a.start_to_healthy_ms as u64
                    )),
                    a.story.probes
                );
                if let Some(sw) = &a.switch {
                    text += &format!("{}\n", sw.story(&a.story.name, &a.image));
                }
                text += &format!("verification (Step 4):\n{}\n", render_checks(&a.checks));
                if let Some(body) = a.health.as_ref().and_then(|h| h.body.as_ref()) {
                    text += &format!("health: {body}\n");
                }
                text + &format!(
                    "deployment #{} active; rollback baseline: {}",
                    a.deployment_id,
                    a.story.previous_ref.as_deref().unwrap_or("none recorded")
                )
            }
            Deployed::Failed(f) => {
                let mut text = f.story.head();
                text += &format!("  FAILED: {}\n", f.reason);
                if !f.checks.is_empty() {
                    text += &format!("verification (Step 4):\n{}\n", render_checks(&f.checks));
                }
                let ms = f.restore_ms.unwrap_or(0);
                text + &match &f.restore {
                    Restore::LeftInPlace => {
                        let mut t =
                            "  --no-rollback: the failed container is left in place".to_string();
                        if let Some(old) = &f.story.previous {
                            t += &format!("; the previous one is stopped as {}", old.renamed_to);
                        }
                        t
                    }
                    Restore::NoPrevious => {
                        "  no previous container to restore; the failed one was removed".into()
                    }
                    Restore::NeverSwitched => {
                        "  the front never switched to it: it was removed, and what served before serves on".into()
                    }
                    Restore::Healthy => {
                        format!("  previous container restored and healthy in {ms}ms")
                    }
                    Restore::Unhealthy(why) => {
                        format!("  previous container restored but NOT healthy: {why}")
                    }
                    Restore::Failed(e) => format!("  restoring the previous container FAILED: {e}"),
                }
            }
        }
    }
}

/// `deploy --dry-run`: the engine's create body and the equivalent `docker run`, env values
/// redacted, and what hardening the spec lacks.
#[derive(Debug, Serialize)]
pub struct DryRun {
    pub dry_run: bool,
    pub name: String,
    pub create_body: bollard::models::ContainerCreateBody,
    pub docker_run: String,
    pub hardening_gaps: Vec<String>,
}

pub fn dry_run(cfg: &crate::config::Config, image: &str) -> Result<DryRun> {
    let env = crate::envfile::read_for_container(&cfg.env_file)?;
    let spec = DeploySpec::from_config(cfg, image, env);
    let mut body = hardened(&spec);
    // Env values can be secrets: the keys show what is set, the values stay out of output.
    body.env = Some(
        spec.env
            .iter()
            .map(|e| format!("{}=<redacted>", e.key))
            .collect(),
    );
    Ok(DryRun {
        dry_run: true,
        name: spec.name.clone(),
        create_body: body,
        docker_run: spec.docker_run_line(),
        hardening_gaps: spec.hardening_gaps(),
    })
}

impl Render for DryRun {
    fn code(&self) -> Code {
        Code::Ok
    }

    fn text(&self) -> String {
        format!(
            "dry run: nothing was changed. `deploy` would create {}:\n\n{}\n\nengine create body:\n{}{}",
            self.name,
            self.docker_run,
            serde_json::to_string_pretty(&self.create_body).unwrap_or_default(),
            if self.hardening_gaps.is_empty() {
                String::new()
            } else {
                format!("\n\nWARNING, missing hardening: {}", self.hardening_gaps.join("; "))
            }
        )
    }
}
