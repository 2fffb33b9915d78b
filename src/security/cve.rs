//! CVE findings, offline: SBOM components matched against an OSV database directory (the
//! per-ecosystem JSON files OSV publishes) with each ecosystem's version ordering, or a Trivy
//! or Grype JSON report imported; then OpenVEX v0.2.0 statements applied. `not_affected` (with
//! a justification or impact statement) and `fixed` suppress; `affected` and
//! `under_investigation` do not.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use serde::Serialize;
use serde_json::Value;

use super::sbom::Component;
use super::version::Ecosystem;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Finding {
    pub id: String,
    pub aliases: Vec<String>,
    pub package: String,
    pub version: String,
    pub purl: Option<String>,
    pub severity: String,
    pub fixed_in: Option<String>,
    /// Set when a VEX statement suppressed it.
    pub suppressed_by: Option<String>,
}

pub const SEVERITIES: [&str; 5] = ["CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN"];

pub fn counts<'a>(findings: impl Iterator<Item = &'a Finding>) -> BTreeMap<String, usize> {
    let mut m: BTreeMap<String, usize> = SEVERITIES.iter().map(|s| (s.to_lowercase(), 0)).collect();
    for f in findings {
        *m.entry(f.severity.to_lowercase()).or_default() += 1;
    }
    m
}

fn norm_severity(s: &str) -> String {
    match s.to_ascii_uppercase().as_str() {
        "CRITICAL" => "CRITICAL",
        "HIGH" | "IMPORTANT" => "HIGH",
        "MEDIUM" | "MODERATE" => "MEDIUM",
        "LOW" | "NEGLIGIBLE" | "MINOR" => "LOW",
        _ => "UNKNOWN",
    }
    .to_string()
}

// ---- OSV ----

/// Loads every `*.json` under `dir` (recursively) that looks like an OSV record.
pub fn load_osv(dir: &Path) -> Result<Vec<Value>> {
    if !dir.is_dir() {
        return Err(anyhow!("OSV database {} is not a directory", dir.display()));
    }
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("cannot read {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "json") {
                let text = std::fs::read_to_string(&p)
                    .with_context(|| format!("cannot read {}", p.display()))?;
                let v: Value = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not valid JSON", p.display()))?;
                if v.get("id").is_some() && v.get("affected").is_some() {
                    out.push(v);
                }
            }
        }
    }
    Ok(out)
}

fn osv_severity(record: &Value, affected: &Value) -> String {
    let named = affected
        .pointer("/ecosystem_specific/severity")
        .or_else(|| affected.pointer("/database_specific/severity"))
        .or_else(|| record.pointer("/database_specific/severity"))
        .and_then(Value::as_str);
    if let Some(s) = named {
        return norm_severity(s);
    }
    let vector = record["severity"].as_array().and_then(|a| {
        a.iter()
            .find(|s| s["type"].as_str().is_some_and(|t| t.starts_with("CVSS_V3")))
            .and_then(|s| s["score"].as_str())
    });
    match vector.and_then(cvss3_base) {
        Some(score) if score >= 9.0 => "CRITICAL".into(),
        Some(score) if score >= 7.0 => "HIGH".into(),
        Some(score) if score >= 4.0 => "MEDIUM".into(),
        Some(score) if score > 0.0 => "LOW".into(),
        _ => "UNKNOWN".into(),
    }
}

/// CVSS v3.x base score from a vector string (FIRST's specification formulas).
pub fn cvss3_base(vector: &str) -> Option<f64> {
    let m: BTreeMap<&str, &str> = vector
        .split('/')
        .filter_map(|p| p.split_once(':'))
        .collect();
    let av = match *m.get("AV")? {
        "N" => 0.85,
        "A" => 0.62,
        "L" => 0.55,
        "P" => 0.2,
        _ => return None,
    };
    let ac = match *m.get("AC")? {
        "L" => 0.77,
        "H" => 0.44,
        _ => return None,
    };
    let changed = *m.get("S")? == "C";
    let pr = match (*m.get("PR")?, changed) {
        ("N", _) => 0.85,
        ("L", false) => 0.62,
        ("L", true) => 0.68,
        ("H", false) => 0.27,
        ("H", true) => 0.5,
        _ => return None,
    };
    let ui = match *m.get("UI")? {
        "N" => 0.85,
        "R" => 0.62,
        _ => return None,
    };
    let cia = |k: &str| match m.get(k).copied() {
        Some("H") => Some(0.56_f64),
        Some("L") => Some(0.22),
        Some("N") => Some(0.0),
        _ => None,
    };
    let iss: f64 = 1.0 - (1.0 - cia("C")?) * (1.0 - cia("I")?) * (1.0 - cia("A")?);
    let impact = if changed {
        7.52 * (iss - 0.029) - 3.25 * (iss - 0.02).powi(15)
    } else {
        6.42 * iss
    };
    let exploit = 8.22 * av * ac * pr * ui;
    if impact <= 0.0 {
        return Some(0.0);
    }
    let raw = if changed {
        (1.08 * (impact + exploit)).min(10.0)
    } else {
        (impact + exploit).min(10.0)
    };
    Some((raw * 10.0).ceil() / 10.0)
}

/// Whether `version` falls in one OSV range's events (introduced / fixed / last_affected).
fn in_range(eco: Ecosystem, version: &str, events: &[Value]) -> (bool, Option<String>) {
    let mut affected = false;
    let mut fixed_in = None;
    // Events are evaluated in order of their versions, as OSV specifies.
    let mut evs: Vec<(&str, &str)> = events
        .iter()
        .filter_map(|e| {
            e.as_object()?
                .iter()
                .next()
                .and_then(|(k, v)| Some((k.as_str(), v.as_str()?)))
        })
        .collect();
    // "0" (the beginning of time) first, then by the ecosystem's order. An insertion sort:
    // a feed's odd version strings must not be able to make the standard sort panic (it may
    // on Rust >= 1.81 when a comparison is not a total order).
    let key_cmp = |a: &(&str, &str), b: &(&str, &str)| {
        (a.1 != "0").cmp(&(b.1 != "0")).then_with(|| {
            if a.1 == "0" {
                std::cmp::Ordering::Equal
            } else {
                eco.compare(a.1, b.1)
            }
        })
    };
    for i in 1..evs.len() {
        let mut j = i;
        while j > 0 && key_cmp(&evs[j - 1], &evs[j]) == std::cmp::Ordering::Greater {
            evs.swap(j - 1, j);
            j -= 1;
        }
    }
    for (kind, v) in evs {
        match kind {
            "introduced" if v == "0" || eco.compare(version, v).is_ge() => affected = true,
            "fixed" if eco.compare(version, v).is_ge() => affected = false,
            "fixed" if affected && fixed_in.is_none() => fixed_in = Some(v.to_string()),
            "last_affected" if eco.compare(version, v).is_gt() => affected = false,
            _ => {}
        }
    }
    (affected, fixed_in)
}

pub fn match_osv(records: &[Value], comps: &[Component]) -> Vec<Finding> {
    let mut out = Vec::new();
    for c in comps {
        let Some(eco) = c.ecosystem() else { continue };
        for r in records {
            for a in r["affected"].as_array().into_iter().flatten() {
                let pkg = &a["package"];
                if pkg["name"].as_str() != Some(c.name.as_str())
                    || Ecosystem::from_osv(pkg["ecosystem"].as_str().unwrap_or("")) != Some(eco)
                {
                    continue;
                }
                let listed = a["versions"]
                    .as_array()
                    .is_some_and(|vs| vs.iter().any(|v| v.as_str() == Some(c.version.as_str())));
                let mut hit = listed;
                let mut fixed = None;
                for range in a["ranges"].as_array().into_iter().flatten() {
                    if range["type"].as_str() == Some("GIT") {
                        continue;
                    }
                    let (yes, f) = in_range(
                        eco,
                        &c.version,
                        range["events"].as_array().map(Vec::as_slice).unwrap_or(&[]),
                    );
                    hit |= yes;
                    fixed = fixed.or(f);
                }
                if hit {
                    out.push(Finding {
                        id: r["id"].as_str().unwrap_or("?").to_string(),
                        aliases: r["aliases"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(|x| x.as_str().map(str::to_string))
                                    .collect()
                            })
                            .unwrap_or_default(),
                        package: c.name.clone(),
                        version: c.version.clone(),
                        purl: Some(c.purl.clone()),
                        severity: osv_severity(r, a),
                        fixed_in: fixed,
                        suppressed_by: None,
                    });
                    break;
                }
            }
        }
    }
    out
}

// ---- scanner reports ----

/// A Trivy (`trivy image -f json`) or Grype (`grype -o json`) report.
pub fn import_report(text: &str, origin: &str) -> Result<Vec<Finding>> {
    let v: Value =
        serde_json::from_str(text).with_context(|| format!("{origin} is not valid JSON"))?;
    let mut out = Vec::new();
    if let Some(results) = v.get("Results").and_then(Value::as_array) {
        for r in results {
            for x in r["Vulnerabilities"].as_array().into_iter().flatten() {
                out.push(Finding {
                    id: x["VulnerabilityID"].as_str().unwrap_or("?").into(),
                    aliases: Vec::new(),
                    package: x["PkgName"].as_str().unwrap_or("?").into(),
                    version: x["InstalledVersion"].as_str().unwrap_or("").into(),
                    purl: x
                        .pointer("/PkgIdentifier/PURL")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    severity: norm_severity(x["Severity"].as_str().unwrap_or("")),
                    fixed_in: x["FixedVersion"]
                        .as_str()
                        .filter(|s| !s.is_empty())
                        .map(str::to_string),
                    suppressed_by: None,
                });
            }
        }
        return Ok(out);
    }
    if let Some(matches) = v.get("matches").and_then(Value::as_array) {
        for m in matches {
            let vuln = &m["vulnerability"];
            let related: Vec<String> = m["relatedVulnerabilities"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["id"].as_str().map(str::to_string))
                .collect();
            out.push(Finding {
                id: vuln["id"].as_str().unwrap_or("?").into(),
                aliases: related,
                package: m
                    .pointer("/artifact/name")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .into(),
                version: m
                    .pointer("/artifact/version")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .into(),
                purl: m
                    .pointer("/artifact/purl")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                severity: norm_severity(vuln["severity"].as_str().unwrap_or("")),
                fixed_in: vuln
                    .pointer("/fix/versions/0")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                suppressed_by: None,
            });
        }
        return Ok(out);
    }
    Err(anyhow!(
        "{origin} is neither a Trivy report (\"Results\") nor a Grype report (\"matches\")"
    ))
}

// ---- OpenVEX ----

/// The justifications OpenVEX v0.2.0 defines for `not_affected`.
const JUSTIFICATIONS: &[&str] = &[
    "component_not_present",
    "vulnerable_code_not_present",
    "vulnerable_code_not_in_execute_path",
    "vulnerable_code_cannot_be_controlled_by_adversary",
    "inline_mitigations_already_exist",
];

fn strip_purl(p: &str) -> &str {
    p.split(['?', '#']).next().unwrap_or(p)
}

/// Applies OpenVEX documents; returns how many findings were suppressed and warnings about
/// statements that could not count (e.g. not_affected without a justification).
pub fn apply_vex(
    findings: &mut [Finding],
    docs: &[(String, Value)],
    image_ids: &[String],
) -> Result<(usize, Vec<String>)> {
    let mut warnings = Vec::new();
    let mut suppressed = 0;
    for (origin, doc) in docs {
        let ctx = doc["@context"].as_str().unwrap_or("");
        if !ctx.starts_with("https://openvex.dev/ns") {
            return Err(anyhow!(
                "{origin} is not an OpenVEX document (@context {ctx:?})"
            ));
        }
        // Later statements about the same vulnerability and product override earlier ones.
        for (n, s) in doc["statements"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let vuln = s
                .pointer("/vulnerability/name")
                .or_else(|| s.get("vulnerability"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let status = s["status"].as_str().unwrap_or("");
            let mut product_ids: Vec<String> = Vec::new();
            for p in s["products"].as_array().into_iter().flatten() {
                if let Some(id) = p["@id"].as_str().or(p.as_str()) {
                    product_ids.push(id.to_string());
                }
                for sc in p["subcomponents"].as_array().into_iter().flatten() {
                    if let Some(id) = sc["@id"].as_str().or(sc.as_str()) {
                        product_ids.push(id.to_string());
                    }
                }
            }
            // OpenVEX v0.2.0: a statement names its products; one without would otherwise
            // suppress its vulnerability in every package of every image.
            if product_ids.is_empty() {
                warnings.push(format!(
                    "{origin} statement {}: {vuln} names no products; ignored",
                    n + 1
                ));
                continue;
            }
            let suppresses = match status {
                "fixed" => true,
                "not_affected" => {
                    let justified = s["justification"]
                        .as_str()
                        .is_some_and(|j| JUSTIFICATIONS.contains(&j));
                    let impact = s["impact_statement"]
                        .as_str()
                        .is_some_and(|t| !t.trim().is_empty());
                    if !(justified || impact) {
                        warnings.push(format!("{origin} statement {}: not_affected for {vuln} has no valid justification (one of {}) or impact_statement; ignored", n + 1, JUSTIFICATIONS.join(", ")));
                    }
                    justified || impact
                }
                _ => false,
            };
            for f in findings.iter_mut() {
                let names_it =
                    !vuln.is_empty() && (f.id == vuln || f.aliases.iter().any(|a| a == vuln));
                // Exact matches only: the package's purl (qualifiers aside), or the image by
                // its id/digest, or an OCI purl whose version is the image's digest.
                let product_matches = product_ids.iter().any(|p| {
                    f.purl
                        .as_deref()
                        .is_some_and(|fp| strip_purl(fp) == strip_purl(p))
                        || image_ids.iter().filter(|i| !i.is_empty()).any(|i| {
                            i == p
                                || (p.starts_with("pkg:oci/")
                                    && strip_purl(p)
                                        .rsplit_once('@')
                                        .map(|(_, v)| v.replace("%3A", ":").replace("%3a", ":"))
                                        == Some(i.clone()))
                        })
                });
                if !(names_it && product_matches) {
                    continue;
                }
                if suppresses && f.suppressed_by.is_none() {
                    f.suppressed_by = Some(format!(
                        "{origin}: {status}{}",
                        s["justification"]
                            .as_str()
                            .map(|j| format!(" ({j})"))
                            .unwrap_or_default()
                    ));
                    suppressed += 1;
                } else if !suppresses && f.suppressed_by.is_some() {
                    f.suppressed_by = None;
                    suppressed -= 1;
                }
            }
        }
    }
    Ok((suppressed, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn comp(eco: &str, name: &str, v: &str) -> Component {
        Component {
            ecosystem: eco.into(),
            name: name.into(),
            version: v.into(),
            purl: format!("pkg:{eco}/x/{name}@{v}"),
        }
    }

    #[test]
    fn osv_ranges_with_epochs_and_tildes() {
        let rec = json!({"id": "DSA-1", "aliases": ["CVE-2024-0001"], "affected": [{"package": {"ecosystem": "Debian:12", "name": "openssl"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1:3.0.11-1~deb12u2"}]}], "ecosystem_specific": {"severity": "high"}}]});
        let vulnerable = match_osv(
            std::slice::from_ref(&rec),
            &[comp("deb", "openssl", "1:3.0.11-1~deb12u1")],
        );
        assert_eq!(vulnerable.len(), 1);
        assert_eq!(
            (
                vulnerable[0].severity.as_str(),
                vulnerable[0].fixed_in.as_deref()
            ),
            ("HIGH", Some("1:3.0.11-1~deb12u2"))
        );
        assert!(match_osv(
            std::slice::from_ref(&rec),
            &[comp("deb", "openssl", "1:3.0.11-1~deb12u2")]
        )
        .is_empty());
        // No epoch sorts below any epoch-1 version.
        assert_eq!(
            match_osv(&[rec], &[comp("deb", "openssl", "3.0.99-1")]).len(),
            1
        );
    }

    #[test]
    fn cvss_vectors_score_like_first() {
        assert_eq!(
            cvss3_base("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"),
            Some(9.8)
        );
        assert_eq!(
            cvss3_base("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H"),
            Some(10.0)
        );
        assert_eq!(
            cvss3_base("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:N/A:N"),
            Some(5.5)
        );
    }

    #[test]
    fn vex_suppresses_not_affected_and_fixed_only() {
        let mk = |id: &str| Finding {
            id: id.into(),
            aliases: vec![],
            package: "p".into(),
            version: "1".into(),
            purl: Some("pkg:npm/p@1".into()),
            severity: "HIGH".into(),
            fixed_in: None,
            suppressed_by: None,
        };
        let mut f = vec![mk("CVE-1"), mk("CVE-2"), mk("CVE-3"), mk("CVE-4")];
        let doc = json!({"@context": "https://openvex.dev/ns/v0.2.0", "statements": [
            {"vulnerability": {"name": "CVE-1"}, "products": [{"@id": "pkg:npm/p@1"}], "status": "not_affected", "justification": "vulnerable_code_not_present"},
            {"vulnerability": {"name": "CVE-2"}, "products": [{"@id": "pkg:npm/p@1"}], "status": "affected"},
            {"vulnerability": {"name": "CVE-3"}, "products": [{"@id": "pkg:npm/p@1"}], "status": "under_investigation"},
            {"vulnerability": {"name": "CVE-4"}, "products": [{"@id": "pkg:npm/other@1"}], "status": "fixed"}]});
        let (n, _) = apply_vex(&mut f, &[("v.json".into(), doc)], &[]).unwrap();
        assert_eq!(n, 1);
        assert!(f[0].suppressed_by.is_some() && f[1..].iter().all(|x| x.suppressed_by.is_none()));
    }

    #[test]
    fn vex_cannot_be_fooled() {
        let mk = |id: &str| Finding {
            id: id.into(),
            aliases: vec![],
            package: "p".into(),
            version: "1".into(),
            purl: Some("pkg:npm/p@1".into()),
            severity: "CRITICAL".into(),
            fixed_in: None,
            suppressed_by: None,
        };
        let digest = "sha256:aaaa".to_string();
        let cases = [
            (
                "no products",
                json!({"vulnerability": {"name": "CVE-1"}, "status": "fixed"}),
                &[][..],
                false,
            ),
            (
                "justification null",
                json!({"vulnerability": {"name": "CVE-1"}, "products": [{"@id": "pkg:npm/p@1"}], "status": "not_affected", "justification": null}),
                &[][..],
                false,
            ),
            (
                "made-up justification",
                json!({"vulnerability": {"name": "CVE-1"}, "products": [{"@id": "pkg:npm/p@1"}], "status": "not_affected", "justification": "trust me"}),
                &[][..],
                false,
            ),
            (
                "empty image id",
                json!({"vulnerability": {"name": "CVE-1"}, "products": [{"@id": "pkg:oci/auth@sha256:bbbb"}], "status": "fixed"}),
                &[String::new()][..],
                false,
            ),
            (
                "another image",
                json!({"vulnerability": {"name": "CVE-1"}, "products": [{"@id": "pkg:oci/auth@sha256%3Abbbb"}], "status": "fixed"}),
                std::slice::from_ref(&digest),
                false,
            ),
            (
                "this image by digest",
                json!({"vulnerability": {"name": "CVE-1"}, "products": [{"@id": "pkg:oci/auth@sha256%3Aaaaa?repository_url=r"}], "status": "fixed"}),
                std::slice::from_ref(&digest),
                true,
            ),
            (
                "impact statement",
                json!({"vulnerability": {"name": "CVE-1"}, "products": [{"@id": "pkg:npm/p@1"}], "status": "not_affected", "impact_statement": "the parser is not reachable"}),
                &[][..],
                true,
            ),
        ];
        for (name, st, ids, suppressed) in cases {
            let mut f = vec![mk("CVE-1")];
            let doc = json!({"@context": "https://openvex.dev/ns/v0.2.0", "statements": [st]});
            let (n, warnings) = apply_vex(&mut f, &[("v.json".into(), doc)], ids).unwrap();
            assert_eq!(n == 1, suppressed, "{name}: {warnings:?}");
            if !suppressed && name != "another image" && name != "empty image id" {
                assert!(
                    !warnings.is_empty(),
                    "{name}: the ignored statement is reported"
                );
            }
        }
    }
}
