//! The runbook's numbers as typed configuration.
//!
//! `config/staging.toml` is parsed strictly (unknown keys are errors) and every error names
//! the file, line and dotted key, because an operator fixing a typo at 3 a.m. needs exactly
//! that. Operator overrides (flags, `DHI_STAGE_*` variables) are applied on top by `apply`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The embedded default, so the tool runs on a fresh checkout without any file.
pub const DEFAULT_TOML: &str = include_str!("../config/staging.toml");

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub environment: Environment,
    pub env_file: PathBuf,
    pub image: ImageConfig,
    pub container: ContainerConfig,
    pub verify: VerifyConfig,
    pub kubernetes: KubernetesConfig,
    pub monitoring: MonitoringConfig,
    pub rollback: RollbackConfig,
    pub security: SecurityConfig,
    pub preflight: PreflightConfig,
    pub report: ReportConfig,
    pub notify: NotifyConfig,
    pub load: LoadConfig,
    pub promotion: PromotionConfig,
    #[serde(default)]
    pub alerting: AlertingConfig,
    #[serde(default)]
    pub rollout: RolloutConfig,
}

/// `[rollout]`: how a deploy or rollback replaces what serves.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutConfig {
    pub strategy: Strategy,
    pub switch: SwitchConfig,
}

/// `recreate`: the runbook's stop, remove, run (the port is free for a moment);
/// `switch`: two slots behind a front proxy, switched with no request dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    #[default]
    Recreate,
    Switch,
}

/// `[rollout.switch]`: the front, the two slots' host ports, how long the previous slot stays
/// warm and how long in-flight requests on it may finish.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SwitchConfig {
    /// `haproxy` (owned by the tool: `dhi-stage front up`) or `kong` (its Admin API).
    pub front: FrontKind,
    pub slots: [u16; 2],
    #[serde(with = "humantime_serde")]
    pub keep_previous: Duration,
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Kong: the Admin API, the upstream whose targets are the slots, the host Kong reaches
    /// the slots on, and how long a change takes to reach its workers (Kong documents ~5 s).
    pub kong_admin_url: String,
    pub kong_upstream: String,
    pub kong_target_host: String,
    #[serde(with = "humantime_serde")]
    pub kong_propagation: Duration,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FrontKind {
    #[default]
    Haproxy,
    Kong,
}

impl Default for SwitchConfig {
    fn default() -> Self {
        SwitchConfig {
            front: FrontKind::Haproxy,
            slots: [3101, 3102],
            keep_previous: Duration::from_secs(1800),
            drain_timeout: Duration::from_secs(30),
            kong_admin_url: "http://127.0.0.1:8001".into(),
            kong_upstream: "authentication-service".into(),
            kong_target_host: "127.0.0.1".into(),
            kong_propagation: Duration::from_secs(5),
        }
    }
}

/// `[alerting]`: what `dhi-stage alerts` writes for Prometheus, Alertmanager and Grafana, and
/// where the gate measures that alerting works. In a template `$selector` is the service's
/// selector (`[monitoring.prometheus] selector`) and `$monitor` this one's `monitor_selector`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertingConfig {
    /// The rollback procedure, linked from every alert as `runbook_url`.
    pub runbook_url: String,
    /// Health check success rate (%) as Prometheus sees it.
    pub health_success_pct: String,
    /// The series `monitor --listen` (or `--metrics-file`) exposes, as Prometheus labels them;
    /// empty: no alert reads them (CVEs, blindness, a dead monitor; memory and restarts
    /// unless `[monitoring.prometheus.queries]` names their series).
    pub monitor_selector: String,
    /// How often Prometheus evaluates the rules.
    #[serde(with = "humantime_serde")]
    pub evaluation_interval: Duration,
    /// Alertmanager's routing: how long it waits to group, and how often it repeats.
    #[serde(with = "humantime_serde")]
    pub group_wait: Duration,
    #[serde(with = "humantime_serde")]
    pub group_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub repeat_interval: Duration,
    /// A generic webhook receiver (Alertmanager's own JSON), beside the Slack-compatible
    /// `[notify] webhook_url`.
    pub webhook_url: String,
    /// Alertmanager, for the gate's measurement and `alerts --drill` (empty: not measured).
    pub alertmanager_url: String,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        AlertingConfig {
            runbook_url:
                "https://github.com/docker-hardened-images/dhi-staging-guide#rollback-procedure"
                    .into(),
            health_success_pct: "100 * avg(up{$selector})".into(),
            monitor_selector: r#"job="dhi-stage-monitor""#.into(),
            evaluation_interval: Duration::from_secs(60),
            group_wait: Duration::from_secs(30),
            group_interval: Duration::from_secs(300),
            repeat_interval: Duration::from_secs(4 * 3600),
            webhook_url: String::new(),
            alertmanager_url: String::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Staging,
    Production,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    pub name: String,
    pub build_tag: String,
    pub production_tag: String,
    pub staging_tag_format: String,
    pub baseline_tag: String,
    pub max_size_mb: f64,
    pub registry: String,
    pub context: PathBuf,
    pub dockerfile: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerConfig {
    pub name: String,
    pub host_port: u16,
    pub container_port: u16,
    pub host_ip: String,
    pub user: String,
    pub read_only: bool,
    pub cap_drop: Vec<String>,
    pub cap_add: Vec<String>,
    pub security_opt: Vec<String>,
    pub restart: String,
    pub memory_request: ByteSize,
    pub memory_limit: ByteSize,
    pub cpu_request: Cpu,
    pub cpu_limit: Cpu,
    pub pids_limit: i64,
    #[serde(with = "humantime_serde")]
    pub stop_grace: Duration,
    pub tmpfs: Vec<TmpfsMount>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TmpfsMount {
    pub path: String,
    pub options: Vec<String>,
    pub size: String,
}

impl TmpfsMount {
    /// The option string `docker run --tmpfs PATH:OPTS` takes, e.g. `noexec,nosuid,size=100m`.
    pub fn docker_options(&self) -> String {
        let mut opts = self.options.clone();
        opts.push(format!("size={}", self.size));
        opts.join(",")
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    #[serde(with = "humantime_serde")]
    pub startup_wait: Duration,
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    pub health_path: String,
    pub metrics_path: String,
    pub base_url: String,
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
    pub required_dependencies: Vec<String>,
    pub version_command: Vec<String>,
    pub expected_version: String,
    pub expected_user: String,
    #[serde(with = "humantime_serde")]
    pub liveness_initial_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub liveness_period: Duration,
    #[serde(with = "humantime_serde")]
    pub readiness_initial_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub readiness_period: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    pub namespace: String,
    pub deployment: String,
    pub replicas: u32,
    pub app_label: String,
    pub version_label: String,
    pub config_map: String,
    pub secret: String,
    pub env: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MonitoringConfig {
    pub period_days: u32,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Read by nothing: memory is sampled every tick (the runbook's `docker stats` loop every
    /// 300 s is the floor, not the cadence). Still accepted, with a warning, so an older
    /// config keeps loading.
    #[serde(default, with = "humantime_serde")]
    pub memory_sample_interval: Option<Duration>,
    pub targets: Targets,
    pub rollback_triggers: Vec<TriggerRule>,
    pub immediate_triggers: Vec<TriggerRule>,
    pub production_cadence: Vec<CadenceStep>,
    /// A rule without a verdict for longer than its window plus this (at least two
    /// intervals) is *blind*: `monitor` exits 6 and notifies, so cron and CI can alert.
    #[serde(with = "humantime_serde", default = "default_blind_margin")]
    pub blind_margin: Duration,
    /// Where the scrape-based rules read from: the service's own /metrics (`scrape`), or a
    /// Prometheus server through PromQL (`prometheus`), which judges a fleet as one service.
    #[serde(default)]
    pub metrics_source: MetricsSource,
    #[serde(default)]
    pub prometheus: PrometheusConfig,
    /// How the service's /metrics is read: its convention and the monitor's own requests.
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// `[monitoring.metrics]`: which library's conventions the service's metrics follow
/// (`probe::conventions`), and whether the monitor's own requests are left out.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `auto` (the first usable scrape decides), a preset's name, or `custom`.
    pub convention: String,
    /// Leave the monitor's own requests (health and metrics paths, `probe_paths`) out of the
    /// error rate and the quantiles wherever the convention has a route label.
    pub exclude_probes: bool,
    /// Other paths the monitor's probes use (e.g. a load balancer's health path).
    pub probe_paths: Vec<String>,
    /// The service's own names, for `convention = "custom"`.
    pub custom: Option<CustomConvention>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            convention: "auto".into(),
            exclude_probes: true,
            probe_paths: Vec::new(),
            custom: None,
        }
    }
}

/// `[monitoring.metrics.custom]`: a convention no preset fits, in the presets' terms.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CustomConvention {
    /// The request counter as exposed; omit it when requests are the histogram's `_count`.
    #[serde(default)]
    pub counter: Option<String>,
    pub status_label: String,
    /// How a 5xx is spelled: `code` (500, 503), `grouped` ("5xx") or `outcome` (SERVER_ERROR).
    #[serde(default = "default_server_error")]
    pub server_error: String,
    /// The latency histogram's base name (without `_bucket`).
    pub latency: String,
    /// `s` or `ms`.
    #[serde(default = "default_unit")]
    pub unit: String,
    #[serde(default)]
    pub route_label: Option<String>,
}

fn default_server_error() -> String {
    "code".into()
}

fn default_unit() -> String {
    "s".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum MetricsSource {
    #[default]
    Scrape,
    Prometheus,
}

/// `[monitoring.prometheus]`: the server, its credentials (named by environment variable,
/// never written in the file), and one PromQL template per metric. In a template `$selector`
/// is replaced by `selector` and `$rate` by the rate window.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusConfig {
    pub url: String,
    pub selector: String,
    #[serde(with = "humantime_serde")]
    pub rate_window: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Environment variable holding a bearer token.
    pub bearer_token_env: String,
    pub username: String,
    /// Environment variable holding the basic-auth password.
    pub password_env: String,
    pub queries: PromQueries,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PromQueries {
    pub error_rate_pct: String,
    pub p95_latency_ms: String,
    pub p99_latency_ms: String,
    /// Empty: memory comes from the engine, as with the direct scrape.
    pub memory_mib: String,
    /// Empty: restarts come from the engine.
    pub restarts: String,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig {
            url: String::new(),
            selector: r#"job="authentication-service""#.into(),
            rate_window: Duration::from_secs(60),
            timeout: Duration::from_secs(5),
            bearer_token_env: String::new(),
            username: String::new(),
            password_env: String::new(),
            queries: PromQueries::default(),
        }
    }
}

impl Default for PromQueries {
    /// Error rate and latency empty: written from the service's metric convention
    /// (`[monitoring.metrics]`, the same one the direct scrape reads), so both sources judge
    /// the same series; a template set here is used as written.
    fn default() -> Self {
        PromQueries {
            error_rate_pct: String::new(),
            p95_latency_ms: String::new(),
            p99_latency_ms: String::new(),
            memory_mib: String::new(),
            restarts: String::new(),
        }
    }
}

fn default_blind_margin() -> Duration {
    Duration::from_secs(120)
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Targets {
    pub health_check_success_rate_pct: f64,
    pub error_rate_pct: f64,
    #[serde(with = "humantime_serde")]
    pub p95_latency: Duration,
    #[serde(with = "humantime_serde")]
    pub p99_latency: Duration,
    /// MiB, as `docker stats` shows memory (the older key `memory_min_mb` is read too).
    #[serde(alias = "memory_min_mb")]
    pub memory_min_mib: f64,
    #[serde(alias = "memory_max_mb")]
    pub memory_max_mib: f64,
}

/// One rollback trigger: `metric op threshold`, held on every sample for `sustained_for`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TriggerRule {
    pub name: String,
    pub metric: Metric,
    pub op: Comparison,
    pub threshold: f64,
    #[serde(with = "humantime_serde")]
    pub sustained_for: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    HealthCheckSuccessRatePct,
    HealthCheckFailureRatePct,
    ErrorRatePct,
    P95LatencyMs,
    P99LatencyMs,
    /// Memory in MiB as `docker stats` shows it (`memory_mb` in older configs).
    #[serde(alias = "memory_mb")]
    MemoryMib,
    MemoryGrowth,
    RestartsInWindow,
    CriticalCves,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Comparison {
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = ">")]
    Gt,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CadenceStep {
    #[serde(with = "humantime_serde")]
    pub until: Duration,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackConfig {
    #[serde(with = "humantime_serde")]
    pub docker_target: Duration,
    #[serde(with = "humantime_serde")]
    pub stop_grace: Duration,
    #[serde(with = "humantime_serde")]
    pub kubernetes_target: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    pub required_score: u32,
    pub expected_uid: u32,
    pub allowed_builders: Vec<String>,
    pub fail_on: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PreflightConfig {
    pub required_env: Vec<String>,
    pub kong_url_var: String,
    pub redis_url_var: String,
    pub otel_endpoint_var: String,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    pub dir: PathBuf,
    pub signed_by: String,
    /// Copy the replaced container's last log lines (redacted: tokens, `password=`-style
    /// pairs, every env-file value) into incident reports, webhooks and GitHub issues.
    #[serde(default = "default_true")]
    pub incident_log_excerpt: bool,
    /// How long after a restore the incident report's "after" column reaches: the monitor
    /// keeps sampling the restored service this long, then the report is written again.
    #[serde(default = "default_incident_after", with = "humantime_serde")]
    pub incident_after: Duration,
    /// `monitor` rewrites the week page (`<dir>/index.html`) after each run or tick.
    #[serde(default)]
    pub week_page_from_monitor: bool,
}

fn default_incident_after() -> Duration {
    Duration::from_secs(300)
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    pub webhook_url: Option<String>,
    pub github_repo: Option<String>,
    pub github_token_env: String,
    pub github_api: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoadConfig {
    pub smoke: LoadProfile,
    pub load: LoadProfile,
    pub thresholds: LoadThresholds,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoadProfile {
    pub vus: u32,
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    #[serde(with = "humantime_serde")]
    pub ramp: Duration,
    pub routes: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoadThresholds {
    #[serde(with = "humantime_serde")]
    pub p95_latency: Duration,
    #[serde(with = "humantime_serde")]
    pub p99_latency: Duration,
    pub http_failure_rate_pct: f64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PromotionConfig {
    pub days: u32,
    pub health_check_success_rate_pct: f64,
    pub error_rate_pct: f64,
    #[serde(with = "humantime_serde")]
    pub p95_latency: Duration,
    #[serde(with = "humantime_serde")]
    pub p99_latency: Duration,
    /// MiB, as `docker stats` shows memory (the older key `memory_min_mb` is read too).
    #[serde(alias = "memory_min_mb")]
    pub memory_min_mib: f64,
    #[serde(alias = "memory_max_mb")]
    pub memory_max_mib: f64,
    pub max_restarts: u32,
    pub max_rollbacks: u32,
    pub max_high_critical_cves: u32,
    pub security_score: u32,
    pub e2e_expected: u32,
}

/// A memory size in Kubernetes (`64Mi`, `1Gi`) or Docker (`100m`, `1g`) notation; both
/// binary. Plain numbers are bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct ByteSize {
    pub bytes: u64,
}

impl From<ByteSize> for String {
    fn from(b: ByteSize) -> String {
        format!("{}", b.bytes)
    }
}

impl ByteSize {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let num: f64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a size like \"64Mi\" or \"100m\""))?;
        let mult: u64 = match unit {
            "" | "b" | "B" => 1,
            "k" | "K" | "Ki" | "kb" | "KB" => 1 << 10,
            "m" | "M" | "Mi" | "mb" | "MB" => 1 << 20,
            "g" | "G" | "Gi" | "gb" | "GB" => 1 << 30,
            other => {
                return Err(format!(
                    "unknown size unit {other:?} in {s:?} (use Ki, Mi, Gi or k, m, g)"
                ))
            }
        };
        Ok(ByteSize {
            bytes: (num * mult as f64) as u64,
        })
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ByteSize::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// CPU in Kubernetes notation: `500m` = half a core, `2` = two cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct Cpu {
    pub millicores: u64,
}

impl From<Cpu> for String {
    fn from(c: Cpu) -> String {
        format!("{}m", c.millicores)
    }
}

impl Cpu {
    pub fn nano_cpus(self) -> i64 {
        self.millicores as i64 * 1_000_000
    }
}

impl<'de> Deserialize<'de> for Cpu {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let parsed = match s.strip_suffix('m') {
            Some(m) => m.parse::<u64>().ok(),
            None => s.parse::<f64>().ok().map(|c| (c * 1000.0) as u64),
        };
        // At most 1024 cores: beyond that the engine's nano-CPU count overflows.
        match parsed {
            Some(millicores) if millicores > 0 && millicores <= 1_024_000 => Ok(Cpu { millicores }),
            _ => Err(serde::de::Error::custom(format!(
                "{s:?} is not a CPU amount like \"500m\" or \"1\""
            ))),
        }
    }
}

/// Where the configuration came from, for messages.
#[derive(Debug, Clone)]
pub enum Source {
    File(PathBuf),
    Embedded,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Embedded => write!(f, "<embedded config/staging.toml>"),
        }
    }
}

/// Loads the config at `path`. The default path falls back to the embedded copy when the
/// file does not exist, so `dhi-stage` works from any directory; an explicit path must exist.
pub fn load(path: &Path, explicit: bool) -> Result<(Config, Source)> {
    let (text, source) = match std::fs::read_to_string(path) {
        Ok(t) => (t, Source::File(path.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            (DEFAULT_TOML.to_string(), Source::Embedded)
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read config file {}", path.display()))
        }
    };
    let config = parse(&text, &source.to_string())?;
    Ok((config, source))
}

/// Parses and validates config text; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<Config> {
    let config: Config = toml::from_str(text).map_err(|e| {
        let (line, col, key) = match e.span() {
            Some(span) => locate(text, span.start),
            None => (0, 0, String::new()),
        };
        let key = if key.is_empty() {
            String::new()
        } else {
            format!(" key `{key}`:")
        };
        anyhow::anyhow!("{origin}:{line}:{col}:{key} {}", e.message().trim())
    })?;
    validate(&config).map_err(|(key, msg)| {
        let line = find_key_line(text, &key);
        anyhow::anyhow!("{origin}:{line}: key `{key}`: {msg}")
    })?;
    Ok(config)
}

/// Checks that serde cannot express; returns the dotted key at fault.
fn validate(c: &Config) -> Result<(), (String, String)> {
    let err = |k: &str, m: String| Err((k.to_string(), m));
    if c.image.max_size_mb <= 0.0 {
        return err("image.max_size_mb", "must be greater than 0".into());
    }
    if c.container.name.is_empty() {
        return err("container.name", "must not be empty".into());
    }
    if c.container.host_port == 0 {
        return err(
            "container.host_port",
            "must be a port from 1 to 65535".into(),
        );
    }
    if crate::security::hardening::User::parse(&c.container.user).is_err() {
        return err(
            "container.user",
            format!("{:?} must be numeric UID:GID", c.container.user),
        );
    }
    if c.container.memory_limit.bytes < c.container.memory_request.bytes {
        return err(
            "container.memory_limit",
            "must not be below memory_request".into(),
        );
    }
    for t in &c.container.tmpfs {
        if !t.path.starts_with('/') {
            return err(
                "container.tmpfs.path",
                format!("{:?} must be absolute", t.path),
            );
        }
        ByteSize::parse(&t.size).map_err(|m| ("container.tmpfs.size".to_string(), m))?;
    }
    if !c.verify.base_url.starts_with("http://") && !c.verify.base_url.starts_with("https://") {
        return err(
            "verify.base_url",
            format!(
                "{:?} must start with http:// or https://",
                c.verify.base_url
            ),
        );
    }
    if c.verify.version_command.is_empty() {
        return err("verify.version_command", "must name a command".into());
    }
    if c.monitoring.interval.is_zero() {
        return err("monitoring.interval", "must be greater than 0".into());
    }
    // Bounds that keep every clock sum finite (a year of seconds overflows an Instant's
    // arithmetic long before humantime refuses it).
    let day = Duration::from_secs(86_400);
    if c.monitoring.interval > day {
        return err("monitoring.interval", "must be at most 1 day".into());
    }
    for (list, rules) in [
        (
            "monitoring.rollback_triggers",
            &c.monitoring.rollback_triggers,
        ),
        (
            "monitoring.immediate_triggers",
            &c.monitoring.immediate_triggers,
        ),
    ] {
        for r in rules {
            if r.sustained_for > day * 30 {
                return err(
                    &format!("{list}.sustained_for"),
                    format!(
                        "{} is longer than 30 days (trigger {})",
                        humantime::format_duration(r.sustained_for),
                        r.name
                    ),
                );
            }
            if !r.threshold.is_finite() {
                return err(
                    &format!("{list}.threshold"),
                    format!("trigger {} needs a finite number", r.name),
                );
            }
        }
    }
    if c.monitoring.blind_margin > day * 30 {
        return err("monitoring.blind_margin", "must be at most 30 days".into());
    }
    for s in &c.monitoring.production_cadence {
        if s.interval.is_zero() || s.interval > day || s.until > day * 366 {
            return err(
                "monitoring.production_cadence",
                "intervals must be from 1 ms to 1 day, `until` at most a year".into(),
            );
        }
    }
    for (key, d) in [
        ("verify.startup_wait", c.verify.startup_wait),
        ("verify.poll_interval", c.verify.poll_interval),
        ("verify.probe_timeout", c.verify.probe_timeout),
        ("container.stop_grace", c.container.stop_grace),
        ("rollback.stop_grace", c.rollback.stop_grace),
        ("preflight.timeout", c.preflight.timeout),
    ] {
        if d > day {
            return err(key, "must be at most 1 day".into());
        }
    }
    // The staging tag is a strftime pattern: one the formatter rejects would panic when
    // formatted, and the result must be a valid Docker tag.
    let items: Vec<chrono::format::Item> =
        chrono::format::StrftimeItems::new(&c.image.staging_tag_format).collect();
    if items
        .iter()
        .any(|i| matches!(i, chrono::format::Item::Error))
    {
        return err(
            "image.staging_tag_format",
            format!(
                "{:?} is not a valid strftime pattern",
                c.image.staging_tag_format
            ),
        );
    }
    let sample = chrono::NaiveDate::from_ymd_opt(2026, 11, 28)
        .unwrap_or_default()
        .format_with_items(items.into_iter())
        .to_string();
    let tag_ok = !sample.is_empty()
        && sample.len() <= 128
        && sample
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "_.-".contains(ch))
        && !sample.starts_with(['.', '-']);
    if !tag_ok {
        return err(
            "image.staging_tag_format",
            format!("{:?} gives {sample:?}, which is not a Docker tag ([A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})", c.image.staging_tag_format),
        );
    }
    if c.container.memory_limit.bytes == 0 {
        return err(
            "container.memory_limit",
            "0 means unlimited to the engine; give a limit such as \"128Mi\"".into(),
        );
    }
    if c.container.pids_limit <= 0 {
        return err(
            "container.pids_limit",
            format!(
                "{} means unlimited to the engine; give a limit such as 256",
                c.container.pids_limit
            ),
        );
    }
    if c.verify.poll_interval.is_zero() {
        return err("verify.poll_interval", "must be greater than 0".into());
    }
    Ok(())
}

/// 1-based line and column of a byte offset, and the dotted key defined there.
fn locate(text: &str, offset: usize) -> (usize, usize, String) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = offset - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    let this_line = text.lines().nth(line - 1).unwrap_or("");
    let table = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
        .unwrap_or_default();
    let key = match this_line.split_once('=') {
        Some((k, _)) if !this_line.trim_start().starts_with('[') => k.trim().to_string(),
        _ => String::new(),
    };
    let dotted = match (table.is_empty(), key.is_empty()) {
        (_, true) => table,
        (true, false) => key,
        (false, false) => format!("{table}.{key}"),
    };
    (line, col, dotted)
}

/// The line that defines a dotted key (`container.tmpfs.size`), or 0 when not in the text.
fn find_key_line(text: &str, dotted: &str) -> usize {
    let (table, key) = dotted.rsplit_once('.').unwrap_or(("", dotted));
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.starts_with('[') {
            current = l.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        } else if current == table && l.split('=').next().map(str::trim) == Some(key) {
            return i + 1;
        }
    }
    0
}

/// Operator overrides, from flags or `DHI_STAGE_*` variables (clap reads both).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub container: Option<String>,
    pub port: Option<u16>,
    pub base_url: Option<String>,
    pub registry: Option<String>,
    pub env_file: Option<PathBuf>,
}

impl Config {
    /// With a remote engine, the service's published port is on the engine's host: a base
    /// URL on a loopback name follows it there (an explicit --base-url is left alone).
    pub fn follow_engine_host(&mut self, engine_host: &str) {
        for local in ["://127.0.0.1:", "://localhost:", "://[::1]:"] {
            if self.verify.base_url.contains(local) {
                let host = if engine_host.contains(':') {
                    format!("[{engine_host}]")
                } else {
                    engine_host.to_string()
                };
                self.verify.base_url =
                    self.verify
                        .base_url
                        .replacen(local, &format!("://{host}:"), 1);
                return;
            }
        }
    }

    pub fn apply(&mut self, o: &Overrides) -> Result<()> {
        if let Some(name) = &o.container {
            if name.is_empty() {
                bail!("container name must not be empty");
            }
            self.container.name = name.clone();
        }
        if let Some(port) = o.port {
            self.container.host_port = port;
            // The default base URL follows the published port unless given explicitly.
            if o.base_url.is_none() {
                self.verify.base_url = format!("http://127.0.0.1:{port}");
            }
        }
        if let Some(url) = &o.base_url {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                bail!("base URL {url:?} must start with http:// or https://");
            }
            self.verify.base_url = url.trim_end_matches('/').to_string();
        }
        if let Some(r) = &o.registry {
            self.image.registry = r.clone();
        }
        if let Some(p) = &o.env_file {
            self.env_file = p.clone();
        }
        Ok(())
    }

    /// `authentication-service:dhi-staging`
    pub fn build_ref(&self) -> String {
        format!("{}:{}", self.image.name, self.image.build_tag)
    }

    /// `<registry>/authentication-service:staging-dhi-YYYYMMDD`, the date in UTC.
    pub fn staging_ref(&self, date: chrono::NaiveDate) -> String {
        format!(
            "{}/{}:{}",
            self.image.registry,
            self.image.name,
            date.format(&self.image.staging_tag_format)
        )
    }

    /// `<registry>/authentication-service:baseline-distroless`
    /// Settings that are valid but cannot do what they say, for the operator to hear about:
    /// a memory trigger at or above the container's memory limit can never fire (the
    /// container is OOM-killed first; the OOM kill itself fires the immediate trigger).
    pub fn warnings(&self) -> Vec<String> {
        let limit_mib = self.container.memory_limit.bytes as f64 / (1024.0 * 1024.0);
        self.monitoring
            .rollback_triggers
            .iter()
            .chain(&self.monitoring.immediate_triggers)
            .filter(|r| r.metric == Metric::MemoryMib && r.threshold >= limit_mib && limit_mib > 0.0)
            .map(|r| {
                format!(
                    "monitoring trigger `{}` (memory > {} MiB) is at or above container.memory_limit ({limit_mib:.0} MiB): the container is OOM-killed first, so only the OOM kill can fire it",
                    r.name, r.threshold
                )
            })
            .chain(self.monitoring.memory_sample_interval.map(|_| {
                "monitoring.memory_sample_interval is ignored: memory is sampled on every monitor tick".to_string()
            }))
            .collect()
    }

    pub fn baseline_ref(&self) -> String {
        format!(
            "{}/{}:{}",
            self.image.registry, self.image.name, self.image.baseline_tag
        )
    }

    /// MB/min above which memory counts as growing (the continuous-growth trigger's threshold).
    pub fn memory_growth_threshold(&self) -> f64 {
        self.monitoring
            .rollback_triggers
            .iter()
            .find(|r| r.metric == Metric::MemoryGrowth)
            .map(|r| r.threshold)
            .unwrap_or(0.1)
    }

    pub fn health_url(&self) -> String {
        format!("{}{}", self.verify.base_url, self.verify.health_path)
    }

    pub fn metrics_url(&self) -> String {
        format!("{}{}", self.verify.base_url, self.verify.metrics_path)
    }
}

/// Every number of the runbook, pinned to the shipped config: changing one in
/// `config/staging.toml` (or what it is read as) fails here, naming the runbook's line.
#[cfg(test)]
mod runbook_pins {
    use super::*;

    fn rule<'a>(list: &'a [TriggerRule], name: &str) -> &'a TriggerRule {
        list.iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no trigger named {name}"))
    }

    fn pin(
        list: &[TriggerRule],
        name: &str,
        metric: Metric,
        op: Comparison,
        threshold: f64,
        window: &str,
        line: &str,
    ) {
        let r = rule(list, name);
        let w = humantime::parse_duration(window).unwrap();
        assert_eq!(
            (r.metric, r.op, r.threshold, r.sustained_for),
            (metric, op, threshold, w),
            "runbook: {line:?}"
        );
    }

    #[test]
    fn the_shipped_config_holds_every_number_of_the_runbook() {
        let c = parse(DEFAULT_TOML, "embedded").unwrap();
        let m = &c.monitoring;
        let rb = &m.rollback_triggers;
        assert_eq!(rb.len(), 6, "six per-metric rollback triggers");
        pin(
            rb,
            "health_check_success_rate",
            Metric::HealthCheckSuccessRatePct,
            Comparison::Lt,
            99.0,
            "1h",
            "Rollback Trigger: < 99% success rate sustained for 1 hour",
        );
        pin(
            rb,
            "error_rate",
            Metric::ErrorRatePct,
            Comparison::Gt,
            2.0,
            "5m",
            "Rollback Trigger: > 2% error rate sustained for 5 minutes",
        );
        pin(
            rb,
            "p95_latency",
            Metric::P95LatencyMs,
            Comparison::Gt,
            150.0,
            "5m",
            "Rollback Trigger: P95 > 150ms sustained for 5 minutes",
        );
        pin(
            rb,
            "p99_latency",
            Metric::P99LatencyMs,
            Comparison::Gt,
            500.0,
            "5m",
            "Rollback Trigger: P99 > 500ms sustained for 5 minutes",
        );
        pin(
            rb,
            "memory",
            Metric::MemoryMib,
            Comparison::Gt,
            100.0,
            "0s",
            "Rollback Trigger: Memory > 100MB or continuous growth pattern",
        );
        pin(
            rb,
            "memory_continuous_growth",
            Metric::MemoryGrowth,
            Comparison::Gt,
            0.1,
            "30m",
            "Rollback Trigger: Memory > 100MB or continuous growth pattern",
        );
        let im = &m.immediate_triggers;
        assert_eq!(
            im.len(),
            6,
            "Execute immediate rollback if ANY of these occur: 1-6"
        );
        pin(
            im,
            "health_check_failure_rate",
            Metric::HealthCheckFailureRatePct,
            Comparison::Gt,
            10.0,
            "5m",
            "1. Health check failure rate > 10% for 5 minutes",
        );
        pin(
            im,
            "error_rate",
            Metric::ErrorRatePct,
            Comparison::Gt,
            2.0,
            "5m",
            "2. Error rate > 2% for 5 minutes",
        );
        pin(
            im,
            "p99_latency",
            Metric::P99LatencyMs,
            Comparison::Gt,
            500.0,
            "5m",
            "3. P99 latency > 500ms for 5 minutes",
        );
        pin(
            im,
            "memory",
            Metric::MemoryMib,
            Comparison::Gt,
            150.0,
            "0s",
            "4. Memory usage > 150MB",
        );
        pin(
            im,
            "container_crashes",
            Metric::RestartsInWindow,
            Comparison::Gt,
            3.0,
            "10m",
            "5. Container crashes (restart count > 3 in 10 minutes)",
        );
        pin(
            im,
            "critical_cve",
            Metric::CriticalCves,
            Comparison::Gt,
            0.0,
            "0s",
            "6. CRITICAL CVE discovered in DHI base image",
        );

        let t = &m.targets;
        assert_eq!(
            t.health_check_success_rate_pct, 100.0,
            "Target: 100% health check success"
        );
        assert_eq!(t.error_rate_pct, 0.01, "Target: < 0.01%");
        assert_eq!(
            t.p95_latency,
            Duration::from_millis(100),
            "Target: <= 100ms"
        );
        assert_eq!(
            t.p99_latency,
            Duration::from_millis(200),
            "Target: <= 200ms"
        );
        assert_eq!(
            (t.memory_min_mib, t.memory_max_mib),
            (50.0, 80.0),
            "Target: 50-80MB stable"
        );
        assert_eq!(
            m.interval,
            Duration::from_secs(30),
            "watch -n 30 'curl -s .../health'"
        );
        assert_eq!(m.period_days, 7, "7-day monitoring");

        let p = &c.promotion;
        assert_eq!(p.days, 7, "Stability Criteria (7-day monitoring)");
        assert_eq!(
            p.health_check_success_rate_pct, 100.0,
            "100% (zero failures in 7 days)"
        );
        assert_eq!(p.error_rate_pct, 0.01, "Error rate: < 0.01%");
        assert_eq!(
            p.p95_latency,
            Duration::from_millis(100),
            "P95 latency: < 100ms"
        );
        assert_eq!(
            p.p99_latency,
            Duration::from_millis(200),
            "P99 latency: < 200ms"
        );
        assert_eq!(
            (p.memory_min_mib, p.memory_max_mib),
            (50.0, 80.0),
            "Memory stable: 50-80MB range"
        );
        assert_eq!(
            (p.max_restarts, p.max_rollbacks),
            (0, 0),
            "Zero crashes; Zero rollbacks"
        );
        assert_eq!(
            p.max_high_critical_cves, 0,
            "DHI CVE count: 0 HIGH/CRITICAL CVEs"
        );
        assert_eq!(p.security_score, 12, "Security score: 12/12");

        assert_eq!(c.image.max_size_mb, 58.0, "Image size verified: <=58MB");
        assert_eq!(
            c.image.baseline_tag, "baseline-distroless",
            "Rollback procedure: ...:baseline-distroless"
        );
        assert_eq!(
            (c.container.host_port, c.container.container_port),
            (3002, 3000),
            "-p 3002:3000"
        );
        assert_eq!(c.container.user, "65532:65532", "--user 65532:65532");
        assert_eq!(
            c.container.memory_limit.bytes,
            128 << 20,
            "limits: memory 128Mi"
        );
        assert_eq!(
            c.container.memory_request.bytes,
            64 << 20,
            "requests: memory 64Mi"
        );
        assert_eq!(
            c.rollback.docker_target,
            Duration::from_secs(30),
            "Target: < 30 seconds"
        );
        assert_eq!(
            c.rollback.kubernetes_target,
            Duration::from_secs(60),
            "Rollback time target: < 60 seconds"
        );
        let cadence: Vec<(u64, u64)> = m
            .production_cadence
            .iter()
            .map(|s| (s.until.as_secs() / 3600, s.interval.as_secs() / 60))
            .collect();
        assert_eq!(cadence, vec![(4, 5), (12, 15), (24, 30), (168, 60)],
            "Production Monitoring: every 5 min hours 1-4, 15 min 4-12, 30 min 12-24, hourly days 2-7");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_holds_the_runbook_numbers() {
        let c = parse(DEFAULT_TOML, "embedded").unwrap();
        assert_eq!(c.container.name, "auth-service-staging");
        assert_eq!(
            (c.container.host_port, c.container.container_port),
            (3002, 3000)
        );
        assert_eq!(c.container.user, "65532:65532");
        assert_eq!(c.image.max_size_mb, 58.0);
        assert_eq!(
            c.container.tmpfs[0].docker_options(),
            "noexec,nosuid,size=100m"
        );
        assert_eq!(
            c.container.tmpfs[1].docker_options(),
            "noexec,nosuid,size=50m"
        );
        assert_eq!(c.container.memory_limit.bytes, 128 << 20);
        assert_eq!(c.container.cpu_limit.nano_cpus(), 500_000_000);
        assert_eq!(c.verify.expected_version, "1.3.0");
        assert_eq!(c.rollback.docker_target, Duration::from_secs(30));
        assert_eq!(c.rollback.kubernetes_target, Duration::from_secs(60));
        let t = &c.monitoring.rollback_triggers[0];
        assert_eq!(
            (t.metric, t.op, t.threshold),
            (Metric::HealthCheckSuccessRatePct, Comparison::Lt, 99.0)
        );
        assert_eq!(t.sustained_for, Duration::from_secs(3600));
        assert_eq!(c.monitoring.immediate_triggers.len(), 6);
        assert_eq!(c.promotion.e2e_expected, 146);
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let text = DEFAULT_TOML.replace("pids_limit = 256", "pids_limit = 256\npids_limt = 3");
        let err = parse(&text, "cfg.toml").unwrap_err().to_string();
        let line = text
            .lines()
            .position(|l| l.starts_with("pids_limt"))
            .unwrap()
            + 1;
        assert!(err.starts_with(&format!("cfg.toml:{line}:")), "{err}");
        assert!(err.contains("pids_limt"), "{err}");
    }

    #[test]
    fn bad_duration_names_the_key() {
        let text = DEFAULT_TOML.replace("interval = \"30s\"", "interval = \"thirty\"");
        let err = parse(&text, "cfg.toml").unwrap_err().to_string();
        assert!(err.contains("monitoring.interval"), "{err}");
    }

    #[test]
    fn validation_error_finds_the_line() {
        let text = DEFAULT_TOML.replace("user = \"65532:65532\"", "user = \"nonroot\"");
        let err = parse(&text, "cfg.toml").unwrap_err().to_string();
        let line = text
            .lines()
            .position(|l| l.starts_with("user = \"nonroot\""))
            .unwrap()
            + 1;
        assert!(
            err.starts_with(&format!("cfg.toml:{line}: key `container.user`")),
            "{err}"
        );
    }

    #[test]
    fn sizes_and_cpus() {
        assert_eq!(ByteSize::parse("64Mi").unwrap().bytes, 64 << 20);
        assert_eq!(ByteSize::parse("100m").unwrap().bytes, 100 << 20);
        assert!(ByteSize::parse("12parsecs").is_err());
    }
}
