//! `gate`: the production promotion verdict over days 1..N (`report::gate`).

use anyhow::Result;

use super::Ctx;
use crate::cli::GateArgs;
use crate::output::Outcome;
use crate::report::gate;

pub async fn run(ctx: Ctx, a: GateArgs) -> Result<Outcome> {
    let (ctx, service) = ctx.acting_on(&a.target)?;
    let store = ctx.store()?;
    let verdict = gate::verdict(
        &store,
        &ctx.config,
        a.through_day,
        a.attestations.as_deref(),
    )
    .await?;
    gate::notify(&ctx.config.notify, &verdict).await;
    Ok(super::ctx::with_service(Outcome::of(&verdict), &service))
}
