//! `build`: Step 1's `docker build` and the image size check (`image::build`).

use anyhow::Result;

use super::Ctx;
use crate::cli::BuildArgs;
use crate::image::build::{self, Request};
use crate::output::Outcome;

pub async fn run(ctx: Ctx, a: BuildArgs) -> Result<Outcome> {
    let cfg = &ctx.config;
    let request = Request {
        tag: super::image_or(a.tag, || cfg.build_ref())?.to_string(),
        context: a.context.unwrap_or_else(|| cfg.image.context.clone()),
        dockerfile: a.file.unwrap_or_else(|| cfg.image.dockerfile.clone()),
        build_args: a.build_args,
        max_size_mb: a.max_size.unwrap_or(cfg.image.max_size_mb),
    };
    let progress = ctx.progress();
    let built = build::build(&ctx.store()?, &request, &|l| progress.line(l)).await;
    progress.finish();
    Ok(Outcome::of(&built?))
}
