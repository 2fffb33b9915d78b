//! `monitor`: the runbook's 7-day monitoring period (`crate::watch`). Each tick is stored
//! before anything is judged; a live line per tick goes to stderr on a terminal run.

use anyhow::Result;

use super::Ctx;
use crate::cli::MonitorArgs;
use crate::output::{Format, Outcome};
use crate::watch::{self, Request};

pub async fn run(ctx: Ctx, a: MonitorArgs) -> Result<Outcome> {
    let request = Request {
        explicit_url: a.target.base_url.is_some(),
        explicit_name: a.target.name.is_some(),
        day: a.day,
        interval: a.interval,
        production: matches!(a.profile.as_deref(), Some("production")),
        once: a.once,
        duration: a.duration,
        auto_rollback: a.auto_rollback,
        metrics_source: a.metrics_source,
        prometheus_url: a.prometheus_url,
        kubernetes: a.platform == crate::cli::Platform::Kubernetes,
        listen: a.listen,
        metrics_file: a.metrics_file.clone(),
    };
    // On Kubernetes the Deployment is named by [kubernetes]; on an engine, what was deployed.
    let (ctx, service) = if request.kubernetes {
        (ctx.with_target(&a.target)?, None)
    } else {
        let (ctx, service) = ctx.acting_on(&a.target)?;
        (ctx, Some(service))
    };
    let live = !ctx.quiet && ctx.format == Format::Text;
    let context = ctx.rollout();
    let watched = watch::watch(&context, &request, &|t| {
        if live {
            eprintln!("{}", crate::redact::scrub(&watch::tick_line(t)));
        }
    })
    .await?;
    let outcome = Outcome::of(&watched);
    Ok(match &service {
        Some(s) => super::ctx::with_service(outcome, s),
        None => outcome,
    })
}
