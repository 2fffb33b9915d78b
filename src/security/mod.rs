//! The runbook's security gate, offline: the 12-check score, the SBOM, CVEs with VEX, and
//! base image provenance. Nothing here downloads anything.

pub mod cve;
pub mod hardening;
pub mod layers;
pub mod provenance;
pub mod sbom;
pub mod score;
pub mod version;
