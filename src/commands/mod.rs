//! One adapter per subcommand: arguments and config in, one call into the domain, a typed
//! outcome out (`Outcome::of`). The dispatcher below loads the config and picks the engine.

mod alerts;
mod build;
mod ctx;
mod deploy;
mod front;
mod gate;
mod generate;
mod kubernetes;
mod load;
mod monitor;
mod preflight;
mod push;
mod report;
mod rollback;
mod status;
mod synth;
mod validate;

use std::path::PathBuf;

use anyhow::Result;

pub use self::ctx::{image_or, Ctx};
use crate::cli::{Cli, Command};
use crate::config;
use crate::exit::{failure, Code};
use crate::output::Outcome;

pub async fn run(cli: Cli) -> Result<Outcome> {
    match &cli.command {
        Command::Completions { shell } => return Ok(generate::completions(*shell)),
        Command::Man => return generate::man(),
        _ => {}
    }
    // A --host, context or DOCKER_HOST that names no engine is bad input, said before any work.
    crate::engine::endpoint::choose(cli.host.as_deref(), cli.docker_context.as_deref())
        .map_err(|e| failure(Code::Usage, format!("{e:#}")))?;
    let explicit = cli.config.is_some();
    let path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from("config/staging.toml"));
    let (mut config, source) =
        config::load(&path, explicit).map_err(|e| failure(Code::Usage, format!("{e:#}")))?;
    if let Some(env_file) = &cli.env_file {
        config.env_file = env_file.clone();
    }
    tracing::info!(config = %source, "configuration loaded");
    ctx::follow_engine(&mut config);
    let ctx = Ctx {
        config,
        state_dir: cli.state_dir.clone(),
        format: cli.output,
        quiet: cli.quiet,
        lock_wait: cli.lock_wait,
    };
    match cli.command {
        Command::Build(a) => build::run(ctx, a).await,
        Command::Push(a) => push::run(ctx, a).await,
        Command::Deploy(a) => deploy::run(ctx, a).await,
        Command::Rollback(a) => rollback::run(ctx, a).await,
        Command::Status(a) => status::run(ctx, a).await,
        Command::Validate(a) => validate::run(ctx, a).await,
        Command::Preflight(a) => preflight::run(ctx.with_target(&a)?).await,
        Command::Monitor(a) => monitor::run(ctx, a).await,
        Command::Load(a) => load::run(ctx, a).await,
        Command::Report(a) => report::run(ctx, a).await,
        Command::Gate(a) => gate::run(ctx, a).await,
        Command::Alerts(a) => alerts::run(ctx, a).await,
        Command::Front(a) => front::run(ctx, a).await,
        Command::SynthWeek(a) => synth::run(ctx, a).await,
        Command::Completions { .. } | Command::Man => unreachable!("handled above"),
    }
}
