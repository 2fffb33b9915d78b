//! `report`: the daily report (`report::daily`), or with `--week` the week at a glance.

use anyhow::Result;

use super::Ctx;
use crate::cli::ReportArgs;
use crate::output::Outcome;
use crate::report::daily::{self, Request};

pub async fn run(ctx: Ctx, a: ReportArgs) -> Result<Outcome> {
    let (ctx, service) = ctx.acting_on(&a.target)?;
    let cfg = &ctx.config;
    let store = ctx.store()?;
    if a.week {
        let page =
            daily::week_page(cfg, &store, a.out.as_deref(), a.attestations.as_deref()).await?;
        return Ok(super::ctx::with_service(Outcome::of(&page), &service));
    }
    let request = Request {
        day: a.day,
        out: a.out,
        e2e_junit: a.e2e_junit,
        k6_summary: a.k6_summary,
        format: a.format,
        signed_by: a.signed_by,
        attestations: a.attestations,
    };
    let report = daily::daily(cfg, &store, &request).await?;
    Ok(super::ctx::with_service(Outcome::of(&report), &service))
}
