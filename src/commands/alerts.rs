//! `alerts`: the rollback triggers as Prometheus rules, an Alertmanager route and a Grafana
//! dashboard (`alerting`), and with `--drill` a test alert through Alertmanager.

use anyhow::Result;

use super::Ctx;
use crate::alerting::{self, check, Inputs};
use crate::cli::AlertsArgs;
use crate::exit::{failure, Code};
use crate::output::Outcome;
use crate::store::EventKind;

pub async fn run(ctx: Ctx, a: AlertsArgs) -> Result<Outcome> {
    // The alerts name the service that was deployed (its container), as every command does.
    let (ctx, service) = ctx.acting_on(&a.target)?;
    let cfg = &ctx.config;
    let store = ctx.store()?;
    // The convention the monitor last read, for a config that says `auto`.
    let found = store
        .latest_day()?
        .and_then(|d| crate::report::day_convention(&store, d))
        .and_then(|about| about.convention);
    let (convention, from) =
        alerting::convention_for(cfg, a.convention.as_deref(), found.as_deref())
            .map_err(|e| failure(Code::Usage, e))?;
    let inputs = Inputs {
        cfg,
        convention: &convention,
    };
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| cfg.report.dir.join("alerting"));
    let written = alerting::write(&inputs, &out)?;
    let drill = if a.drill {
        let wait = a
            .drill_wait
            .unwrap_or(cfg.alerting.group_wait + std::time::Duration::from_secs(30));
        let d = check::drill(&inputs, wait)
            .await
            .map_err(|e| failure(Code::Operational, format!("alert drill: {e}")))?;
        store.event(EventKind::AlertDrill, None, &d)?;
        Some(d)
    } else {
        None
    };
    let done = alerting::Done {
        ok: written.left_out.is_empty() && drill.as_ref().is_none_or(|d| d.delivered),
        written,
        convention_from: from,
        drill,
    };
    Ok(super::ctx::with_service(Outcome::of(&done), &service))
}
