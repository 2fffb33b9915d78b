//! `build`: Step 1's `docker build -t authentication-service:dhi-staging .`, plus the
//! checklist's "Image size verified: <=58MB".

use std::collections::HashMap;

use anyhow::Result;
use serde_json::json;

use super::Ctx;
use crate::cli::BuildArgs;
use crate::engine::{context, Engine};
use crate::exit::{failure, Code};
use crate::output::Outcome;

pub async fn run(ctx: Ctx, a: BuildArgs) -> Result<Outcome> {
    let cfg = &ctx.config;
    let tag = a.tag.clone().unwrap_or_else(|| cfg.build_ref());
    crate::probe::reference::check(&tag).map_err(|e| failure(Code::Usage, e))?;
    let context_dir = a
        .context
        .clone()
        .unwrap_or_else(|| cfg.image.context.clone());
    let dockerfile = a
        .file
        .clone()
        .unwrap_or_else(|| cfg.image.dockerfile.clone());
    let max_mb = a.max_size.unwrap_or(cfg.image.max_size_mb);
    let mut build_args = HashMap::new();
    for kv in &a.build_args {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| failure(Code::Usage, format!("--build-arg {kv:?} must be KEY=VALUE")))?;
        build_args.insert(k.to_string(), v.to_string());
    }
    let tar = context::tar_context(&context_dir, &dockerfile)
        .map_err(|e| failure(Code::Usage, format!("{e:#}")))?;
    let engine = Engine::connect().await?;
    let progress = ctx.progress();
    progress.line(&format!(
        "sending build context {} ({} bytes)",
        context_dir.display(),
        tar.len()
    ));
    let started = std::time::Instant::now();
    let id = engine
        .build(tar, &dockerfile, &tag, &build_args, &|l| progress.line(l))
        .await?;
    progress.finish();
    let image = engine.inspect_image(&id).await?;
    let size = image.size.unwrap_or(0).max(0) as u64;
    let limit = (max_mb * 1_000_000.0) as u64;
    let within = size <= limit;
    let store = ctx.store()?;
    store.record_image("build", &tag, Some(&id), Some(size as i64), None)?;
    let mb = size as f64 / 1_000_000.0;
    let verdict = if within { "within" } else { "OVER" };
    let text = format!(
        "built {tag}\n  id:   {id}\n  size: {mb:.2} MB ({size} bytes; MB = 10^6 bytes, as `docker images` shows) — {verdict} the {max_mb} MB limit\n  took: {}",
        super::fmt_duration(started.elapsed())
    );
    let json = json!({
        "ok": within,
        "image": tag,
        "id": id,
        "size_bytes": size,
        "size_mb": (mb * 100.0).round() / 100.0,
        "max_size_mb": max_mb,
        "size_within_limit": within,
    });
    if within {
        Ok(Outcome::new(Code::Ok, json, text))
    } else {
        Ok(Outcome::new(
            Code::CheckFailed,
            json,
            format!("{text}\nerror: image size {mb:.2} MB exceeds the {max_mb} MB limit"),
        ))
    }
}
