//! The runbook's Kubernetes Deployment (Step 3), rendered from the same config as the Docker
//! spec so the two never drift: user 65532, RuntimeDefault seccomp, read-only root, all
//! capabilities dropped, the requests/limits, both probes and the two size-limited emptyDirs.
//! Pure; `deploy --dry-run --kubernetes` prints it as JSON, which kubectl accepts.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvFromSource, EnvVar, HTTPGetAction, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretEnvSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::config::Config;
use crate::security::hardening;

fn quantity_mi(bytes: u64) -> Quantity {
    Quantity(format!("{}Mi", bytes >> 20))
}

/// The Deployment as JSON, for `deploy --dry-run --kubernetes` (kubectl accepts it).
pub fn deployment(cfg: &Config, image: &str) -> Value {
    serde_json::to_value(typed(cfg, image)).unwrap_or(Value::Null)
}

/// The runbook's Deployment as the API's own types.
pub fn typed(cfg: &Config, image: &str) -> Deployment {
    let k = &cfg.kubernetes;
    let c = &cfg.container;
    let v = &cfg.verify;
    // A user the runbook's way (numeric uid:gid); the config refuses anything else on load.
    let user = hardening::User::parse(&c.user).unwrap_or(hardening::User {
        uid: 65532,
        gid: Some(65532),
    });
    let (uid, gid) = (i64::from(user.uid), i64::from(user.gid.unwrap_or(user.uid)));
    let labels = labels(cfg);
    let port = i32::from(c.container_port);
    let probe = |delay: std::time::Duration, period: std::time::Duration| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(v.health_path.clone()),
            port: IntOrString::Int(port),
            ..Default::default()
        }),
        initial_delay_seconds: Some(delay.as_secs() as i32),
        period_seconds: Some(period.as_secs() as i32),
        ..Default::default()
    };
    // A mount's volume is named after its last path segment: /tmp -> tmp, /app/profiles -> profiles.
    let volume_name = |path: &str| path.rsplit('/').next().unwrap_or(path).to_string();
    let resources = |memory: u64, millicores: u64| {
        BTreeMap::from([
            ("memory".to_string(), quantity_mi(memory)),
            ("cpu".to_string(), Quantity(format!("{millicores}m"))),
        ])
    };
    let container = Container {
        name: k.app_label.clone(),
        image: Some(image.to_string()),
        ports: Some(vec![ContainerPort {
            container_port: port,
            ..Default::default()
        }]),
        env: Some(
            k.env
                .iter()
                .map(|(name, value)| EnvVar {
                    name: name.clone(),
                    value: Some(value.clone()),
                    ..Default::default()
                })
                .collect(),
        ),
        env_from: Some(vec![
            EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: k.config_map.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: k.secret.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(resources(c.memory_request.bytes, c.cpu_request.millicores)),
            limits: Some(resources(c.memory_limit.bytes, c.cpu_limit.millicores)),
            ..Default::default()
        }),
        liveness_probe: Some(probe(v.liveness_initial_delay, v.liveness_period)),
        readiness_probe: Some(probe(v.readiness_initial_delay, v.readiness_period)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(c.read_only),
            capabilities: Some(Capabilities {
                drop: Some(c.cap_drop.clone()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(
            c.tmpfs
                .iter()
                .map(|t| VolumeMount {
                    name: volume_name(&t.path),
                    mount_path: t.path.clone(),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    };
    let volumes = c
        .tmpfs
        .iter()
        .map(|t| Volume {
            name: volume_name(&t.path),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(
                    crate::config::ByteSize::parse(&t.size)
                        .map(|b| quantity_mi(b.bytes))
                        .unwrap_or_else(|_| Quantity(t.size.clone())),
                ),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    Deployment {
        metadata: ObjectMeta {
            name: Some(k.deployment.clone()),
            namespace: Some(k.namespace.clone()),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(k.replicas as i32),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    security_context: Some(PodSecurityContext {
                        run_as_user: Some(uid),
                        run_as_group: Some(gid),
                        fs_group: Some(gid),
                        run_as_non_root: Some(true),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The pods' labels, which are also the Deployment's selector.
pub fn labels(cfg: &Config) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app".to_string(), cfg.kubernetes.app_label.clone()),
        ("version".to_string(), cfg.kubernetes.version_label.clone()),
    ])
}

/// `app=...,version=...`, the selector as a list call takes it.
#[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
pub fn selector(cfg: &Config) -> String {
    labels(cfg)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// What dhi-stage asks of the API server, as RBAC rules: (API group, resource, verbs). Server-
/// side apply that may create the Deployment checks `create`; the rollout wait lists the
/// Deployment by name and watches it (as `kubectl rollout status`); the undo reads the
/// ReplicaSets; verification, status and the monitor list the pods.
pub const PERMISSIONS: &[(&str, &str, &[&str])] = &[
    (
        "apps",
        "deployments",
        &["get", "list", "watch", "create", "patch"],
    ),
    ("apps", "replicasets", &["list"]),
    ("", "pods", &["list"]),
];

/// The Role granting `PERMISSIONS` in the Deployment's namespace, as YAML (`kubectl apply -f`
/// takes it; `deploy --dry-run --target kubernetes` prints it, the README shows it).
pub fn role_yaml(cfg: &Config) -> String {
    let mut out = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: dhi-stage, namespace: {}}}\nrules:\n",
        cfg.kubernetes.namespace
    );
    for (group, resource, verbs) in PERMISSIONS {
        let verbs: Vec<String> = verbs.iter().map(|v| format!("\"{v}\"")).collect();
        out.push_str(&format!(
            "  - apiGroups: [\"{group}\"]\n    resources: [\"{resource}\"]\n    verbs: [{}]\n",
            verbs.join(", ")
        ));
    }
    out
}

/// One pod as `status --target kubernetes` shows it.
#[derive(Debug, serde::Serialize)]
pub struct PodView {
    pub name: String,
    pub phase: String,
    pub ready: bool,
    /// Being deleted (`deletionTimestamp` set): a rollout's old pod on its way out, left out
    /// of readiness as `kubectl rollout status` leaves it out.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub terminating: bool,
    pub restarts: i64,
    pub image: String,
    pub image_id: String,
}

pub fn pod_view(p: &k8s_openapi::api::core::v1::Pod) -> PodView {
    let status = p.status.clone().unwrap_or_default();
    let containers = status.container_statuses.clone().unwrap_or_default();
    PodView {
        name: p.metadata.name.clone().unwrap_or_default(),
        phase: status.phase.clone().unwrap_or_default(),
        terminating: p.metadata.deletion_timestamp.is_some(),
        ready: status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        // Widened and saturating: a server's i32::MAX restarts must not wrap to "clear".
        restarts: containers
            .iter()
            .map(|c| i64::from(c.restart_count.max(0)))
            .fold(0i64, i64::saturating_add),
        image: containers
            .first()
            .map(|c| c.image.clone())
            .unwrap_or_default(),
        image_id: containers
            .first()
            .map(|c| c.image_id.clone())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_readme_shows_the_role_the_tool_asks_for() {
        let cfg = crate::config::parse(crate::config::DEFAULT_TOML, "t").unwrap();
        let role = super::role_yaml(&cfg);
        assert!(
            include_str!("../../README.md").contains(&role),
            "README.md's Role differs from engine::kubernetes::PERMISSIONS; it should read:\n{role}"
        );
    }

    #[test]
    fn the_runbooks_manifest() {
        let cfg = crate::config::parse(crate::config::DEFAULT_TOML, "t").unwrap();
        let d = super::deployment(&cfg, "reg/authentication-service:staging-dhi-20260211");
        let pod = &d["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(
            d["metadata"],
            serde_json::json!({"name": "authentication-service-staging-dhi", "namespace": "staging"})
        );
        assert_eq!(d["spec"]["replicas"], 2);
        assert_eq!(
            pod["securityContext"],
            serde_json::json!({"runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532, "runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}})
        );
        assert_eq!(
            c["resources"],
            serde_json::json!({"requests": {"memory": "64Mi", "cpu": "100m"}, "limits": {"memory": "128Mi", "cpu": "500m"}})
        );
        assert_eq!(
            c["livenessProbe"],
            serde_json::json!({"httpGet": {"path": "/health", "port": 3000}, "initialDelaySeconds": 10, "periodSeconds": 30})
        );
        assert_eq!(
            c["readinessProbe"],
            serde_json::json!({"httpGet": {"path": "/health", "port": 3000}, "initialDelaySeconds": 5, "periodSeconds": 10})
        );
        assert_eq!(
            c["securityContext"],
            serde_json::json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}})
        );
        assert_eq!(
            c["env"],
            serde_json::json!([{"name": "NODE_ENV", "value": "staging"}, {"name": "TELEMETRY_MODE", "value": "otlp"}])
        );
        assert_eq!(
            c["volumeMounts"],
            serde_json::json!([{"name": "tmp", "mountPath": "/tmp"}, {"name": "profiles", "mountPath": "/app/profiles"}])
        );
        assert_eq!(
            pod["volumes"],
            serde_json::json!([{"name": "tmp", "emptyDir": {"sizeLimit": "100Mi"}}, {"name": "profiles", "emptyDir": {"sizeLimit": "50Mi"}}])
        );
    }
}
