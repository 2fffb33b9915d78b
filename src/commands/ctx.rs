//! What every command gets (the resolved config and the global flags), and the small
//! argument helpers the adapters share.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::cli::TargetArgs;
use crate::config::{Config, Overrides};
use crate::exit::{failure, Code};
use crate::output::{Format, Outcome};
use crate::probe::reference::ImageRef;
use crate::service::{Named, Service};

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
        self.apply(
            t.name.clone(),
            t.port,
            t.base_url.clone(),
            t.base_url.is_some(),
        )?;
        Ok(self)
    }

    /// The target overrides on the config (checked: a bad one is a usage error); a URL not
    /// named by the operator follows a remote engine's host.
    fn apply(
        &mut self,
        container: Option<String>,
        port: Option<u16>,
        base_url: Option<String>,
        url_named: bool,
    ) -> Result<()> {
        let o = Overrides {
            container,
            port,
            base_url,
            ..Default::default()
        };
        self.config
            .apply(&o)
            .map_err(|e| failure(Code::Usage, e.to_string()))?;
        if !url_named {
            follow_engine(&mut self.config);
        }
        Ok(())
    }

    /// Acts on what was deployed: the state's active deployment (of the named container, or
    /// the latest) fills in what `t` leaves unnamed; the configuration when nothing is
    /// recorded. Says which service on stderr (unless -q); `with_service` puts it in JSON.
    pub fn acting_on(mut self, t: &TargetArgs) -> Result<(Ctx, Service)> {
        let named = Named {
            name: t.name.clone(),
            port: t.port,
            base_url: t.base_url.clone(),
        };
        let recorded = self.recorded(named.name.as_deref())?;
        let service = crate::service::resolve(&self.config, &named, recorded.as_ref());
        self.apply(
            Some(service.name.clone()),
            Some(service.port),
            Some(service.base_url.clone()),
            named.base_url.is_some(),
        )?;
        if !self.quiet {
            eprintln!("{}", service.line());
        }
        Ok((self, service))
    }

    /// The active deployment of `name`, or the latest active one; none without a state store
    /// (reading must not create one).
    fn recorded(&self, name: Option<&str>) -> Result<Option<crate::store::Deployment>> {
        if !self.state_dir.join("state.db").exists() {
            return Ok(None);
        }
        let store = self.store()?;
        match name {
            Some(n) => store.active_deployment(n),
            None => store.latest_active_deployment(),
        }
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

/// The outcome with the service it acted on, as `service` in the JSON document.
pub fn with_service(mut outcome: Outcome, service: &Service) -> Outcome {
    if let (Some(map), Ok(v)) = (outcome.json.as_object_mut(), serde_json::to_value(service)) {
        map.insert("service".into(), v);
    }
    outcome
}
