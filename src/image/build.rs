//! `docker build -t authentication-service:dhi-staging .`, plus the checklist's "Image size
//! verified: <=58MB".

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use crate::engine::{context, Engine};
use crate::exit::{failure, Code};
use crate::output::Render;
use crate::store::Store;

pub struct Request {
    pub tag: String,
    pub context: PathBuf,
    pub dockerfile: String,
    /// `KEY=VALUE`, as `docker build --build-arg`.
    pub build_args: Vec<String>,
    pub max_size_mb: f64,
}

/// `build`'s outcome: exit 3 when the image is over the size limit.
#[derive(Debug, Serialize)]
pub struct Built {
    pub ok: bool,
    pub image: String,
    pub id: String,
    pub size_bytes: u64,
    pub size_mb: f64,
    pub max_size_mb: f64,
    pub size_within_limit: bool,
    #[serde(skip)]
    pub took: Duration,
}

pub async fn build(store: &Store, r: &Request, progress: &dyn Fn(&str)) -> Result<Built> {
    let mut build_args = HashMap::new();
    for kv in &r.build_args {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| failure(Code::Usage, format!("--build-arg {kv:?} must be KEY=VALUE")))?;
        build_args.insert(k.to_string(), v.to_string());
    }
    let tar = context::tar_context(&r.context, &r.dockerfile)
        .map_err(|e| failure(Code::Usage, format!("{e:#}")))?;
    let engine = Engine::connect().await?;
    progress(&format!(
        "sending build context {} ({} bytes)",
        r.context.display(),
        tar.len()
    ));
    let started = std::time::Instant::now();
    let id = engine
        .build(tar, &r.dockerfile, &r.tag, &build_args, progress)
        .await?;
    let image = engine.inspect_image(&id).await?;
    let size = image.size.unwrap_or(0).max(0) as u64;
    let within = size <= (r.max_size_mb * 1_000_000.0) as u64;
    store.record_image("build", &r.tag, Some(&id), Some(size as i64), None)?;
    let mb = size as f64 / 1_000_000.0;
    Ok(Built {
        ok: within,
        image: r.tag.clone(),
        id,
        size_bytes: size,
        size_mb: (mb * 100.0).round() / 100.0,
        max_size_mb: r.max_size_mb,
        size_within_limit: within,
        took: started.elapsed(),
    })
}

impl Render for Built {
    fn code(&self) -> Code {
        Code::of_check(self.ok)
    }

    fn text(&self) -> String {
        let mb = self.size_bytes as f64 / 1_000_000.0;
        let verdict = if self.ok { "within" } else { "OVER" };
        let text = format!(
            "built {}\n  id:   {}\n  size: {mb:.2} MB ({} bytes; MB = 10^6 bytes, as `docker images` shows) — {verdict} the {} MB limit\n  took: {}",
            self.image,
            self.id,
            self.size_bytes,
            self.max_size_mb,
            crate::output::fmt_duration(self.took)
        );
        if self.ok {
            text
        } else {
            format!(
                "{text}\nerror: image size {mb:.2} MB exceeds the {} MB limit",
                self.max_size_mb
            )
        }
    }
}
