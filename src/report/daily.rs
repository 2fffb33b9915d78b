//! The runbook's daily report (Day N): imports the day's E2E and k6 results, gathers the
//! day's samples and events into figures, recommends, and writes markdown (with SVG charts),
//! HTML or JSON; the week page follows every daily report.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::json;

use super::week::{self, Week};
use super::{DayData, DayMetrics, Recommendation};
use crate::config::Config;
use crate::exit::{failure, Code};
use crate::output::Render;
use crate::store::Store;

pub struct Request {
    /// The day to report [default: the latest day with samples].
    pub day: Option<u32>,
    pub out: Option<PathBuf>,
    pub e2e_junit: Option<PathBuf>,
    /// `smoke=FILE`, `load=FILE` or `FILE` (load).
    pub k6_summary: Vec<String>,
    /// md, html or json.
    pub format: String,
    pub signed_by: Option<String>,
    pub attestations: Option<PathBuf>,
}

/// `report --day N`'s outcome: exit 3 when the recommendation is to roll back or investigate.
#[derive(Debug, Serialize)]
pub struct Daily {
    pub day: u32,
    pub data: DayData,
    pub metrics: DayMetrics,
    pub recommendation: Recommendation,
    pub reasons: Vec<String>,
    pub markdown: String,
    pub written_to: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub week_page: Option<PathBuf>,
    #[serde(skip)]
    pub week_page_error: Option<String>,
}

pub async fn daily(cfg: &Config, store: &Store, r: &Request) -> Result<Daily> {
    let day = match r.day {
        Some(0) => return Err(failure(Code::Usage, "--day counts from 1")),
        Some(d) => d,
        None => store.latest_day()?.ok_or_else(|| {
            failure(
                Code::Usage,
                "no monitoring samples recorded yet: run `dhi-stage monitor` first, or pass --day",
            )
        })?,
    };
    if let Some(path) = &r.e2e_junit {
        let text = std::fs::read_to_string(path)
            .map_err(|e| failure(Code::Usage, format!("cannot read {}: {e}", path.display())))?;
        let (passed, failed, skipped) = super::junit::junit_counts(&text)
            .map_err(|e| failure(Code::Usage, format!("{}: {e}", path.display())))?;
        let total = passed + failed;
        store.record_test_result(Some(day), "e2e", failed == 0 && passed >= cfg.promotion.e2e_expected, &json!({"passed": passed, "failed": failed, "skipped": skipped, "total": total, "source": path}))?;
    }
    for spec in &r.k6_summary {
        let (profile, path) = match spec.split_once('=') {
            Some((p, f)) if p == "smoke" || p == "load" => (p.to_string(), PathBuf::from(f)),
            _ => ("load".to_string(), PathBuf::from(spec)),
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| failure(Code::Usage, format!("cannot read {}: {e}", path.display())))?;
        let r = crate::load::import_k6(&text, &profile, &cfg.load.thresholds)
            .map_err(|e| failure(Code::Usage, format!("{}: {e:#}", path.display())))?;
        store.record_test_result(
            Some(day),
            &format!("load:{profile}"),
            r.passed,
            &serde_json::to_value(&r)?,
        )?;
    }

    // Incidents whose restored service's first minutes are now in are written complete
    // before the day's report links them.
    match super::incident::complete_pending(store, cfg, chrono::Utc::now()) {
        Ok(done) => done
            .iter()
            .for_each(|p| tracing::info!("incident report completed: {}", p.display())),
        Err(e) => tracing::warn!("an incident report was not completed: {e:#}"),
    }
    let mut data = super::gather(store, cfg, day)?;
    let out = r.out.clone().unwrap_or_else(|| cfg.report.dir.clone());
    if out != cfg.report.dir {
        // The day's report is written elsewhere: its links name the incidents where they are.
        for (_, href) in &mut data.incidents {
            *href = cfg.report.dir.join(&*href).display().to_string();
        }
    }
    let growth = cfg.memory_growth_threshold();
    let mut m = super::metrics(&data, growth);
    m.metrics_convention = super::day_convention(store, day);
    // With Prometheus as the source, the gate and this day read the same figures from it.
    // The gate below reads days 1..=day once the period is over; the day alone before.
    let first = if day >= cfg.monitoring.period_days {
        1
    } else {
        day
    };
    let prom = super::prometheus_days(store, cfg, first..=day).await?;
    if let Some(v) = prom.get(&day) {
        super::apply_prometheus(&mut m, v);
    }
    // The operational criteria measured once, for the gate and the week page alike.
    let measured = super::gate::measure(store, cfg).await?;
    let gate_passes = if day >= cfg.monitoring.period_days {
        let attestations =
            super::gate::read_attestations(None).map_err(|e| failure(Code::Usage, e))?;
        super::gate::judge(store, cfg, day, &attestations, &prom, &measured)?.passes
    } else {
        false
    };
    let (rec, reasons) = super::recommend(&data, &m, cfg, gate_passes);
    std::fs::create_dir_all(&out)
        .with_context(|| format!("cannot create report dir {}", out.display()))?;
    let charts = super::charts::day_charts(&data, cfg);
    let signed = r
        .signed_by
        .clone()
        .unwrap_or_else(|| cfg.report.signed_by.clone());
    let today = chrono::Utc::now().date_naive();
    let links: Vec<(&str, &str)> = charts
        .iter()
        .map(|(f, t, _)| (t.as_str(), f.as_str()))
        .collect();
    let md = super::markdown(&data, &m, rec, &reasons, &signed, today, &links);
    let doc = json!({"day": day, "data": data, "metrics": m, "recommendation": rec, "reasons": reasons, "markdown": md});
    let path = match r.format.as_str() {
        "json" => {
            let p = out.join(format!("day-{day}.json"));
            crate::files::write_atomic(&p, &serde_json::to_string_pretty(&doc)?)?;
            p
        }
        "html" => {
            let p = out.join(format!("day-{day}.html"));
            crate::files::write_atomic(&p, &super::html::html(&md, &charts))?;
            p
        }
        _ => {
            for (file, _, svg) in &charts {
                crate::files::write_atomic(&out.join(file), svg)?;
            }
            let p = out.join(format!("day-{day}.md"));
            crate::files::write_atomic(&p, &md)?;
            p
        }
    };
    // The week page follows every daily report; a failure to write it is said, not fatal.
    let week_page = write_week(store, cfg, &out, r.attestations.as_deref(), &measured)
        .map(|(_, p)| p)
        .map_err(|e| format!("{e:#}"));
    Ok(Daily {
        day,
        data,
        metrics: m,
        recommendation: rec,
        reasons,
        markdown: md,
        written_to: path,
        week_page: week_page.as_ref().ok().cloned(),
        week_page_error: week_page.err(),
    })
}

/// Writes `<out>/index.html`, the week at a glance.
fn write_week(
    store: &Store,
    cfg: &Config,
    out: &Path,
    attestations: Option<&Path>,
    measured: &super::gate::Measured,
) -> Result<(Week, PathBuf)> {
    let attestations =
        super::gate::read_attestations(attestations).map_err(|e| failure(Code::Usage, e))?;
    week::write_page(store, cfg, out, &attestations, measured)
}

impl Render for Daily {
    fn code(&self) -> Code {
        match self.recommendation {
            Recommendation::RollbackRequired | Recommendation::Investigate => Code::CheckFailed,
            _ => Code::Ok,
        }
    }

    fn text(&self) -> String {
        let mut text = format!(
            "{}\nreport written to {}",
            self.markdown,
            self.written_to.display()
        );
        match (&self.week_page, &self.week_page_error) {
            (Some(p), _) => text += &format!("\nweek at a glance: {}", p.display()),
            (None, Some(e)) => text += &format!("\nweek at a glance NOT written: {e}"),
            (None, None) => {}
        }
        text
    }
}

/// `report --week`'s outcome: the week page's state, and where it was written. Exit 3 when
/// the week is blocked or rolled back.
#[derive(Debug, Serialize)]
pub struct WeekPage {
    #[serde(flatten)]
    pub week: Week,
    pub written_to: PathBuf,
}

/// The week page with the operational criteria measured (`gate::measure`), as the gate
/// judges them.
pub async fn week_page(
    cfg: &Config,
    store: &Store,
    out: Option<&Path>,
    attestations: Option<&Path>,
) -> Result<WeekPage> {
    let out = out.unwrap_or(&cfg.report.dir);
    let measured = super::gate::measure(store, cfg).await?;
    let (week, written_to) = write_week(store, cfg, out, attestations, &measured)?;
    Ok(WeekPage { week, written_to })
}

impl Render for WeekPage {
    fn code(&self) -> Code {
        match self.week.state {
            week::State::Blocked | week::State::RolledBack => Code::CheckFailed,
            _ => Code::Ok,
        }
    }

    fn text(&self) -> String {
        let w = &self.week;
        format!(
            "week at a glance: day {} of {}, {} ({})\nwritten to {}",
            w.day,
            w.period_days,
            w.state.words(),
            w.state_reason,
            self.written_to.display()
        )
    }
}
