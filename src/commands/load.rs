//! `load`: the runbook's k6 smoke and load profiles (`load::profile`), with a live bar on a
//! terminal.

use std::io::IsTerminal;

use anyhow::Result;

use super::Ctx;
use crate::cli::LoadArgs;
use crate::load::profile::{self, Request};
use crate::output::{Format, Outcome};

pub async fn run(ctx: Ctx, a: LoadArgs) -> Result<Outcome> {
    let ctx = ctx.with_target(&a.target)?;
    let request = Request {
        profile: a.profile,
        vus: a.vus,
        duration: a.duration,
        ramp: a.ramp,
        rate: a.rate,
        summary_export: a.summary_export,
        import: a.import,
    };
    let bar =
        (!ctx.quiet && ctx.format == Format::Text && std::io::stderr().is_terminal()).then(|| {
            let b = indicatif::ProgressBar::new(1);
            b.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len}s {msg}")
                    .expect("valid template"),
            );
            b
        });
    let report = profile::test(&ctx.config, &ctx.store()?, &request, |live| {
        if let Some(b) = &bar {
            b.set_length(live.total.as_secs().max(1));
            b.set_position(live.elapsed.as_secs());
            b.set_message(format!(
                "{} requests  {:.0} req/s  p99 {:.1}ms  failures {}",
                live.requests, live.rps, live.p99_ms, live.failures
            ));
        }
    })
    .await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(Outcome::of(&report?))
}
