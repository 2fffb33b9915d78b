//! `report`: the runbook's daily Validation Summary Report for day N, with charts, written
//! atomically to `<out>/day-N.md` (or `.json`, or one self-contained `.html`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::json;

use super::Ctx;
use crate::cli::ReportArgs;
use crate::exit::{failure, Code};
use crate::output::Outcome;
use crate::report::{self, charts, week, Recommendation};

pub async fn run(ctx: Ctx, a: ReportArgs) -> Result<Outcome> {
    let cfg = &ctx.config;
    let store = ctx.store()?;
    if a.week {
        let out = a.out.clone().unwrap_or_else(|| cfg.report.dir.clone());
        let (w, path) = write_week(&ctx, &store, &out, a.attestations.as_deref())?;
        let code = match w.state {
            week::State::Blocked | week::State::RolledBack => Code::CheckFailed,
            _ => Code::Ok,
        };
        let text = format!(
            "week at a glance: day {} of {}, {} ({})\nwritten to {}",
            w.day,
            w.period_days,
            w.state.words(),
            w.state_reason,
            path.display()
        );
        let mut json = serde_json::to_value(&w)?;
        json["written_to"] = json!(path);
        return Ok(Outcome::new(code, json, text));
    }
    let day = match a.day {
        Some(0) => return Err(failure(Code::Usage, "--day counts from 1")),
        Some(d) => d,
        None => store.latest_day()?.ok_or_else(|| {
            failure(
                Code::Usage,
                "no monitoring samples recorded yet: run `dhi-stage monitor` first, or pass --day",
            )
        })?,
    };
    if let Some(path) = &a.e2e_junit {
        let text = std::fs::read_to_string(path)
            .map_err(|e| failure(Code::Usage, format!("cannot read {}: {e}", path.display())))?;
        let (passed, failed, skipped) = junit_counts(&text)
            .map_err(|e| failure(Code::Usage, format!("{}: {e}", path.display())))?;
        let total = passed + failed;
        store.record_test_result(Some(day), "e2e", failed == 0 && passed >= cfg.promotion.e2e_expected, &json!({"passed": passed, "failed": failed, "skipped": skipped, "total": total, "source": path}))?;
    }
    for spec in &a.k6_summary {
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

    let data = report::gather(&store, cfg, day)?;
    let growth = cfg.memory_growth_threshold();
    let m = report::metrics(&data, growth);
    let gate_passes = if day >= cfg.monitoring.period_days {
        super::gate::verdict(&ctx, day, None)?.0
    } else {
        false
    };
    let (rec, reasons) = report::recommend(&data, &m, cfg, gate_passes);
    let out = a.out.clone().unwrap_or_else(|| cfg.report.dir.clone());
    std::fs::create_dir_all(&out)
        .with_context(|| format!("cannot create report dir {}", out.display()))?;
    let charts = charts::day_charts(&data, cfg);
    let signed = a
        .signed_by
        .clone()
        .unwrap_or_else(|| cfg.report.signed_by.clone());
    let today = chrono::Utc::now().date_naive();
    let links: Vec<(&str, &str)> = charts
        .iter()
        .map(|(f, t, _)| (t.as_str(), f.as_str()))
        .collect();
    let md = report::markdown(&data, &m, rec, &reasons, &signed, today, &links);
    let doc = json!({"day": day, "data": data, "metrics": m, "recommendation": rec, "reasons": reasons, "markdown": md});
    let path = match a.format.as_str() {
        "json" => {
            let p = out.join(format!("day-{day}.json"));
            super::write_atomic(&p, &serde_json::to_string_pretty(&doc)?)?;
            p
        }
        "html" => {
            let p = out.join(format!("day-{day}.html"));
            super::write_atomic(&p, &html(&md, &charts))?;
            p
        }
        _ => {
            for (file, _, svg) in &charts {
                super::write_atomic(&out.join(file), svg)?;
            }
            let p = out.join(format!("day-{day}.md"));
            super::write_atomic(&p, &md)?;
            p
        }
    };
    let mut json = doc;
    json["written_to"] = json!(path);
    let mut text = format!("{md}\nreport written to {}", path.display());
    // The week page follows every daily report; a failure to write it is said, not fatal.
    match write_week(&ctx, &store, &out, a.attestations.as_deref()) {
        Ok((_, p)) => {
            text += &format!("\nweek at a glance: {}", p.display());
            json["week_page"] = json!(p);
        }
        Err(e) => text += &format!("\nweek at a glance NOT written: {e:#}"),
    }
    let code = match rec {
        Recommendation::RollbackRequired | Recommendation::Investigate => Code::CheckFailed,
        _ => Code::Ok,
    };
    Ok(Outcome::new(code, json, text))
}

/// Writes `<out>/index.html`, the week at a glance.
fn write_week(
    ctx: &Ctx,
    store: &crate::store::Store,
    out: &std::path::Path,
    attestations: Option<&std::path::Path>,
) -> Result<(week::Week, PathBuf)> {
    let attestations = crate::report::gate::read_attestations(attestations)
        .map_err(|e| failure(Code::Usage, e))?;
    week::write_page(store, &ctx.config, out, &attestations)
}

/// (passed, failed, skipped) test cases of a JUnit XML file; a failure or error inside a
/// testcase fails it.
pub fn junit_counts(xml: &str) -> Result<(u32, u32, u32), String> {
    // A real XML parser: a truncated or hand-edited report is refused, not half-counted.
    let doc = roxmltree::Document::parse(xml).map_err(|e| format!("not well-formed XML: {e}"))?;
    let root = doc.root_element().tag_name().name();
    if root != "testsuites" && root != "testsuite" {
        return Err(format!(
            "not a JUnit XML report (root element <{root}>, expected <testsuites> or <testsuite>)"
        ));
    }
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for case in doc.descendants().filter(|n| n.has_tag_name("testcase")) {
        let child = |name: &str| case.children().any(|c| c.has_tag_name(name));
        if child("failure") || child("error") {
            failed += 1;
        } else if child("skipped") {
            skipped += 1;
        } else {
            passed += 1;
        }
    }
    Ok((passed, failed, skipped))
}

/// One self-contained page: the report as HTML (pulldown-cmark) with the charts inline.
/// Raw HTML in the markdown (a service's words inside evidence or a reason) is shown as text.
fn html(md: &str, charts: &[(String, String, String)]) -> String {
    use pulldown_cmark::{Event, Options, Parser};
    // The chart images of the markdown file are replaced by the inline SVGs below.
    let text: String = md
        .lines()
        .filter(|l| !l.starts_with("## Charts") && !l.starts_with("!["))
        .map(|l| format!("{l}\n"))
        .collect();
    let parser = Parser::new_ext(&text, Options::ENABLE_TASKLISTS | Options::ENABLE_TABLES).map(
        |e| match e {
            Event::Html(h) | Event::InlineHtml(h) => Event::Text(h),
            e => e,
        },
    );
    let mut body = String::new();
    pulldown_cmark::html::push_html(&mut body, parser);
    body += "<h2>Charts</h2>\n";
    for (_, title, svg) in charts {
        body += &format!(
            "<figure><figcaption>{}</figcaption>{svg}</figure>\n",
            crate::report::esc(title)
        );
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>DHI Staging Validation Report</title>\n<style>body{{font-family:sans-serif;max-width:900px;margin:2em auto;padding:0 1em;color:#222}}h1{{font-size:1.6em}}h2{{border-bottom:1px solid #ccc}}figure{{margin:1em 0}}figure svg{{width:100%;height:auto}}li{{margin:.2em 0}}ul{{padding-left:1.4em}}</style></head>\n<body>\n{body}</body></html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::junit_counts;

    #[test]
    fn junit_counting() {
        let xml = r#"<testsuites><testsuite name="e2e" tests="4"><testcase name="a"/><testcase name="b"><failure message="x"/></testcase><testcase name="c"></testcase><testcase name="d"><skipped/></testcase></testsuite></testsuites>"#;
        assert_eq!(junit_counts(xml), Ok((2, 1, 1)));
        assert!(junit_counts("<html/>").is_err());
    }

    #[test]
    fn the_html_page_shows_raw_html_from_the_markdown_as_text() {
        let md = "# Report\n\n- [x] **ok** <script>alert(1)</script>\n- [ ] <b>x</b>\n";
        let page = super::html(md, &[]);
        assert!(page.contains("<strong>ok</strong>"), "{page}");
        assert!(
            page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{page}"
        );
        assert!(
            !page.contains("<script>") && !page.contains("<b>"),
            "{page}"
        );
        assert!(page.contains("type=\"checkbox\""), "task lists: {page}");
    }

    /// A report written by a real runner (pytest 9.2, `--junitxml`): 144 passed, one
    /// assertion failure, one error (recorded by pytest as a failure), one skip.
    #[test]
    fn junit_from_pytest() {
        let xml = include_str!("../../tests/fixtures/junit-pytest.xml");
        assert_eq!(junit_counts(xml), Ok((144, 2, 1)));
    }
}
