//! The runbook's rollback procedure: restore the recorded baseline (or a chosen image) with
//! the same hardened spec and measure decision-to-healthy time against the 30 s target. The
//! decision is the moment `rollback` is called: everything after it counts. Operators reach
//! it through `dhi-stage rollback`, the monitor through `--auto-rollback`; both pass the same
//! rules (production approval, target availability, "already running").

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;
use serde_json::json;

use crate::config::Environment;
use crate::engine::logs::LogLimits;
use crate::engine::spec::DeploySpec;
use crate::engine::Engine;
use crate::exit::{failure, Code};
use crate::lock::StateLock;
use crate::output::Render;
use crate::probe::reference::ImageRef;
use crate::rollout;
use crate::store::events::ms;
use crate::store::events::{Delivery, DrillDetail, IncidentDetail, LogExcerpt, RollbackDetail};
use crate::store::{DeploymentKind, DeploymentStatus, EventKind};
use crate::store::{NewDeployment, Store};

/// Where a rollback runs: the configuration, the state directory and how long to wait for
/// its lock.
pub struct Context<'a> {
    pub config: &'a crate::config::Config,
    pub state_dir: &'a Path,
    pub lock_wait: Duration,
}

/// Who approved a rollback.
#[derive(Debug, Clone)]
pub enum Approval {
    /// An operator, by name (none given: only allowed outside production).
    Operator(Option<String>),
    /// The monitor's `--auto-rollback`, approved in advance by whoever started it.
    Automatic(&'static str),
}

impl Approval {
    pub fn approver(&self) -> &str {
        match self {
            Approval::Operator(name) => name.as_deref().unwrap_or("").trim(),
            Approval::Automatic(by) => by,
        }
    }

    /// The approver as recorded in events and incidents (none when no one was named).
    pub fn recorded(&self) -> Option<String> {
        Some(self.approver().to_string()).filter(|s| !s.is_empty())
    }
}

/// The runbook's approval rule: production needs a named approver.
pub fn approved(env: Environment, a: &Approval) -> Result<(), &'static str> {
    if env == Environment::Production && a.approver().is_empty() {
        return Err("environment is production: a rollback needs executive approval, pass --approved-by NAME");
    }
    Ok(())
}

/// What to roll back to and why.
#[derive(Debug, Clone)]
pub struct Request {
    /// An image instead of the recorded baseline.
    pub to: Option<ImageRef>,
    pub reason: Option<String>,
    pub approval: Approval,
    /// Roll back, then restore forward, and record it as a drill.
    pub drill: bool,
    /// How long to wait for the restored container [default: config].
    pub wait: Option<Duration>,
}

/// `rollback`'s outcome, one of four shapes a CI job tells apart by its keys (`undone_deployment`,
/// `noop`, `rollback`, `drill`); `ok` in each.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum RolledBack {
    /// An interrupted deploy was undone; that is the whole rollback.
    Undone(Undone),
    /// The target already runs healthy.
    Noop(Noop),
    Restored(Box<Restored>),
    Drill(Box<Drill>),
}

#[derive(Debug, Serialize)]
pub struct Undone {
    pub ok: bool,
    pub undone_deployment: i64,
    pub actions: Vec<String>,
    pub serving: Option<String>,
    pub deployment_id: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct Noop {
    pub ok: bool,
    pub noop: bool,
    pub target: String,
    pub target_source: String,
    #[serde(skip)]
    pub name: String,
}

/// One restore (a rollback, or a drill's first leg when that failed).
#[derive(Debug, Serialize)]
pub struct Restored {
    pub ok: bool,
    pub deployment_id: Option<i64>,
    pub rollback: RollbackDetail,
    pub target_source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident: Option<IncidentFiled>,
    pub target_ms: u64,
    pub within_target: bool,
    /// The switch strategy: which slot, warm or started, and when the front switched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switch: Option<rollout::switch::Switched>,
    #[serde(skip)]
    code: Code,
    #[serde(skip)]
    decision_to_healthy_ms: u64,
    /// The steps as they happened (stop, start, probes), for people.
    #[serde(skip)]
    story: String,
    #[serde(skip)]
    pending_incident: Option<IncidentDetail>,
}

/// The runbook's post-rollback actions: the incident report and who was told.
#[derive(Debug, Serialize)]
pub struct IncidentFiled {
    pub report: Option<String>,
    pub html: Option<String>,
    pub chart: Option<String>,
    pub notifications: Vec<crate::notify::Sent>,
    #[serde(skip)]
    pub(super) text: String,
}

#[derive(Debug, Serialize)]
pub struct Drill {
    pub ok: bool,
    pub drill: DrillDetail,
    #[serde(skip)]
    first: String,
    #[serde(skip)]
    second: String,
}

impl Render for RolledBack {
    fn code(&self) -> Code {
        match self {
            RolledBack::Undone(_) | RolledBack::Noop(_) => Code::Ok,
            RolledBack::Restored(r) => r.code,
            RolledBack::Drill(d) => {
                if d.ok {
                    Code::Ok
                } else {
                    Code::RollbackFailed
                }
            }
        }
    }

    fn text(&self) -> String {
        match self {
            RolledBack::Undone(u) => format!(
                "rollback: undid interrupted deployment #{}; {} serves again\n  {}",
                u.undone_deployment,
                u.serving.as_deref().unwrap_or("nothing"),
                u.actions.join("\n  ")
            ),
            RolledBack::Noop(n) => format!(
                "nothing to do: {} already runs {} and is healthy",
                n.name, n.target
            ),
            RolledBack::Restored(r) => r.text(),
            RolledBack::Drill(d) => format!(
                "{}\n{}\nrollback drill {}: rolled back in {}ms, restored forward in {}ms",
                d.first,
                d.second,
                if d.ok { "completed" } else { "FAILED" },
                ms(d.drill.rollback_decision_to_healthy_ms),
                ms(d.drill.forward_to_healthy_ms)
            ),
        }
    }
}

impl Restored {
    fn text(&self) -> String {
        let to = self.rollback.to.as_deref().unwrap_or("?");
        let mut text = format!(
            "rollback target: {to} ({})\n{}",
            self.target_source, self.story
        );
        if self.code == Code::Ok {
            text += &format!(
                "\n  decision-to-healthy {}ms; runbook target < {} ({})",
                self.decision_to_healthy_ms,
                humantime::format_duration(Duration::from_millis(self.target_ms)),
                if self.within_target { "met" } else { "MISSED" }
            );
        }
        if let Some(i) = &self.incident {
            text += &i.text;
        }
        text
    }
}

pub async fn rollback(ctx: &Context<'_>, a: &Request) -> Result<RolledBack> {
    let decision = Instant::now();
    let cfg = ctx.config;
    // The runbook: "Executive approval for production rollback". An operator names the
    // approver; `monitor --auto-rollback` is the standing approval of whoever started it.
    approved(cfg.environment, &a.approval).map_err(|e| failure(Code::Usage, e))?;
    let env = crate::envfile::read_for_container(&cfg.env_file)?;
    let interrupt = rollout::Interrupt::install();
    let _lock = StateLock::acquire(ctx.state_dir, "rollback", ctx.lock_wait)?;
    let mut store = Store::open(ctx.state_dir)?;
    let engine = Engine::connect().await?;
    if cfg.rollout.strategy == crate::config::Strategy::Switch {
        return rollback_switch(ctx, a, &engine, &mut store, env, decision, &interrupt).await;
    }
    // First what an interrupted run left: a rollback after an interrupted deploy undoes
    // that deploy, and stops there (it does not go one step further back).
    let reconciled = rollout::reconcile(
        &engine,
        &mut store,
        &cfg.container.name,
        &cfg.container.restart,
    )
    .await?;
    if let (Some(undone), None, false) = (reconciled.undone, &a.to, a.drill) {
        let serving = store.active_deployment(&cfg.container.name)?;
        store.event(
            EventKind::Rollback,
            serving.as_ref().map(|d| d.id),
            &RollbackDetail {
                kind: Some("reconcile".into()),
                undone_deployment: Some(undone),
                reason: a.reason.clone(),
                restored: true,
                to: serving.as_ref().map(|d| d.image_ref.clone()),
                decision_to_healthy_ms: Some(decision.elapsed().as_millis() as u64),
                ..Default::default()
            },
        )?;
        return Ok(RolledBack::Undone(Undone {
            ok: true,
            undone_deployment: undone,
            actions: reconciled.actions,
            serving: serving.as_ref().map(|d| d.image_ref.clone()),
            deployment_id: serving.as_ref().map(|d| d.id),
        }));
    }
    if interrupt.interrupted() {
        return Err(failure(
            Code::Operational,
            "interrupted by SIGINT/SIGTERM before anything was changed",
        ));
    }
    let active = store.active_deployment(&cfg.container.name)?;
    let (target, target_source) = target_of(&store, cfg, a)?;
    available(&engine, &target, &target_source).await?;
    let client = crate::probe::health::client(cfg.verify.probe_timeout);
    let wait = a.wait.unwrap_or(cfg.verify.startup_wait);

    // Idempotent: what already runs healthy from the target image stays.
    let running = engine.find_container(&cfg.container.name).await?;
    let running_image = running
        .as_ref()
        .and_then(|c| c.config.as_ref())
        .and_then(|c| c.image.clone());
    if !a.drill && running_image.as_deref() == Some(target.as_str()) {
        let h = crate::probe::health::probe(&client, &cfg.health_url()).await;
        if h.healthy {
            store.event(
                EventKind::RollbackNoop,
                active.as_ref().map(|d| d.id),
                &json!({"target": target, "reason": a.reason}),
            )?;
            return Ok(RolledBack::Noop(Noop {
                ok: true,
                noop: true,
                target,
                target_source,
                name: cfg.container.name.clone(),
            }));
        }
    }

    let spec = DeploySpec::from_config(cfg, &target, env.clone());
    let first = restore_to(
        &engine,
        &mut store,
        &client,
        cfg,
        &spec,
        active.as_ref().map(|d| d.id),
        a,
        decision,
        wait,
        if a.drill {
            DeploymentKind::Drill
        } else {
            DeploymentKind::Rollback
        },
        &target_source,
        &interrupt,
    )
    .await?;
    let mut first = first;
    if !a.drill {
        if let Some(inc) = first.pending_incident.take() {
            first.incident = Some(post_rollback(cfg, &store, &inc).await);
        }
        return Ok(RolledBack::Restored(Box::new(first)));
    }
    // Drill: the rollback worked; now restore forward to what ran before.
    let forward_ref = match running_image {
        Some(r) if first.code == Code::Ok => r,
        _ => return Ok(RolledBack::Restored(Box::new(first))),
    };
    let forward_spec = DeploySpec::from_config(cfg, &forward_ref, env);
    let forward_started = Instant::now();
    let new_active = store.active_deployment(&cfg.container.name)?.map(|d| d.id);
    let second = restore_to(
        &engine,
        &mut store,
        &client,
        cfg,
        &forward_spec,
        new_active,
        a,
        forward_started,
        wait,
        DeploymentKind::Drill,
        "the drill's forward leg",
        &interrupt,
    )
    .await?;
    let passed = second.code == Code::Ok;
    let detail = DrillDetail {
        rollback_to: Some(target.clone()),
        rollback_decision_to_healthy_ms: Some(first.decision_to_healthy_ms as u64),
        forward_to: Some(forward_ref.clone()),
        forward_to_healthy_ms: Some(second.decision_to_healthy_ms as u64),
        passed,
        target_ms: Some(cfg.rollback.docker_target.as_millis() as u64),
    };
    store.event(EventKind::Drill, second.deployment_id, &detail)?;
    Ok(RolledBack::Drill(Box::new(Drill {
        ok: passed,
        drill: detail,
        first: first.text(),
        second: second.story,
    })))
}

/// The rollback with the switch strategy: a switch back to the warm previous slot when it runs
/// the target (no container started: the baseline answers as soon as the front switches),
/// else the target started in the idle slot, verified, and switched to. Either way no request
/// is dropped; the incident and notifications follow as with `recreate`.
async fn rollback_switch(
    ctx: &Context<'_>,
    a: &Request,
    engine: &Engine,
    store: &mut Store,
    env: Vec<crate::envfile::EnvVar>,
    decision: Instant,
    interrupt: &rollout::Interrupt,
) -> Result<RolledBack> {
    use rollout::switch;
    let cfg = ctx.config;
    let (front, _) = switch::front_of(cfg, ctx.state_dir).await?;
    let mut notes = switch::reconcile(engine, store, &front, cfg).await?;
    notes.extend(switch::reap(engine, store, &front, cfg).await?);
    let active = store.active_deployment(&cfg.container.name)?;
    let (target, target_source) = target_of(store, cfg, a)?;
    available(engine, &target, &target_source).await?;
    let old = engine.find_container(&cfg.container.name).await?;
    let old_id = old.as_ref().and_then(|c| c.id.clone());
    let legs = Legs {
        cfg,
        env,
        request: a,
        interrupt,
    };
    let first = legs.candidate(&target, active.as_ref().map(|d| d.id), decision);
    let outcome = switch::leg(engine, store, &front, cfg, first).await?;
    if a.drill {
        return drill_switch(
            engine,
            store,
            &front,
            &legs,
            (&outcome, &target),
            active.as_ref(),
        )
        .await;
    }
    let elapsed = decision.elapsed().as_millis() as u64;
    let spec = DeploySpec::from_config(cfg, &target, Vec::new());
    let logs = replaced_logs(engine, old_id.as_deref(), &spec, cfg).await;
    let mut r = switched_rollback(
        store,
        &legs,
        &outcome,
        (&target, target_source),
        active.as_ref(),
        elapsed,
    )?;
    let record = Facts {
        cfg,
        request: a,
        service: &cfg.container.name,
        image: &target,
        from: active.as_ref(),
        to_deployment: r.deployment_id.unwrap_or_default(),
        decided_at_ms: chrono::Utc::now().timestamp_millis() - elapsed as i64,
        elapsed_ms: elapsed,
    }
    .record(
        logs,
        r.rollback
            .failure
            .clone()
            .map(|w| (w, "what served before serves on".into())),
    );
    r.story = notes.iter().map(|n| format!("  {n}\n")).collect::<String>() + &r.story;
    r.incident = Some(post_rollback(cfg, store, &record).await);
    Ok(RolledBack::Restored(Box::new(r)))
}

/// What a rollback restores: `--to`, else the recorded baseline, and where that came from.
fn target_of(store: &Store, cfg: &crate::config::Config, a: &Request) -> Result<(String, String)> {
    Ok(match &a.to {
        Some(to) => (to.to_string(), "--to".to_string()),
        None => {
            let t = rollout::rollback_target(store, cfg)?;
            (t.image, t.source)
        }
    })
}

/// Before anything changes: a target that is not there fails the rollback now, with what to
/// do, rather than after the serving container was touched.
async fn available(engine: &Engine, target: &str, source: &str) -> Result<()> {
    match engine.ensure_image(target, &|_| {}).await {
        Ok(_) => Ok(()),
        Err(e) => Err(failure(
            Code::RollbackFailed,
            format!("rollback target {target} ({source}) is not available: {e:#}; push it to the registry, or pass --to REF"),
        )),
    }
}

/// What every leg of a switch rollback or drill starts from.
struct Legs<'a> {
    cfg: &'a crate::config::Config,
    env: Vec<crate::envfile::EnvVar>,
    request: &'a Request,
    interrupt: &'a rollout::Interrupt,
}

impl<'a> Legs<'a> {
    fn candidate(
        &self,
        image: &str,
        previous: Option<i64>,
        started: Instant,
    ) -> rollout::switch::Candidate<'a> {
        let kind = if self.request.drill {
            DeploymentKind::Drill
        } else {
            DeploymentKind::Rollback
        };
        rollout::switch::Candidate {
            spec: DeploySpec::from_config(self.cfg, image, self.env.clone()),
            kind,
            previous,
            insecure: false,
            wait: self.request.wait.unwrap_or(self.cfg.verify.startup_wait),
            started,
            interrupt: self.interrupt,
        }
    }
}

type LegOutcome = std::result::Result<rollout::switch::Switched, rollout::switch::NotSwitched>;

/// A drill with the switch strategy: back (done), then forward again to what served; the
/// forward leg is a switch back to the warm slot too.
async fn drill_switch(
    engine: &Engine,
    store: &mut Store,
    front: &crate::front::Front,
    legs: &Legs<'_>,
    (outcome, target): (&LegOutcome, &str),
    active: Option<&crate::store::Deployment>,
) -> Result<RolledBack> {
    let cfg = legs.cfg;
    let (Ok(back), Some(forward)) = (outcome, active) else {
        let why = match outcome {
            Err(n) => n.reason.clone(),
            Ok(_) => "nothing served before the drill".into(),
        };
        return Err(failure(
            Code::RollbackFailed,
            format!("rollback drill FAILED on its first leg: {why}"),
        ));
    };
    let c = legs.candidate(&forward.image_ref, Some(back.deployment_id), Instant::now());
    let second = rollout::switch::leg(engine, store, front, cfg, c).await?;
    let detail = DrillDetail {
        rollback_to: Some(target.to_string()),
        rollback_decision_to_healthy_ms: Some(back.switched_after_ms as u64),
        forward_to: Some(forward.image_ref.clone()),
        forward_to_healthy_ms: second.as_ref().ok().map(|s| s.switched_after_ms as u64),
        passed: second.is_ok(),
        target_ms: Some(cfg.rollback.docker_target.as_millis() as u64),
    };
    store.event(
        EventKind::Drill,
        second.as_ref().ok().map(|s| s.deployment_id),
        &detail,
    )?;
    Ok(RolledBack::Drill(Box::new(Drill {
        ok: detail.passed,
        drill: detail,
        first: back.story(&cfg.container.name, target),
        second: match &second {
            Ok(s) => s.story(&cfg.container.name, &forward.image_ref),
            Err(n) => format!("  the forward leg FAILED: {}", n.reason),
        },
    })))
}

/// A switch rollback's record and outcome (its incident follows).
fn switched_rollback(
    store: &Store,
    legs: &Legs<'_>,
    outcome: &LegOutcome,
    (target, target_source): (&str, String),
    active: Option<&crate::store::Deployment>,
    elapsed: u64,
) -> Result<Restored> {
    let (cfg, a) = (legs.cfg, legs.request);
    let target_ms = cfg.rollback.docker_target.as_millis() as u64;
    let (id, failure_why) = match outcome {
        Ok(sw) => (sw.deployment_id, None),
        Err(ns) => (ns.deployment_id, Some(ns.reason.clone())),
    };
    let restored = failure_why.is_none();
    let kept = "the front never switched: what served before serves on";
    let detail = RollbackDetail {
        kind: Some("rollback".into()),
        from: active.map(|f| f.image_ref.clone()),
        to: Some(target.to_string()),
        reason: a.reason.clone(),
        approved_by: a.approval.recorded(),
        decision_to_healthy_ms: restored.then_some(elapsed),
        restored,
        target_ms: Some(target_ms),
        failure: failure_why.clone(),
        left_running: failure_why.as_ref().map(|_| kept.to_string()),
        decision_to_failure_ms: (!restored).then_some(elapsed),
        ..Default::default()
    };
    store.event(EventKind::Rollback, Some(id), &detail)?;
    let name = &cfg.container.name;
    let story = match outcome {
        Ok(sw) => format!(
            "rollback: {name} now serves {target} (deployment #{id})\n{}",
            sw.story(name, target)
        ),
        Err(ns) => format!("rollback to {target} FAILED: {}\n  {kept}", ns.reason),
    };
    Ok(Restored {
        ok: restored,
        deployment_id: Some(id),
        rollback: detail,
        target_source,
        incident: None,
        target_ms,
        within_target: elapsed <= target_ms,
        switch: outcome.as_ref().ok().cloned(),
        code: if restored {
            Code::Ok
        } else {
            Code::RollbackFailed
        },
        decision_to_healthy_ms: elapsed,
        story,
        pending_incident: None,
    })
}

#[allow(clippy::too_many_arguments)]
async fn restore_to(
    engine: &Engine,
    store: &mut Store,
    client: &reqwest::Client,
    cfg: &crate::config::Config,
    spec: &DeploySpec,
    from_deployment: Option<i64>,
    a: &Request,
    decision: Instant,
    wait: Duration,
    kind: DeploymentKind,
    target_source: &str,
    interrupt: &rollout::Interrupt,
) -> Result<Restored> {
    let target_ms = cfg.rollback.docker_target.as_millis() as u64;
    // A rollback prints its outcome, not pull progress.
    let image = engine.ensure_image(&spec.image, &|_| {}).await?;
    let from = from_deployment.and_then(|id| store.deployment(id).ok().flatten());
    // The restored deployment's own baseline is whatever preceded the one it restores, so a
    // second rollback walks further back instead of flipping between two images.
    let previous_id = match from
        .as_ref()
        .and_then(|f| f.previous_id)
        .and_then(|p| store.deployment(p).ok().flatten())
    {
        Some(base) if base.image_ref == spec.image && kind == DeploymentKind::Rollback => {
            base.previous_id
        }
        _ => from.as_ref().map(|f| f.id),
    };
    let id = store.insert_deployment(&NewDeployment {
        kind,
        image_ref: spec.image.clone(),
        image_id: image.id.clone(),
        digest: crate::engine::repo_digest(&image),
        container_name: spec.name.clone(),
        previous_id,
        insecure: false,
        host_port: Some(spec.host_port),
        base_url: Some(cfg.verify.base_url.clone()),
    })?;
    let swap = match rollout::swap(engine, spec, cfg.rollback.stop_grace).await {
        Ok(s) => s,
        Err(e) => {
            store.finish_deployment(id, DeploymentStatus::Failed, None)?;
            store.event(
                EventKind::Rollback,
                Some(id),
                &json!({"kind": kind, "restored": false, "error": format!("{e:#}")}),
            )?;
            return Err(crate::exit::failure(
                Code::RollbackFailed,
                format!("{kind} to {} failed: {e:#}", spec.image),
            ));
        }
    };
    store.set_container(id, &swap.new_id)?;
    let w = interrupt
        .wait_healthy(
            engine,
            client,
            &swap.new_id,
            &cfg.health_url(),
            wait,
            cfg.verify.poll_interval,
        )
        .await;
    let elapsed = decision.elapsed().as_millis();
    let stop_note = swap
        .old
        .as_ref()
        .map(|o| {
            format!(
                "  stopped {} in {}ms{}\n",
                o.image,
                o.stop_ms,
                if o.sigkill_needed {
                    format!(
                        " (it ignored SIGTERM; killed after the {}ms grace)",
                        cfg.rollback.stop_grace.as_millis()
                    )
                } else {
                    String::new()
                }
            )
        })
        .unwrap_or_default();
    // The replaced container's last words, before it is removed.
    let logs = replaced_logs(engine, swap.old.as_ref().map(|o| o.id.as_str()), spec, cfg).await;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let decided_at_ms = now_ms - decision.elapsed().as_millis() as i64;
    let facts = Facts {
        cfg,
        request: a,
        service: &spec.name,
        image: &spec.image,
        from: from.as_ref(),
        to_deployment: id,
        decided_at_ms,
        elapsed_ms: elapsed as u64,
    };
    let incident = |failure: Option<(String, String)>| facts.record(logs.clone(), failure);
    if w.healthy {
        // Healthy is recorded before the old container goes (see reconcile).
        store.mark_healthy(id, chrono::Utc::now())?;
        if let Err(e) = rollout::commit(engine, &swap).await {
            tracing::warn!("the replaced container could not be removed: {e:#}");
        }
        store.finish_deployment(id, DeploymentStatus::Active, Some(&json!({"wait": w})))?;
        let detail = RollbackDetail {
            kind: Some(kind.to_string()),
            from: from.as_ref().map(|f| f.image_ref.clone()),
            to: Some(spec.image.clone()),
            reason: a.reason.clone(),
            approved_by: a.approval.recorded(),
            decision_to_healthy_ms: Some(elapsed as u64),
            restored: true,
            target_ms: Some(cfg.rollback.docker_target.as_millis() as u64),
            stop_ms: swap.old.as_ref().map(|o| o.stop_ms as u64),
            sigkill_needed: swap.old.as_ref().map(|o| o.sigkill_needed),
            ..Default::default()
        };
        store.event(EventKind::Rollback, Some(id), &detail)?;
        let text = format!(
            "{kind}: {} now runs {} (deployment #{id})\n{stop_note}  healthy after {} probes",
            spec.name, spec.image, w.probes
        );
        return Ok(Restored {
            ok: true,
            deployment_id: Some(id),
            rollback: detail,
            target_source: target_source.to_string(),
            incident: None,
            target_ms,
            within_target: elapsed as u64 <= target_ms,
            switch: None,
            code: Code::Ok,
            decision_to_healthy_ms: elapsed as u64,
            story: text,
            pending_incident: (kind == DeploymentKind::Rollback).then(|| incident(None)),
        });
    }
    // The target never became healthy: put back what ran before, the most useful container.
    let reason = w.reason.clone().unwrap_or_else(|| "not healthy".into());
    let back = rollout::restore(engine, &swap).await;
    store.finish_deployment(id, DeploymentStatus::Failed, Some(&json!({"wait": w})))?;
    let left = match &back {
        Ok(true) => {
            if let Some(f) = &from {
                store.reactivate(f.id)?;
            }
            format!(
                "the previous container ({}) was put back and is running",
                swap.old.as_ref().map(|o| o.image.as_str()).unwrap_or("?")
            )
        }
        Ok(false) => "no container was running before; nothing is running now".to_string(),
        Err(e) => format!("putting the previous container back failed too: {e:#}"),
    };
    let detail = RollbackDetail {
        kind: Some(kind.to_string()),
        to: Some(spec.image.clone()),
        restored: false,
        reason: a.reason.clone(),
        failure: Some(reason.clone()),
        left_running: Some(left.clone()),
        decision_to_failure_ms: Some(elapsed as u64),
        ..Default::default()
    };
    store.event(EventKind::Rollback, Some(id), &detail)?;
    Ok(Restored {
        ok: false,
        deployment_id: Some(id),
        rollback: detail,
        target_source: target_source.to_string(),
        incident: None,
        target_ms,
        within_target: elapsed as u64 <= target_ms,
        switch: None,
        code: Code::RollbackFailed,
        decision_to_healthy_ms: elapsed as u64,
        story: format!(
            "{kind} to {} FAILED: {reason}\n{stop_note}  {left}",
            spec.image
        ),
        pending_incident: (kind == DeploymentKind::Rollback)
            .then(|| incident(Some((reason.clone(), left.clone())))),
    })
}

/// What an incident record is made of, the same for both strategies.
struct Facts<'a> {
    cfg: &'a crate::config::Config,
    request: &'a Request,
    service: &'a str,
    image: &'a str,
    from: Option<&'a crate::store::Deployment>,
    to_deployment: i64,
    decided_at_ms: i64,
    elapsed_ms: u64,
}

impl Facts<'_> {
    /// The record; `failure` is (why, what was left running) when the restore failed.
    fn record(&self, logs: LogExcerpt, failure: Option<(String, String)>) -> IncidentDetail {
        let (cfg, a) = (self.cfg, self.request);
        let now_ms = chrono::Utc::now().timestamp_millis();
        IncidentDetail {
            name: format!(
                "incident-{}",
                crate::store::events::at_ms(self.decided_at_ms).format("%Y%m%dT%H%M%S%.3fZ")
            ),
            service: self.service.to_string(),
            target: cfg.verify.base_url.clone(),
            decided_at_ms: self.decided_at_ms,
            healthy_at_ms: failure.is_none().then_some(now_ms),
            from_deployment: self.from.map(|f| f.id),
            to_deployment: Some(self.to_deployment),
            from: self.from.map(|f| f.image_ref.clone()),
            to: self.image.to_string(),
            automatic: matches!(a.approval, Approval::Automatic(_)),
            reason: a.reason.clone(),
            approved_by: a.approval.recorded(),
            restored: failure.is_none(),
            failure: failure.as_ref().map(|f| f.0.clone()),
            left_running: failure.as_ref().map(|f| f.1.clone()),
            decision_to_healthy_ms: self.elapsed_ms,
            target_ms: cfg.rollback.docker_target.as_millis() as u64,
            production: cfg.environment == Environment::Production,
            logs,
            deliveries: Vec::new(),
            after_until_ms: match failure {
                None => now_ms + cfg.report.incident_after.as_millis() as i64,
                Some(_) => now_ms,
            },
            complete: false,
        }
    }
}

/// The replaced container's last 30 lines, and its error lines of the last 10 minutes
/// counted (the first few kept), redacted as everything copied out of a container is.
async fn replaced_logs(
    engine: &Engine,
    old: Option<&str>,
    spec: &DeploySpec,
    cfg: &crate::config::Config,
) -> LogExcerpt {
    let Some(old) = old else {
        return LogExcerpt {
            not_read: Some("no container was replaced (nothing ran before the rollback)".into()),
            ..Default::default()
        };
    };
    if !cfg.report.incident_log_excerpt {
        return LogExcerpt {
            not_read: Some("log excerpts are off (`[report] incident_log_excerpt = false`)".into()),
            ..Default::default()
        };
    }
    let known: Vec<String> = spec.env.iter().map(|e| e.value.clone()).collect();
    let since = chrono::Utc::now().timestamp() - 600;
    let limits = LogLimits::new(30, Duration::from_secs(5));
    let last = engine
        .scan_logs(old, since, 0, Some(30), limits, &|_| true)
        .await;
    // The first few error lines, in order: the scan keeps the last ones, so they are caught
    // as the lines stream past.
    let first = std::cell::RefCell::new(Vec::new());
    let errors = engine
        .scan_logs(
            old,
            since,
            0,
            None,
            LogLimits::new(1, Duration::from_secs(5)),
            &|l| {
                let hit = crate::engine::logs::is_error_line(l);
                if hit && first.borrow().len() < 5 {
                    first.borrow_mut().push(l.to_string());
                }
                hit
            },
        )
        .await;
    let redact = |l: &String| crate::redact::log_line(l, &known);
    match (last, errors) {
        (Ok(last), Ok(errors)) => LogExcerpt {
            not_read: None,
            lines: last.last.iter().map(redact).collect(),
            error_lines: errors.matched,
            first_errors: first.into_inner().iter().map(redact).collect(),
        },
        (Err(e), _) | (_, Err(e)) => LogExcerpt {
            not_read: Some(format!("the engine did not give the logs: {e:#}")),
            ..Default::default()
        },
    }
}

/// The runbook's post-rollback actions that a tool can do: write the incident report, notify
/// the team, open the GitHub issue, then write the report again with what was sent.
/// Failures are reported, never fatal.
pub(super) async fn post_rollback(
    cfg: &crate::config::Config,
    store: &Store,
    rec: &IncidentDetail,
) -> IncidentFiled {
    use crate::report::incident;
    let mut rec = rec.clone();
    let write = |rec: &IncidentDetail| {
        incident::gather(store, cfg, rec, chrono::Utc::now()).and_then(|inc| {
            let md = incident::markdown(&inc, cfg, None);
            Ok((incident::write(cfg, &inc)?, md))
        })
    };
    let first = write(&rec);
    let md = first.as_ref().map(|f| f.1.clone()).unwrap_or_default();
    let notes = notify_team(cfg, &rec, &md).await;
    for n in &notes {
        rec.deliveries.push(Delivery {
            channel: n.channel.to_string(),
            ok: n.ok,
            at_ms: n.at_ms,
            detail: n.detail.clone(),
        });
        let sent = json!({"channel": n.channel, "ok": n.ok, "detail": n.detail});
        let _ = store.event(EventKind::Notify, None, &sent);
    }
    // Written again with the deliveries on the checklist and the timeline; recorded so a
    // later run completes the after-window.
    let written = if notes.is_empty() { first } else { write(&rec) };
    rec.complete = chrono::Utc::now().timestamp_millis() >= rec.after_until_ms;
    if let Err(e) = store.event(EventKind::Incident, rec.to_deployment, &rec) {
        tracing::warn!("the incident was not recorded: {e:#}");
    }
    let mut text = match &written {
        Ok((files, _)) => format!("\n  incident report: {}", files.markdown.display()),
        Err(e) => format!("\n  incident report NOT written: {e:#}"),
    };
    for n in &notes {
        let said = if n.ok {
            n.detail.clone()
        } else {
            format!("FAILED ({})", n.detail)
        };
        text += &format!("\n  notify {}: {said}", n.channel);
    }
    let files = written.as_ref().ok().map(|(f, _)| f);
    let shown = |p: &std::path::Path| p.display().to_string();
    IncidentFiled {
        report: files.map(|f| shown(&f.markdown)),
        html: files.map(|f| shown(&f.html)),
        chart: files.and_then(|f| f.chart.as_deref()).map(shown),
        notifications: notes,
        text,
    }
}

/// The runbook's "Notify team" and "Create GitHub issue": the webhook with the incident, and
/// the issue with the report as its body, where configured.
async fn notify_team(
    cfg: &crate::config::Config,
    rec: &IncidentDetail,
    md: &str,
) -> Vec<crate::notify::Sent> {
    let outcome = if rec.restored {
        "restored service"
    } else {
        "FAILED"
    };
    let summary = format!(
        "dhi-stage: rollback of {} to {} {outcome} ({}) in {:.2}s",
        rec.service,
        rec.to,
        rec.reason.as_deref().unwrap_or("no reason given"),
        rec.decision_to_healthy_ms as f64 / 1000.0
    );
    let mut notes = Vec::new();
    let detail = json!({"incident": rec});
    notes.extend(crate::notify::webhook(&cfg.notify, "rollback", &summary, &detail).await);
    let title = format!(
        "Rollback: {}",
        rec.reason
            .as_deref()
            .unwrap_or("authentication-service staging")
    );
    notes.extend(crate::notify::github_issue(&cfg.notify, &title, md).await);
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_needs_a_named_approver() {
        use Environment::*;
        let none = Approval::Operator(None);
        let blank = Approval::Operator(Some("  ".into()));
        let named = Approval::Operator(Some("cto".into()));
        let auto = Approval::Automatic("monitor --auto-rollback");
        assert!(approved(Staging, &none).is_ok());
        assert!(approved(Production, &none).is_err());
        assert!(approved(Production, &blank).is_err());
        assert!(approved(Production, &named).is_ok());
        assert!(approved(Production, &auto).is_ok());
        assert_eq!(none.recorded(), None);
        assert_eq!(auto.recorded().as_deref(), Some("monitor --auto-rollback"));
    }
}
