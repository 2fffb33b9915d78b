//! The promotion gate: every "Success Criteria for Production Promotion" item over days
//! 1..N, with its evidence. Measured items come from the store; the items only a person can
//! attest (dashboards, alerting, runbooks, training, live-Kong integration tests) come from
//! an attestation file and are shown as attested, never as measured. Missing data fails.

use anyhow::Result;
use serde::Serialize;

use super::{DayData, DayMetrics};
use crate::config::Config;
use crate::exit::{failure, Code};
use crate::output::Render;
use crate::store::events::ms;
use crate::store::{DeploymentKind, DeploymentStatus, Event, EventKind, Store};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Criterion {
    pub group: &'static str,
    pub criterion: String,
    pub met: bool,
    pub evidence: String,
    /// True when the evidence is a person's attestation rather than a measurement.
    pub attested: bool,
}

pub struct Input<'a> {
    pub through_day: u32,
    pub days: &'a [(DayData, DayMetrics)],
    pub drills: &'a [Event],
    pub score: Option<(u32, u32)>,
    pub cve: Option<&'a serde_json::Value>,
    pub deployed_images: &'a [String],
    pub sbom_images: &'a [String],
    pub attestations: &'a toml::Table,
    /// Attested criteria measured instead (`measure`): the measurement wins.
    pub measured: &'a Measured,
}

/// Operational criteria measured through Prometheus and Alertmanager, by attestation key.
pub type Measured = std::collections::BTreeMap<&'static str, crate::alerting::check::Measured>;

/// "Alerting configured for all rollback triggers" and "Monitoring dashboards configured and
/// working" from Prometheus' and Alertmanager's own answers, when a Prometheus is configured
/// (`[monitoring.prometheus] url`); empty otherwise (the attestations stand).
pub async fn measure(store: &Store, cfg: &Config) -> Result<Measured> {
    use crate::alerting::{self, check};
    let mut out = Measured::new();
    if cfg.monitoring.prometheus.url.trim().is_empty() {
        return Ok(out);
    }
    let prom = match crate::monitor::promql::Source::new(&cfg.monitoring.prometheus, None) {
        Ok(p) => p,
        Err(e) => {
            let m = check::Measured {
                met: false,
                evidence: format!("measured: Prometheus cannot be asked: {e:#}"),
            };
            out.insert("alerting", m.clone());
            out.insert("monitoring_dashboards", m);
            return Ok(out);
        }
    };
    let found = store
        .latest_day()?
        .and_then(|d| super::day_convention(store, d))
        .and_then(|a| a.convention);
    let (convention, _) = alerting::convention_for(cfg, None, found.as_deref())
        .map_err(|e| failure(Code::Usage, e))?;
    let inputs = alerting::Inputs {
        cfg,
        convention: &convention,
    };
    let drill = store
        .events(Some(EventKind::AlertDrill))?
        .last()
        .map(|e| e.detail_as::<check::Drilled>());
    out.insert(
        "alerting",
        check::alerting(&inputs, &prom, drill.as_ref()).await,
    );
    let now = chrono::Utc::now();
    let from = super::period(store, cfg, now)?
        .1
        .started_at
        .unwrap_or(now - chrono::Duration::days(7))
        .max(now - chrono::Duration::days(cfg.monitoring.period_days.max(1) as i64));
    out.insert(
        "monitoring_dashboards",
        check::dashboards(
            &inputs,
            &prom,
            (from.timestamp_millis(), now.timestamp_millis()),
        )
        .await,
    );
    Ok(out)
}

/// The attestation keys and the runbook items they stand for.
pub const ATTESTED: &[(&str, &str, &str)] = &[
    (
        "Testing",
        "integration_tests_live_kong",
        "Integration tests: all passing with live Kong",
    ),
    (
        "Operational",
        "monitoring_dashboards",
        "Monitoring dashboards: configured and working",
    ),
    (
        "Operational",
        "alerting",
        "Alerting: configured for all rollback triggers",
    ),
    (
        "Operational",
        "runbooks_updated",
        "Documentation: all runbooks updated",
    ),
    (
        "Operational",
        "team_trained",
        "Team trained: ops team familiar with DHI procedures",
    ),
];

fn c(group: &'static str, criterion: &str, met: bool, evidence: String) -> Criterion {
    Criterion {
        group,
        criterion: criterion.into(),
        met,
        evidence,
        attested: false,
    }
}

/// Checks `f` on every day; reports the days that fail or lack data.
fn every_day(
    days: &[(DayData, DayMetrics)],
    through: u32,
    f: impl Fn(&DayData, &DayMetrics) -> Result<(), String>,
) -> (bool, String) {
    let mut bad = Vec::new();
    for n in 1..=through {
        match days.iter().find(|(d, _)| d.day == n) {
            None => bad.push(format!("day {n}: no data")),
            Some((d, m)) => {
                if let Err(e) = f(d, m) {
                    bad.push(format!("day {n}: {e}"));
                }
            }
        }
    }
    if bad.is_empty() {
        (true, format!("days 1-{through} all met"))
    } else {
        (false, bad.join("; "))
    }
}

/// The gate's verdict and the days it read.
pub struct Judged {
    pub passes: bool,
    pub criteria: Vec<Criterion>,
    pub days: Vec<(DayData, DayMetrics)>,
}

/// The gate over days 1..=through from the store.
pub fn judge(
    store: &Store,
    cfg: &Config,
    through: u32,
    attestations: &toml::Table,
    prom: &super::PromDays,
    measured: &Measured,
) -> Result<Judged> {
    let growth = cfg.memory_growth_threshold();
    super::digest::prefetch(store, 1..=through);
    let mut days = Vec::new();
    for d in 1..=through {
        let data = super::gather(store, cfg, d)?;
        if data.digest.samples == 0 && data.load_runs.is_empty() && data.e2e.is_none() {
            continue;
        }
        let mut m = super::metrics(&data, growth);
        if let Some(v) = prom.get(&d) {
            super::apply_prometheus(&mut m, v);
        }
        days.push((data, m));
    }
    let deployed: Vec<String> = {
        let mut v: Vec<String> = store
            .deployments()?
            .into_iter()
            .filter(|d| d.kind == DeploymentKind::Deploy && d.status != DeploymentStatus::Failed)
            .map(|d| d.image_ref)
            .collect();
        v.dedup();
        v
    };
    // Evidence about the image under test only: the validations of another image (an older
    // build, the baseline) say nothing about the one being promoted.
    let under_test = super::image_under_test(store, cfg)?;
    let (score, cve) = match &under_test {
        None => (None, None),
        Some((image_ref, image_id)) => {
            super::security_evidence(store, image_ref, image_id.as_deref())?
        }
    };
    let drills = store.events(Some(EventKind::Drill))?;
    let sbom_images = store.sbom_images()?;
    let input = Input {
        through_day: through,
        days: &days,
        drills: &drills,
        score,
        cve: cve.as_ref(),
        deployed_images: &deployed,
        sbom_images: &sbom_images,
        attestations,
        measured,
    };
    let criteria = evaluate(&input, cfg);
    Ok(Judged {
        passes: criteria.iter().all(|c| c.met),
        criteria,
        days,
    })
}

/// `gate`'s outcome: exit 0 only when every criterion is met; 3 otherwise, saying what is missing.
#[derive(Debug, Serialize)]
pub struct Verdict {
    pub ok: bool,
    pub through_day: u32,
    pub criteria: Vec<Criterion>,
    pub failed: usize,
    /// The runbook's production image (`[image] name:production_tag`), what a pass promotes to.
    pub production_image: String,
}

/// The verdict over days 1..=through, with the attestation file (`--attestations`, else
/// `config/attestations.toml` when it exists).
pub async fn verdict(
    store: &Store,
    cfg: &Config,
    through: u32,
    attestations: Option<&std::path::Path>,
) -> Result<Verdict> {
    if through == 0 {
        return Err(failure(Code::Usage, "--through-day counts from 1"));
    }
    let attestations = read_attestations(attestations).map_err(|e| failure(Code::Usage, e))?;
    let prom = super::prometheus_days(store, cfg, 1..=through).await?;
    let measured = measure(store, cfg).await?;
    let j = judge(store, cfg, through, &attestations, &prom, &measured)?;
    Ok(Verdict {
        ok: j.passes,
        through_day: through,
        failed: j.criteria.iter().filter(|c| !c.met).count(),
        criteria: j.criteria,
        production_image: format!("{}:{}", cfg.image.name, cfg.image.production_tag),
    })
}

/// Tells the configured webhook the verdict; a failure to send is logged, never fatal.
pub async fn notify(cfg: &crate::config::NotifyConfig, v: &Verdict) {
    let note = format!(
        "dhi-stage gate: {}",
        if v.ok { "promote" } else { "do not promote" }
    );
    let detail = serde_json::to_value(v).unwrap_or_default();
    if let Some(sent) = crate::notify::webhook(cfg, "gate", &note, &detail).await {
        if !sent.ok {
            tracing::warn!("notification failed: {}", sent.detail);
        }
    }
}

impl Render for Verdict {
    fn code(&self) -> Code {
        Code::of_check(self.ok)
    }

    fn text(&self) -> String {
        let mut text = format!("Production promotion gate, days 1-{}:\n", self.through_day);
        let mut group = "";
        for c in &self.criteria {
            if c.group != group {
                group = c.group;
                text += &format!("\n{group} Criteria\n");
            }
            text += &format!(
                "  [{}] {}{}\n      {}\n",
                if c.met { "x" } else { " " },
                c.criterion,
                if c.attested { " (attested)" } else { "" },
                c.evidence
            );
        }
        text + &format!(
            "\nverdict: {}",
            if self.ok {
                format!(
                    "PROMOTE: all criteria met; build and tag the production image {}",
                    self.production_image
                )
            } else {
                format!(
                    "DO NOT PROMOTE: {} of {} criteria not met",
                    self.failed,
                    self.criteria.len()
                )
            }
        )
    }
}

/// The attestation file: `path` when given (it must exist), else
/// `config/attestations.toml` when it exists, else none.
pub fn read_attestations(path: Option<&std::path::Path>) -> Result<toml::Table, String> {
    let p = path
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| std::path::PathBuf::from("config/attestations.toml"));
    match std::fs::read_to_string(&p) {
        Ok(t) => t.parse().map_err(|e| format!("{}: {e}", p.display())),
        Err(_) if path.is_none() => Ok(toml::Table::new()),
        Err(e) => Err(format!("cannot read {}: {e}", p.display())),
    }
}

pub fn evaluate(i: &Input<'_>, cfg: &Config) -> Vec<Criterion> {
    let p = &cfg.promotion;
    let n = i.through_day;
    let mut out = Vec::new();
    let (ok, ev) = every_day(i.days, n, |d, m| match m.health_success_rate_pct {
        None => Err("no health samples".into()),
        Some(r) if r >= p.health_check_success_rate_pct => Ok(()),
        Some(r) => Err(format!(
            "{r:.2}% ({} failed probes)",
            d.digest.samples - d.digest.healthy
        )),
    });
    out.push(c(
        "Stability",
        "Health check success rate: 100% (zero failures in 7 days)",
        ok,
        ev,
    ));
    let (ok, ev) = every_day(i.days, n, |_, m| match m.error_rate_pct {
        None => Err(m
            .metrics_error
            .clone()
            .unwrap_or_else(|| "no requests measured".into())),
        Some(e) if e < p.error_rate_pct => Ok(()),
        Some(e) => Err(format!("{e:.4}%")),
    });
    out.push(c(
        "Stability",
        "Error rate: < 0.01% (sustained for 7 days)",
        ok,
        ev,
    ));
    for (label, limit, pick) in [
        (
            "P95 latency: < 100ms (all daily tests)",
            p.p95_latency,
            (|m: &DayMetrics| m.p95_ms_load) as fn(&DayMetrics) -> Option<f64>,
        ),
        (
            "P99 latency: < 200ms (all daily tests)",
            p.p99_latency,
            |m: &DayMetrics| m.p99_ms_load,
        ),
    ] {
        let lim = limit.as_secs_f64() * 1000.0;
        let (ok, ev) = every_day(i.days, n, |_, m| match pick(m) {
            None => Err("no load run".into()),
            Some(v) if v < lim => Ok(()),
            Some(v) => Err(format!("{v:.1}ms")),
        });
        out.push(c("Stability", label, ok, ev));
    }
    let (ok, ev) = every_day(i.days, n, |_, m| {
        match (m.memory_min_mib, m.memory_max_mib) {
            (Some(lo), Some(hi))
                if lo >= p.memory_min_mib
                    && hi <= p.memory_max_mib
                    && m.memory_trend.as_deref() != Some("increasing") =>
            {
                Ok(())
            }
            (Some(lo), Some(hi)) => Err(format!(
                "{lo:.1}-{hi:.1} MiB, {}",
                m.memory_trend.as_deref().unwrap_or("?")
            )),
            _ => Err("no memory readings".into()),
        }
    });
    out.push(c(
        "Stability",
        "Memory stable: 50-80MB range (MiB as docker stats shows), no leaks",
        ok,
        ev,
    ));
    let (ok, ev) = every_day(i.days, n, |_, m| match m.restarts {
        None => Err("no container readings".into()),
        Some(r) if r <= p.max_restarts as i64 => Ok(()),
        Some(r) => Err(format!("{r} restart(s)")),
    });
    out.push(c(
        "Stability",
        "Zero crashes: no container restarts",
        ok,
        ev,
    ));
    let rollbacks: usize = i
        .days
        .iter()
        .filter(|(d, _)| d.day <= n)
        .map(|(d, _)| d.rollbacks.len())
        .sum();
    out.push(c(
        "Stability",
        "Zero rollbacks: no rollback events triggered",
        rollbacks as u32 <= p.max_rollbacks,
        format!("{rollbacks} rollback event(s) in days 1-{n} (drills excluded)"),
    ));

    match i.cve {
        None => out.push(c(
            "Security",
            "DHI CVE count: 0 HIGH/CRITICAL CVEs",
            false,
            "no CVE scan of the image under test recorded (dhi-stage validate --osv-db/--scan-report)".into(),
        )),
        Some(v) => match (
            v["after_vex"]["critical"].as_u64(),
            v["after_vex"]["high"].as_u64(),
        ) {
            // A scan that recorded no counts is not a scan that found nothing.
            (Some(cr), Some(hi)) => out.push(c(
                "Security",
                "DHI CVE count: 0 HIGH/CRITICAL CVEs",
                (cr + hi) as u32 <= p.max_high_critical_cves,
                format!("{} HIGH/CRITICAL after VEX (latest scan of the image under test)", cr + hi),
            )),
            _ => out.push(c(
                "Security",
                "DHI CVE count: 0 HIGH/CRITICAL CVEs",
                false,
                "the latest CVE scan of the image under test recorded no HIGH/CRITICAL counts (after_vex.high/critical missing): re-run validate".into(),
            )),
        },
    }
    out.push(match i.score {
        None => c(
            "Security",
            "Security score: 12/12 maintained",
            false,
            "no validate run recorded".into(),
        ),
        Some((s, of)) => c(
            "Security",
            "Security score: 12/12 maintained",
            s >= p.security_score,
            format!("{s}/{of} (latest validate)"),
        ),
    });
    let vex_docs = i
        .cve
        .and_then(|v| v["vex_documents"].as_array())
        .map(|a| a.len())
        .unwrap_or(0);
    let vex_warn = i
        .cve
        .and_then(|v| v["warnings"].as_array())
        .map(|a| a.len())
        .unwrap_or(0);
    out.push(c(
        "Security",
        "VEX attestations: Available and verified",
        vex_docs > 0 && vex_warn == 0,
        format!("{vex_docs} OpenVEX document(s) applied, {vex_warn} statement(s) rejected"),
    ));
    let missing: Vec<&String> = i
        .deployed_images
        .iter()
        .filter(|img| !i.sbom_images.contains(img))
        .collect();
    out.push(c(
        "Security",
        "SBOM: Generated and uploaded for all builds",
        !i.deployed_images.is_empty() && missing.is_empty(),
        if i.deployed_images.is_empty() {
            "no deployments recorded".into()
        } else if missing.is_empty() {
            format!(
                "{} deployed image(s), all with an SBOM",
                i.deployed_images.len()
            )
        } else {
            format!("no SBOM for {missing:?}")
        },
    ));

    let (ok, ev) = every_day(i.days, n, |d, _| match d.e2e {
        None => Err("no E2E results".into()),
        Some((passed, _)) if passed >= d.e2e_expected => Ok(()),
        Some((passed, _)) => Err(format!("{passed}/{}", d.e2e_expected)),
    });
    out.push(c("Testing", "E2E tests: 146/146 passing daily", ok, ev));
    for (label, profile) in [
        ("K6 smoke tests: 100% success rate", "smoke"),
        ("K6 load tests: All SLA thresholds met", "load"),
    ] {
        let (ok, ev) = every_day(i.days, n, |d, _| {
            let runs: Vec<_> = d
                .load_runs
                .iter()
                .filter(|r| r.profile == profile)
                .collect();
            if runs.is_empty() {
                Err(format!("no {profile} run"))
            } else if runs.iter().all(|r| r.passed) {
                Ok(())
            } else {
                Err(format!(
                    "{} of {} {profile} run(s) failed",
                    runs.iter().filter(|r| !r.passed).count(),
                    runs.len()
                ))
            }
        });
        out.push(c("Testing", label, ok, ev));
    }
    let drill = i.drills.iter().rev().find(|e| e.drill().passed);
    out.push(c(
        "Operational",
        "Rollback tested: Successful rollback drill completed",
        drill.is_some(),
        drill
            .map(|e| {
                format!(
                    "drill at {}: rolled back in {}ms",
                    e.at.format("%Y-%m-%d %H:%M"),
                    ms(e.drill().rollback_decision_to_healthy_ms)
                )
            })
            .unwrap_or("no successful `dhi-stage rollback --drill` recorded".into()),
    ));
    for (group, key, label) in ATTESTED {
        if let Some(m) = i.measured.get(key) {
            out.push(c(group, label, m.met, m.evidence.clone()));
            continue;
        }
        let entry = i.attestations.get(*key).and_then(|v| v.as_table());
        let by = entry
            .and_then(|t| t.get("attested_by"))
            .and_then(|v| v.as_str())
            .filter(|s| !s.trim().is_empty());
        let date = entry
            .and_then(|t| t.get("date"))
            .and_then(|v| v.as_str())
            .unwrap_or("");
        out.push(Criterion {
            group,
            criterion: label.to_string(),
            met: by.is_some(),
            evidence: match by {
                Some(b) => format!("attested by {b} {date} (not measured)"),
                None => format!("not attested: set [{key}] attested_by in the attestation file"),
            },
            attested: true,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::day;
    use crate::report::{metrics, DayData};

    fn attest() -> toml::Table {
        ATTESTED
            .iter()
            .map(|(_, k, _)| {
                (
                    k.to_string(),
                    toml::Value::Table(toml::toml! { attested_by = "Dana (ops lead)"
                    date = "2026-11-20" }),
                )
            })
            .collect()
    }

    fn run(
        days: Vec<DayData>,
        drills: &[Event],
        att: &toml::Table,
        images: (&[String], &[String]),
    ) -> Vec<Criterion> {
        let cfg = crate::config::parse(crate::config::DEFAULT_TOML, "t").unwrap();
        let with_m: Vec<_> = days
            .into_iter()
            .map(|mut d| {
                d.refresh();
                let m = metrics(&d, 0.1);
                (d, m)
            })
            .collect();
        let first = &with_m[0].0;
        let input = Input {
            through_day: 7,
            days: &with_m,
            drills,
            score: first.score,
            cve: first.cve.as_ref(),
            deployed_images: images.0,
            sbom_images: images.1,
            attestations: att,
            measured: &Measured::new(),
        };
        evaluate(&input, &cfg)
    }

    fn drill() -> Vec<Event> {
        vec![Event {
            id: 1,
            at: chrono::Utc::now(),
            kind: EventKind::Drill,
            deployment_id: None,
            detail: serde_json::json!({"passed": true, "rollback_decision_to_healthy_ms": 480}),
        }]
    }

    fn good_days() -> Vec<DayData> {
        (1..=7)
            .map(|n| {
                let mut d = day(n);
                // 50-80 MB band: the synthetic day sits at 60 MB.
                d.samples
                    .iter_mut()
                    .for_each(|s| s.memory_bytes = Some(60_000_000));
                d
            })
            .collect()
    }

    fn failing(c: &[Criterion]) -> Vec<String> {
        c.iter()
            .filter(|c| !c.met)
            .map(|c| c.criterion.clone())
            .collect()
    }

    #[test]
    fn all_criteria_met() {
        let img = vec!["img:1".to_string()];
        let c = run(good_days(), &drill(), &attest(), (&img, &img));
        assert_eq!(failing(&c), Vec::<String>::new());
        assert_eq!(c.len(), 7 + 4 + 4 + 5);
        assert!(c
            .iter()
            .filter(|c| c.attested)
            .all(|c| c.evidence.contains("attested by Dana")));
    }

    #[test]
    fn each_criterion_can_fail_alone() {
        let img = vec!["img:1".to_string()];
        type Breaker = Box<dyn Fn(&mut Vec<DayData>)>;
        let cases: Vec<(&str, Breaker)> = vec![
            (
                "Health check success rate",
                Box::new(|d| d[3].samples[5].health_ok = false),
            ),
            (
                "Error rate",
                Box::new(|d| {
                    d[2].samples
                        .iter_mut()
                        .enumerate()
                        .for_each(|(i, s)| s.metrics.as_mut().unwrap().requests_5xx = i as f64)
                }),
            ),
            (
                "P95 latency",
                Box::new(|d| d[6].load_runs[1].p95_ms = Some(101.0)),
            ),
            (
                "P99 latency",
                Box::new(|d| d[0].load_runs[1].p99_ms = Some(250.0)),
            ),
            (
                "Memory stable",
                Box::new(|d| {
                    d[1].samples
                        .iter_mut()
                        .for_each(|s| s.memory_bytes = Some(90_000_000))
                }),
            ),
            (
                "Zero crashes",
                Box::new(|d| d[4].samples[40].restart_count = Some(1)),
            ),
            (
                "Zero rollbacks",
                Box::new(|d| {
                    d[5].rollbacks.push(Event {
                        id: 9,
                        at: chrono::Utc::now(),
                        kind: EventKind::Rollback,
                        deployment_id: None,
                        detail: serde_json::json!({}),
                    })
                }),
            ),
            (
                "DHI CVE count",
                Box::new(|d| d[0].cve.as_mut().unwrap()["after_vex"]["high"] = 1.into()),
            ),
            ("Security score", Box::new(|d| d[0].score = Some((11, 12)))),
            (
                "VEX attestations",
                Box::new(|d| d[0].cve.as_mut().unwrap()["vex_documents"] = serde_json::json!([])),
            ),
            ("E2E tests", Box::new(|d| d[3].e2e = Some((145, 146)))),
            (
                "K6 smoke tests",
                Box::new(|d| d[2].load_runs[0].passed = false),
            ),
            (
                "K6 load tests",
                Box::new(|d| d[2].load_runs[1].passed = false),
            ),
        ];
        for (name, breaker) in cases {
            let mut days = good_days();
            breaker(&mut days);
            let f = failing(&run(days, &drill(), &attest(), (&img, &img)));
            assert_eq!(f.len(), 1, "{name}: {f:?}");
            assert!(f[0].starts_with(name), "{name}: {f:?}");
        }
        // Period-wide items.
        let f = failing(&run(good_days(), &[], &attest(), (&img, &img)));
        assert_eq!(
            f,
            vec!["Rollback tested: Successful rollback drill completed"]
        );
        let f = failing(&run(good_days(), &drill(), &attest(), (&img, &[])));
        assert_eq!(f, vec!["SBOM: Generated and uploaded for all builds"]);
        let mut att = attest();
        att.remove("team_trained");
        let f = failing(&run(good_days(), &drill(), &att, (&img, &img)));
        assert_eq!(
            f,
            vec!["Team trained: ops team familiar with DHI procedures"]
        );
    }

    #[test]
    fn a_missing_day_fails_saying_so() {
        let img = vec!["img:1".to_string()];
        let mut days = good_days();
        days.remove(4);
        let c = run(days, &drill(), &attest(), (&img, &img));
        let health = c
            .iter()
            .find(|c| c.criterion.starts_with("Health"))
            .unwrap();
        assert!(
            !health.met && health.evidence.contains("day 5: no data"),
            "{}",
            health.evidence
        );
    }
}
