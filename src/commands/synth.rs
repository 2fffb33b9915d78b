//! `synth-week` (hidden): a realistic validation week written into the state store, for the
//! week page's tests and the benchmarks (see `crate::synth`).

use anyhow::Result;
use serde_json::json;

use super::Ctx;
use crate::cli::SynthWeekArgs;
use crate::exit::{failure, Code};
use crate::lock::StateLock;
use crate::output::Outcome;
use crate::synth;

pub async fn run(ctx: Ctx, a: SynthWeekArgs) -> Result<Outcome> {
    let _lock = StateLock::acquire(&ctx.state_dir, "synth-week", ctx.lock_wait)?;
    let mut store = ctx.store()?;
    if !store.deployments()?.is_empty() {
        return Err(failure(
            Code::Usage,
            format!(
                "the state store in {} already has deployments; synth-week writes only into an empty one",
                ctx.state_dir.display()
            ),
        ));
    }
    let opts = synth::Options {
        days: a.days,
        interval: a.interval,
        seed: a.seed,
        hostile: a.hostile,
        end: chrono::Utc::now(),
    };
    let started = std::time::Instant::now();
    let w = synth::write_week(&mut store, &ctx.config, &opts)
        .map_err(|e| failure(Code::Usage, format!("{e:#}")))?;
    let text = format!(
        "wrote {} days of {} samples every {} ({} deployments, {} events) for {} in {:.1}s",
        a.days,
        w.samples,
        humantime::format_duration(a.interval),
        w.deployments,
        w.events,
        w.candidate,
        started.elapsed().as_secs_f64()
    );
    Ok(Outcome::new(Code::Ok, json!(w), text))
}
