//! The front proxy of the `switch` rollout strategy: two slots behind it, one serving. HAProxy
//! (owned by the tool, switched through its runtime API) or Kong (its Admin API, where the
//! gateway already routes the service). Both answer the same three things: each slot's state,
//! setting a slot ready, draining or in maintenance, and persisting that across restarts.

pub mod haproxy;
pub mod kong;

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use crate::config::{Config, FrontKind};

/// A slot's administrative state: serving new requests, finishing in-flight ones only, off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Admin {
    Ready,
    Drain,
    Maint,
}

impl Admin {
    pub fn as_str(self) -> &'static str {
        match self {
            Admin::Ready => "ready",
            Admin::Drain => "drain",
            Admin::Maint => "maint",
        }
    }
}

/// One slot as the front has it.
#[derive(Debug, Clone, Serialize)]
pub struct SlotState {
    /// 0 or 1.
    pub slot: usize,
    pub admin: Admin,
    /// The front's health check passes.
    pub up: bool,
    /// Connections to it in use now (HAProxy; Kong does not say).
    pub connections: u64,
}

/// The slots that receive new requests.
pub fn ready(states: &[SlotState; 2]) -> Vec<usize> {
    states
        .iter()
        .filter(|s| s.admin == Admin::Ready)
        .map(|s| s.slot)
        .collect()
}

pub enum Front {
    Haproxy(haproxy::Files),
    Kong(kong::Kong),
}

impl Front {
    pub fn of(cfg: &Config, state_dir: &Path) -> Result<Front> {
        Ok(match cfg.rollout.switch.front {
            FrontKind::Haproxy => Front::Haproxy(haproxy::Files::new(state_dir)),
            FrontKind::Kong => Front::Kong(kong::Kong::new(&cfg.rollout.switch)?),
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Front::Haproxy(_) => "HAProxy",
            Front::Kong(_) => "Kong",
        }
    }

    pub async fn state(&self) -> Result<[SlotState; 2]> {
        match self {
            Front::Haproxy(f) => haproxy::state(f).await,
            Front::Kong(k) => k.state().await,
        }
    }

    pub async fn set(&self, slot: usize, admin: Admin) -> Result<()> {
        match self {
            Front::Haproxy(f) => haproxy::set(f, slot, admin).await,
            Front::Kong(k) => k.set(slot, admin).await,
        }
    }

    /// Makes the current states survive a restart of the front (HAProxy's server-state file;
    /// Kong keeps its own).
    pub async fn save(&self) -> Result<()> {
        match self {
            Front::Haproxy(f) => haproxy::save(f).await,
            Front::Kong(_) => Ok(()),
        }
    }

    /// How long a change takes to reach every worker: none for HAProxy's runtime API, Kong's
    /// documented propagation for its Admin API.
    pub fn settle(&self) -> Duration {
        match self {
            Front::Haproxy(_) => Duration::ZERO,
            Front::Kong(k) => k.propagation,
        }
    }

    /// Waits until `slot` passes the front's health check (at most `limit`).
    pub async fn wait_up(&self, slot: usize, limit: Duration) -> Result<bool> {
        let start = std::time::Instant::now();
        loop {
            if self.state().await?[slot].up {
                return Ok(true);
            }
            if start.elapsed() > limit {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `slot` has no connection in use, at most `limit`; the connections left.
    pub async fn drained(&self, slot: usize, limit: Duration) -> Result<u64> {
        let start = std::time::Instant::now();
        loop {
            let n = self.state().await?[slot].connections;
            if n == 0 || start.elapsed() > limit {
                return Ok(n);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
