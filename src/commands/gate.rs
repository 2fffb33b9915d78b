//! `gate`: the production promotion verdict over days 1..N. Exit 0 only when every
//! criterion is met; 3 otherwise, saying what is missing.

use std::path::Path;

use anyhow::Result;
use serde_json::json;

use super::Ctx;
use crate::cli::GateArgs;
use crate::exit::{failure, Code};
use crate::output::Outcome;
use crate::report::gate;

/// (all met, criteria) for days 1..=through.
pub fn verdict(
    ctx: &Ctx,
    through: u32,
    attestations: Option<&Path>,
) -> Result<(bool, Vec<gate::Criterion>)> {
    let attestations =
        gate::read_attestations(attestations).map_err(|e| failure(Code::Usage, e))?;
    let j = gate::judge(&ctx.store()?, &ctx.config, through, &attestations)?;
    Ok((j.passes, j.criteria))
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
