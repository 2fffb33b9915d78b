//! `validate`: Step 2's pre-deployment validation, offline: security score N/12, image size,
//! SBOM, base image provenance, CVEs with VEX. Everything is recorded for `report` and `gate`,
//! and a CRITICAL finding is what `monitor` treats as an immediate rollback trigger.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use super::Ctx;
use crate::cli::ValidateArgs;
use crate::engine::spec::DeploySpec;
use crate::engine::Engine;
use crate::exit::{failure, Code};
use crate::output::Outcome;
use crate::security::score::{self, ImageFacts, Provenance, RuntimeFacts};
use crate::security::{cve, layers, provenance, sbom};

pub async fn run(ctx: Ctx, a: ValidateArgs) -> Result<Outcome> {
    let ctx = ctx.with_target(&a.target)?;
    let cfg = &ctx.config;
    let store = ctx.store()?;
    let active = store.active_deployment(&cfg.container.name)?;
    let image_ref = a
        .image
        .clone()
        .or_else(|| active.as_ref().map(|d| d.image_ref.clone()))
        .unwrap_or_else(|| cfg.build_ref());
    crate::probe::reference::check(&image_ref).map_err(|e| failure(Code::Usage, e))?;
    // Read every input file before touching the engine: bad input fails fast, as usage.
    let vex_docs = a
        .vex
        .iter()
        .map(|p| read_json(p).map(|v| (p.display().to_string(), v)))
        .collect::<Result<Vec<_>>>()?;
    for (origin, doc) in &vex_docs {
        let ctx = doc["@context"].as_str().unwrap_or("");
        if !ctx.starts_with("https://openvex.dev/ns") {
            return Err(failure(
                Code::Usage,
                format!("{origin} is not an OpenVEX document (@context {ctx:?})"),
            ));
        }
    }
    let prov_input = match (&a.provenance, &a.key) {
        (Some(p), Some(k)) => Some((read_text(p)?, read_text(k)?)),
        _ => None,
    };

    let engine = Engine::connect().await?;
    let inspect = engine
        .inspect_image(&image_ref)
        .await
        .map_err(|e| failure(Code::Usage, format!("cannot validate {image_ref}: {e:#}")))?;
    let config = inspect.config.clone().unwrap_or_default();
    let facts = ImageFacts {
        user: config.user.clone().unwrap_or_default(),
        env: config.env.clone().unwrap_or_default(),
        labels: config.labels.clone().unwrap_or_default(),
        history: engine.image_history(&image_ref).await?,
        size_bytes: inspect.size.unwrap_or(0).max(0) as u64,
        healthcheck: config
            .healthcheck
            .as_ref()
            .and_then(|h| h.test.as_ref())
            .is_some_and(|t| t.first().map(String::as_str) != Some("NONE")),
    };
    let image_id = inspect.id.clone().unwrap_or_default();
    let image_digest = crate::engine::repo_digest(&inspect).unwrap_or_else(|| image_id.clone());
    let export = engine.export_image(&image_ref, layers::MAX_EXPORT).await?;
    let fs = layers::from_save_tar(&export)
        .with_context(|| format!("reading the layers of {image_ref}"))?;
    drop(export);

    // Runtime facts: the container if it runs this image, else the spec deploy would create.
    let container = engine.find_container(&cfg.container.name).await?;
    let runtime = match &container {
        Some(c) if c.image.as_deref() == Some(image_id.as_str()) => runtime_from_container(c, cfg),
        _ => runtime_from_spec(&DeploySpec::from_config(cfg, &image_ref, Vec::new()), cfg),
    };

    // Provenance.
    let base_digest = a.base_digest.clone().or_else(|| {
        facts
            .labels
            .get("org.opencontainers.image.base.digest")
            .cloned()
    });
    let prov = match (&prov_input, &base_digest) {
        (None, _) => None,
        (Some(_), None) => Some(Err(anyhow::anyhow!("no base image digest: pass --base-digest or label the image org.opencontainers.image.base.digest"))),
        (Some((envelope, key)), Some(d)) => Some(provenance::verify(envelope, key, d, &cfg.security.allowed_builders)),
    };
    let prov_view = prov.as_ref().map(|r| match r {
        Ok(v) => Provenance {
            verified: true,
            detail: format!(
                "verified: {} by {}, subject {}",
                v.predicate_type, v.builder_id, v.subject_digest
            ),
        },
        Err(e) => Provenance {
            verified: false,
            detail: format!("FAILED: {e:#}"),
        },
    });
    if let Some(p) = &prov {
        let detail = match p {
            Ok(v) => json!({"verified": true, "statement": v}),
            Err(e) => json!({"verified": false, "error": format!("{e:#}")}),
        };
        store.record_validation(
            Some(&image_ref),
            Some(&image_id),
            "provenance",
            p.is_ok(),
            &detail,
        )?;
    }

    let max_size = (a.max_size.unwrap_or(cfg.image.max_size_mb) * 1_000_000.0) as u64;
    let checks = score::score(&score::Inputs {
        image: &facts,
        fs: &fs,
        runtime: &runtime,
        expected_uid: cfg.security.expected_uid,
        max_size_bytes: max_size,
        provenance: prov_view.as_ref(),
    });
    let passed = checks.iter().filter(|c| c.passed).count() as u32;
    let score_ok = passed >= cfg.security.required_score;
    store.record_validation(
        Some(&image_ref),
        Some(&image_id),
        "score",
        score_ok,
        &json!({"score": passed, "of": checks.len(), "checks": checks}),
    )?;

    // SBOM.
    let running_this = container.as_ref().is_some_and(|c| {
        c.image.as_deref() == Some(image_id.as_str())
            && c.state.as_ref().and_then(|s| s.running).unwrap_or(false)
    });
    let bun_version = bun_version(&engine, cfg, running_this, &facts).await;
    let comps = sbom::components(&fs, bun_version.as_deref());
    let doc = match a.sbom_format.as_str() {
        "spdx" => sbom::spdx(&image_ref, &image_digest, &comps),
        _ => sbom::cyclonedx(&image_ref, &image_digest, &comps),
    };
    let doc_text = serde_json::to_string_pretty(&doc)?;
    if let Some(path) = &a.sbom_out {
        super::write_atomic(path, &doc_text)?;
    }
    store.record_validation(
        Some(&image_ref),
        Some(&image_id),
        "sbom",
        true,
        &json!({"format": a.sbom_format, "components": comps.len(), "written_to": a.sbom_out, "document": doc}),
    )?;

    // CVEs with VEX.
    let cve_result = if a.osv_db.is_some() || !a.scan_report.is_empty() {
        let mut findings = match &a.osv_db {
            Some(dir) => cve::match_osv(
                &cve::load_osv(dir).map_err(|e| failure(Code::Usage, format!("{e:#}")))?,
                &comps,
            ),
            None => {
                let mut all = Vec::new();
                for p in &a.scan_report {
                    all.extend(
                        cve::import_report(&read_text(p)?, &p.display().to_string())
                            .map_err(|e| failure(Code::Usage, format!("{e:#}")))?,
                    );
                }
                all
            }
        };
        let before = cve::counts(findings.iter());
        let ids = vec![image_ref.clone(), image_digest.clone(), image_id.clone()];
        let (suppressed, warnings) = cve::apply_vex(&mut findings, &vex_docs, &ids)
            .map_err(|e| failure(Code::Usage, format!("{e:#}")))?;
        let after = cve::counts(findings.iter().filter(|f| f.suppressed_by.is_none()));
        let blocking: usize = cfg
            .security
            .fail_on
            .iter()
            .map(|s| after.get(&s.to_lowercase()).copied().unwrap_or(0))
            .sum();
        let detail = json!({"before": before, "after_vex": after, "suppressed": suppressed, "vex_documents": a.vex, "warnings": warnings, "findings": findings});
        store.record_validation(
            Some(&image_ref),
            Some(&image_id),
            "cve",
            blocking == 0,
            &detail,
        )?;
        Some((blocking == 0, detail))
    } else {
        None
    };

    let prov_failed = matches!(prov, Some(Err(_)));
    let ok = score_ok && cve_result.as_ref().is_none_or(|(ok, _)| *ok) && !prov_failed;
    let text = render(
        &image_ref,
        &checks,
        passed,
        &comps,
        cve_result.as_ref().map(|(_, d)| d),
        prov_view.as_ref(),
        &runtime.source,
        a.sbom_out.as_deref(),
    );
    let json = json!({
        "ok": ok, "image": image_ref, "image_id": image_id, "score": passed, "of": checks.len(), "checks": checks,
        "runtime_source": runtime.source, "sbom": {"format": a.sbom_format, "components": comps, "written_to": a.sbom_out},
        "cve": cve_result.map(|(_, d)| d), "provenance": prov_view.map(|p| json!({"verified": p.verified, "detail": p.detail})),
    });
    Ok(Outcome::new(
        if ok { Code::Ok } else { Code::CheckFailed },
        json,
        text,
    ))
}

#[allow(clippy::too_many_arguments)]
fn render(
    image: &str,
    checks: &[score::Check],
    passed: u32,
    comps: &[sbom::Component],
    cve: Option<&Value>,
    prov: Option<&Provenance>,
    source: &str,
    sbom_out: Option<&Path>,
) -> String {
    let mut t = format!(
        "validate {image}\nsecurity score: {passed}/{} (runtime checks from {source})\n",
        checks.len()
    );
    for c in checks {
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
        comps.len(),
        sbom_out
            .map(|p| format!(", written to {}", p.display()))
            .unwrap_or_default()
    );
    match cve {
        Some(d) => {
            let line = |k: &str| {
                let m = &d[k];
                format!(
                    "CRITICAL {} HIGH {} MEDIUM {} LOW {} UNKNOWN {}",
                    m["critical"], m["high"], m["medium"], m["low"], m["unknown"]
                )
            };
            t += &format!(
                "CVEs before VEX: {}\nCVEs after VEX:  {}\nVEX suppressed: {}\n",
                line("before"),
                line("after_vex"),
                d["suppressed"]
            );
            for w in d["warnings"].as_array().into_iter().flatten() {
                t += &format!("  warning: {}\n", w.as_str().unwrap_or(""));
            }
        }
        None => t += "CVEs: not scanned (pass --osv-db DIR or --scan-report FILE)\n",
    }
    if let Some(p) = prov {
        t += &format!("provenance: {}\n", p.detail);
    }
    t
}

fn runtime_from_container(
    c: &bollard::models::ContainerInspectResponse,
    cfg: &crate::config::Config,
) -> RuntimeFacts {
    let hc = c.host_config.clone().unwrap_or_default();
    let ns = |k: &str, v: Option<String>| (k.to_string(), v.unwrap_or_default());
    RuntimeFacts {
        source: format!(
            "container {}",
            c.name.clone().unwrap_or_default().trim_start_matches('/')
        ),
        read_only: hc.readonly_rootfs.unwrap_or(false),
        cap_drop: hc.cap_drop.clone().unwrap_or_default(),
        cap_add: hc.cap_add.clone().unwrap_or_default(),
        security_opt: hc.security_opt.clone().unwrap_or_default(),
        privileged: hc.privileged.unwrap_or(false),
        namespaces: vec![
            ns("network", hc.network_mode.clone()),
            ns("pid", hc.pid_mode.clone()),
            ns("ipc", hc.ipc_mode.clone()),
            ns("uts", hc.uts_mode.clone()),
            ns("userns", hc.userns_mode.clone()),
        ],
        mount_sources: c
            .mounts
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| m.source)
            .filter(|s| !s.is_empty())
            .collect(),
        tmpfs: hc.tmpfs.clone().unwrap_or_default(),
        memory: hc.memory.unwrap_or(0),
        nano_cpus: hc.nano_cpus.unwrap_or(0),
        cpu_quota: hc.cpu_quota.unwrap_or(0),
        pids_limit: hc.pids_limit.unwrap_or(0),
        restart_policy: hc
            .restart_policy
            .as_ref()
            .and_then(|r| r.name)
            .map(|n| n.to_string())
            .unwrap_or_default(),
        restart_count: c.restart_count,
        health_probe: (!cfg.verify.health_path.is_empty()).then(|| cfg.verify.health_path.clone()),
    }
}

fn runtime_from_spec(s: &DeploySpec, cfg: &crate::config::Config) -> RuntimeFacts {
    let body = crate::engine::spec::hardened(s);
    let hc = body.host_config.unwrap_or_default();
    RuntimeFacts {
        source: "the deploy spec (no container runs this image)".into(),
        read_only: hc.readonly_rootfs.unwrap_or(false),
        cap_drop: hc.cap_drop.unwrap_or_default(),
        cap_add: hc.cap_add.unwrap_or_default(),
        security_opt: hc.security_opt.unwrap_or_default(),
        privileged: false,
        namespaces: Vec::new(),
        mount_sources: Vec::new(),
        tmpfs: hc.tmpfs.unwrap_or_default(),
        memory: hc.memory.unwrap_or(0),
        nano_cpus: hc.nano_cpus.unwrap_or(0),
        cpu_quota: 0,
        pids_limit: hc.pids_limit.unwrap_or(0),
        restart_policy: s.restart.clone(),
        restart_count: None,
        health_probe: (!cfg.verify.health_path.is_empty()).then(|| cfg.verify.health_path.clone()),
    }
}

/// The Bun runtime's version: from the running container when it runs this image, else the
/// image's BUN_VERSION variable; None when neither tells.
async fn bun_version(
    engine: &Engine,
    cfg: &crate::config::Config,
    running: bool,
    facts: &ImageFacts,
) -> Option<String> {
    if running {
        if let Ok((0, out)) = engine
            .exec(&cfg.container.name, &cfg.verify.version_command)
            .await
        {
            return Some(out.trim().to_string());
        }
    }
    let env: HashMap<&str, &str> = facts.env.iter().filter_map(|e| e.split_once('=')).collect();
    env.get("BUN_VERSION").map(|v| v.to_string())
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
