//! Step 2 of the runbook, "Security validation": the security score (12 checks), the SBOM,
//! the base image's provenance, and CVEs with VEX — four jobs over one gathering of facts,
//! each recorded in the store, judged together into one outcome (exit 3 when any fails).

pub mod cves;
mod facts;
pub mod provenance;
pub mod sbom;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

use crate::config::Config;
use crate::engine::spec::DeploySpec;
use crate::engine::Engine;
use crate::exit::{failure, Code};
use crate::output::Render;
use crate::security::layers;
use crate::security::score::{self, Check};
use crate::store::Store;

/// What to validate and with which evidence; paths are read (and checked) before any engine call.
pub struct Request {
    pub image: String,
    pub sbom_out: Option<PathBuf>,
    pub sbom_format: sbom::Format,
    pub vex: Vec<PathBuf>,
    pub osv_db: Option<PathBuf>,
    pub scan_reports: Vec<PathBuf>,
    /// DSSE envelope and the pinned PEM key that signed it.
    pub provenance: Option<(PathBuf, PathBuf)>,
    pub base_digest: Option<String>,
    pub max_size_mb: f64,
}

/// The input files, read: bad input fails fast, as usage, before the engine is touched.
struct Inputs {
    vex: Vec<(String, Value)>,
    provenance: Option<(String, String)>,
    cve_source: Option<cves::Source>,
}

impl Inputs {
    fn read(r: &Request) -> Result<Inputs> {
        let vex = r
            .vex
            .iter()
            .map(|p| read_json(p).map(|v| (p.display().to_string(), v)))
            .collect::<Result<Vec<_>>>()?;
        for (origin, doc) in &vex {
            let ctx = doc["@context"].as_str().unwrap_or("");
            if !ctx.starts_with("https://openvex.dev/ns") {
                return Err(failure(
                    Code::Usage,
                    format!("{origin} is not an OpenVEX document (@context {ctx:?})"),
                ));
            }
        }
        let provenance = match &r.provenance {
            Some((p, k)) => Some((read_text(p)?, read_text(k)?)),
            None => None,
        };
        let cve_source = match &r.osv_db {
            Some(dir) => Some(cves::Source::Osv(dir.clone())),
            None if r.scan_reports.is_empty() => None,
            None => Some(cves::Source::Reports(
                r.scan_reports
                    .iter()
                    .map(|p| Ok((p.display().to_string(), read_text(p)?)))
                    .collect::<Result<_>>()?,
            )),
        };
        Ok(Inputs {
            vex,
            provenance,
            cve_source,
        })
    }
}

/// `validate`'s outcome.
#[derive(Debug, Serialize)]
pub struct Validation {
    pub ok: bool,
    pub image: String,
    pub image_id: String,
    pub score: u32,
    pub of: usize,
    pub checks: Vec<Check>,
    pub runtime_source: String,
    pub sbom: sbom::SbomSummary,
    pub cve: Option<cves::CveSummary>,
    pub provenance: Option<provenance::ProvenanceView>,
}

pub async fn validate(cfg: &Config, store: &Store, r: &Request) -> Result<Validation> {
    let inputs = Inputs::read(r)?;
    let image_ref = r.image.as_str();
    let engine = Engine::connect().await?;
    let inspect = engine
        .inspect_image(image_ref)
        .await
        .map_err(|e| failure(Code::Usage, format!("cannot validate {image_ref}: {e:#}")))?;
    let facts = facts::image_facts(&engine, image_ref, &inspect).await?;
    let image_id = inspect.id.clone().unwrap_or_default();
    let image_digest = crate::engine::repo_digest(&inspect).unwrap_or_else(|| image_id.clone());
    let export = engine.export_image(image_ref, layers::MAX_EXPORT).await?;
    let fs = layers::from_save_tar(&export)
        .with_context(|| format!("reading the layers of {image_ref}"))?;
    drop(export);
    let record = |kind: &str, passed: bool, detail: &Value| {
        store.record_validation(Some(image_ref), Some(&image_id), kind, passed, detail)
    };

    // Runtime facts: the container if it runs this image, else the spec deploy would create.
    let container = engine.find_container(&cfg.container.name).await?;
    let runtime = match &container {
        Some(c) if c.image.as_deref() == Some(image_id.as_str()) => {
            facts::runtime_from_container(c, cfg)
        }
        _ => facts::runtime_from_spec(&DeploySpec::from_config(cfg, image_ref, Vec::new()), cfg),
    };

    let base_digest = r.base_digest.clone().or_else(|| {
        facts
            .labels
            .get("org.opencontainers.image.base.digest")
            .cloned()
    });
    let prov = inputs.provenance.as_ref().map(|(envelope, key)| {
        provenance::check(
            envelope,
            key,
            base_digest.as_deref(),
            &cfg.security.allowed_builders,
        )
    });
    if let Some(p) = &prov {
        record("provenance", p.passed(), &p.record())?;
    }
    let prov_view = prov.as_ref().map(|p| p.view());

    let checks = score::score(&score::Inputs {
        image: &facts,
        fs: &fs,
        runtime: &runtime,
        expected_uid: cfg.security.expected_uid,
        max_size_bytes: (r.max_size_mb * 1_000_000.0) as u64,
        provenance: prov_view.as_ref(),
    });
    let passed = checks.iter().filter(|c| c.passed).count() as u32;
    let score_ok = passed >= cfg.security.required_score;
    record(
        "score",
        score_ok,
        &json!({"score": passed, "of": checks.len(), "checks": checks}),
    )?;

    let running_this = container.as_ref().is_some_and(|c| {
        c.image.as_deref() == Some(image_id.as_str())
            && c.state.as_ref().and_then(|s| s.running).unwrap_or(false)
    });
    let bun = facts::bun_version(&engine, cfg, running_this, &facts).await;
    let (comps, doc) = sbom::build(&fs, bun.as_deref(), r.sbom_format, image_ref, &image_digest);
    if let Some(path) = &r.sbom_out {
        crate::files::write_atomic(path, &serde_json::to_string_pretty(&doc)?)?;
    }
    record(
        "sbom",
        true,
        &json!({"format": r.sbom_format, "components": comps.len(), "written_to": r.sbom_out, "document": doc}),
    )?;

    let cve = match &inputs.cve_source {
        Some(source) => {
            let ids = [
                image_ref.to_string(),
                image_digest.clone(),
                image_id.clone(),
            ];
            let summary = cves::scan(
                source,
                &comps,
                &inputs.vex,
                &r.vex,
                &ids,
                &cfg.security.fail_on,
            )?;
            record(
                "cve",
                summary.blocking == 0,
                &serde_json::to_value(&summary)?,
            )?;
            Some(summary)
        }
        None => None,
    };

    let ok = score_ok
        && cve.as_ref().is_none_or(|c| c.blocking == 0)
        && prov.as_ref().is_none_or(|p| p.passed());
    Ok(Validation {
        ok,
        image: image_ref.to_string(),
        image_id,
        score: passed,
        of: checks.len(),
        checks,
        runtime_source: runtime.source,
        sbom: sbom::SbomSummary {
            format: r.sbom_format,
            components: comps,
            written_to: r.sbom_out.clone(),
        },
        cve,
        provenance: prov_view.map(Into::into),
    })
}

impl Render for Validation {
    fn code(&self) -> Code {
        Code::of_check(self.ok)
    }

    fn text(&self) -> String {
        let mut t = format!(
            "validate {}\nsecurity score: {}/{} (runtime checks from {})\n",
            self.image,
            self.score,
            self.checks.len(),
            self.runtime_source
        );
        for c in &self.checks {
            t += &format!(
                "  {:>2}. {} {:<58} [{}]\n      {}\n",
                c.id,
                if c.passed { "pass" } else { "FAIL" },
                c.name,
                c.standard,
                c.evidence
            );
            if !c.passed {
                t += &format!("      fix: {}\n", c.fix);
            }
        }
        t += &format!(
            "SBOM: {} components{}\n",
            self.sbom.components.len(),
            self.sbom
                .written_to
                .as_ref()
                .map(|p| format!(", written to {}", p.display()))
                .unwrap_or_default()
        );
        match &self.cve {
            Some(c) => t += &c.text(),
            None => t += "CVEs: not scanned (pass --osv-db DIR or --scan-report FILE)\n",
        }
        if let Some(p) = &self.provenance {
            t += &format!("provenance: {}\n", p.detail);
        }
        t
    }
}

fn read_text(p: &Path) -> Result<String> {
    std::fs::read_to_string(p)
        .map_err(|e| failure(Code::Usage, format!("cannot read {}: {e}", p.display())))
}

fn read_json(p: &Path) -> Result<Value> {
    serde_json::from_str(&read_text(p)?).map_err(|e| {
        failure(
            Code::Usage,
            format!("{} is not valid JSON: {e}", p.display()),
        )
    })
}
