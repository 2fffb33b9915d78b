//! The SBOM job: components from every layer (plus the Bun runtime's version), written as
//! CycloneDX or SPDX.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;

use crate::security::layers::Filesystem;
use crate::security::sbom::{self, Component};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Cyclonedx,
    Spdx,
}

impl Format {
    pub fn parse(s: &str) -> Format {
        if s == "spdx" {
            Format::Spdx
        } else {
            Format::Cyclonedx
        }
    }
}

#[derive(Debug, Serialize)]
pub struct SbomSummary {
    pub format: Format,
    pub components: Vec<Component>,
    pub written_to: Option<PathBuf>,
}

/// The components and the document in the requested format.
pub fn build(
    fs: &Filesystem,
    bun_version: Option<&str>,
    format: Format,
    image_ref: &str,
    image_digest: &str,
) -> (Vec<Component>, Value) {
    let comps = sbom::components(fs, bun_version);
    let doc = match format {
        Format::Spdx => sbom::spdx(image_ref, image_digest, &comps),
        Format::Cyclonedx => sbom::cyclonedx(image_ref, image_digest, &comps),
    };
    (comps, doc)
}
