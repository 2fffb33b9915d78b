//! The CVE job: findings from an offline OSV database or imported Trivy/Grype reports,
//! VEX statements applied, counted by severity against `[security] fail_on`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;
use serde_json::Value;

use crate::exit::{failure, Code};
use crate::security::cve::{self, Finding};
use crate::security::sbom::Component;

/// Where findings come from: an OSV directory, or scanner reports (origin, text).
pub enum Source {
    Osv(PathBuf),
    Reports(Vec<(String, String)>),
}

#[derive(Debug, Serialize)]
pub struct CveSummary {
    pub before: BTreeMap<String, usize>,
    pub after_vex: BTreeMap<String, usize>,
    pub suppressed: usize,
    pub vex_documents: Vec<PathBuf>,
    pub warnings: Vec<String>,
    pub findings: Vec<Finding>,
    /// Unsuppressed findings of the severities that fail validation.
    #[serde(skip)]
    pub blocking: usize,
}

pub fn scan(
    source: &Source,
    comps: &[Component],
    vex: &[(String, Value)],
    vex_paths: &[PathBuf],
    image_ids: &[String],
    fail_on: &[String],
) -> Result<CveSummary> {
    let usage = |e: anyhow::Error| failure(Code::Usage, format!("{e:#}"));
    let mut findings = match source {
        Source::Osv(dir) => cve::match_osv(&cve::load_osv(dir).map_err(usage)?, comps),
        Source::Reports(reports) => {
            let mut all = Vec::new();
            for (origin, text) in reports {
                all.extend(cve::import_report(text, origin).map_err(usage)?);
            }
            all
        }
    };
    let before = cve::counts(findings.iter());
    let (suppressed, warnings) = cve::apply_vex(&mut findings, vex, image_ids).map_err(usage)?;
    let after_vex = cve::counts(findings.iter().filter(|f| f.suppressed_by.is_none()));
    let blocking = fail_on
        .iter()
        .map(|s| after_vex.get(&s.to_lowercase()).copied().unwrap_or(0))
        .sum();
    Ok(CveSummary {
        before,
        after_vex,
        suppressed,
        vex_documents: vex_paths.to_vec(),
        warnings,
        findings,
        blocking,
    })
}

impl CveSummary {
    pub fn text(&self) -> String {
        let line = |m: &BTreeMap<String, usize>| {
            let n = |k: &str| m.get(k).copied().unwrap_or(0);
            format!(
                "CRITICAL {} HIGH {} MEDIUM {} LOW {} UNKNOWN {}",
                n("critical"),
                n("high"),
                n("medium"),
                n("low"),
                n("unknown")
            )
        };
        let mut t = format!(
            "CVEs before VEX: {}\nCVEs after VEX:  {}\nVEX suppressed: {}\n",
            line(&self.before),
            line(&self.after_vex),
            self.suppressed
        );
        for w in &self.warnings {
            t += &format!("  warning: {w}\n");
        }
        t
    }
}
