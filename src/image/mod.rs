//! Step 1 of the runbook, "Build and push": the image built from its context and checked
//! against the size limit, then tagged `staging-dhi-YYYYMMDD` and pushed, with its SBOM as a
//! sidecar tag when given.

pub mod build;
pub mod push;
