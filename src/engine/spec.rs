//! The container the runbook's Step 3 `docker run` creates, as a pure value.
//!
//! `DeploySpec::from_config` gathers config + operator choices; `hardened` turns it into the
//! engine's create body. Both are pure, so `deploy --dry-run` prints exactly what `deploy`
//! would create and tests can snapshot it without an engine.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, HostConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use serde::Serialize;

use crate::config::{Config, TmpfsMount};
use crate::envfile::EnvVar;
use crate::security::hardening;

/// Label put on every container dhi-stage creates.
pub const MANAGED_LABEL: &str = "dhi-stage.managed";

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeploySpec {
    pub name: String,
    pub image: String,
    #[serde(skip)]
    pub env: Vec<EnvVar>,
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
    pub user: String,
    pub read_only: bool,
    pub tmpfs: Vec<TmpfsMount>,
    pub cap_drop: Vec<String>,
    pub cap_add: Vec<String>,
    pub security_opt: Vec<String>,
    pub restart: String,
    pub memory_limit_bytes: u64,
    pub memory_reservation_bytes: u64,
    pub nano_cpus: i64,
    pub pids_limit: i64,
    pub stop_grace_secs: u64,
}

impl DeploySpec {
    pub fn from_config(cfg: &Config, image: &str, env: Vec<EnvVar>) -> DeploySpec {
        let c = &cfg.container;
        DeploySpec {
            name: c.name.clone(),
            image: image.to_string(),
            env,
            host_ip: c.host_ip.clone(),
            host_port: c.host_port,
            container_port: c.container_port,
            user: c.user.clone(),
            read_only: c.read_only,
            tmpfs: c.tmpfs.clone(),
            cap_drop: c.cap_drop.clone(),
            cap_add: c.cap_add.clone(),
            security_opt: c.security_opt.clone(),
            restart: c.restart.clone(),
            memory_limit_bytes: c.memory_limit.bytes,
            memory_reservation_bytes: c.memory_request.bytes,
            nano_cpus: c.cpu_limit.nano_cpus(),
            pids_limit: c.pids_limit,
            stop_grace_secs: c.stop_grace.as_secs(),
        }
    }

    /// What this spec lacks of the runbook's hardening; empty means fully hardened.
    pub fn hardening_gaps(&self) -> Vec<String> {
        let mut gaps = Vec::new();
        if !hardening::numeric_non_root(&self.user) {
            gaps.push(format!(
                "user {:?} is not a numeric non-root UID (--user 65532:65532)",
                self.user
            ));
        }
        if !self.read_only {
            gaps.push("root filesystem is writable (--read-only)".into());
        }
        if !hardening::drops_all_capabilities(&self.cap_drop) {
            gaps.push("capabilities are not all dropped (--cap-drop=ALL)".into());
        }
        if !hardening::no_new_privileges(&self.security_opt) {
            gaps.push(
                "no-new-privileges is not set (--security-opt=no-new-privileges:true)".into(),
            );
        }
        for t in &self.tmpfs {
            for needed in hardening::tmpfs_lacks(&t.options) {
                gaps.push(format!("tmpfs {} lacks {needed}", t.path));
            }
        }
        gaps
    }

    /// The equivalent `docker run` line (env values left out), for people to read.
    pub fn docker_run_line(&self) -> String {
        let mut parts = vec!["docker run -d".to_string(), format!("--name {}", self.name)];
        for e in &self.env {
            parts.push(format!("-e {}", e.key));
        }
        parts.push(if self.host_ip.is_empty() {
            format!("-p {}:{}", self.host_port, self.container_port)
        } else {
            format!(
                "-p {}:{}:{}",
                self.host_ip, self.host_port, self.container_port
            )
        });
        parts.push(format!("--user {}", self.user));
        if self.read_only {
            parts.push("--read-only".into());
        }
        for t in &self.tmpfs {
            parts.push(format!("--tmpfs {}:{}", t.path, t.docker_options()));
        }
        parts.extend(self.cap_drop.iter().map(|c| format!("--cap-drop={c}")));
        parts.extend(self.cap_add.iter().map(|c| format!("--cap-add={c}")));
        parts.extend(
            self.security_opt
                .iter()
                .map(|o| format!("--security-opt={o}")),
        );
        parts.push(format!("--restart={}", self.restart));
        parts.push(format!(
            "--memory={}b --memory-reservation={}b",
            self.memory_limit_bytes, self.memory_reservation_bytes
        ));
        parts.push(format!("--cpus={}", self.nano_cpus as f64 / 1e9));
        parts.push(format!("--pids-limit={}", self.pids_limit));
        parts.push(format!("--stop-timeout={}", self.stop_grace_secs));
        parts.push(self.image.clone());
        parts.join(" \\\n  ")
    }
}

/// The engine's create body for `spec`.
pub fn hardened(spec: &DeploySpec) -> ContainerCreateBody {
    let port_key = format!("{}/tcp", spec.container_port);
    let port_bindings = HashMap::from([(
        port_key.clone(),
        Some(vec![PortBinding {
            host_ip: Some(spec.host_ip.clone()),
            host_port: Some(spec.host_port.to_string()),
        }]),
    )]);
    let tmpfs: HashMap<String, String> = spec
        .tmpfs
        .iter()
        .map(|t| (t.path.clone(), t.docker_options()))
        .collect();
    let restart = match spec.restart.as_str() {
        "always" => RestartPolicyNameEnum::ALWAYS,
        "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
        "no" => RestartPolicyNameEnum::NO,
        _ => RestartPolicyNameEnum::UNLESS_STOPPED,
    };
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        user: Some(spec.user.clone()),
        env: Some(spec.env.iter().map(EnvVar::docker).collect()),
        exposed_ports: Some(vec![port_key]),
        labels: Some(HashMap::from([
            (MANAGED_LABEL.to_string(), "true".to_string()),
            ("dhi-stage.image-ref".to_string(), spec.image.clone()),
        ])),
        stop_timeout: Some(spec.stop_grace_secs as i64),
        host_config: Some(HostConfig {
            port_bindings: Some(port_bindings),
            readonly_rootfs: Some(spec.read_only),
            tmpfs: Some(tmpfs),
            cap_drop: Some(spec.cap_drop.clone()),
            cap_add: (!spec.cap_add.is_empty()).then(|| spec.cap_add.clone()),
            security_opt: Some(spec.security_opt.clone()),
            restart_policy: Some(RestartPolicy {
                name: Some(restart),
                maximum_retry_count: None,
            }),
            memory: Some(spec.memory_limit_bytes as i64),
            memory_reservation: Some(spec.memory_reservation_bytes as i64),
            nano_cpus: Some(spec.nano_cpus),
            pids_limit: Some(spec.pids_limit),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> DeploySpec {
        let cfg = crate::config::parse(crate::config::DEFAULT_TOML, "t").unwrap();
        DeploySpec::from_config(
            &cfg,
            "reg/authentication-service:staging-dhi-20260211",
            vec![EnvVar {
                key: "NODE_ENV".into(),
                value: "staging".into(),
            }],
        )
    }

    #[test]
    fn snapshot_of_the_runbook_docker_run() {
        let body = serde_json::to_value(hardened(&spec())).unwrap();
        let expected = serde_json::json!({
            "User": "65532:65532",
            "Env": ["NODE_ENV=staging"],
            "ExposedPorts": {"3000/tcp": {}},
            "Image": "reg/authentication-service:staging-dhi-20260211",
            "Labels": {"dhi-stage.managed": "true", "dhi-stage.image-ref": "reg/authentication-service:staging-dhi-20260211"},
            "StopTimeout": 2,
            "HostConfig": {
                "CapDrop": ["ALL"],
                "Memory": 134217728,
                "MemoryReservation": 67108864,
                "NanoCpus": 500000000,
                "PidsLimit": 256,
                "PortBindings": {"3000/tcp": [{"HostIp": "", "HostPort": "3002"}]},
                "ReadonlyRootfs": true,
                "RestartPolicy": {"Name": "unless-stopped"},
                "SecurityOpt": ["no-new-privileges:true"],
                "Tmpfs": {"/tmp": "noexec,nosuid,size=100m", "/app/profiles": "noexec,nosuid,size=50m"}
            }
        });
        assert_eq!(
            body,
            expected,
            "{}",
            serde_json::to_string_pretty(&body).unwrap()
        );
    }

    #[test]
    fn hardening_gaps_name_what_is_missing() {
        assert!(spec().hardening_gaps().is_empty());
        let mut s = spec();
        s.read_only = false;
        s.cap_drop.clear();
        s.user = "0:0".into();
        let gaps = s.hardening_gaps().join("; ");
        assert!(
            gaps.contains("--read-only")
                && gaps.contains("--cap-drop=ALL")
                && gaps.contains("non-root"),
            "{gaps}"
        );
    }
}
