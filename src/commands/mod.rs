//! One adapter per subcommand: arguments and config in, a typed outcome out. The work lives
//! in `engine`, `probe`, `store` and friends; nothing here talks to Docker directly except
//! through `Engine`.

mod build;
mod deploy;
mod gate;
mod generate;
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
use std::time::Duration;

use anyhow::Result;

use crate::cli::{Cli, Command, TargetArgs};
use crate::config::{self, Config, Overrides};
use crate::exit::{failure, Code};
use crate::output::{Format, Outcome};
use crate::probe::reference::ImageRef;

/// What every command gets: the resolved config and the global flags.
#[derive(Clone)]
pub struct Ctx {
    pub config: Config,
    pub state_dir: PathBuf,
    pub format: Format,
    pub quiet: bool,
    pub lock_wait: Duration,
}

impl Ctx {
    pub fn store(&self) -> Result<crate::store::Store> {
        crate::store::Store::open(&self.state_dir)
    }

    /// Applies per-command target overrides (container name, port, base URL).
    pub fn with_target(mut self, t: &TargetArgs) -> Result<Ctx> {
        let o = Overrides {
            container: t.name.clone(),
            port: t.port,
            base_url: t.base_url.clone(),
            ..Default::default()
        };
        self.config
            .apply(&o)
            .map_err(|e| failure(Code::Usage, e.to_string()))?;
        Ok(self)
    }

    pub fn progress(&self) -> crate::output::Progress {
        crate::output::Progress::new(self.quiet || self.format == Format::Json)
    }
}

pub async fn run(cli: Cli) -> Result<Outcome> {
    match &cli.command {
        Command::Completions { shell } => return Ok(generate::completions(*shell)),
        Command::Man => return generate::man(),
        _ => {}
    }
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
        Command::Status(a) => status::run(ctx.with_target(&a)?).await,
        Command::Validate(a) => validate::run(ctx, a).await,
        Command::Preflight(a) => preflight::run(ctx.with_target(&a)?).await,
        Command::Monitor(a) => monitor::run(ctx, a).await,
        Command::Load(a) => load::run(ctx, a).await,
        Command::Report(a) => report::run(ctx, a).await,
        Command::Gate(a) => gate::run(ctx, a).await,
        Command::SynthWeek(a) => synth::run(ctx, a).await,
        Command::Completions { .. } | Command::Man => unreachable!("handled above"),
    }
}

/// The image named on the command line (clap has checked it), else the configured default,
/// checked here: a bad `[image]` value in the config is a usage error too.
pub fn image_or(arg: Option<ImageRef>, default: impl FnOnce() -> String) -> Result<ImageRef> {
    match arg {
        Some(image) => Ok(image),
        None => ImageRef::parse(&default()).map_err(|e| failure(Code::Usage, e)),
    }
}
