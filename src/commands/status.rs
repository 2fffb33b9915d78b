//! `status`: the runbook's "Quick Health Check" appendix in one command (`crate::status`);
//! with `--target kubernetes`, the Deployment's rollout and every pod (`rollout::kubernetes`).

use anyhow::Result;

use super::Ctx;
use crate::cli::{Platform, StatusArgs};
use crate::output::Outcome;

pub async fn run(ctx: Ctx, a: StatusArgs) -> Result<Outcome> {
    if a.platform == Platform::Kubernetes {
        return super::kubernetes::status(&ctx.with_target(&a.target)?.config).await;
    }
    let (ctx, service) = ctx.acting_on(&a.target)?;
    let status = crate::status::check(&ctx.config, &ctx.state_dir).await?;
    Ok(super::ctx::with_service(Outcome::of(&status), &service))
}
