//! `validate`: Step 2, security validation (`crate::validate`).

use anyhow::Result;

use super::Ctx;
use crate::cli::ValidateArgs;
use crate::output::Outcome;
use crate::validate::{self, sbom, Request};

pub async fn run(ctx: Ctx, a: ValidateArgs) -> Result<Outcome> {
    let ctx = ctx.with_target(&a.target)?;
    let cfg = &ctx.config;
    let store = ctx.store()?;
    let active = store.active_deployment(&cfg.container.name)?;
    let image = super::image_or(a.image, || {
        active
            .map(|d| d.image_ref)
            .unwrap_or_else(|| cfg.build_ref())
    })?;
    let request = Request {
        image: image.to_string(),
        sbom_out: a.sbom_out,
        sbom_format: sbom::Format::parse(&a.sbom_format),
        vex: a.vex,
        osv_db: a.osv_db,
        scan_reports: a.scan_report,
        provenance: a.provenance.zip(a.key),
        base_digest: a.base_digest,
        max_size_mb: a.max_size.unwrap_or(cfg.image.max_size_mb),
    };
    Ok(Outcome::of(
        &validate::validate(cfg, &store, &request).await?,
    ))
}
