//! What every command gets (the resolved config and the global flags), and the small
//! argument helpers the adapters share.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::cli::TargetArgs;
use crate::config::{Config, Overrides};
use crate::exit::{failure, Code};
use crate::output::Format;
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
        if t.base_url.is_none() {
            follow_engine(&mut self.config);
        }
        Ok(self)
    }

    /// What the rollout procedures need of it: the config, the state dir, the lock wait.
    pub fn rollout(&self) -> crate::rollout::rollback::Context<'_> {
        crate::rollout::rollback::Context {
            config: &self.config,
            state_dir: &self.state_dir,
            lock_wait: self.lock_wait,
        }
    }

    pub fn progress(&self) -> crate::output::Progress {
        crate::output::Progress::new(self.quiet || self.format == Format::Json)
    }
}

/// The probe's base URL follows a remote engine's host (see `Config::follow_engine_host`).
pub fn follow_engine(config: &mut Config) {
    if let Ok(ep) = crate::engine::endpoint::current() {
        if let Some(h) = ep.remote_host() {
            config.follow_engine_host(h);
        }
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
