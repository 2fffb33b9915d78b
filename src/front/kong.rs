//! Kong as the front, where the runbook's gateway already routes the service: an upstream
//! whose two targets are the slots, with active health checks on, switched by target weight
//! through the Admin API (Kong 3.x: `PUT /upstreams/{name}`, `GET|POST
//! /upstreams/{name}/targets`, `PATCH /upstreams/{name}/targets/{target}`,
//! `GET /upstreams/{name}/health`). Kong has one "off": weight 0 takes no new requests and lets
//! in-flight ones finish, so drain and maintenance are both weight 0 (told apart by health).

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};

use super::{Admin, SlotState};
use crate::config::SwitchConfig;

pub struct Kong {
    admin: reqwest::Url,
    upstream: String,
    targets: [String; 2],
    pub propagation: Duration,
    client: reqwest::Client,
}

/// A body larger than this is not the Admin API's answer about two targets.
const MAX_BODY: usize = 1 << 20;

impl Kong {
    pub fn new(c: &SwitchConfig) -> Result<Kong> {
        let admin = reqwest::Url::parse(&c.kong_admin_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                anyhow!(
                    "[rollout.switch] kong_admin_url {:?} must start with http:// or https://",
                    crate::redact::urls(&c.kong_admin_url)
                )
            })?;
        Ok(Kong {
            admin,
            upstream: c.kong_upstream.clone(),
            targets: c.slots.map(|p| format!("{}:{p}", c.kong_target_host)),
            propagation: c.kong_propagation,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .connect_timeout(Duration::from_secs(5))
                .user_agent(concat!("dhi-stage/", env!("CARGO_PKG_VERSION")))
                .build()?,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut url = self.admin.clone();
        url.set_path(&format!(
            "{}{path}",
            self.admin.path().trim_end_matches('/')
        ));
        let mut req = self.client.request(method.clone(), url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        use crate::probe::health::{describe, read_body, Over, Unread};
        let failed = |e| anyhow!("Kong's Admin API ({method} {path}): {}", describe(e));
        let resp = req.send().await.map_err(failed)?;
        let status = resp.status();
        let bytes = read_body(resp, MAX_BODY, Over::Refuse)
            .await
            .map_err(|e| match e {
                Unread::Failed(e) => failed(e),
                Unread::Over(max) => {
                    anyhow!("Kong's answer to {method} {path} is over {} MiB", max >> 20)
                }
            })?;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "Kong's Admin API answered {method} {path} with HTTP {}: {}",
                status.as_u16(),
                v["message"].as_str().unwrap_or("")
            );
        }
        Ok(v)
    }

    /// The upstream with active health checks on the health path, and both slots as targets
    /// (weight 0 until a deploy switches to one).
    pub async fn up(&self, health_path: &str) -> Result<()> {
        let u = &self.upstream;
        self.call(
            reqwest::Method::PUT,
            &format!("/upstreams/{u}"),
            Some(json!({"name": u, "healthchecks": {"active": {
                "type": "http", "http_path": health_path, "timeout": 1,
                "healthy": {"interval": 1, "successes": 1, "http_statuses": [200]},
                "unhealthy": {"interval": 1, "http_failures": 2, "tcp_failures": 2, "timeouts": 2}
            }}})),
        )
        .await?;
        let have = self.targets_now().await?;
        for t in &self.targets {
            if !have.iter().any(|(x, _)| x == t) {
                self.call(
                    reqwest::Method::POST,
                    &format!("/upstreams/{u}/targets"),
                    Some(json!({"target": t, "weight": 0})),
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn targets_now(&self) -> Result<Vec<(String, u64)>> {
        let v = self
            .call(
                reqwest::Method::GET,
                &format!("/upstreams/{}/targets", self.upstream),
                None,
            )
            .await?;
        Ok(v["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| Some((t["target"].as_str()?.to_string(), t["weight"].as_u64()?)))
            .collect())
    }

    pub async fn state(&self) -> Result<[SlotState; 2]> {
        let weights = self.targets_now().await?;
        let health = self
            .call(
                reqwest::Method::GET,
                &format!("/upstreams/{}/health", self.upstream),
                None,
            )
            .await?;
        let one = |slot: usize| -> Result<SlotState> {
            let t = &self.targets[slot];
            let w = weights
                .iter()
                .find(|(x, _)| x == t)
                .map(|(_, w)| *w)
                .ok_or_else(|| {
                    anyhow!(
                        "Kong's upstream {} has no target {t}: run `dhi-stage front up`",
                        self.upstream
                    )
                })?;
            let up = health["data"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|h| h["target"] == t.as_str())
                .is_some_and(|h| h["health"] == "HEALTHY");
            Ok(SlotState {
                slot,
                admin: match (w, up) {
                    (0, true) => Admin::Drain,
                    (0, false) => Admin::Maint,
                    _ => Admin::Ready,
                },
                up,
                connections: 0,
            })
        };
        Ok([one(0)?, one(1)?])
    }

    pub async fn set(&self, slot: usize, admin: Admin) -> Result<()> {
        let weight = if admin == Admin::Ready { 100 } else { 0 };
        self.call(
            reqwest::Method::PATCH,
            &format!(
                "/upstreams/{}/targets/{}",
                self.upstream, self.targets[slot]
            ),
            Some(json!({"weight": weight})),
        )
        .await
        .map(|_| ())
    }
}
