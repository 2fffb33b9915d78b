//! `gate`: the production promotion verdict over days 1..N. Exit 0 only when every
//! criterion is met; 3 otherwise, saying what is missing.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde_json::json;

use super::Ctx;
use crate::cli::GateArgs;
use crate::exit::{failure, Code};
use crate::output::Outcome;
use crate::report::{self, gate};

/// (all met, criteria) for days 1..=through.
pub fn verdict(
    ctx: &Ctx,
    through: u32,
    attestations: Option<&Path>,
) -> Result<(bool, Vec<gate::Criterion>)> {
    let cfg = &ctx.config;
    let store = ctx.store()?;
    let growth = cfg.memory_growth_threshold();
    let mut days = Vec::new();
    for d in 1..=through {
        let data = report::gather(&store, cfg, d)?;
        if data.samples.is_empty() && data.load_runs.is_empty() && data.e2e.is_none() {
            continue;
        }
        let m = report::metrics(&data, growth);
        days.push((data, m));
    }
    let attest_path = attestations
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("config/attestations.toml"));
    let attestations: toml::Table = match std::fs::read_to_string(&attest_path) {
        Ok(t) => t
            .parse()
            .map_err(|e| failure(Code::Usage, format!("{}: {e}", attest_path.display())))?,
        Err(_) if attestations.is_none() => toml::Table::new(),
        Err(e) => {
            return Err(failure(
                Code::Usage,
                format!("cannot read {}: {e}", attest_path.display()),
            ))
        }
    };
    let deployed: Vec<String> = {
        let mut v: Vec<String> = store
            .deployments()?
            .into_iter()
            .filter(|d| d.kind == "deploy" && d.status != "failed")
            .map(|d| d.image_ref)
            .collect();
        v.dedup();
        v
    };
    // Evidence about the image under test only: the validations of another image (an older
    // build, the baseline) say nothing about the one being promoted.
    let under_test = report::image_under_test(&store, cfg)?;
    let (score, cve) = match &under_test {
        None => (None, None),
        Some((image_ref, image_id)) => (
            store
                .latest_validation_of("score", image_id.as_deref(), image_ref)?
                .and_then(|(_, _, d)| {
                    Some((d["score"].as_u64()? as u32, d["of"].as_u64()? as u32))
                }),
            store
                .latest_validation_of("cve", image_id.as_deref(), image_ref)?
                .map(|(_, _, d)| d),
        ),
    };
    let drills = store.events(Some("drill"))?;
    let sbom_images = store.sbom_images()?;
    let input = gate::Input {
        through_day: through,
        days: &days,
        drills: &drills,
        score,
        cve: cve.as_ref(),
        deployed_images: &deployed,
        sbom_images: &sbom_images,
        attestations: &attestations,
    };
    let criteria = gate::evaluate(&input, cfg);
    Ok((criteria.iter().all(|c| c.met), criteria))
}

pub async fn run(ctx: Ctx, a: GateArgs) -> Result<Outcome> {
    if a.through_day == 0 {
        return Err(failure(Code::Usage, "--through-day counts from 1"));
    }
    let (ok, criteria) = verdict(&ctx, a.through_day, a.attestations.as_deref())?;
    let mut text = format!("Production promotion gate, days 1-{}:\n", a.through_day);
    let mut group = "";
    for c in &criteria {
        if c.group != group {
            group = c.group;
            text += &format!("\n{group} Criteria\n");
        }
        text += &format!(
            "  [{}] {}{}\n      {}\n",
            if c.met { "x" } else { " " },
            c.criterion,
            if c.attested { " (attested)" } else { "" },
            c.evidence
        );
    }
    let failed = criteria.iter().filter(|c| !c.met).count();
    text += &format!(
        "\nverdict: {}",
        if ok {
            "PROMOTE: all criteria met".to_string()
        } else {
            format!(
                "DO NOT PROMOTE: {failed} of {} criteria not met",
                criteria.len()
            )
        }
    );
    let json =
        json!({"ok": ok, "through_day": a.through_day, "criteria": criteria, "failed": failed});
    if let Some(sent) = crate::notify::webhook(
        &ctx.config.notify,
        "gate",
        &format!(
            "dhi-stage gate: {}",
            if ok { "promote" } else { "do not promote" }
        ),
        &json,
    )
    .await
    {
        if !sent.ok {
            tracing::warn!("notification failed: {}", sent.detail);
        }
    }
    Ok(Outcome::new(
        if ok { Code::Ok } else { Code::CheckFailed },
        json,
        text,
    ))
}
