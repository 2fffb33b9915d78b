//! Which service a command acts on. `monitor`, `status`, `rollback`, `report` and `gate` act
//! on what was deployed (the state's active deployment records its container name, published
//! port and base URL), so a `deploy --name X --port P` is watched and rolled back on X:P by a
//! cron line that names nothing; the configuration is the fallback when nothing is recorded.

use serde::Serialize;

use crate::config::Config;
use crate::store::Deployment;

/// What the operator named on the command line or in `DHI_STAGE_*` variables.
#[derive(Debug, Clone, Default)]
pub struct Named {
    pub name: Option<String>,
    pub port: Option<u16>,
    pub base_url: Option<String>,
}

impl Named {
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.port.is_none() && self.base_url.is_none()
    }
}

/// Where the service's name, port and URL came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The state's active deployment (its id in `deployment_id`).
    Recorded,
    /// Nothing recorded: the configuration's `[container]` and `[verify]`.
    Configuration,
    /// Flags or `DHI_STAGE_*` variables named it.
    Named,
}

/// The service one run acts on, said on stderr and in `--output json` as `service`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Service {
    pub name: String,
    pub port: u16,
    pub base_url: String,
    pub source: Source,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<i64>,
    /// An override that contradicts the recorded deployment: allowed, and said.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Service {
    /// The one stderr line: "acting on X (port P, URL) from deployment #N".
    pub fn line(&self) -> String {
        let from = match (self.source, self.deployment_id) {
            (Source::Recorded, Some(id)) => format!("as recorded by deployment #{id}"),
            (Source::Named, Some(id)) => format!("as named (deployment #{id} is recorded)"),
            (Source::Named, None) => "as named".to_string(),
            _ => "from the configuration (no deployment recorded)".to_string(),
        };
        let mut line = format!(
            "acting on {} (port {}, {}) {from}",
            self.name, self.port, self.base_url
        );
        for n in &self.notes {
            line.push_str("; ");
            line.push_str(n);
        }
        line
    }
}

/// Decides the service from what was named, what was recorded and the configuration.
/// `recorded` is the active deployment of the named container, or the latest active one
/// when no name was given. What was named wins, field by field; what was not named comes
/// from the recorded deployment when it is the same container, else from the configuration.
pub fn resolve(cfg: &Config, named: &Named, recorded: Option<&Deployment>) -> Service {
    let name = named
        .name
        .clone()
        .or_else(|| recorded.map(|d| d.container_name.clone()))
        .unwrap_or_else(|| cfg.container.name.clone());
    let same = recorded.filter(|d| d.container_name == name);
    let port = named
        .port
        .or_else(|| same.and_then(|d| d.host_port))
        .unwrap_or(cfg.container.host_port);
    let base_url = match (&named.base_url, named.port) {
        (Some(url), _) => url.trim_end_matches('/').to_string(),
        // A named port moves the default URL with it, as `Config::apply` does.
        (None, Some(p)) => format!("http://127.0.0.1:{p}"),
        (None, None) => same
            .and_then(|d| d.base_url.clone())
            .unwrap_or_else(|| cfg.verify.base_url.clone()),
    };
    let mut notes = Vec::new();
    if let Some(d) = same {
        if let (Some(p), Some(rec)) = (named.port, d.host_port) {
            if p != rec {
                notes.push(format!(
                    "--port {p} differs from deployment #{} (published on {rec})",
                    d.id
                ));
            }
        }
        if let (Some(u), Some(rec)) = (&named.base_url, &d.base_url) {
            if u.trim_end_matches('/') != rec {
                notes.push(format!(
                    "--base-url differs from deployment #{} ({rec})",
                    d.id
                ));
            }
        }
    } else if let (Some(n), Some(d)) = (&named.name, recorded) {
        notes.push(format!(
            "no active deployment of {n} is recorded (the latest is #{} of {})",
            d.id, d.container_name
        ));
    }
    let source = if !named.is_empty() {
        Source::Named
    } else if same.is_some() {
        Source::Recorded
    } else {
        Source::Configuration
    };
    Service {
        name,
        port,
        base_url,
        source,
        deployment_id: same.map(|d| d.id),
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::kinds::{DeploymentKind, DeploymentStatus};

    fn deployment(name: &str, port: u16) -> Deployment {
        Deployment {
            id: 7,
            kind: DeploymentKind::Deploy,
            status: DeploymentStatus::Active,
            image_ref: "img".into(),
            image_id: None,
            digest: None,
            container_id: None,
            container_name: name.into(),
            previous_id: None,
            insecure: false,
            started_at: chrono::Utc::now(),
            healthy_at: None,
            finished_at: None,
            verification: None,
            host_port: Some(port),
            base_url: Some(format!("http://127.0.0.1:{port}")),
        }
    }

    fn named(name: Option<&str>, port: Option<u16>) -> Named {
        Named {
            name: name.map(String::from),
            port,
            base_url: None,
        }
    }

    #[test]
    fn what_was_named_then_what_was_recorded_then_the_configuration() {
        let cfg = crate::config::parse(crate::config::DEFAULT_TOML, "t").unwrap();
        let rec = deployment("x", 4100);
        // (named, recorded) -> (name, port, source, how many notes)
        type Expect = (&'static str, u16, Source, usize);
        let table: Vec<(Named, Option<&Deployment>, Expect)> = vec![
            (
                named(None, None),
                None,
                ("auth-service-staging", 3002, Source::Configuration, 0),
            ),
            (
                named(None, None),
                Some(&rec),
                ("x", 4100, Source::Recorded, 0),
            ),
            (
                named(Some("x"), None),
                Some(&rec),
                ("x", 4100, Source::Named, 0),
            ),
            (
                named(Some("x"), Some(4100)),
                Some(&rec),
                ("x", 4100, Source::Named, 0),
            ),
            (
                named(Some("x"), Some(4200)),
                Some(&rec),
                ("x", 4200, Source::Named, 1),
            ),
            (
                named(Some("y"), None),
                Some(&rec),
                ("y", 3002, Source::Named, 1),
            ),
        ];
        for (n, r, (name, port, source, notes)) in table {
            let s = resolve(&cfg, &n, r);
            assert_eq!(
                (s.name.as_str(), s.port, s.source, s.notes.len()),
                (name, port, source, notes),
                "{n:?} {r:?}: {s:?}"
            );
            assert_eq!(s.base_url, format!("http://127.0.0.1:{port}"));
        }
    }

    #[test]
    fn a_recorded_remote_url_is_kept() {
        let cfg = crate::config::parse(crate::config::DEFAULT_TOML, "t").unwrap();
        let mut rec = deployment("x", 4100);
        rec.base_url = Some("https://engine.example:4100".into());
        let s = resolve(&cfg, &Named::default(), Some(&rec));
        assert_eq!(s.base_url, "https://engine.example:4100");
        assert!(s.line().contains("deployment #7"), "{}", s.line());
    }
}
