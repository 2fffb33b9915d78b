//! `status`: the runbook's "Quick Health Check" appendix in one command (`crate::status`);
//! with `--target kubernetes`, the Deployment's rollout and every pod (`rollout::kubernetes`).

use anyhow::Result;

use super::Ctx;
use crate::cli::Platform;
use crate::output::Outcome;

pub async fn run(ctx: Ctx, platform: Platform) -> Result<Outcome> {
    if platform == Platform::Kubernetes {
        return super::kubernetes::status(&ctx.config).await;
    }
    let status = crate::status::check(&ctx.config, &ctx.state_dir).await?;
    Ok(Outcome::of(&status))
}
