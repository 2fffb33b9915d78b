//! `front up|status|down`: the switch strategy's front proxy (`rollout::switch`).

use anyhow::Result;

use super::Ctx;
use crate::cli::{FrontAction, FrontArgs};
use crate::output::Outcome;
use crate::rollout::switch;

pub async fn run(ctx: Ctx, a: FrontArgs) -> Result<Outcome> {
    // The front routes to what was deployed (its name and public port), as every command acts.
    let target = match &a.action {
        FrontAction::Up(t) | FrontAction::Status(t) | FrontAction::Down(t) => t,
    };
    let (ctx, service) = ctx.acting_on(target)?;
    let (cfg, dir) = (&ctx.config, &ctx.state_dir);
    let r = match a.action {
        FrontAction::Up(_) => switch::front_up(cfg, dir, None).await?,
        FrontAction::Status(_) => switch::front_status(cfg, dir, ctx.lock_wait).await?,
        FrontAction::Down(_) => switch::front_down(cfg, dir).await?,
    };
    Ok(super::ctx::with_service(Outcome::of(&r), &service))
}
