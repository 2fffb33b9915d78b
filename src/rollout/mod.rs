//! Replacing the service's container, the part deploy, rollback and drills share.
//!
//! The old container keeps its state until the new one is proven: it is renamed to
//! `<name>.previous` and stopped only because it holds the published port; if the new one
//! does not become healthy, it is removed and the old one renamed back and started. Every
//! wait is a poll against a deadline, never a fixed sleep, because rollback time is measured.

pub mod deploy;
pub mod kubernetes;
pub mod rollback;
pub mod switch;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::json;

use crate::config::Config;
use crate::engine::spec::{hardened, DeploySpec};
use crate::engine::Engine;
use crate::probe::health::{self, HealthResult};
use crate::security::hardening;
use crate::store::{DeploymentStatus, EventKind};

/// What a rollback would restore, and why that image.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RollbackTarget {
    pub image: String,
    /// "previous deployment #N" or "runbook baseline".
    pub source: String,
}

/// The runbook's rollback target: the deployment before the active one; with none recorded
/// (the first deployment this tool made), the runbook's baseline
/// `<registry>/<image.name>:<image.baseline_tag>`, so there is always somewhere to go back to.
pub fn rollback_target(
    store: &crate::store::Store,
    cfg: &Config,
) -> anyhow::Result<RollbackTarget> {
    let active = store.active_deployment(&cfg.container.name)?;
    let previous = match active.as_ref().and_then(|a| a.previous_id) {
        Some(id) => store.deployment(id)?,
        None => None,
    };
    Ok(match previous {
        Some(p) => RollbackTarget {
            image: p.image_ref,
            source: format!("previous deployment #{}", p.id),
        },
        None => RollbackTarget {
            image: cfg.baseline_ref(),
            source: "runbook baseline (image.baseline_tag; no previous deployment is recorded)"
                .into(),
        },
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct WaitResult {
    pub healthy: bool,
    pub elapsed_ms: u128,
    pub probes: u32,
    pub last: Option<HealthResult>,
    /// Why waiting stopped early or failed, in words.
    pub reason: Option<String>,
}

/// Polls `url` until it is healthy, the container dies, or `limit` passes.
pub async fn wait_healthy(
    engine: &Engine,
    client: &reqwest::Client,
    container: &str,
    url: &str,
    limit: Duration,
    poll: Duration,
) -> WaitResult {
    let started = Instant::now();
    let mut probes = 0;
    let mut last: Option<HealthResult>;
    let mut last_state_check = Instant::now();
    loop {
        let h = health::probe(client, url).await;
        probes += 1;
        let healthy = h.healthy;
        last = Some(h);
        if healthy {
            return WaitResult {
                healthy: true,
                elapsed_ms: started.elapsed().as_millis(),
                probes,
                last,
                reason: None,
            };
        }
        // Not every poll: inspecting costs more than probing.
        if last_state_check.elapsed() >= Duration::from_millis(250) {
            last_state_check = Instant::now();
            if let Ok(c) = engine.inspect_container(container).await {
                let state = c.state.unwrap_or_default();
                let restarts = c.restart_count.unwrap_or(0);
                if !state.running.unwrap_or(false) || restarts > 0 {
                    let reason = format!(
                        "container {container} exited (code {}, restarts {restarts}{})",
                        state.exit_code.unwrap_or(0),
                        if state.oom_killed.unwrap_or(false) {
                            ", OOM-killed"
                        } else {
                            ""
                        }
                    );
                    return WaitResult {
                        healthy: false,
                        elapsed_ms: started.elapsed().as_millis(),
                        probes,
                        last,
                        reason: Some(reason),
                    };
                }
            }
        }
        if started.elapsed() >= limit {
            let why = last
                .as_ref()
                .and_then(|h| h.error.clone())
                .unwrap_or_else(|| "not healthy".into());
            return WaitResult {
                healthy: false,
                elapsed_ms: started.elapsed().as_millis(),
                probes,
                last,
                reason: Some(format!(
                    "not healthy within {}: last probe: {why}",
                    humantime::format_duration(limit)
                )),
            };
        }
        tokio::time::sleep(poll).await;
    }
}

/// The old container set aside during a swap.
#[derive(Debug, Clone, Serialize)]
pub struct SetAside {
    pub id: String,
    pub renamed_to: String,
    pub image: String,
    pub was_running: bool,
    pub restart_policy: String,
    pub stop_ms: u128,
    pub sigkill_needed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Swap {
    pub name: String,
    pub new_id: String,
    pub old: Option<SetAside>,
}

/// What reconciling the engine with the store found and did before a deploy or rollback.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Reconciled {
    pub actions: Vec<String>,
    /// An interrupted deployment that was undone (its container removed, the last verified
    /// one serving again): a `rollback` stops there instead of going one step further back.
    pub undone: Option<i64>,
}

/// Under the state lock, before any change: resolves what an interrupted deploy or rollback
/// (kill -9, power loss) left behind, so the last verified container is never deleted and the
/// store agrees with the engine. The store's truth: the active deployment's container is the
/// last verified one; a deployment left `starting` was interrupted, and it passed
/// verification only if `healthy_at` was recorded (which happens before the old container
/// is removed).
pub async fn reconcile(
    engine: &Engine,
    store: &mut crate::store::Store,
    name: &str,
    restart_policy: &str,
) -> Result<Reconciled> {
    let mut r = Reconciled::default();
    let deployments: Vec<_> = store
        .deployments()?
        .into_iter()
        .filter(|d| d.container_name == name)
        .collect();
    let active = deployments
        .iter()
        .rev()
        .find(|d| d.status == DeploymentStatus::Active)
        .cloned();
    let starting: Vec<_> = deployments
        .iter()
        .filter(|d| d.status == DeploymentStatus::Starting)
        .cloned()
        .collect();
    let named = engine.find_container(name).await?;
    let aside = engine.find_container(&aside_name(name)).await?;
    let named_id = named.as_ref().and_then(|c| c.id.clone());
    // The interrupted attempt whose container now holds the name and had been verified.
    let verified_new = starting
        .iter()
        .rev()
        .find(|s| s.healthy_at.is_some() && s.container_id.is_some() && s.container_id == named_id);
    if let Some(s) = verified_new {
        // It passed verification; only the bookkeeping after it was cut: finish it.
        if let Some(a) = &aside {
            engine
                .remove_container(a.id.as_deref().unwrap_or_default())
                .await?;
            r.actions.push(format!(
                "removed the container deployment #{} had replaced (left aside)",
                s.id
            ));
        }
        store.finish_deployment(s.id, DeploymentStatus::Active, None)?;
        r.actions.push(format!(
            "completed interrupted deployment #{} ({}): it had passed verification",
            s.id, s.image_ref
        ));
    } else if let Some(a) = &aside {
        let aside_id = a.id.clone().unwrap_or_default();
        let aside_is_last_good = named.is_none()
            || active.as_ref().and_then(|d| d.container_id.as_deref()) == Some(aside_id.as_str());
        if aside_is_last_good {
            if let Some(id) = named_id.as_deref().filter(|id| *id != aside_id) {
                engine.remove_container(id).await?;
                r.actions.push(format!(
                    "removed unverified container {} of an interrupted run",
                    &id[..12.min(id.len())]
                ));
            }
            if let Err(e) = engine.rename_container(&aside_id, name).await {
                // A create sent by the killed run can still finish in the daemon after the
                // look-up above: that container holds the name now, unverified. Remove it
                // and put the last good one back all the same.
                let holder = engine.find_container(name).await?.and_then(|c| c.id);
                match holder.filter(|id| *id != aside_id) {
                    Some(id) => {
                        engine.remove_container(&id).await?;
                        r.actions.push(format!(
                            "removed unverified container {} created by an interrupted run",
                            &id[..12.min(id.len())]
                        ));
                        engine.rename_container(&aside_id, name).await?;
                    }
                    None => return Err(e),
                }
            }
            engine.set_restart_policy(name, restart_policy).await?;
            if !engine.is_running(name).await? {
                engine.start_container(name).await?;
            }
            r.actions.push(format!(
                "put back the last verified container {} ({})",
                &aside_id[..12.min(aside_id.len())],
                active.as_ref().map(|d| d.image_ref.as_str()).unwrap_or("?")
            ));
            if let Some(act) = &active {
                // The put-back container is the active deployment's, as the store says.
                store.set_container(act.id, &aside_id)?;
            }
        } else {
            engine.remove_container(&aside_id).await?;
            r.actions.push(format!(
                "removed stale container {} left aside beside the active one",
                &aside_id[..12.min(aside_id.len())]
            ));
        }
    }
    for s in &starting {
        if verified_new.is_some_and(|v| v.id == s.id) {
            continue;
        }
        // Its container, if it got one, is gone or was just removed.
        if s.container_id.is_some() && s.container_id == named_id && aside.is_none() {
            // No previous container to go back to (a first deployment): an unverified
            // container does not serve.
            engine
                .remove_container(named_id.as_deref().unwrap_or_default())
                .await?;
            r.actions.push(format!(
                "removed unverified container of interrupted deployment #{}",
                s.id
            ));
        }
        store.finish_deployment(
            s.id,
            DeploymentStatus::Failed,
            Some(&json!({"interrupted": true, "reconciled_at": crate::store::now()})),
        )?;
        store.event(
            EventKind::Reconcile,
            Some(s.id),
            &json!({"deployment": s.id, "image": s.image_ref, "undone": true}),
        )?;
        r.undone = Some(r.undone.map_or(s.id, |u: i64| u.max(s.id)));
    }
    if !r.actions.is_empty() {
        tracing::warn!(actions = ?r.actions, "reconciled what an interrupted run left");
    }
    Ok(r)
}

/// SIGINT/SIGTERM during a deploy or rollback: the handler replaces the default action, so
/// the process is never cut mid-swap; the swap in progress is finished or undone, and the
/// caller sees `interrupted()`.
pub struct Interrupt {
    token: tokio_util::sync::CancellationToken,
    watcher: tokio::task::JoinHandle<()>,
}

impl Interrupt {
    pub fn install() -> Interrupt {
        let token = tokio_util::sync::CancellationToken::new();
        let t = token.clone();
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let mut int =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
        let watcher = tokio::spawn(async move {
            tokio::select! {
                _ = recv(term.as_mut()) => {}
                _ = recv(int.as_mut()) => {}
            }
            t.cancel();
        });
        Interrupt { token, watcher }
    }

    /// Cancelled when SIGINT or SIGTERM arrives.
    pub fn token(&self) -> &tokio_util::sync::CancellationToken {
        &self.token
    }

    pub fn interrupted(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Waits for health unless a signal comes first (then: not healthy, "interrupted").
    pub async fn wait_healthy(
        &self,
        engine: &Engine,
        client: &reqwest::Client,
        container: &str,
        url: &str,
        limit: Duration,
        poll: Duration,
    ) -> WaitResult {
        let started = Instant::now();
        tokio::select! {
            w = wait_healthy(engine, client, container, url, limit, poll) => w,
            _ = self.token.cancelled() => WaitResult {
                healthy: false,
                elapsed_ms: started.elapsed().as_millis(),
                probes: 0,
                last: None,
                reason: Some("interrupted by SIGINT/SIGTERM: the previous container is put back".into()),
            },
        }
    }
}

async fn recv(s: Option<&mut tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

impl Drop for Interrupt {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

pub fn aside_name(name: &str) -> String {
    format!("{name}.previous")
}

/// Sets the current container aside and starts `spec` in its place. Creating the new
/// container runs alongside stopping the old one; only the start waits for the port.
pub async fn swap(engine: &Engine, spec: &DeploySpec, grace: Duration) -> Result<Swap> {
    let name = spec.name.clone();
    let aside = aside_name(&name);
    // What an interrupted run left aside was resolved by `reconcile` under the same lock; a
    // container still there now is not ours to delete.
    if engine.find_container(&aside).await?.is_some() {
        anyhow::bail!(
            "{aside} exists: a previous run was interrupted and not reconciled; run `dhi-stage status` and remove or rename it by hand"
        );
    }
    let old = engine.find_container(&name).await?;
    if let Some(old) = old {
        let id = old.id.clone().unwrap_or_default();
        engine.rename_container(&name, &aside).await?;
        let was_running = old.state.as_ref().and_then(|s| s.running).unwrap_or(false);
        let restart_policy = old
            .host_config
            .as_ref()
            .and_then(|h| h.restart_policy.as_ref())
            .and_then(|r| r.name)
            .map(|n| n.to_string())
            .unwrap_or_else(|| "no".into());
        let image = old
            .config
            .as_ref()
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        let stop_started = Instant::now();
        let body = hardened(spec);
        let (stopped, created) = tokio::join!(
            engine.stop_within(&aside, grace),
            engine.create_container(&name, body)
        );
        let sigkill_needed = match stopped {
            Ok(k) => k,
            Err(e) => {
                if let Ok(new_id) = &created {
                    let _ = engine.remove_container(new_id).await;
                }
                let _ = engine.rename_container(&aside, &name).await;
                return Err(e.context("cannot stop the current container"));
            }
        };
        let stop_ms = stop_started.elapsed().as_millis();
        let set_aside = Some(SetAside {
            id,
            renamed_to: aside.clone(),
            image,
            was_running,
            restart_policy,
            stop_ms,
            sigkill_needed,
        });
        let new_id = match created {
            Ok(id) => id,
            Err(e) => {
                let s = Swap {
                    name: name.clone(),
                    new_id: String::new(),
                    old: set_aside,
                };
                if let Err(r) = restore(engine, &s).await {
                    tracing::error!("restoring the previous container failed too: {r:#}");
                }
                return Err(e);
            }
        };
        let s = Swap {
            name: name.clone(),
            new_id,
            old: set_aside,
        };
        if let Err(e) = engine.start_container(&s.new_id).await {
            if let Err(r) = restore(engine, &s).await {
                tracing::error!("restoring the previous container failed too: {r:#}");
            }
            return Err(e);
        }
        return Ok(s);
    }
    let new_id = engine.create_container(&name, hardened(spec)).await?;
    let s = Swap {
        name,
        new_id,
        old: None,
    };
    if let Err(e) = engine.start_container(&s.new_id).await {
        let _ = engine.remove_container(&s.new_id).await;
        return Err(e);
    }
    Ok(s)
}

/// The new container is proven: the old one goes.
pub async fn commit(engine: &Engine, s: &Swap) -> Result<()> {
    if let Some(old) = &s.old {
        engine
            .remove_container(&old.id)
            .await
            .context("cannot remove the previous container")?;
    }
    Ok(())
}

/// The new container failed: remove it, bring the old one back under its name, as it was.
/// Returns false when there was nothing to restore.
pub async fn restore(engine: &Engine, s: &Swap) -> Result<bool> {
    if !s.new_id.is_empty() {
        engine
            .remove_container(&s.new_id)
            .await
            .context("cannot remove the failed container")?;
    }
    let Some(old) = &s.old else { return Ok(false) };
    engine.rename_container(&old.id, &s.name).await?;
    engine
        .set_restart_policy(&old.id, &old.restart_policy)
        .await?;
    if old.was_running {
        engine.start_container(&old.id).await?;
    }
    Ok(true)
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub check: String,
    /// None: the check could not be made (e.g. no `id` binary in a FROM scratch image).
    pub ok: Option<bool>,
    pub detail: String,
}

impl Check {
    pub fn new(check: &str, ok: Option<bool>, detail: impl Into<String>) -> Check {
        Check {
            check: check.into(),
            ok,
            detail: detail.into(),
        }
    }
}

/// Step 4's checks, each from the engine's view of the running container (not our spec).
pub async fn verify(
    engine: &Engine,
    cfg: &Config,
    spec: &DeploySpec,
    health: Option<&HealthResult>,
) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    match health {
        Some(h) => {
            checks.push(Check::new(
                "health",
                Some(h.healthy),
                format!(
                    "HTTP {} status {}",
                    h.http_status.map(|s| s.to_string()).unwrap_or("-".into()),
                    h.status.as_deref().unwrap_or("-")
                ),
            ));
            for dep in &cfg.verify.required_dependencies {
                let state = h
                    .dependencies
                    .get(dep)
                    .map(String::as_str)
                    .unwrap_or("missing");
                checks.push(Check::new(
                    &format!("dependency {dep}"),
                    Some(state == "healthy"),
                    state,
                ));
            }
        }
        None => checks.push(Check::new("health", Some(false), "no healthy response")),
    }
    let c = engine.inspect_container(&spec.name).await?;
    let hc = c.host_config.clone().unwrap_or_default();
    let sec = hc.security_opt.clone().unwrap_or_default();
    checks.push(Check::new(
        "SecurityOpt no-new-privileges:true",
        Some(hardening::no_new_privileges(&sec)),
        format!("{sec:?}"),
    ));
    let user = c
        .config
        .as_ref()
        .and_then(|c| c.user.clone())
        .unwrap_or_default();
    checks.push(Check::new(
        "user (inspect)",
        Some(user == cfg.verify.expected_user),
        format!("{user:?}, expected {:?}", cfg.verify.expected_user),
    ));
    // Both commands run in the new container at once: verification is on the deploy's path.
    let id_cmd = ["id".to_string()];
    let (id_run, version_run) = tokio::join!(
        engine.exec(&spec.name, &id_cmd),
        engine.exec(&spec.name, &cfg.verify.version_command)
    );
    match id_run {
        Ok((0, out)) => {
            // `id` prints `uid=65532 gid=65532 ...`; an expected user that is not numeric
            // cannot match (the deploy refuses such a spec anyway).
            let ok = hardening::User::parse(&cfg.verify.expected_user).is_ok_and(|u| {
                id_field(&out, "uid") == Some(u.uid)
                    && u.gid.is_none_or(|g| id_field(&out, "gid") == Some(g))
            });
            checks.push(Check::new("user (id)", Some(ok), out.trim()));
        }
        Ok((_, out)) if out.contains("executable file not found") => checks.push(Check::new(
            "user (id)",
            None,
            "not checkable: the image has no `id` (FROM scratch); the inspect check above stands",
        )),
        Ok((code, out)) => checks.push(Check::new(
            "user (id)",
            None,
            format!("not checkable: `id` exited {code}: {}", out.trim()),
        )),
        Err(e) => checks.push(Check::new(
            "user (id)",
            None,
            format!("not checkable: {}", short(&e)),
        )),
    }
    let expected = &cfg.verify.expected_version;
    let cmd = cfg.verify.version_command.join(" ");
    match version_run {
        Ok((0, out)) => checks.push(Check::new(
            &format!("{cmd} = {expected}"),
            Some(out.trim() == expected),
            out.trim(),
        )),
        Ok((code, out)) => checks.push(Check::new(
            &format!("{cmd} = {expected}"),
            Some(false),
            format!("exited {code}: {}", out.trim()),
        )),
        Err(e) => checks.push(Check::new(
            &format!("{cmd} = {expected}"),
            Some(false),
            format!("cannot run: {}", short(&e)),
        )),
    }
    checks.push(Check::new(
        "read-only root filesystem",
        Some(hc.readonly_rootfs == Some(spec.read_only)),
        format!("ReadonlyRootfs {:?}", hc.readonly_rootfs),
    ));
    let caps = hc.cap_drop.clone().unwrap_or_default();
    let want_all = hardening::drops_all_capabilities(&spec.cap_drop);
    checks.push(Check::new(
        "cap-drop ALL",
        Some(!want_all || hardening::drops_all_capabilities(&caps)),
        format!("CapDrop {caps:?}"),
    ));
    let tmpfs = hc.tmpfs.clone().unwrap_or_default();
    for t in &spec.tmpfs {
        let got = tmpfs.get(&t.path).cloned();
        checks.push(Check::new(
            &format!("tmpfs {}", t.path),
            Some(got.as_deref() == Some(t.docker_options().as_str())),
            format!("{got:?}"),
        ));
    }
    let policy = hc
        .restart_policy
        .as_ref()
        .and_then(|r| r.name)
        .map(|n| n.to_string())
        .unwrap_or_default();
    checks.push(Check::new(
        "restart policy",
        Some(policy == spec.restart),
        policy,
    ));
    Ok(checks)
}

/// A number from `id`'s output: `uid=65532(nonroot) gid=65532 groups=...` -> 65532.
fn id_field(out: &str, key: &str) -> Option<u32> {
    let at = out.find(&format!("{key}="))? + key.len() + 1;
    let digits: String = out[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn short(e: &anyhow::Error) -> String {
    let s = format!("{e:#}");
    s.chars().take(200).collect()
}

pub fn checks_pass(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.ok != Some(false))
}

pub fn render_checks(checks: &[Check]) -> String {
    checks
        .iter()
        .map(|c| {
            let mark = match c.ok {
                Some(true) => "ok  ",
                Some(false) => "FAIL",
                None => "n/a ",
            };
            format!("  {mark} {:<40} {}", c.check, c.detail)
        })
        .collect::<Vec<_>>()
        .join("\n")
}
