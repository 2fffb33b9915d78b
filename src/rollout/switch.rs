//! The `switch` strategy: two slots behind a front proxy, one serving. A deploy (or a rollback
//! to an image that is not warm) starts the new container in the idle slot with every hardening
//! flag, verifies it there directly, and only then switches the front to it, drains the old
//! slot and keeps it running for `keep_previous`; a rollback inside that time is a switch back.
//! The container serving is always named as the service (`auth-service-staging`), so status,
//! monitor and logs read it as with `recreate`; the warm previous is `<name>-slotN`.
//!
//! The order of the steps is what makes it crash-safe: verified (`healthy_at`) before the
//! front switches, the front before the store, and the front is the truth `reconcile` reads
//! back after a kill: exactly one verified slot serves, and the store agrees.

use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;
use serde_json::json;

use crate::config::Config;
use crate::engine::spec::{hardened, DeploySpec};
use crate::engine::Engine;
use crate::exit::{failure, Code};
use crate::front::{self, Admin, Front};
use crate::store::{DeploymentKind, DeploymentStatus, EventKind, NewDeployment, Store};

/// The warm container's name in `slot` (0 or 1).
pub fn slot_name(name: &str, slot: usize) -> String {
    format!("{name}-slot{}", slot + 1)
}

/// The host port a container publishes for the service's port.
fn published(c: &bollard::models::ContainerInspectResponse) -> Option<u16> {
    c.host_config
        .as_ref()?
        .port_bindings
        .as_ref()?
        .values()
        .flatten()
        .flatten()
        .find_map(|b| b.host_port.as_deref()?.parse().ok())
}

/// A container in a slot.
#[derive(Debug, Clone)]
pub struct Occupant {
    pub name: String,
    pub id: String,
    pub image: String,
    pub running: bool,
}

/// Who is in `slot`: the serving name or the slot's warm name, whichever publishes its port.
pub async fn occupant(engine: &Engine, cfg: &Config, slot: usize) -> Result<Option<Occupant>> {
    let name = &cfg.container.name;
    let port = cfg.rollout.switch.slots[slot];
    for n in [name.clone(), slot_name(name, 0), slot_name(name, 1)] {
        if let Some(c) = engine.find_container(&n).await? {
            if published(&c) == Some(port) {
                return Ok(Some(Occupant {
                    name: n,
                    id: c.id.clone().unwrap_or_default(),
                    image: c
                        .config
                        .as_ref()
                        .and_then(|c| c.image.clone())
                        .unwrap_or_default(),
                    running: c.state.as_ref().and_then(|s| s.running).unwrap_or(false),
                }));
            }
        }
    }
    Ok(None)
}

/// The front, answering; a front that does not answer is an error naming it (never a silent
/// fall back to `recreate`).
pub async fn front_of(
    cfg: &Config,
    state_dir: &std::path::Path,
) -> Result<(Front, [front::SlotState; 2])> {
    let f = Front::of(cfg, state_dir).map_err(|e| failure(Code::Usage, format!("{e:#}")))?;
    let st = f.state().await.map_err(|e| {
        failure(
            Code::Operational,
            format!("the switch strategy needs its front ({}): {e:#}", f.name()),
        )
    })?;
    Ok((f, st))
}

/// The one slot serving, when exactly one is.
fn serving(st: &[front::SlotState; 2]) -> Option<usize> {
    match front::ready(st).as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

/// After a kill: makes the store and the container names agree with what the front serves,
/// finishing a switch the front had made and undoing one it had not.
pub async fn reconcile(
    engine: &Engine,
    store: &mut Store,
    front: &Front,
    cfg: &Config,
) -> Result<Vec<String>> {
    let name = &cfg.container.name;
    let mut actions = Vec::new();
    let mut st = front.state().await?;
    let starting: Vec<_> = store
        .deployments()?
        .into_iter()
        .filter(|d| &d.container_name == name && d.status == DeploymentStatus::Starting)
        .collect();
    // Both ready: the kill came between the two halves of a switch.
    if front::ready(&st).len() == 2 {
        let newest = starting.iter().rev().find(|d| d.healthy_at.is_some());
        let keep = match newest.and_then(|d| d.container_id.clone()) {
            Some(id) => slot_of_container(engine, cfg, &id).await?,
            None => None,
        };
        let keep = match keep {
            Some(k) => k,
            None => slot_of_container(engine, cfg, name).await?.unwrap_or(0),
        };
        front.set(1 - keep, Admin::Drain).await?;
        actions.push(format!(
            "finished an interrupted switch: slot {} serves",
            keep + 1
        ));
        st = front.state().await?;
    }
    let serving = serving(&st);
    let serving_id = match serving {
        Some(s) => occupant(engine, cfg, s).await?.map(|o| o.id),
        None => None,
    };
    for d in &starting {
        if d.healthy_at.is_some() && d.container_id.is_some() && d.container_id == serving_id {
            store.finish_deployment(d.id, DeploymentStatus::Active, None)?;
            actions.push(format!(
                "completed interrupted deployment #{}: the front serves it",
                d.id
            ));
        } else {
            if let Some(id) = d
                .container_id
                .as_deref()
                .filter(|id| Some(*id) != serving_id.as_deref())
            {
                if let Some(slot) = slot_of_container(engine, cfg, id).await? {
                    front.set(slot, Admin::Maint).await?;
                }
                engine.remove_container(id).await?;
            }
            store.finish_deployment(d.id, DeploymentStatus::Failed, None)?;
            actions.push(format!(
                "undid interrupted deployment #{}: it never served",
                d.id
            ));
        }
    }
    if let Some(s) = serving {
        actions.extend(name_the_serving(engine, cfg, s).await?);
        front.save().await?;
    }
    if !actions.is_empty() {
        tracing::warn!(actions = ?actions, "reconciled what an interrupted switch left");
    }
    Ok(actions)
}

async fn slot_of_container(engine: &Engine, cfg: &Config, id: &str) -> Result<Option<usize>> {
    Ok(match engine.find_container(id).await? {
        Some(c) => {
            published(&c).and_then(|p| cfg.rollout.switch.slots.iter().position(|s| *s == p))
        }
        None => None,
    })
}

/// The serving slot's container gets the service's name, the other its slot's name.
async fn name_the_serving(engine: &Engine, cfg: &Config, serving: usize) -> Result<Vec<String>> {
    let name = &cfg.container.name;
    let mut actions = Vec::new();
    let (this, other) = (
        occupant(engine, cfg, serving).await?,
        occupant(engine, cfg, 1 - serving).await?,
    );
    if let Some(o) = other.filter(|o| &o.name == name) {
        engine
            .rename_container(&o.id, &slot_name(name, 1 - serving))
            .await?;
        actions.push(format!(
            "renamed the previous container to {}",
            slot_name(name, 1 - serving)
        ));
    }
    if let Some(t) = this.filter(|t| &t.name != name) {
        engine.rename_container(&t.id, name).await?;
        actions.push(format!("the serving container is {name} again"));
    }
    Ok(actions)
}

/// The warm previous slot, once `keep_previous` has passed since the switch away from it:
/// stopped, removed and put in maintenance. Returns what it did, for the caller to say.
pub async fn reap(
    engine: &Engine,
    store: &Store,
    front: &Front,
    cfg: &Config,
) -> Result<Option<String>> {
    let st = front.state().await?;
    let Some(s) = serving(&st) else {
        return Ok(None);
    };
    let Some(warm) = occupant(engine, cfg, 1 - s).await? else {
        return Ok(None);
    };
    let switched = store
        .active_deployment(&cfg.container.name)?
        .and_then(|d| d.finished_at)
        .unwrap_or_else(chrono::Utc::now);
    let kept = (chrono::Utc::now() - switched).to_std().unwrap_or_default();
    if kept < cfg.rollout.switch.keep_previous {
        return Ok(None);
    }
    front.set(1 - s, Admin::Maint).await?;
    engine.remove_container(&warm.id).await?;
    front.save().await?;
    let said = format!(
        "reaped the previous slot {} ({}): kept warm {} past the switch (keep_previous {})",
        2 - s,
        warm.image,
        humantime::format_duration(Duration::from_secs(kept.as_secs())),
        humantime::format_duration(cfg.rollout.switch.keep_previous)
    );
    tracing::info!("{said}");
    Ok(Some(said))
}

/// A switch made: to which slot, and how it went.
#[derive(Debug, Clone, Serialize)]
pub struct Switched {
    pub strategy: &'static str,
    pub deployment_id: i64,
    pub slot: usize,
    pub previous_slot: Option<usize>,
    /// A rollback to the warm previous slot (no container started).
    pub warm: bool,
    pub start_to_healthy_ms: u128,
    /// From the decision (or the start of the deploy) to the front sending new requests to it.
    pub switched_after_ms: u128,
    /// Connections still open on the old slot when `drain_timeout` ended it (0: drained).
    pub left_in_flight: u64,
    pub container_id: String,
    #[serde(skip)]
    pub health: Option<crate::probe::health::HealthResult>,
    pub checks: Vec<super::Check>,
    pub reconciled: Vec<String>,
    pub reaped: Option<String>,
}

/// Why a candidate did not get traffic.
#[derive(Debug)]
pub struct NotSwitched {
    pub deployment_id: i64,
    pub reason: String,
    pub checks: Vec<super::Check>,
}

/// What a switch deploy starts: the image, its kind, the deployment it follows.
pub struct Candidate<'a> {
    pub spec: DeploySpec,
    pub kind: DeploymentKind,
    pub previous: Option<i64>,
    pub insecure: bool,
    pub wait: Duration,
    pub started: Instant,
    pub interrupt: &'a super::Interrupt,
}

/// Starts `c` in the idle slot, verifies it there, switches the front to it, drains the old.
pub async fn start_and_switch(
    engine: &Engine,
    store: &mut Store,
    front: &Front,
    cfg: &Config,
    c: Candidate<'_>,
) -> Result<Result<Switched, NotSwitched>> {
    let st = front.state().await?;
    let old = serving(&st);
    let idle = old.map_or(0, |s| 1 - s);
    // The idle slot's last occupant (the warm previous) makes room.
    if let Some(o) = occupant(engine, cfg, idle).await? {
        front.set(idle, Admin::Maint).await?;
        engine.remove_container(&o.id).await?;
    }
    let (id, started) = match start_verified(engine, store, cfg, &c, idle).await? {
        Ok(started) => started,
        Err(not) => return Ok(Err(not)),
    };
    let start_to_healthy_ms = c.started.elapsed().as_millis();
    // Verified is recorded before the front switches: a kill after it is finished, not undone.
    store.mark_healthy(id, chrono::Utc::now())?;
    let (switched_after_ms, left) = switch_to(front, store, id, idle, old, cfg, c.started).await?;
    name_the_serving(engine, cfg, idle).await?;
    Ok(Ok(Switched {
        strategy: "switch",
        deployment_id: id,
        slot: idle,
        previous_slot: old,
        warm: false,
        start_to_healthy_ms,
        switched_after_ms,
        left_in_flight: left,
        container_id: started.0,
        health: started.1,
        checks: started.2,
        reconciled: Vec::new(),
        reaped: None,
    }))
}

/// The candidate recorded, started in `slot` with every hardening flag, healthy on its own port
/// and through Step 4's verification: (deployment, (container, last health, checks)); or why
/// not, the candidate removed and recorded failed (it never received traffic).
#[allow(clippy::type_complexity)]
async fn start_verified(
    engine: &Engine,
    store: &mut Store,
    cfg: &Config,
    c: &Candidate<'_>,
    slot: usize,
) -> Result<
    Result<
        (
            i64,
            (
                String,
                Option<crate::probe::health::HealthResult>,
                Vec<super::Check>,
            ),
        ),
        NotSwitched,
    >,
> {
    let mut spec = c.spec.clone();
    spec.name = slot_name(&cfg.container.name, slot);
    spec.host_port = cfg.rollout.switch.slots[slot];
    spec.host_ip = "127.0.0.1".into();
    let image = engine.ensure_image(&spec.image, &|_| {}).await?;
    let id = store.insert_deployment(&NewDeployment {
        kind: c.kind,
        image_ref: spec.image.clone(),
        image_id: image.id.clone(),
        digest: crate::engine::repo_digest(&image),
        container_name: cfg.container.name.clone(),
        previous_id: c.previous,
        insecure: c.insecure,
        host_port: Some(cfg.container.host_port),
        base_url: Some(cfg.verify.base_url.clone()),
    })?;
    let start =
        json!({"phase": "start", "strategy": "switch", "slot": slot + 1, "image": spec.image});
    store.event(EventKind::Deploy, Some(id), &start)?;
    let new_id = match create_and_start(engine, &spec).await {
        Ok(i) => i,
        Err(e) => return Ok(Err(not_switched(store, id, format!("{e:#}"), Vec::new())?)),
    };
    store.set_container(id, &new_id)?;
    let client = crate::probe::health::client(cfg.verify.probe_timeout);
    let url = format!(
        "http://127.0.0.1:{}{}",
        spec.host_port, cfg.verify.health_path
    );
    let poll = cfg.verify.poll_interval;
    let wait = c
        .interrupt
        .wait_healthy(engine, &client, &new_id, &url, c.wait, poll)
        .await;
    let checks = match wait.healthy {
        true => super::verify(engine, cfg, &spec, wait.last.as_ref())
            .await
            .unwrap_or_default(),
        false => Vec::new(),
    };
    if !wait.healthy || !super::checks_pass(&checks) || c.interrupt.interrupted() {
        engine.remove_container(&new_id).await?;
        let why = wait
            .reason
            .clone()
            .unwrap_or_else(|| "verification failed".into());
        return Ok(Err(not_switched(store, id, why, checks)?));
    }
    Ok(Ok((id, (new_id, wait.last, checks))))
}

/// A candidate that will never get traffic, recorded as failed.
fn not_switched(
    store: &mut Store,
    id: i64,
    reason: String,
    checks: Vec<super::Check>,
) -> Result<NotSwitched> {
    let detail = json!({"reason": reason, "checks": checks});
    store.finish_deployment(id, DeploymentStatus::Failed, Some(&detail))?;
    let event = json!({"phase": "failed", "strategy": "switch", "reason": reason, "received_traffic": false});
    store.event(EventKind::Deploy, Some(id), &event)?;
    Ok(NotSwitched {
        deployment_id: id,
        reason,
        checks,
    })
}

async fn create_and_start(engine: &Engine, spec: &DeploySpec) -> Result<String> {
    let id = engine.create_container(&spec.name, hardened(spec)).await?;
    if let Err(e) = engine.start_container(&id).await {
        let _ = engine.remove_container(&id).await;
        return Err(e);
    }
    Ok(id)
}

/// The front to `to` (up under its health check first), the old slot drained; the store
/// follows the front. Returns (ms from `started` to the switch, connections left in flight).
async fn switch_to(
    front: &Front,
    store: &mut Store,
    id: i64,
    to: usize,
    old: Option<usize>,
    cfg: &Config,
    started: Instant,
) -> Result<(u128, u64)> {
    front.set(to, Admin::Ready).await?;
    if !front.wait_up(to, Duration::from_secs(10)).await? {
        front.set(to, Admin::Maint).await?;
        anyhow::bail!(
            "{} never saw slot {} pass its health check",
            front.name(),
            to + 1
        );
    }
    tokio::time::sleep(front.settle()).await;
    if let Some(o) = old {
        front.set(o, Admin::Drain).await?;
    }
    let switched_after_ms = started.elapsed().as_millis();
    store.finish_deployment(id, DeploymentStatus::Active, None)?;
    front.save().await?;
    store.event(EventKind::Deploy, Some(id), &json!({"phase": "active", "strategy": "switch", "slot": to + 1, "from_slot": old.map(|o| o + 1), "switched_after_ms": switched_after_ms}))?;
    let left = match old {
        Some(o) => front.drained(o, cfg.rollout.switch.drain_timeout).await?,
        None => 0,
    };
    Ok((switched_after_ms, left))
}

/// A rollback inside `keep_previous`: the warm previous slot runs `target` and passes the
/// front's health check, so the rollback is a switch back; None when it cannot be.
pub async fn switch_back(
    engine: &Engine,
    store: &mut Store,
    front: &Front,
    cfg: &Config,
    c: &Candidate<'_>,
) -> Result<Option<Switched>> {
    let (target, kind, previous, decision) = (c.spec.image.as_str(), c.kind, c.previous, c.started);
    let st = front.state().await?;
    let Some(s) = serving(&st) else {
        return Ok(None);
    };
    let k = 1 - s;
    let Some(warm) = occupant(engine, cfg, k).await? else {
        return Ok(None);
    };
    if !warm.running || warm.image != target || !st[k].up {
        return Ok(None);
    }
    let image = engine.inspect_image(target).await?;
    let id = store.insert_deployment(&NewDeployment {
        kind,
        image_ref: target.to_string(),
        image_id: image.id.clone(),
        digest: crate::engine::repo_digest(&image),
        container_name: cfg.container.name.clone(),
        previous_id: previous,
        insecure: false,
        host_port: Some(cfg.container.host_port),
        base_url: Some(cfg.verify.base_url.clone()),
    })?;
    store.set_container(id, &warm.id)?;
    store.mark_healthy(id, chrono::Utc::now())?;
    let (switched_after_ms, left) = switch_to(front, store, id, k, Some(s), cfg, decision).await?;
    name_the_serving(engine, cfg, k).await?;
    Ok(Some(Switched {
        strategy: "switch",
        deployment_id: id,
        slot: k,
        previous_slot: Some(s),
        warm: true,
        start_to_healthy_ms: switched_after_ms,
        switched_after_ms,
        left_in_flight: left,
        container_id: warm.id,
        health: None,
        checks: Vec::new(),
        reconciled: Vec::new(),
        reaped: None,
    }))
}

impl Switched {
    /// The lines a person reads.
    pub fn story(&self, name: &str, image: &str) -> String {
        let mut s = String::new();
        for a in self.reconciled.iter().chain(&self.reaped) {
            s += &format!("  {a}\n");
        }
        s += &format!(
            "  {} slot {} ({image}) {}; the front switched to it {} ms after the start",
            if self.warm {
                "switched back to the warm"
            } else {
                "started and verified"
            },
            self.slot + 1,
            if self.warm {
                "already running"
            } else {
                "directly on its own port"
            },
            self.switched_after_ms
        );
        if let Some(p) = self.previous_slot {
            s += &format!(
                "\n  slot {} drained{}; it stays warm as {} until keep_previous passes",
                p + 1,
                if self.left_in_flight > 0 {
                    format!(
                        " ({} connections still open at drain_timeout)",
                        self.left_in_flight
                    )
                } else {
                    String::new()
                },
                slot_name(name, p)
            );
        }
        s
    }
}

/// `front up`, `front status`, `front down`: what the front is and does now.
#[derive(Debug, Serialize)]
pub struct FrontReport {
    pub ok: bool,
    pub front: &'static str,
    pub action: &'static str,
    /// `up`: whether it was started now (false: it was running).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub serving: Option<usize>,
    pub slots: Vec<SlotReport>,
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct SlotReport {
    pub slot: usize,
    pub port: u16,
    pub state: front::Admin,
    pub up: bool,
    pub connections: u64,
    pub container: Option<String>,
    pub image: Option<String>,
}

impl crate::output::Render for FrontReport {
    fn code(&self) -> Code {
        Code::of_check(self.ok)
    }

    fn text(&self) -> String {
        let mut s = format!("front ({}) {}", self.front, self.action);
        if let Some(p) = self.port {
            s += &format!(" on port {p}");
        }
        s += &match self.serving {
            Some(k) => format!(": slot {} serves\n", k + 1),
            None => ": NO single slot serves\n".into(),
        };
        for sl in &self.slots {
            s += &format!(
                "  slot {} (:{}) {}{}, {} connections: {}\n",
                sl.slot + 1,
                sl.port,
                sl.state.as_str(),
                if sl.up { ", up" } else { ", down" },
                sl.connections,
                match (&sl.container, &sl.image) {
                    (Some(c), Some(i)) => format!("{c} ({i})"),
                    _ => "empty".into(),
                }
            );
        }
        for n in &self.notes {
            s += &format!("  {n}\n");
        }
        s.trim_end().to_string()
    }
}

async fn report(
    engine: Option<&Engine>,
    front: &Front,
    cfg: &Config,
    action: &'static str,
) -> Result<FrontReport> {
    let st = front.state().await?;
    let mut slots = Vec::new();
    for s in &st {
        let o = match engine {
            Some(e) => occupant(e, cfg, s.slot).await?,
            None => None,
        };
        slots.push(SlotReport {
            slot: s.slot,
            port: cfg.rollout.switch.slots[s.slot],
            state: s.admin,
            up: s.up,
            connections: s.connections,
            container: o.as_ref().map(|o| o.name.clone()),
            image: o.map(|o| o.image),
        });
    }
    let serving = serving(&st);
    Ok(FrontReport {
        ok: serving.is_some_and(|k| st[k].up),
        front: front.name(),
        action,
        started: None,
        port: None,
        serving,
        slots,
        notes: Vec::new(),
    })
}

/// `front up`: HAProxy's configuration written and HAProxy started unless it runs (Kong: its
/// upstream and targets); a slot the store says serves is made ready again.
pub async fn front_up(
    cfg: &Config,
    state_dir: &std::path::Path,
    port: Option<u16>,
) -> Result<FrontReport> {
    let f = Front::of(cfg, state_dir).map_err(|e| failure(Code::Usage, format!("{e:#}")))?;
    let port = port.unwrap_or(cfg.container.host_port);
    let started = match &f {
        Front::Haproxy(files) => {
            let layout = front::haproxy::Layout {
                bind_ip: cfg.container.host_ip.clone(),
                port,
                slots: cfg.rollout.switch.slots,
                health_path: cfg.verify.health_path.clone(),
            };
            front::haproxy::up(files, &layout)
                .await
                .map_err(|e| failure(Code::Operational, format!("{e:#}")))?
        }
        Front::Kong(k) => {
            k.up(&cfg.verify.health_path).await?;
            false
        }
    };
    let engine = Engine::connect().await.ok();
    let mut notes = Vec::new();
    if let Some(e) = &engine {
        let st = f.state().await?;
        if front::ready(&st).is_empty() {
            // A restart without its state file: the serving container is the service's name.
            if let Some(k) = slot_of_container(e, cfg, &cfg.container.name).await? {
                f.set(k, Admin::Ready).await?;
                f.save().await?;
                notes.push(format!(
                    "slot {} serves again ({} runs there)",
                    k + 1,
                    cfg.container.name
                ));
            }
        }
    }
    let mut r = report(engine.as_ref(), &f, cfg, "up").await?;
    r.ok = true;
    r.started = Some(started);
    r.port = Some(port);
    r.notes.extend(notes);
    if !started {
        r.notes
            .push("it was already running: configuration rewritten, not reloaded".into());
    }
    Ok(r)
}

/// `front status`, after reconciling what an interrupted switch left (under the state lock).
pub async fn front_status(
    cfg: &Config,
    state_dir: &std::path::Path,
    lock_wait: Duration,
) -> Result<FrontReport> {
    let (f, _) = front_of(cfg, state_dir).await?;
    let _lock = crate::lock::StateLock::acquire(state_dir, "front status", lock_wait)?;
    let engine = Engine::connect().await?;
    let mut store = Store::open(state_dir)?;
    let mut notes = reconcile(&engine, &mut store, &f, cfg).await?;
    notes.extend(reap(&engine, &store, &f, cfg).await?);
    let mut r = report(Some(&engine), &f, cfg, "status").await?;
    r.notes = notes;
    Ok(r)
}

/// `front down`: stops HAProxy. Kong is not ours to stop.
pub async fn front_down(cfg: &Config, state_dir: &std::path::Path) -> Result<FrontReport> {
    let f = Front::of(cfg, state_dir).map_err(|e| failure(Code::Usage, format!("{e:#}")))?;
    let Front::Haproxy(files) = &f else {
        return Err(failure(
            Code::Usage,
            "the front is Kong: dhi-stage does not own it, so it does not stop it",
        ));
    };
    let stopped = front::haproxy::down(files).await?;
    Ok(FrontReport {
        ok: true,
        front: f.name(),
        action: "down",
        started: None,
        port: None,
        serving: None,
        slots: Vec::new(),
        notes: vec![if stopped {
            "stopped".into()
        } else {
            "it was not running".into()
        }],
    })
}

/// `status` and `monitor` reap the warm previous slot once `keep_previous` has passed (a
/// failure to is a warning: neither command exists to manage the front).
pub async fn reap_now(cfg: &Config, state_dir: &std::path::Path) -> Option<String> {
    if cfg.rollout.strategy != crate::config::Strategy::Switch {
        return None;
    }
    let reaped = async {
        let front = Front::of(cfg, state_dir)?;
        let engine = Engine::connect().await?;
        let store = Store::open(state_dir)?;
        reap(&engine, &store, &front, cfg).await
    };
    match reaped.await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("the previous slot was not reaped: {e:#}");
            None
        }
    }
}

/// One leg of a rollback or drill to `image`: a switch back to the warm slot when it runs it,
/// else `image` started in the idle slot, verified, and switched to.
pub async fn leg(
    engine: &Engine,
    store: &mut Store,
    front: &Front,
    cfg: &Config,
    c: Candidate<'_>,
) -> Result<Result<Switched, NotSwitched>> {
    let warm = switch_back(engine, store, front, cfg, &c).await?;
    match warm {
        Some(sw) => Ok(Ok(sw)),
        None => start_and_switch(engine, store, front, cfg, c).await,
    }
}
