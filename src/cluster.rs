//! The Kubernetes API as `kubectl` uses it, and nothing more: server-side apply of the
//! Deployment, reading it back, its ReplicaSets and its pods, and setting its pod template
//! (what `kubectl rollout undo` does). Policy-free, like `engine/`: what to apply, when a
//! rollout is done and which revision to go back to are decided in `rollout::kubernetes`.
//! The cluster is found as kubectl finds it (`KUBECONFIG`, `~/.kube/config`, else the
//! in-cluster service account).

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, Config};

/// Who owns the fields dhi-stage applies (server-side apply's field manager).
pub const FIELD_MANAGER: &str = "dhi-stage";
/// Every call to the API server ends within this.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Cluster {
    deployments: Api<Deployment>,
    replica_sets: Api<ReplicaSet>,
    pods: Api<Pod>,
    /// The API server, for messages.
    pub server: String,
}

impl Cluster {
    pub async fn connect(namespace: &str) -> Result<Cluster> {
        let mut config = Config::infer().await.map_err(|e| {
            anyhow!(
                "no Kubernetes cluster configured ({e}); set KUBECONFIG or run inside the cluster"
            )
        })?;
        config.connect_timeout = Some(Duration::from_secs(10));
        config.read_timeout = Some(CALL_TIMEOUT);
        config.write_timeout = Some(CALL_TIMEOUT);
        let server = config.cluster_url.to_string();
        let client = Client::try_from(config)
            .with_context(|| format!("cannot build a client for the API server {server}"))?;
        Ok(Cluster {
            deployments: Api::namespaced(client.clone(), namespace),
            replica_sets: Api::namespaced(client.clone(), namespace),
            pods: Api::namespaced(client, namespace),
            server,
        })
    }

    /// Server-side apply, forcing ownership of the fields dhi-stage manages (as
    /// `kubectl apply --server-side --force-conflicts --field-manager dhi-stage`).
    pub async fn apply(&self, d: &Deployment) -> Result<Deployment> {
        let name = d.metadata.name.clone().unwrap_or_default();
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        self.deployments
            .patch(&name, &pp, &Patch::Apply(d))
            .await
            .map_err(|e| api_error(e, &format!("applying deployment {name}")))
    }

    pub async fn deployment(&self, name: &str) -> Result<Deployment> {
        self.deployments
            .get(name)
            .await
            .map_err(|e| api_error(e, &format!("reading deployment {name}")))
    }

    pub async fn replica_sets(&self, selector: &str) -> Result<Vec<ReplicaSet>> {
        let lp = ListParams::default().labels(selector);
        Ok(self
            .replica_sets
            .list(&lp)
            .await
            .map_err(|e| api_error(e, &format!("listing replica sets {selector}")))?
            .items)
    }

    pub async fn pods(&self, selector: &str) -> Result<Vec<Pod>> {
        let lp = ListParams::default().labels(selector);
        Ok(self
            .pods
            .list(&lp)
            .await
            .map_err(|e| api_error(e, &format!("listing pods {selector}")))?
            .items)
    }

    /// Replaces the Deployment's pod template with `template` (a strategic merge patch of
    /// `spec.template`, as `kubectl rollout undo` sends), which starts a new rollout.
    pub async fn set_template(&self, name: &str, template: &PodTemplateSpec) -> Result<Deployment> {
        let patch = serde_json::json!({"spec": {"template": template}});
        self.deployments
            .patch(name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
            .map_err(|e| api_error(e, &format!("rolling back deployment {name}")))
    }
}

/// The API server's own words (its Status message and code) first.
fn api_error(e: kube::Error, doing: &str) -> anyhow::Error {
    match e {
        kube::Error::Api(s) => anyhow!(
            "{doing}: the API server said {} ({}, HTTP {})",
            s.message,
            s.reason,
            s.code
        ),
        other => anyhow!("{doing}: {other}"),
    }
}
