//! The runbook's 7-day monitoring period as one run of `monitor`: sample and judge (the
//! `monitor` floor), then what a judgement means — events, webhook notes, the week page,
//! and with `--auto-rollback` the rollback procedure under the same rules as an operator's,
//! approved by a recorded automatic approver. It sits above `monitor`, `rollout` and
//! `report`, which never import it.

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;
use serde_json::{json, Value};

use crate::config::{Config, MetricsSource};
use crate::engine::Engine;
use crate::exit::{failure, Code};
use crate::monitor::period::{Period, Role};
use crate::monitor::rules::{RuleResult, TargetResult, Verdict};
use crate::monitor::sample::{Sample, Sampler};
use crate::monitor::{self, BlindRule, Cadence, Plan, Tick};
use crate::output::Render;
use crate::rollout::rollback::{self, Approval, Context};
use crate::rollout::RollbackTarget;
use crate::store::events::{BlindDetail, BlindRuleDetail, TriggerDetail};
use crate::store::EventKind;

pub struct Request {
    /// `--base-url` given: a service this tool may not have deployed.
    pub explicit_url: bool,
    /// `--name` given.
    pub explicit_name: bool,
    pub day: Option<u32>,
    pub interval: Option<Duration>,
    /// `--profile production`: the runbook's first-24-hours cadence.
    pub production: bool,
    pub once: bool,
    pub duration: Option<Duration>,
    pub auto_rollback: bool,
    pub metrics_source: Option<MetricsSource>,
    pub prometheus_url: Option<String>,
    /// `--target kubernetes`: restarts and readiness from the Deployment's pods.
    pub kubernetes: bool,
    /// Serve the monitor's own metrics here (`monitor::exposition`).
    pub listen: Option<std::net::SocketAddr>,
    /// ... or write them to this file after every tick (node-exporter's textfile collector).
    pub metrics_file: Option<std::path::PathBuf>,
}

/// `monitor`'s outcome: exit 0 all clear, 4 a trigger fired (rolled back with
/// `--auto-rollback`), 5 that rollback failed, 6 blind.
#[derive(Debug, Serialize)]
pub struct Watched {
    pub ok: bool,
    pub target: String,
    /// Where error rate and latency were read: scrape or prometheus.
    pub metrics_source: MetricsSource,
    pub container: Option<String>,
    pub day: Option<u32>,
    pub role: Role,
    pub period: Period,
    pub rollback_target: RollbackTarget,
    pub config_warnings: Vec<String>,
    pub blind: Vec<BlindRule>,
    pub samples: u64,
    pub interrupted: bool,
    pub targets: Vec<TargetResult>,
    pub rules: Option<Vec<RuleResult>>,
    pub fired: Vec<RuleResult>,
    pub last_sample: Option<Sample>,
    /// The metric convention the last scrape was read with, and whether the monitor's own
    /// requests are in the figures (`probe::reading::About`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_convention: Option<Value>,
    pub latest_load_run: Option<LoadRun>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Value>,
    #[serde(skip)]
    code: Code,
    #[serde(skip)]
    notes: Notes,
}

#[derive(Debug, Serialize)]
pub struct LoadRun {
    pub kind: String,
    pub passed: bool,
    pub at: String,
    pub latency_ms: Value,
}

/// What the text says that the JSON does not: period days, webhook results, the rollback's text.
#[derive(Debug, Default)]
struct Notes {
    period_days: u32,
    notify_blind: String,
    notify_trigger: String,
    rollback_text: Option<String>,
}

pub async fn watch(ctx: &Context<'_>, r: &Request, on_tick: &dyn Fn(&Tick)) -> Result<Watched> {
    let started = std::time::Instant::now();
    let cfg = ctx.config;
    // The switch strategy's warm previous slot goes once keep_previous has passed; said.
    if let Some(r) = crate::rollout::switch::reap_now(cfg, ctx.state_dir).await {
        tracing::warn!("{r}");
    }
    let mut store = crate::store::Store::open(ctx.state_dir)?;
    let active = store.active_deployment(&cfg.container.name)?;
    // A service this tool did not deploy: --base-url alone means no container to read.
    // On Kubernetes the pods are read instead of a container, and no engine is asked.
    let container =
        (!r.kubernetes && (r.explicit_name || !r.explicit_url)).then(|| cfg.container.name.clone());
    #[cfg(not(feature = "kubernetes"))]
    if r.kubernetes {
        return Err(failure(
            Code::Usage,
            crate::rollout::kubernetes::WITHOUT_FEATURE,
        ));
    }
    // An engine that does not answer is a reading the monitor lacks, not a reason to stop
    // watching: health and metrics are still sampled, and the gap is reported (blindness).
    let (engine, engine_unavailable) = match &container {
        Some(_) => match Engine::connect().await {
            Ok(e) => (Some(e), None),
            Err(e) => {
                tracing::warn!("{e:#}");
                (None, Some(format!("{e:#}")))
            }
        },
        None => (None, None),
    };
    if let (Some(engine), Some(name)) = (&engine, &container) {
        if engine.find_container(name).await.ok().flatten().is_none() {
            tracing::warn!(container = %name, "no such container: container metrics will be missing");
        }
    }
    let follow = !r.explicit_url || r.explicit_name;
    let identity = monitor::period::identify(&store, cfg, follow, r.day, chrono::Utc::now())?;
    let (period, role, day) = (identity.period.clone(), identity.role, identity.day);
    let plan = plan(cfg, r, active.as_ref().map(|d| d.started_at))?;
    let rollback_target = crate::rollout::rollback_target(&store, cfg)?;
    let reader =
        crate::probe::reading::Reader::from_config(cfg).map_err(|e| failure(Code::Usage, e))?;
    let mut sampler = Sampler {
        engine: engine.as_ref(),
        engine_unavailable,
        client: crate::probe::health::client(cfg.verify.probe_timeout),
        health_url: cfg.health_url(),
        metrics_url: cfg.metrics_url(),
        target: cfg.verify.base_url.clone(),
        container: container.clone(),
        day,
        deployment_id: identity.deployment_id,
        role: Some(role.as_str().to_string()),
        image_ref: identity.image_ref.clone(),
        image_id: identity.image_id.clone(),
        prometheus: prometheus_source(cfg, r, &reader)?,
        reader,
        #[cfg(feature = "kubernetes")]
        pods: match r.kubernetes {
            true => Some((
                crate::cluster::Cluster::connect(&cfg.kubernetes.namespace).await?,
                crate::engine::kubernetes::selector(cfg),
            )),
            false => None,
        },
    };
    let requested_day = r.day;
    let resolve = move |store: &crate::store::Store| {
        monitor::period::identify(store, cfg, follow, requested_day, chrono::Utc::now())
    };

    // The same SIGINT/SIGTERM handling as deploy and rollback: the tick in progress finishes.
    let interrupt = crate::rollout::Interrupt::install();
    // The week page, when configured: every few minutes in a long loop, and once at the end.
    let page_every = Duration::from_secs(300);
    let page_written = std::cell::Cell::new(std::time::Instant::now());
    let write_page = || {
        if !cfg.report.week_page_from_monitor {
            return;
        }
        page_written.set(std::time::Instant::now());
        let attestations = crate::report::gate::read_attestations(None).unwrap_or_default();
        let written = crate::store::Store::open(ctx.state_dir).and_then(|s| {
            // Shown from the attestations: a refresh every five minutes asks no server.
            let measured = Default::default();
            crate::report::week::write_page(&s, cfg, &cfg.report.dir, &attestations, &measured)
        });
        if let Err(e) = written {
            tracing::warn!("the week page was not written: {e:#}");
        }
    };
    let exposed = Exposed::start(r, &cfg.container.name).await?;
    let summary = monitor::run(
        &mut store,
        &mut sampler,
        &cfg.monitoring,
        &plan,
        interrupt.token(),
        &resolve,
        |t| {
            on_tick(t);
            exposed.update(t);
            if page_written.get().elapsed() >= page_every {
                write_page();
            }
        },
    )
    .await;
    drop(interrupt);
    let summary = summary?;

    // The last 24 hours read in one pass: a day of 1 s samples is never held in memory.
    let mut today = monitor::digest::DayDigest::default();
    store.scan_since(
        &cfg.verify.base_url,
        chrono::Utc::now().timestamp_millis() - 86_400_000,
        sampler.deployment_id,
        |_, s| today.push(s),
    )?;
    let targets = monitor::rules::targets(&cfg.monitoring.targets, &today);
    // The runbook measures P95/P99 with k6 runs: the latest `load` run of the day beside the histogram.
    let latest_load_run = match day {
        Some(d) => store
            .test_results(d)?
            .into_iter()
            .rev()
            .find(|(k, ..)| k.starts_with("load:"))
            .map(|(kind, passed, detail, at)| LoadRun {
                kind,
                passed,
                at,
                latency_ms: detail["latency_ms"].clone(),
            }),
        None => None,
    };
    let blind_now = !summary.blind.is_empty();
    let mut w = Watched {
        ok: summary.fired.is_empty() && !blind_now,
        target: cfg.verify.base_url.clone(),
        metrics_source: if sampler.prometheus.is_some() {
            MetricsSource::Prometheus
        } else {
            MetricsSource::Scrape
        },
        container,
        day,
        role,
        period,
        rollback_target,
        config_warnings: cfg.warnings(),
        blind: summary.blind.clone(),
        samples: summary.ticks,
        interrupted: summary.interrupted,
        targets,
        rules: summary.last.as_ref().map(|t| t.results.clone()),
        fired: summary.fired.clone(),
        last_sample: summary.last.as_ref().map(|t| t.sample.clone()),
        metrics_convention: summary
            .last
            .as_ref()
            .map(|t| t.sample.health_detail["metrics"].clone())
            .filter(|v| !v.is_null()),
        latest_load_run,
        rollback: None,
        code: if blind_now { Code::Blind } else { Code::Ok },
        notes: Notes {
            period_days: cfg.monitoring.period_days,
            ..Default::default()
        },
    };
    if !summary.newly_blind.is_empty() {
        let names: Vec<String> = summary
            .newly_blind
            .iter()
            .map(|b| format!("{} ({})", b.name, b.reason))
            .collect();
        let note = format!(
            "dhi-stage: monitor of {} is BLIND: {}",
            cfg.container.name,
            names.join("; ")
        );
        let detail = BlindDetail {
            rules: summary
                .newly_blind
                .iter()
                .map(|b| BlindRuleDetail {
                    name: b.name.clone(),
                    severity: b.severity.as_str().into(),
                    condition: b.condition.clone(),
                    inconclusive_since_ms: Some(b.inconclusive_since_ms),
                    for_s: Some(b.for_s),
                    reason: b.reason.clone(),
                })
                .collect(),
            day,
        };
        store.event(EventKind::Blind, sampler.deployment_id, &detail)?;
        w.notes.notify_blind = notify_webhook(
            &cfg.notify,
            "blind",
            &note,
            &json!({"blind": summary.newly_blind, "day": day}),
        )
        .await;
    }
    if summary.fired.is_empty() {
        complete_incidents(&store, cfg);
        write_page();
        return Ok(w);
    }

    for f in &summary.fired {
        store.event(
            EventKind::Trigger,
            sampler.deployment_id,
            &TriggerDetail {
                rule: f.name.clone(),
                severity: f.severity.as_str().into(),
                condition: f.condition.clone(),
                value: f.value,
                evidence: f.evidence.clone(),
                day,
            },
        )?;
    }
    let names: Vec<&str> = summary.fired.iter().map(|f| f.name.as_str()).collect();
    let note = format!(
        "dhi-stage: rollback trigger fired on {}: {}",
        cfg.container.name,
        names.join(", ")
    );
    w.notes.notify_trigger = notify_webhook(
        &cfg.notify,
        "trigger",
        &note,
        &json!({"fired": summary.fired, "day": day}),
    )
    .await;
    w.code = Code::TriggerFired;
    if r.auto_rollback {
        // One rule at both severities is one reason, not two.
        let mut reasons: Vec<String> = Vec::new();
        for f in &summary.fired {
            let words = format!("{} ({})", f.name, f.condition);
            if !reasons.contains(&words) {
                reasons.push(words);
            }
        }
        let reason = format!("monitor: {}", reasons.join(", "));
        let (code, json, text) = auto_rollback(ctx, r.kubernetes, reason).await?;
        w.code = code;
        w.rollback = Some(json);
        w.notes.rollback_text = Some(text);
        if code == Code::TriggerFired && !r.kubernetes && !r.once {
            let until = r.duration.map(|d| started + d);
            follow_restored(&mut store, &mut sampler, &plan, cfg, until).await;
        }
    }
    complete_incidents(&store, cfg);
    write_page();
    Ok(w)
}

/// After an automatic rollback the monitor keeps sampling the restored service for the
/// incident report's after-window (`[report] incident_after`, within `--duration`), so the
/// report's "after" column is the baseline's first minutes; SIGINT/SIGTERM ends it early.
async fn follow_restored(
    store: &mut crate::store::Store,
    sampler: &mut Sampler<'_>,
    plan: &Plan,
    cfg: &Config,
    until: Option<std::time::Instant>,
) {
    let follow_until = std::time::Instant::now() + cfg.report.incident_after;
    let until = until.map_or(follow_until, |u| u.min(follow_until));
    match monitor::period::identify(store, cfg, true, None, chrono::Utc::now()) {
        Ok(id) => sampler.follow(&id),
        Err(e) => return tracing::warn!("the restored service is not followed: {e:#}"),
    }
    let interrupt = crate::rollout::Interrupt::install();
    let mut cursor = crate::monitor::sample::Cursor::default();
    tracing::info!(
        "following the restored service for the incident report until {}",
        humantime::format_duration(until.saturating_duration_since(std::time::Instant::now()))
    );
    while std::time::Instant::now() < until && !interrupt.interrupted() {
        let tick = tokio::time::Instant::now();
        let interval = plan
            .cadence
            .interval_at(chrono::Utc::now().timestamp_millis());
        let sample = sampler
            .take(&mut cursor, (interval * 4 / 5).max(Duration::from_secs(1)))
            .await;
        if let Err(e) = store.insert_sample(&sample) {
            return tracing::warn!("a sample of the restored service was not stored: {e:#}");
        }
        let next = (tick + interval).min(tokio::time::Instant::from_std(until));
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = interrupt.token().cancelled() => break,
        }
    }
}

/// The monitor's own metrics (`--listen`, `--metrics-file`): the latest exposition, served
/// by a task for as long as the run lasts, and written to the file after every tick.
struct Exposed {
    text: std::sync::Arc<std::sync::Mutex<String>>,
    service: String,
    file: Option<std::path::PathBuf>,
    ticks: std::cell::Cell<u64>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Exposed {
    async fn start(r: &Request, service: &str) -> Result<Exposed> {
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let server = match r.listen {
            None => None,
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                    failure(Code::Operational, format!("monitor --listen {addr}: {e}"))
                })?;
                tracing::info!("serving the monitor's metrics on http://{addr}/metrics");
                Some(tokio::spawn(serve(listener, text.clone())))
            }
        };
        Ok(Exposed {
            text,
            service: service.to_string(),
            file: r.metrics_file.clone(),
            ticks: std::cell::Cell::new(0),
            server,
        })
    }

    fn update(&self, t: &Tick) {
        if self.server.is_none() && self.file.is_none() {
            return;
        }
        self.ticks.set(self.ticks.get() + 1);
        let body = monitor::exposition::render(&self.service, t, self.ticks.get());
        if let Some(f) = &self.file {
            if let Err(e) = crate::files::write_atomic(f, &body) {
                tracing::warn!("the metrics file was not written: {e:#}");
            }
        }
        if let Ok(mut text) = self.text.lock() {
            *text = body;
        }
    }
}

impl Drop for Exposed {
    fn drop(&mut self) {
        if let Some(s) = &self.server {
            s.abort();
        }
    }
}

/// Answers `GET /metrics` with the latest exposition; anything else 404. A request head is
/// read to 8 KiB within 5 s, so a slow or hostile client holds nothing for long.
async fn serve(listener: tokio::net::TcpListener, text: std::sync::Arc<std::sync::Mutex<String>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let text = text.clone();
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while head.len() < 8192 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            let metrics = head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?");
            let (status, body) = match metrics {
                true => ("200 OK", text.lock().map(|t| t.clone()).unwrap_or_default()),
                false => (
                    "404 Not Found",
                    "only /metrics is served here\n".to_string(),
                ),
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ =
                tokio::time::timeout(Duration::from_secs(5), conn.write_all(resp.as_bytes())).await;
        });
    }
}

/// Incident reports whose after-window has passed are written again, complete.
fn complete_incidents(store: &crate::store::Store, cfg: &Config) {
    match crate::report::incident::complete_pending(store, cfg, chrono::Utc::now()) {
        Ok(done) => done
            .iter()
            .for_each(|p| tracing::info!("incident report completed: {}", p.display())),
        Err(e) => tracing::warn!("an incident report was not completed: {e:#}"),
    }
}

/// The rollback `--auto-rollback` makes: the same procedure and rules as an operator's, on
/// the same platform the monitor watches (`kubectl rollout undo` for `--target kubernetes`,
/// never the Docker path), approved by the standing approval of whoever started the monitor.
async fn auto_rollback(
    ctx: &crate::rollout::rollback::Context<'_>,
    kubernetes: bool,
    reason: String,
) -> Result<(Code, Value, String)> {
    let approval = Approval::Automatic("monitor --auto-rollback");
    let done = |ok: bool| {
        if ok {
            Code::TriggerFired
        } else {
            Code::RollbackFailed
        }
    };
    let failed = |e: anyhow::Error| {
        (
            Code::RollbackFailed,
            json!({"ok": false, "error": format!("{e:#}")}),
            format!("rollback FAILED: {e:#}"),
        )
    };
    if kubernetes {
        #[cfg(feature = "kubernetes")]
        return Ok(
            match crate::rollout::kubernetes::rollback(ctx, &approval, Some(reason), &|_| {}).await
            {
                Ok(o) => (
                    done(o.code() == Code::Ok),
                    serde_json::to_value(&o)?,
                    o.text(),
                ),
                Err(e) => failed(e),
            },
        );
        #[cfg(not(feature = "kubernetes"))]
        return Ok(failed(anyhow::anyhow!(
            crate::rollout::kubernetes::WITHOUT_FEATURE
        )));
    }
    let request = rollback::Request {
        to: None,
        reason: Some(reason),
        approval,
        drill: false,
        wait: None,
    };
    Ok(match rollback::rollback(ctx, &request).await {
        Ok(o) => (
            done(o.code() == Code::Ok),
            serde_json::to_value(&o)?,
            o.text(),
        ),
        Err(e) => failed(e),
    })
}

/// The PromQL source when asked for (`--metrics-source prometheus`, `--prometheus-url`, or
/// the config's `metrics_source`); a bad URL or an unset credential variable is usage.
fn prometheus_source(
    cfg: &Config,
    r: &Request,
    reader: &crate::probe::reading::Reader,
) -> Result<Option<monitor::promql::Source>> {
    let source = match (r.metrics_source, &r.prometheus_url) {
        (Some(s), _) => s,
        (None, Some(_)) => MetricsSource::Prometheus,
        (None, None) => cfg.monitoring.metrics_source,
    };
    if source == MetricsSource::Scrape {
        return Ok(None);
    }
    monitor::promql::Source::new(&cfg.monitoring.prometheus, r.prometheus_url.as_deref())
        .map(|s| Some(s.reading_with(reader)))
        .map_err(|e| failure(Code::Usage, format!("{e:#}")))
}

/// The sampling plan: `--interval`, else the production cadence with `--profile production`,
/// else the configured interval.
fn plan(
    cfg: &Config,
    r: &Request,
    deployed_at: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Plan> {
    let cadence = match (r.interval, r.production) {
        (Some(i), _) => Cadence::Fixed(i),
        (None, true) => Cadence::Production {
            steps: cfg.monitoring.production_cadence.clone(),
            deployed_at_ms: deployed_at
                .map(|t| t.timestamp_millis())
                .unwrap_or_else(|| chrono::Utc::now().timestamp_millis()),
        },
        (None, false) => Cadence::Fixed(cfg.monitoring.interval),
    };
    if let Cadence::Fixed(i) = cadence {
        if i.is_zero() || i > Duration::from_secs(86_400) {
            return Err(failure(
                Code::Usage,
                "--interval must be greater than 0 and at most 1 day",
            ));
        }
    }
    Ok(Plan {
        cadence,
        once: r.once,
        duration: r.duration,
        blind_margin: cfg.monitoring.blind_margin,
        rollout_grace: cfg.verify.startup_wait + Duration::from_secs(60),
    })
}

impl Render for Watched {
    fn code(&self) -> Code {
        self.code
    }

    fn text(&self) -> String {
        let mut text = format!(
            "monitor {} ({}) {}: {} sample(s){}\n",
            self.target,
            self.container.as_deref().unwrap_or("no container"),
            match (self.role, self.day) {
                (Role::Baseline, _) =>
                    "baseline serving (samples are the baseline's, not counted in any day)"
                        .to_string(),
                (_, Some(d)) => format!("day {d}/{}", self.notes.period_days),
                (_, None) => "day -".to_string(),
            },
            self.samples,
            if self.interrupted {
                ", stopped by signal"
            } else {
                ""
            }
        );
        if let Some(c) = &self.metrics_convention {
            let about: crate::probe::reading::About =
                serde_json::from_value(c.clone()).unwrap_or_default();
            text += &format!(
                "metrics read as {}{}\n",
                about.convention.as_deref().unwrap_or("no known convention"),
                about.probes_said()
            );
            if let Some(note) = &about.note {
                text += &format!("  {note}\n");
            }
        }
        if self.period.interrupted_ms() > 0 {
            text += &format!(
                "validation period of {} interrupted: the baseline served for {}\n",
                self.period.image.as_deref().unwrap_or("?"),
                humantime::format_duration(Duration::from_secs(
                    (self.period.interrupted_ms() / 1000) as u64
                ))
            );
        }
        text += &format!(
            "rollback would restore: {} ({})\n",
            self.rollback_target.image, self.rollback_target.source
        );
        for w in &self.config_warnings {
            text += &format!("config warning: {w}\n");
        }
        text += "targets (last 24 h of this deployment):\n";
        for t in &self.targets {
            let mark = match t.met {
                Some(true) => "met    ",
                Some(false) => "NOT met",
                None => "no data",
            };
            text += &format!("  {mark} {:<34} {}\n", t.target, t.detail);
        }
        if let Some(l) = &self.latest_load_run {
            let q = |k: &str| {
                l.latency_ms[k]
                    .as_f64()
                    .map(|v| format!("{v:.1}ms"))
                    .unwrap_or("no data".into())
            };
            text += &format!(
                "latest {} run ({}): P95 {} P99 {} ({})\n",
                l.kind,
                l.at,
                q("p95"),
                q("p99"),
                if l.passed {
                    "thresholds met"
                } else {
                    "thresholds NOT met"
                }
            );
        }
        if let Some(rules) = &self.rules {
            text += "rollback triggers:\n";
            for r in rules {
                text += &format!("  {}\n", rule_line(r));
            }
        }
        text += &self.notes.notify_blind;
        if !self.blind.is_empty() {
            text += "\nBLIND: these rules could not be judged for longer than their window plus the margin:\n";
            for b in &self.blind {
                text += &format!(
                    "  {} ({}): no verdict for {:.0}s: {}\n",
                    b.name, b.condition, b.for_s, b.reason
                );
            }
        }
        if self.fired.is_empty() {
            return text;
        }
        for f in &self.fired {
            text += &format!(
                "\nTRIGGER FIRED: {} ({:?}): {}\n  evidence:\n",
                f.name, f.severity, f.condition
            );
            for (ts, v) in &f.evidence {
                let at = chrono::DateTime::from_timestamp_millis(*ts)
                    .map(|t| t.format("%H:%M:%S%.3f").to_string())
                    .unwrap_or_default();
                text += &format!(
                    "    {at}  {}\n",
                    v.map(|v| format!("{v:.2}")).unwrap_or("-".into())
                );
            }
        }
        text += &self.notes.notify_trigger;
        match &self.notes.rollback_text {
            None => text + "\nrollback: dhi-stage rollback --reason \"monitor trigger\"",
            Some(rb) => text + &format!("\nauto-rollback:\n{rb}"),
        }
    }
}

/// Sends one webhook notification, if one is configured; the line saying how it went.
async fn notify_webhook(
    cfg: &crate::config::NotifyConfig,
    event: &str,
    note: &str,
    detail: &serde_json::Value,
) -> String {
    match crate::notify::webhook(cfg, event, note, detail).await {
        None => String::new(),
        Some(sent) if sent.ok => format!("notify webhook: {}\n", sent.detail),
        Some(sent) => format!("notify webhook: FAILED ({})\n", sent.detail),
    }
}

pub fn tick_line(t: &Tick) -> String {
    let s = &t.sample;
    let at = chrono::DateTime::from_timestamp_millis(s.ts_ms)
        .map(|t| t.format("%H:%M:%S").to_string())
        .unwrap_or_default();
    let health = if s.health_ok {
        format!("healthy {:.0}ms", s.health_latency_ms.unwrap_or(0.0))
    } else {
        format!(
            "UNHEALTHY ({})",
            s.health_detail["error"].as_str().unwrap_or("?")
        )
    };
    let degraded: Vec<String> = s.health_detail["dependencies"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, v)| v.as_str() != Some("healthy"))
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("?")))
                .collect()
        })
        .unwrap_or_default();
    let fmt = |v: Option<f64>, unit: &str| v.map(|v| format!("{v:.1}{unit}")).unwrap_or("-".into());
    let mut line = format!(
        "[{at}] #{} {health}{} | err {} | p95 {} p99 {} | mem {} cpu {} | restarts {} | log errors {}",
        t.n,
        if degraded.is_empty() { String::new() } else { format!(" DEGRADED {}", degraded.join(",")) },
        fmt(t.error_rate_pct, "%"),
        fmt(t.p95_ms, "ms"),
        fmt(t.p99_ms, "ms"),
        fmt(s.memory_mib(), "MiB"),
        fmt(s.cpu_pct, "%"),
        s.restart_count.map(|r| r.to_string()).unwrap_or("-".into()),
        s.log_errors.map(|r| r.to_string()).unwrap_or("-".into()),
    );
    if t.scrape_failures_in_a_row > 0 {
        line += &format!(
            " | METRICS FAILED x{}{} ({})",
            if t.scrape_failures_at_least {
                "≥"
            } else {
                ""
            },
            t.scrape_failures_in_a_row,
            s.scrape_error.as_deref().unwrap_or("counters not numeric")
        );
    }
    if let Some(why) = s.health_detail["logs"]["cut"].as_str() {
        line += &format!(" | log errors counted only in part ({why}): at least the count shown");
    }
    if s.parse_errors > 0 {
        line += &format!(" | {} unreadable /metrics line(s)", s.parse_errors);
    }
    if let Some(e) = &s.engine_error {
        line += &format!(" | ENGINE: {e}");
    }
    if let Some(step) = t.clock_stepped_back_ms {
        line += &format!(
            " | CLOCK STEPPED BACK {:.1}s (later-stamped samples not judged)",
            step as f64 / 1000.0
        );
    }
    for b in &t.blind {
        line += &format!("\n  BLIND {}: {}", b.name, b.reason);
    }
    for f in t.fired() {
        line += &format!("\n  FIRED {}: {}", f.name, f.condition);
    }
    line
}

fn rule_line(r: &RuleResult) -> String {
    let (mark, why) = match &r.verdict {
        Verdict::Fired => ("FIRED       ", String::new()),
        Verdict::Clear => ("clear       ", String::new()),
        Verdict::Inconclusive { reason } => ("inconclusive", format!(" ({reason})")),
    };
    let sev = match r.severity {
        crate::monitor::rules::Severity::Immediate => "immediate",
        crate::monitor::rules::Severity::Rollback => "rollback ",
    };
    format!(
        "{mark} {sev} {:<28} {}{} now {}",
        r.name,
        r.condition,
        why,
        r.value.map(|v| format!("{v:.2}")).unwrap_or("-".into())
    )
}
