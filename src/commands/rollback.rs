//! `rollback`: the runbook's rollback procedure (`rollout::rollback`), by an operator; with
//! `--target kubernetes`, `kubectl rollout undo` (`rollout::kubernetes`) under the same
//! approval rule.

use anyhow::Result;

use super::Ctx;
use crate::cli::{Platform, RollbackArgs};
use crate::output::Outcome;
use crate::rollout::rollback::{self, Approval, Request};

pub async fn run(ctx: Ctx, a: RollbackArgs) -> Result<Outcome> {
    let approval = Approval::Operator(a.approved_by);
    if a.platform == Platform::Kubernetes {
        // The Deployment is named by [kubernetes], not by a recorded container.
        let ctx = ctx.with_target(&a.target)?;
        let context = ctx.rollout();
        let progress = ctx.progress();
        let out =
            super::kubernetes::rollback(&context, &approval, a.reason, &|l| progress.line(l)).await;
        progress.finish();
        return out;
    }
    // A rollback restores on the name and port of the container it replaces.
    let (ctx, service) = ctx.acting_on(&a.target)?;
    let context = ctx.rollout();
    let request = Request {
        to: a.to,
        reason: a.reason,
        approval,
        drill: a.drill,
        wait: a.wait,
    };
    let rolled = rollback::rollback(&context, &request).await?;
    Ok(super::ctx::with_service(Outcome::of(&rolled), &service))
}
