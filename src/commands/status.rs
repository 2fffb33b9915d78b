//! `status`: the runbook's "Quick Health Check" appendix in one command (`crate::status`).

use anyhow::Result;

use super::Ctx;
use crate::output::Outcome;

pub async fn run(ctx: Ctx) -> Result<Outcome> {
    let status = crate::status::check(&ctx.config, &ctx.state_dir).await?;
    Ok(Outcome::of(&status))
}
