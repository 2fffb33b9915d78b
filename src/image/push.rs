//! Step 1's push: tag `<registry>/authentication-service:staging-dhi-YYYYMMDD`, push, record
//! the digest (what deploy pins), and attach the SBOM as the sidecar tag `<tag>.sbom`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use bollard::auth::DockerCredentials;
use serde::Serialize;

use crate::engine::Engine;
use crate::exit::{failure, Code};
use crate::output::Render;
use crate::store::Store;

pub struct Request {
    /// The local image to push.
    pub source: String,
    /// `host[:port]/name`, the repository in the registry.
    pub repo: String,
    pub tag: String,
    pub credentials: Option<DockerCredentials>,
    /// An SBOM (from `validate --sbom-out`) to attach as `<tag>.sbom`.
    pub sbom: Option<PathBuf>,
}

/// `push`'s outcome.
#[derive(Debug, Serialize)]
pub struct Pushed {
    pub ok: bool,
    pub source: String,
    pub reference: String,
    pub digest: String,
    /// `repo@digest`: what to pull or deploy to get exactly this image.
    pub pinned: String,
    pub image_id: Option<String>,
    pub sbom: Option<Sidecar>,
    #[serde(skip)]
    pub took: Duration,
}

#[derive(Debug, Serialize)]
pub struct Sidecar {
    pub reference: String,
    pub digest: String,
}

pub async fn push(store: &Store, r: &Request, progress: &dyn Fn(&str)) -> Result<Pushed> {
    let (repo, tag) = (&r.repo, &r.tag);
    let target = format!("{repo}:{tag}");
    crate::probe::reference::check(&target).map_err(|e| failure(Code::Usage, e))?;
    let sbom_doc = match &r.sbom {
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
    let engine = Engine::connect().await?;
    let image = engine.inspect_image(&r.source).await.map_err(|e| {
        failure(
            Code::Operational,
            format!(
                "cannot push {}: {e:#}; build it first with `dhi-stage build`",
                r.source
            ),
        )
    })?;
    engine.tag(&r.source, repo, tag).await?;
    let started = std::time::Instant::now();
    let digest = engine
        .push(repo, tag, r.credentials.clone(), progress)
        .await?;
    store.record_image(
        "push",
        &target,
        image.id.as_deref(),
        image.size,
        Some(&digest),
    )?;
    let took = started.elapsed();
    let mut sbom = None;
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
                progress,
            )
            .await?;
        let sbom_digest = engine
            .push(repo, &sidecar_tag, r.credentials.clone(), progress)
            .await?;
        store.record_image(
            "push-sbom",
            &sidecar,
            None,
            Some(doc.len() as i64),
            Some(&sbom_digest),
        )?;
        sbom = Some(Sidecar {
            reference: sidecar,
            digest: sbom_digest,
        });
    }
    Ok(Pushed {
        ok: true,
        source: r.source.clone(),
        reference: target,
        pinned: format!("{repo}@{digest}"),
        digest,
        image_id: image.id,
        sbom,
        took,
    })
}

impl Render for Pushed {
    fn code(&self) -> Code {
        Code::Ok
    }

    fn text(&self) -> String {
        let mut text = format!(
            "pushed {}\n  digest: {}\n  pull:   {}\n  took:   {}",
            self.reference,
            self.digest,
            self.pinned,
            crate::output::fmt_duration(self.took)
        );
        if let Some(s) = &self.sbom {
            text += &format!("\n  sbom:   {} ({})", s.reference, s.digest);
        }
        text
    }
}
