//! The provenance job: the base image's DSSE-signed SLSA statement verified against a pinned
//! key and the base digest (from `--base-digest` or the image's base-digest label).

use serde::Serialize;
use serde_json::{json, Value};

use crate::security::provenance::{self, Verified};
use crate::security::score::Provenance;

/// The result of verifying, when an envelope and key were given.
pub struct Checked(pub anyhow::Result<Verified>);

pub fn check(
    envelope: &str,
    key_pem: &str,
    base_digest: Option<&str>,
    allowed_builders: &[String],
) -> Checked {
    Checked(match base_digest {
        None => Err(anyhow::anyhow!(
            "no base image digest: pass --base-digest or label the image org.opencontainers.image.base.digest"
        )),
        Some(d) => provenance::verify(envelope, key_pem, d, allowed_builders),
    })
}

impl Checked {
    pub fn passed(&self) -> bool {
        self.0.is_ok()
    }

    /// What the score's check 6 and the outcome show.
    pub fn view(&self) -> Provenance {
        match &self.0 {
            Ok(v) => Provenance {
                verified: true,
                detail: format!(
                    "verified: {} by {}, subject {}",
                    v.predicate_type, v.builder_id, v.subject_digest
                ),
            },
            Err(e) => Provenance {
                verified: false,
                detail: format!("FAILED: {e:#}"),
            },
        }
    }

    /// What the store keeps: the statement, or the error.
    pub fn record(&self) -> Value {
        match &self.0 {
            Ok(v) => json!({"verified": true, "statement": v}),
            Err(e) => json!({"verified": false, "error": format!("{e:#}")}),
        }
    }
}

/// The outcome's view of provenance.
#[derive(Debug, Serialize)]
pub struct ProvenanceView {
    pub verified: bool,
    pub detail: String,
}

impl From<Provenance> for ProvenanceView {
    fn from(p: Provenance) -> Self {
        ProvenanceView {
            verified: p.verified,
            detail: p.detail,
        }
    }
}
