//! What validation reads from the engine: the image's config and history, the runtime
//! settings of the container running it (or of the spec a deploy would create), the Bun
//! version. Gathering only; the judging is in `security::score`.

use std::collections::HashMap;

use anyhow::Result;

use crate::config::Config;
use crate::engine::spec::DeploySpec;
use crate::engine::Engine;
use crate::security::score::{ImageFacts, RuntimeFacts};

pub async fn image_facts(
    engine: &Engine,
    image_ref: &str,
    inspect: &bollard::models::ImageInspect,
) -> Result<ImageFacts> {
    let config = inspect.config.clone().unwrap_or_default();
    Ok(ImageFacts {
        user: config.user.clone().unwrap_or_default(),
        env: config.env.clone().unwrap_or_default(),
        labels: config.labels.clone().unwrap_or_default(),
        history: engine.image_history(image_ref).await?,
        size_bytes: inspect.size.unwrap_or(0).max(0) as u64,
        healthcheck: config
            .healthcheck
            .as_ref()
            .and_then(|h| h.test.as_ref())
            .is_some_and(|t| t.first().map(String::as_str) != Some("NONE")),
    })
}

pub fn runtime_from_container(
    c: &bollard::models::ContainerInspectResponse,
    cfg: &Config,
) -> RuntimeFacts {
    let hc = c.host_config.clone().unwrap_or_default();
    let ns = |k: &str, v: Option<String>| (k.to_string(), v.unwrap_or_default());
    RuntimeFacts {
        source: format!(
            "container {}",
            c.name.clone().unwrap_or_default().trim_start_matches('/')
        ),
        read_only: hc.readonly_rootfs.unwrap_or(false),
        cap_drop: hc.cap_drop.clone().unwrap_or_default(),
        cap_add: hc.cap_add.clone().unwrap_or_default(),
        security_opt: hc.security_opt.clone().unwrap_or_default(),
        privileged: hc.privileged.unwrap_or(false),
        namespaces: vec![
            ns("network", hc.network_mode.clone()),
            ns("pid", hc.pid_mode.clone()),
            ns("ipc", hc.ipc_mode.clone()),
            ns("uts", hc.uts_mode.clone()),
            ns("userns", hc.userns_mode.clone()),
        ],
        mount_sources: c
            .mounts
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| m.source)
            .filter(|s| !s.is_empty())
            .collect(),
        tmpfs: hc.tmpfs.clone().unwrap_or_default(),
        memory: hc.memory.unwrap_or(0),
        nano_cpus: hc.nano_cpus.unwrap_or(0),
        cpu_quota: hc.cpu_quota.unwrap_or(0),
        pids_limit: hc.pids_limit.unwrap_or(0),
        restart_policy: hc
            .restart_policy
            .as_ref()
            .and_then(|r| r.name)
            .map(|n| n.to_string())
            .unwrap_or_default(),
        restart_count: c.restart_count,
        health_probe: (!cfg.verify.health_path.is_empty()).then(|| cfg.verify.health_path.clone()),
    }
}

pub fn runtime_from_spec(s: &DeploySpec, cfg: &Config) -> RuntimeFacts {
    let body = crate::engine::spec::hardened(s);
    let hc = body.host_config.unwrap_or_default();
    RuntimeFacts {
        source: "the deploy spec (no container runs this image)".into(),
        read_only: hc.readonly_rootfs.unwrap_or(false),
        cap_drop: hc.cap_drop.unwrap_or_default(),
        cap_add: hc.cap_add.unwrap_or_default(),
        security_opt: hc.security_opt.unwrap_or_default(),
        privileged: false,
        namespaces: Vec::new(),
        mount_sources: Vec::new(),
        tmpfs: hc.tmpfs.unwrap_or_default(),
        memory: hc.memory.unwrap_or(0),
        nano_cpus: hc.nano_cpus.unwrap_or(0),
        cpu_quota: 0,
        pids_limit: hc.pids_limit.unwrap_or(0),
        restart_policy: s.restart.clone(),
        restart_count: None,
        health_probe: (!cfg.verify.health_path.is_empty()).then(|| cfg.verify.health_path.clone()),
    }
}

/// The Bun runtime's version: from the running container when it runs this image, else the
/// image's BUN_VERSION variable; None when neither tells.
pub async fn bun_version(
    engine: &Engine,
    cfg: &Config,
    running: bool,
    facts: &ImageFacts,
) -> Option<String> {
    if running {
        if let Ok((0, out)) = engine
            .exec(&cfg.container.name, &cfg.verify.version_command)
            .await
        {
            return Some(out.trim().to_string());
        }
    }
    let env: HashMap<&str, &str> = facts.env.iter().filter_map(|e| e.split_once('=')).collect();
    env.get("BUN_VERSION").map(|v| v.to_string())
}
