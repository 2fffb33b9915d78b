//! The validation period of the image under test: which day a sample belongs to, and
//! whether the service is the candidate at all. Days count from the first deployment of
//! the image under test and do not restart when a rollback or redeploy of the same image
//! interrupts it; while the baseline serves, samples are the baseline's and have no day.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::store::Deployment;
use crate::store::DeploymentStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The hardened image being validated.
    Candidate,
    /// The rollback baseline (the runbook's `baseline-distroless`) serving instead.
    Baseline,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Candidate => "candidate",
            Role::Baseline => "baseline",
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Period {
    pub role: Role,
    /// The image whose period this is (the candidate's, even while the baseline serves).
    pub image: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    /// Stretches in which the baseline served inside the period: (from, until).
    pub interruptions: Vec<(DateTime<Utc>, DateTime<Utc>)>,
}

impl Period {
    /// Day N of the period at `now` (1-based), None while the baseline serves or before any
    /// deployment.
    pub fn day_at(&self, now: DateTime<Utc>) -> Option<u32> {
        if self.role == Role::Baseline {
            return None;
        }
        let start = self.started_at?;
        Some(((now - start).num_days().max(0) + 1) as u32)
    }

    pub fn interrupted_ms(&self) -> i64 {
        self.interruptions
            .iter()
            .map(|(a, b)| (*b - *a).num_milliseconds().max(0))
            .sum()
    }
}

/// Whether `image_ref` is the runbook's rollback baseline (`...:<baseline_tag>`).
pub fn is_baseline(image_ref: &str, baseline_ref: &str, baseline_tag: &str) -> bool {
    let tag = crate::probe::reference::ImageRef::parse(image_ref).ok();
    image_ref == baseline_ref || tag.as_ref().and_then(|r| r.tag()) == Some(baseline_tag)
}

fn same_image(a: &Deployment, b: &Deployment) -> bool {
    match (&a.image_id, &b.image_id) {
        (Some(x), Some(y)) => x == y,
        _ => a.image_ref == b.image_ref,
    }
}

/// The period the active deployment belongs to. `deployments` are those of one container
/// name in id order; only ones that served (active or superseded) count.
pub fn current(
    deployments: &[Deployment],
    is_baseline: impl Fn(&str) -> bool,
    now: DateTime<Utc>,
) -> Period {
    let served: Vec<&Deployment> = deployments
        .iter()
        .filter(|d| {
            d.status == DeploymentStatus::Active || d.status == DeploymentStatus::Superseded
        })
        .collect();
    let Some(active_idx) = served
        .iter()
        .rposition(|d| d.status == DeploymentStatus::Active)
    else {
        return Period {
            role: Role::Candidate,
            image: None,
            started_at: None,
            interruptions: Vec::new(),
        };
    };
    let active = served[active_idx];
    let role = if is_baseline(&active.image_ref) {
        Role::Baseline
    } else {
        Role::Candidate
    };
    // The candidate: the active one, or the last candidate before the baseline took over.
    let Some(cand_idx) = served[..=active_idx]
        .iter()
        .rposition(|d| !is_baseline(&d.image_ref))
    else {
        return Period {
            role,
            image: None,
            started_at: None,
            interruptions: Vec::new(),
        };
    };
    let cand = served[cand_idx];
    // Walk back over deployments of the same image and baseline interludes; another
    // candidate image ends the walk (its period was a different one).
    let mut start_idx = cand_idx;
    for i in (0..cand_idx).rev() {
        let d = served[i];
        if is_baseline(&d.image_ref) {
            continue;
        }
        if !same_image(d, cand) {
            break;
        }
        start_idx = i;
    }
    let mut interruptions = Vec::new();
    for i in start_idx..=active_idx {
        if is_baseline(&served[i].image_ref) {
            let from = served[i].started_at;
            let until = served.get(i + 1).map(|n| n.started_at).unwrap_or(now);
            interruptions.push((from, until));
        }
    }
    Period {
        role,
        image: Some(cand.image_ref.clone()),
        started_at: Some(served[start_idx].started_at),
        interruptions,
    }
}

/// Whose samples the monitor takes now: the active deployment, its image, and its place in
/// the validation period. Resolved at start and again whenever a rollout changed it.
#[derive(Debug, Clone)]
pub struct Identity {
    pub deployment_id: Option<i64>,
    pub image_ref: Option<String>,
    pub image_id: Option<String>,
    pub role: Role,
    pub day: Option<u32>,
    pub period: Period,
}

/// `follow`: the samples belong to the recorded deployment (false for `--base-url` alone);
/// `day`: `--day`, the label for the image under test.
pub fn identify(
    store: &crate::store::Store,
    cfg: &crate::config::Config,
    follow: bool,
    day: Option<u32>,
    now: DateTime<Utc>,
) -> anyhow::Result<Identity> {
    let name = &cfg.container.name;
    let deployments: Vec<Deployment> = store
        .deployments()?
        .into_iter()
        .filter(|d| &d.container_name == name)
        .collect();
    let period = current(
        &deployments,
        |r| is_baseline(r, &cfg.baseline_ref(), &cfg.image.baseline_tag),
        now,
    );
    let active = store.active_deployment(name)?;
    let role = period.role;
    Ok(Identity {
        deployment_id: if follow {
            active.as_ref().map(|d| d.id)
        } else {
            None
        },
        image_ref: active.as_ref().map(|d| d.image_ref.clone()),
        image_id: active.as_ref().and_then(|d| d.image_id.clone()),
        role,
        day: match role {
            Role::Baseline => None,
            Role::Candidate => day.or_else(|| period.day_at(now)),
        },
        period,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DeploymentKind;

    fn dep(id: i64, image: &str, status: &str, hours: i64) -> Deployment {
        Deployment {
            id,
            kind: DeploymentKind::Deploy,
            status: DeploymentStatus::parse(status).unwrap(),
            image_ref: image.into(),
            image_id: Some(format!("sha256:{image}")),
            digest: None,
            container_id: None,
            container_name: "c".into(),
            previous_id: None,
            insecure: false,
            started_at: DateTime::from_timestamp(hours * 3600, 0).unwrap(),
            healthy_at: None,
            finished_at: None,
            verification: None,
            host_port: None,
            base_url: None,
        }
    }

    fn base(r: &str) -> bool {
        is_baseline(r, "reg/auth:baseline-distroless", "baseline-distroless")
    }

    #[test]
    fn a_rollback_and_a_redeploy_do_not_restart_day_one() {
        let now = DateTime::from_timestamp(80 * 3600, 0).unwrap();
        let ds = vec![
            dep(1, "reg/auth:dhi", "superseded", 0),
            dep(2, "reg/auth:baseline-distroless", "superseded", 30),
            dep(3, "reg/auth:dhi", "active", 32),
        ];
        let p = current(&ds, base, now);
        assert_eq!(p.role, Role::Candidate);
        assert_eq!(p.day_at(now), Some(4), "80 h after the first deployment");
        assert_eq!(p.interrupted_ms(), 2 * 3600 * 1000);
    }

    #[test]
    fn the_baseline_has_no_day_and_a_new_image_starts_a_new_period() {
        let now = DateTime::from_timestamp(50 * 3600, 0).unwrap();
        let mut ds = vec![
            dep(1, "reg/auth:dhi", "superseded", 0),
            dep(2, "reg/auth:baseline-distroless", "active", 30),
        ];
        let p = current(&ds, base, now);
        assert_eq!((p.role, p.day_at(now)), (Role::Baseline, None));
        assert_eq!(p.image.as_deref(), Some("reg/auth:dhi"));
        ds[1].status = DeploymentStatus::Superseded;
        ds.push(dep(3, "reg/auth:dhi-v2", "active", 40));
        let p = current(&ds, base, now);
        assert_eq!(p.day_at(now), Some(1), "10 h into the new image's period");
        assert!(p.interruptions.is_empty());
        // A failed attempt does not count.
        ds.push(dep(4, "reg/auth:dhi-v3", "failed", 45));
        assert_eq!(
            current(&ds, base, now).image.as_deref(),
            Some("reg/auth:dhi-v2")
        );
    }
}
