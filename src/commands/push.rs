//! `push`: Step 1's tag and push (`image::push`); the registry password comes from stdin.

use std::io::Read;

use anyhow::Result;

use super::Ctx;
use crate::cli::PushArgs;
use crate::engine::auth;
use crate::exit::{failure, Code};
use crate::image::push::{self, Request};
use crate::output::Outcome;

pub async fn run(ctx: Ctx, a: PushArgs) -> Result<Outcome> {
    let cfg = &ctx.config;
    let registry = a.registry.unwrap_or_else(|| cfg.image.registry.clone());
    let source = super::image_or(a.image, || cfg.build_ref())?.to_string();
    let tag = a.tag.unwrap_or_else(|| {
        chrono::Utc::now()
            .date_naive()
            .format(&cfg.image.staging_tag_format)
            .to_string()
    });
    let credentials = match &a.username {
        Some(user) => {
            let mut password = String::new();
            std::io::stdin()
                .take(64 * 1024)
                .read_to_string(&mut password)?;
            let password = password.trim_end_matches(['\n', '\r']);
            if password.is_empty() {
                return Err(failure(
                    Code::Usage,
                    "--password-stdin read an empty password",
                ));
            }
            Some(auth::explicit(&registry, user, password))
        }
        None => auth::from_docker_config(&registry)?,
    };
    let request = Request {
        source,
        repo: format!("{registry}/{}", cfg.image.name),
        tag,
        credentials,
        sbom: a.sbom,
    };
    let progress = ctx.progress();
    let pushed = push::push(&ctx.store()?, &request, &|l| progress.line(l)).await;
    progress.finish();
    Ok(Outcome::of(&pushed?))
}
