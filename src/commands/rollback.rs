//! `rollback`: the runbook's rollback procedure (`rollout::rollback`), by an operator.

use anyhow::Result;

use super::Ctx;
use crate::cli::RollbackArgs;
use crate::output::Outcome;
use crate::rollout::rollback::{self, Approval, Request};

pub async fn run(ctx: Ctx, a: RollbackArgs) -> Result<Outcome> {
    let ctx = ctx.with_target(&a.target)?;
    let request = Request {
        to: a.to,
        reason: a.reason,
        approval: Approval::Operator(a.approved_by),
        drill: a.drill,
        wait: a.wait,
    };
    let context = rollback::Context {
        config: &ctx.config,
        state_dir: &ctx.state_dir,
        lock_wait: ctx.lock_wait,
    };
    Ok(Outcome::of(&rollback::rollback(&context, &request).await?))
}
