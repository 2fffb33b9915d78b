//! `rollback`: the runbook's rollback procedure (`rollout::rollback`), by an operator; with
//! `--target kubernetes`, `kubectl rollout undo` (`rollout::kubernetes`) under the same
//! approval rule.

use anyhow::Result;

use super::Ctx;
use crate::cli::{Platform, RollbackArgs};
use crate::output::Outcome;
use crate::rollout::rollback::{self, Approval, Request};

pub async fn run(ctx: Ctx, a: RollbackArgs) -> Result<Outcome> {
    let ctx = ctx.with_target(&a.target)?;
    let context = ctx.rollout();
    let approval = Approval::Operator(a.approved_by);
    if a.platform == Platform::Kubernetes {
        let progress = ctx.progress();
        let out =
            super::kubernetes::rollback(&context, &approval, a.reason, &|l| progress.line(l)).await;
        progress.finish();
        return out;
    }
    let request = Request {
        to: a.to,
        reason: a.reason,
        approval,
        drill: a.drill,
        wait: a.wait,
    };
    Ok(Outcome::of(&rollback::rollback(&context, &request).await?))
}
