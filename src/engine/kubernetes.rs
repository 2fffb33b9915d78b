//! The runbook's Kubernetes Deployment (Step 3), rendered from the same config as the Docker
//! spec so the two never drift: user 65532, RuntimeDefault seccomp, read-only root, all
//! capabilities dropped, the requests/limits, both probes and the two size-limited emptyDirs.
//! Pure; `deploy --dry-run --kubernetes` prints it as JSON, which kubectl accepts.

use serde_json::{json, Value};

use crate::config::Config;
use crate::security::hardening;

fn quantity_mi(bytes: u64) -> String {
    format!("{}Mi", bytes >> 20)
}

pub fn deployment(cfg: &Config, image: &str) -> Value {
    let k = &cfg.kubernetes;
    let c = &cfg.container;
    let v = &cfg.verify;
    // A user the runbook's way (numeric uid:gid); the config refuses anything else on load.
    let user = hardening::User::parse(&c.user).unwrap_or(hardening::User {
        uid: 65532,
        gid: Some(65532),
    });
    let (uid, gid) = (i64::from(user.uid), i64::from(user.gid.unwrap_or(user.uid)));
    let labels = json!({"app": k.app_label, "version": k.version_label});
    let probe = |delay: std::time::Duration, period: std::time::Duration| json!({"httpGet": {"path": v.health_path, "port": c.container_port}, "initialDelaySeconds": delay.as_secs(), "periodSeconds": period.as_secs()});
    // A mount's volume is named after its last path segment: /tmp -> tmp, /app/profiles -> profiles.
    let volume_name = |path: &str| path.rsplit('/').next().unwrap_or(path).to_string();
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": k.deployment, "namespace": k.namespace},
        "spec": {
            "replicas": k.replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "securityContext": {
                        "runAsUser": uid, "runAsGroup": gid, "fsGroup": gid, "runAsNonRoot": true,
                        "seccompProfile": {"type": "RuntimeDefault"}
                    },
                    "containers": [{
                        "name": k.app_label,
                        "image": image,
                        "ports": [{"containerPort": c.container_port}],
                        "env": k.env.iter().map(|(name, value)| json!({"name": name, "value": value})).collect::<Vec<_>>(),
                        "envFrom": [{"configMapRef": {"name": k.config_map}}, {"secretRef": {"name": k.secret}}],
                        "resources": {
                            "requests": {"memory": quantity_mi(c.memory_request.bytes), "cpu": format!("{}m", c.cpu_request.millicores)},
                            "limits": {"memory": quantity_mi(c.memory_limit.bytes), "cpu": format!("{}m", c.cpu_limit.millicores)}
                        },
                        "livenessProbe": probe(v.liveness_initial_delay, v.liveness_period),
                        "readinessProbe": probe(v.readiness_initial_delay, v.readiness_period),
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": c.read_only,
                            "capabilities": {"drop": c.cap_drop}
                        },
                        "volumeMounts": c.tmpfs.iter().map(|t| json!({"name": volume_name(&t.path), "mountPath": t.path})).collect::<Vec<_>>()
                    }],
                    "volumes": c.tmpfs.iter().map(|t| {
                        let size = crate::config::ByteSize::parse(&t.size).map(|b| quantity_mi(b.bytes)).unwrap_or_else(|_| t.size.clone());
                        json!({"name": volume_name(&t.path), "emptyDir": {"sizeLimit": size}})
                    }).collect::<Vec<_>>()
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
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
