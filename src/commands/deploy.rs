//! `deploy`: Steps 3-4 (`rollout::deploy`, or `rollout::kubernetes` with
//! `--target kubernetes`); `--dry-run` prints the container spec, with `--kubernetes` the
//! runbook's Deployment, and changes nothing.

use anyhow::Result;

use super::Ctx;
use crate::cli::{DeployArgs, Platform};
use crate::exit::Code;
use crate::output::Outcome;
use crate::rollout::deploy::{self, Request};

pub async fn run(ctx: Ctx, a: DeployArgs) -> Result<Outcome> {
    let ctx = ctx.with_target(&a.target)?;
    let cfg = &ctx.config;
    let image =
        super::image_or(a.image, || cfg.staging_ref(chrono::Utc::now().date_naive()))?.to_string();
    let kubernetes = a.platform == Platform::Kubernetes;
    if a.dry_run && (a.kubernetes || kubernetes) {
        let manifest = crate::engine::kubernetes::deployment(cfg, &image);
        let text = serde_json::to_string_pretty(&manifest)?;
        // Stdout stays the manifest kubectl takes; what applying it needs is for the reader.
        eprintln!(
            "# The identity in the kubeconfig needs this Role (bound to it) to deploy, watch and roll back:\n{}",
            crate::engine::kubernetes::role_yaml(cfg)
        );
        return Ok(Outcome::new(Code::Ok, manifest, text));
    }
    if a.dry_run {
        return Ok(Outcome::of(&deploy::dry_run(cfg, &image)?));
    }
    let context = ctx.rollout();
    let progress = ctx.progress();
    if kubernetes {
        let deployed = super::kubernetes::deploy(&context, &image, &|l| progress.line(l)).await;
        progress.finish();
        return deployed;
    }
    let request = Request {
        image,
        wait: a.wait,
        no_rollback: a.no_rollback,
        allow_insecure: a.allow_insecure,
        strategy: a.strategy,
    };
    let deployed = deploy::deploy(&context, &request, &|l| progress.line(l)).await;
    progress.finish();
    Ok(Outcome::of(&deployed?))
}
