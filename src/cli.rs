//! The command tree. Every flag an operator or CI job uses is declared here; nothing else
//! parses arguments. Overrides an operator would expect also read `DHI_STAGE_*` variables.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::output::Format;
use crate::probe::reference::ImageRef;

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like 30s, 5m or 1h: {e}"))
}

#[derive(Debug, Parser)]
#[command(
    name = "dhi-stage",
    version,
    about = "Take the hardened authentication-service image through staging, the way the DHI staging runbook says",
    long_about = "Take the hardened authentication-service image through staging, the way the DHI staging runbook says:\n\
build, push, validate, deploy hardened, monitor for seven days against the runbook's thresholds, roll back \
when a trigger fires, and write the daily report and the promotion verdict.",
    after_help = crate::exit::summary(),
    propagate_version = true
)]
pub struct Cli {
    /// Configuration file [default: config/staging.toml, else the embedded copy]
    #[arg(long, global = true, env = "DHI_STAGE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Env file passed to the container with Docker's --env-file rules [default: from config, .env.stg]
    #[arg(long, global = true, env = "DHI_STAGE_ENV_FILE", value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// Where the state store (state.db) and lock live
    #[arg(
        long,
        global = true,
        env = "DHI_STAGE_STATE_DIR",
        default_value = ".dhi-stage",
        value_name = "DIR"
    )]
    pub state_dir: PathBuf,
    /// text for people, json for scripts (exactly one JSON document on stdout)
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub output: Format,
    /// More log detail on stderr (-v info, -vv debug, -vvv trace)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr; no progress
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Log line format on stderr
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// The Docker Engine, as docker -H: unix:///path or tcp://host:port [default: --context,
    /// DOCKER_HOST (TLS with DOCKER_TLS_VERIFY, DOCKER_CERT_PATH), the current docker context]
    #[arg(short = 'H', long, global = true, value_name = "HOST")]
    pub host: Option<String>,
    /// A docker context by name (`docker context ls`), as docker --context (named apart from
    /// `build --context DIR`, the build context) [default: DOCKER_CONTEXT, the current context]
    #[arg(long, global = true, value_name = "NAME", conflicts_with = "host")]
    pub docker_context: Option<String>,
    /// How long deploy/rollback wait for another holder of the state lock (0 = fail at once)
    #[arg(long, global = true, value_parser = duration, default_value = "0s", value_name = "DURATION")]
    pub lock_wait: Duration,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Step 1: build the image from a context directory (honours .dockerignore) and check its size
    Build(BuildArgs),
    /// Step 1: tag <registry>/authentication-service:staging-dhi-YYYYMMDD and push it
    Push(PushArgs),
    /// Step 2: security score N/12, image size, SBOM, provenance, CVEs with VEX
    Validate(ValidateArgs),
    /// Infrastructure requirements: engine, env file, port, Kong, Redis, OTel, registry
    Preflight(TargetArgs),
    /// Steps 3-4: replace the staging container with the hardened one, wait for health, verify
    Deploy(DeployArgs),
    /// Quick health check: health, metrics summary, resources, restarts, recent errors
    Status(StatusArgs),
    /// 7-day monitoring: sample health, metrics and stats; evaluate every rollback trigger
    Monitor(MonitorArgs),
    /// K6-equivalent smoke and load runs against the service
    Load(LoadArgs),
    /// Rollback procedure: restore the baseline container and time decision-to-healthy
    Rollback(RollbackArgs),
    /// Daily validation report (the runbook's template) for day N
    Report(ReportArgs),
    /// Production promotion verdict over the 7-day period
    Gate(GateArgs),
    /// The switch strategy's front proxy (HAProxy): up, status, down
    Front(FrontArgs),
    /// Alerting and dashboards: Prometheus rules for every rollback trigger, an Alertmanager
    /// route, a Grafana dashboard; --drill sends a test alert through Alertmanager
    Alerts(AlertsArgs),
    /// Write a realistic synthetic validation week into the state store (tests, benchmarks)
    #[command(hide = true)]
    SynthWeek(SynthWeekArgs),
    /// Print shell completions
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff)
    Man,
}

#[derive(Debug, Args)]
pub struct FrontArgs {
    #[command(subcommand)]
    pub action: FrontAction,
}

#[derive(Debug, Subcommand)]
pub enum FrontAction {
    /// Write the front's configuration under the state dir and start it unless it runs
    /// (HAProxy: master-worker, runtime socket; Kong: the upstream and its two targets)
    /// (`--port`: the public port it listens on [default: the service's, container.host_port])
    Up(TargetArgs),
    /// Which slot serves, each slot's image, state, health and connections (finishes or undoes
    /// an interrupted switch first, as deploy and rollback do)
    Status(TargetArgs),
    /// Stop the front (HAProxy)
    Down(TargetArgs),
}

#[derive(Debug, Args)]
pub struct AlertsArgs {
    /// Directory for dhi-stage.rules.yml, its promtool tests, alertmanager.yml, dashboard.json
    /// [default: <report.dir>/alerting]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The service's metric convention, when the config says auto [default: what the monitor
    /// last read, else the runbook's]
    #[arg(long, value_name = "NAME")]
    pub convention: Option<String>,
    /// Send a test alert through Alertmanager ([alerting] alertmanager_url) and wait until it
    /// notifies the receiver; recorded for the gate
    #[arg(long)]
    pub drill: bool,
    /// How long the drill waits for the notification [default: group_wait + 30s]
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    pub drill_wait: Option<Duration>,
    #[command(flatten)]
    pub target: TargetArgs,
}

/// Where the service runs: overrides of the config an operator expects to pass.
#[derive(Debug, Args, Clone, Default)]
pub struct TargetArgs {
    /// Container name [default: from config, auth-service-staging]
    #[arg(
        long,
        alias = "container",
        env = "DHI_STAGE_CONTAINER",
        value_name = "NAME"
    )]
    pub name: Option<String>,
    /// Host port published for the service's port [default: from config, 3002]
    #[arg(long, env = "DHI_STAGE_PORT", value_name = "PORT")]
    pub port: Option<u16>,
    /// Base URL for /health and /metrics [default: http://127.0.0.1:<port>]
    #[arg(long, env = "DHI_STAGE_BASE_URL", value_name = "URL")]
    pub base_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Build context directory [default: from config, .]
    #[arg(long, value_name = "DIR")]
    pub context: Option<PathBuf>,
    /// Dockerfile, relative to the context [default: from config, Dockerfile]
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Option<String>,
    /// Image reference to tag the result with [default: authentication-service:dhi-staging]
    #[arg(long, short = 't', env = "DHI_STAGE_IMAGE", value_name = "REF")]
    pub tag: Option<ImageRef>,
    /// Build-time variable, as docker build --build-arg KEY=VALUE (repeatable)
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// Size limit in MB (10^6 bytes, as `docker images` shows) [default: from config, 58]
    #[arg(long, value_name = "MB")]
    pub max_size: Option<f64>,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// Local image to push [default: authentication-service:dhi-staging]
    #[arg(long, env = "DHI_STAGE_IMAGE", value_name = "REF")]
    pub image: Option<ImageRef>,
    /// Registry host[:port] [default: from config]
    #[arg(long, env = "DHI_STAGE_REGISTRY", value_name = "HOST")]
    pub registry: Option<String>,
    /// Tag in the registry [default: staging-dhi-YYYYMMDD, today in UTC]
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,
    /// Registry user (the password is read from stdin with --password-stdin)
    #[arg(long, requires = "password_stdin", value_name = "USER")]
    pub username: Option<String>,
    /// Read the registry password from stdin
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
    /// Attach this SBOM (from `validate --sbom-out`) next to the image, as the sidecar tag <tag>.sbom
    #[arg(long, value_name = "FILE")]
    pub sbom: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Image to validate [default: the deployed image, else authentication-service:dhi-staging]
    #[arg(long, env = "DHI_STAGE_IMAGE", value_name = "REF")]
    pub image: Option<ImageRef>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Write the SBOM here
    #[arg(long, value_name = "FILE")]
    pub sbom_out: Option<PathBuf>,
    /// SBOM format
    #[arg(long, value_parser = ["cyclonedx", "spdx"], default_value = "cyclonedx")]
    pub sbom_format: String,
    /// OpenVEX documents to apply (repeatable)
    #[arg(long, value_name = "FILE")]
    pub vex: Vec<PathBuf>,
    /// Offline OSV database directory (OSV JSON files per ecosystem)
    #[arg(long, value_name = "DIR", conflicts_with = "scan_report")]
    pub osv_db: Option<PathBuf>,
    /// Trivy or Grype JSON report(s) to import instead of matching an OSV database
    #[arg(long, value_name = "FILE")]
    pub scan_report: Vec<PathBuf>,
    /// DSSE envelope with the base image's in-toto SLSA provenance
    #[arg(long, value_name = "FILE", requires = "key")]
    pub provenance: Option<PathBuf>,
    /// Pinned PEM public key (ECDSA P-256) that signed the provenance
    #[arg(long, value_name = "PEM", requires = "provenance")]
    pub key: Option<PathBuf>,
    /// Base image digest [default: the image's org.opencontainers.image.base.digest label]
    #[arg(long, value_name = "sha256:...")]
    pub base_digest: Option<String>,
    /// Size limit in MB (10^6 bytes) [default: from config, 58]
    #[arg(long, value_name = "MB")]
    pub max_size: Option<f64>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Where the service runs: the Docker Engine, or the cluster (the Deployment's rollout and
    /// every pod's readiness and restarts)
    #[arg(
        long = "target",
        value_enum,
        default_value = "docker",
        value_name = "PLATFORM"
    )]
    pub platform: Platform,
}

/// Where the service runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Platform {
    Docker,
    Kubernetes,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Image to deploy [default: <registry>/authentication-service:staging-dhi-<today>]
    #[arg(long, env = "DHI_STAGE_IMAGE", value_name = "REF")]
    pub image: Option<ImageRef>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// How long to wait for /health to report healthy [default: from config, 30s]
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    pub wait: Option<Duration>,
    /// Print the container spec and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: print the runbook's Kubernetes Deployment for the image instead
    #[arg(long, requires = "dry_run")]
    pub kubernetes: bool,
    /// Where to deploy: the Docker Engine, or the cluster of the current kubeconfig
    #[arg(
        long = "target",
        value_enum,
        default_value = "docker",
        value_name = "PLATFORM"
    )]
    pub platform: Platform,
    /// Leave a failed new container in place instead of restoring the previous one
    #[arg(long)]
    pub no_rollback: bool,
    /// Deploy even when the spec lacks the runbook's hardening (logged and recorded)
    #[arg(long)]
    pub allow_insecure: bool,
    /// recreate (the runbook's stop, remove, run) or switch (two slots behind the front, no
    /// request dropped) [default: [rollout] strategy]
    #[arg(long, value_enum, value_name = "STRATEGY")]
    pub strategy: Option<crate::config::Strategy>,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Image to restore instead of the recorded baseline (e.g. <registry>/authentication-service:baseline-distroless)
    #[arg(long, value_name = "REF")]
    pub to: Option<ImageRef>,
    /// Why: recorded with the rollback event
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Who approved (required when environment = "production")
    #[arg(long, value_name = "NAME")]
    pub approved_by: Option<String>,
    /// Roll back, then restore forward, and record it as a drill
    #[arg(long)]
    pub drill: bool,
    /// Where to roll back: the Docker Engine, or the cluster (`kubectl rollout undo`)
    #[arg(long = "target", value_enum, default_value = "docker", value_name = "PLATFORM", conflicts_with_all = ["drill", "to"])]
    pub platform: Platform,
    #[command(flatten)]
    pub target: TargetArgs,
    /// How long to wait for the restored container to be healthy [default: from config]
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    pub wait: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// Day of the 7-day period the samples belong to [default: from the deployment time]
    #[arg(long)]
    pub day: Option<u32>,
    /// Run for this long
    #[arg(long, value_parser = duration, conflicts_with = "once")]
    pub duration: Option<Duration>,
    /// Take one sample, evaluate, exit (for cron)
    #[arg(long)]
    pub once: bool,
    /// Time between samples [default: from config, 30s]
    #[arg(long, value_parser = duration)]
    pub interval: Option<Duration>,
    /// Run the rollback when a trigger fires
    #[arg(long)]
    pub auto_rollback: bool,
    /// staging (fixed interval) or production (the runbook's first-24-hours cadence)
    #[arg(long, value_name = "PROFILE", value_parser = ["staging", "production"])]
    pub profile: Option<String>,
    /// Where error rate and latency are read: the service's /metrics, or Prometheus through
    /// PromQL [default: from config, scrape; --prometheus-url implies prometheus]
    #[arg(long, value_enum, value_name = "SOURCE")]
    pub metrics_source: Option<crate::config::MetricsSource>,
    /// The Prometheus server [default: from config, [monitoring.prometheus] url]
    #[arg(long, value_name = "URL")]
    pub prometheus_url: Option<String>,
    /// Serve the monitor's verdicts, blindness, CVE count and last sample time as Prometheus
    /// metrics on ADDR (GET /metrics), for the alerts `dhi-stage alerts` writes
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// Write the same metrics to FILE after every tick (node-exporter's textfile collector:
    /// for cron `--once` runs)
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    /// Where the service runs: with kubernetes, restarts and readiness come from every pod of
    /// the Deployment (the cluster of the current kubeconfig) instead of one container
    #[arg(
        long = "target",
        value_enum,
        default_value = "docker",
        value_name = "PLATFORM"
    )]
    pub platform: Platform,
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// smoke (2 VUs, 60 s, /health) or load (ramp to 10 VUs, steady 5 min, auth routes)
    #[arg(long, value_parser = ["smoke", "load"], default_value = "smoke")]
    pub profile: String,
    /// Virtual users [default: K6_SMOKE_VUS / K6_LOAD_TARGET_VUS, else config]
    #[arg(long)]
    pub vus: Option<u32>,
    /// Steady duration [default: K6_SMOKE_DURATION / K6_LOAD_STEADY_DURATION, else config]
    #[arg(long, value_parser = duration)]
    pub duration: Option<Duration>,
    /// Ramp-up before the steady part [default: from config: 0s smoke, 30s load]
    #[arg(long, value_parser = duration)]
    pub ramp: Option<Duration>,
    /// Open model: this many requests per second, latency measured from the schedule
    #[arg(long, value_name = "REQ_PER_S")]
    pub rate: Option<f64>,
    /// Write the result as a k6 --summary-export style JSON file
    #[arg(long, value_name = "FILE")]
    pub summary_export: Option<PathBuf>,
    /// Import a k6 --summary-export JSON file instead of running
    #[arg(long = "import", value_name = "FILE", conflicts_with_all = ["vus", "duration", "rate"])]
    pub import: Option<PathBuf>,
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Day of the 7-day period [default: the latest day with samples]
    #[arg(long)]
    pub day: Option<u32>,
    /// Where to write day-N.md and its charts [default: from config, reports/]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// JUnit XML of the day's E2E run (recorded for the day)
    #[arg(long, value_name = "FILE")]
    pub e2e_junit: Option<PathBuf>,
    /// A k6 --summary-export file of the day's run: FILE (load) or smoke=FILE / load=FILE
    #[arg(long, value_name = "[PROFILE=]FILE")]
    pub k6_summary: Vec<String>,
    /// markdown (day-N.md + SVG charts), json (day-N.json), html (one self-contained page)
    #[arg(long, value_parser = ["markdown", "json", "html"], default_value = "markdown")]
    pub format: String,
    /// The report's "Signed:" line [default: from config]
    #[arg(long, value_name = "NAME")]
    pub signed_by: Option<String>,
    /// Only the week at a glance: <out>/index.html (every report run rewrites it too)
    #[arg(long, conflicts_with_all = ["day", "e2e_junit", "k6_summary", "format"])]
    pub week: bool,
    /// Attestations shown with the promotion criteria [default: config/attestations.toml]
    #[arg(long, value_name = "FILE")]
    pub attestations: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SynthWeekArgs {
    /// Days to write, ending now
    #[arg(long, default_value_t = 7)]
    pub days: u32,
    /// Sampling interval of the synthetic monitor
    #[arg(long, value_parser = duration, default_value = "30s", value_name = "DURATION")]
    pub interval: std::time::Duration,
    /// Seed of the generator (the same seed writes the same week)
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Put markup and script into health details and the rollback reason
    #[arg(long)]
    pub hostile: bool,
}

#[derive(Debug, Args)]
pub struct GateArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Evaluate days 1 through this day
    #[arg(long, default_value_t = 7)]
    pub through_day: u32,
    /// Attestations of the items only a person can confirm [default: config/attestations.toml]
    #[arg(long, value_name = "FILE")]
    pub attestations: Option<PathBuf>,
}
