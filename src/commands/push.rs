//! `push`: Step 1's tag + `docker push <registry>/authentication-service:staging-dhi-YYYYMMDD`,
//! recording the digest the registry acknowledged.

use std::io::Read;

use anyhow::Result;
use serde_json::json;

use super::Ctx;
use crate::cli::PushArgs;
use crate::engine::{auth, Engine};
use crate::exit::{failure, Code};
use crate::output::Outcome;

pub async fn run(mut ctx: Ctx, a: PushArgs) -> Result<Outcome> {
    if let Some(r) = &a.registry {
        ctx.config.image.registry = r.clone();
    }
    let cfg = &ctx.config;
    let source = a.image.clone().unwrap_or_else(|| cfg.build_ref());
    let registry = cfg.image.registry.clone();
    let tag = a.tag.clone().unwrap_or_else(|| {
        chrono::Utc::now()
            .date_naive()
            .format(&cfg.image.staging_tag_format)
            .to_string()
    });
    let repo = format!("{registry}/{}", cfg.image.name);
    let target = format!("{repo}:{tag}");
    crate::probe::reference::check(&source).map_err(|e| failure(Code::Usage, e))?;
    crate::probe::reference::check(&target).map_err(|e| failure(Code::Usage, e))?;

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
    let sbom_doc = match &a.sbom {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| {
                failure(
                    Code::Usage,
                    format!("cannot read SBOM {}: {e}", p.display()),
                )
            })?;
            serde_json::from_str::<serde_json::Value>(&text).map_err(|e| {
                failure(
                    Code::Usage,
                    format!("SBOM {} is not JSON: {e}", p.display()),
                )
            })?;
            Some(text)
        }
        None => None,
    };
    let credentials_again = credentials.clone();
    let engine = Engine::connect().await?;
    let image = engine.inspect_image(&source).await.map_err(|e| {
        failure(
            Code::Operational,
            format!("cannot push {source}: {e:#}; build it first with `dhi-stage build`"),
        )
    })?;
    engine.tag(&source, &repo, &tag).await?;
    let progress = ctx.progress();
    let started = std::time::Instant::now();
    let digest = engine
        .push(&repo, &tag, credentials, &|l| progress.line(l))
        .await?;
    progress.finish();
    let store = ctx.store()?;
    store.record_image(
        "push",
        &target,
        image.id.as_deref(),
        image.size,
        Some(&digest),
    )?;
    let mut text = format!(
        "pushed {target}\n  digest: {digest}\n  pull:   {repo}@{digest}\n  took:   {}",
        super::fmt_duration(started.elapsed())
    );
    let mut sbom_json = serde_json::Value::Null;
    if let Some(doc) = &sbom_doc {
        // The sidecar: a FROM scratch image holding only /sbom.json, labelled with the digest it describes.
        let sidecar_tag = format!("{tag}.sbom");
        let dockerfile = format!(
            "FROM scratch\nCOPY sbom.json /sbom.json\nLABEL org.opencontainers.image.description=\"SBOM of {repo}@{digest}\" dev.dhi-stage.sbom.subject=\"{digest}\"\n"
        );
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in [
            ("Dockerfile", dockerfile.as_bytes()),
            ("sbom.json", doc.as_bytes()),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, data)?;
        }
        let sidecar = format!("{repo}:{sidecar_tag}");
        engine
            .build(
                b.into_inner()?,
                "Dockerfile",
                &sidecar,
                &Default::default(),
                &|l| progress.line(l),
            )
            .await?;
        let sbom_digest = engine
            .push(&repo, &sidecar_tag, credentials_again, &|l| {
                progress.line(l)
            })
            .await?;
        store.record_image(
            "push-sbom",
            &sidecar,
            None,
            Some(doc.len() as i64),
            Some(&sbom_digest),
        )?;
        text += &format!("\n  sbom:   {sidecar} ({sbom_digest})");
        sbom_json = json!({"reference": sidecar, "digest": sbom_digest});
    }
    Ok(Outcome::new(
        Code::Ok,
        json!({"ok": true, "source": source, "reference": target, "digest": digest, "pinned": format!("{repo}@{digest}"), "image_id": image.id, "sbom": sbom_json}),
        text,
    ))
}
