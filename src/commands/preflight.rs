//! `preflight`: the runbook's "Infrastructure Requirements" (`crate::preflight`).

use anyhow::Result;

use super::Ctx;
use crate::output::Outcome;

pub async fn run(ctx: Ctx) -> Result<Outcome> {
    let report = crate::preflight::check(&ctx.config, &ctx.state_dir).await;
    Ok(Outcome::of(&report))
}
