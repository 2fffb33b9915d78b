//! The incident report as its reader takes it: an automatic rollback of a service answering
//! 5% errors, checked for words instead of JSON, a before-table computed again here from the
//! store, a chart that is SVG with its threshold, a timeline in order, a checklist that names
//! what was sent, and an HTML page Chromium renders without running what the service logged.

mod common;

use std::path::Path;

use common::recorder::Recorder;
use common::*;

/// What the service logs on each 5xx: the request's query, carrying markup.
const HOSTILE: &str = "<script>document.title='pwned'</script><img/src=x/onerror=alert(1)>";

/// Every `{` of the text that starts a JSON object (the report must have none).
fn json_objects(md: &str) -> Vec<String> {
    md.match_indices('{')
        .filter_map(|(i, _)| {
            let mut it =
                serde_json::Deserializer::from_str(&md[i..]).into_iter::<serde_json::Value>();
            match it.next() {
                Some(Ok(v)) if v.is_object() => Some(v.to_string()),
                _ => None,
            }
        })
        .collect()
}

/// The error rate of `deployment` between `from` and `to` (ms), from the stored counters:
/// increases between consecutive scrapes, a drop meaning a restart from zero.
fn error_rate_from_store(db: &Path, deployment: i64, from: i64, to: i64) -> (f64, u64) {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut q = c
        .prepare(
            "SELECT metrics FROM samples WHERE deployment_id=?1 AND ts_ms>=?2 AND ts_ms<=?3 AND metrics IS NOT NULL ORDER BY ts_ms, id",
        )
        .unwrap();
    let blobs: Vec<Vec<u8>> = q
        .query_map(rusqlite::params![deployment, from, to], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let inc = |now: f64, before: f64| if now >= before { now - before } else { now };
    let (mut prev, mut total, mut errors) = (None::<(f64, f64)>, 0.0, 0.0);
    for b in &blobs {
        let m = common::scrape::scrape(&c, b);
        let (t, e) = (
            m["requests_total"].as_f64().unwrap(),
            m["requests_5xx"].as_f64().unwrap(),
        );
        if let Some((pt, pe)) = prev {
            total += inc(t, pt);
            errors += inc(e, pe);
        }
        prev = Some((t, e));
    }
    (errors / total * 100.0, blobs.len() as u64)
}

/// The lines of a markdown section, up to the next heading.
fn section<'a>(md: &'a str, heading: &str) -> Vec<&'a str> {
    md.lines()
        .skip_while(|l| !l.starts_with(heading))
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .filter(|l| !l.trim().is_empty())
        .collect()
}

#[test]
fn an_automatic_rollback_leaves_a_report_a_person_can_hand_to_the_team() {
    let good = good_image();
    let faulty = testsvc_image("dhi-test/authsvc:errors-5pct", &["FAULT_ERROR_RATE=0.05"]);
    let rec = Recorder::start();
    let stage = Stage::new();
    assert_eq!(stage.deploy(&good).run().code, 0);
    assert_eq!(stage.deploy(&faulty).run().code, 0);
    let cfg = short_window_config(&stage, |t| {
        t["notify"].as_table_mut().unwrap().insert(
            "webhook_url".into(),
            format!("http://127.0.0.1:{}/hook", rec.port).into(),
        );
    });
    // Logins whose query carries markup: every failed one is logged with it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (stop, url) = (
            stop.clone(),
            format!("{}/auth/login?q={HOSTILE}", stage.base_url()),
        );
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                http("POST", &url);
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        })
    };
    let r = stage.run(&[
        "--config",
        path_str(&cfg),
        "monitor",
        "--duration",
        "60s",
        "--auto-rollback",
        "--output",
        "json",
    ]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    traffic.join().unwrap();
    assert_eq!(r.code, 4, "{}", r.all());
    let j = r.json();
    let inc = &j["rollback"]["incident"];
    let md_path = stage
        .dir
        .path()
        .join(inc["report"].as_str().expect("report written"));
    let md = std::fs::read_to_string(&md_path).unwrap();

    // Words, not JSON.
    assert_eq!(json_objects(&md), Vec::<String>::new(), "{md}");
    assert!(
        !md.contains("From:** unknown") && !md.contains("```\n```"),
        "{md}"
    );

    // The before-table's error rate against the store's counters.
    let record = stage
        .events("incident")
        .pop()
        .expect("the incident is recorded");
    let (decided, from_dep) = (
        record["decided_at_ms"].as_i64().unwrap(),
        record["from_deployment"].as_i64().unwrap(),
    );
    let db = stage.state_dir().join("state.db");
    let (truth, scrapes) = error_rate_from_store(&db, from_dep, decided - 600_000, decided);
    let row = section(&md, "## Metrics before and after")
        .into_iter()
        .find(|l| l.starts_with("| Error rate |"))
        .unwrap_or_else(|| panic!("{md}"));
    let shown: f64 = row
        .split('|')
        .nth(2)
        .unwrap()
        .trim()
        .split('%')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    println!("incident: before-window error rate {shown}% shown, {truth:.3}% from {scrapes} stored scrapes");
    assert!((shown - truth).abs() <= 0.1, "{shown} vs {truth}: {row}");
    assert!((3.0..=7.0).contains(&truth), "a 5% fault: {truth}");
    // The restored service's first minutes are in: the report was written again, complete.
    assert!(md.contains("(complete)"), "{md}");
    let after_cell = row.split('|').nth(3).unwrap().trim();
    assert!(
        after_cell.starts_with("0.0%"),
        "the baseline answers no 5xx: {row}"
    );

    // The chart: SVG with the threshold, the breach shaded, decision and healthy marked.
    let svg_path = stage
        .dir
        .path()
        .join(inc["chart"].as_str().expect("chart written"));
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("the chart parses as XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let has = |attr: &str, value: Option<&str>| {
        doc.descendants().any(|n| match value {
            Some(v) => n.attribute(attr) == Some(v),
            None => n.has_attribute(attr),
        })
    };
    assert!(has("data-threshold", Some("trigger 2.0%")), "{svg}");
    assert!(
        has("data-breach", None)
            && has("data-mark", Some("decision"))
            && has("data-mark", Some("healthy")),
        "{svg}"
    );
    let file = svg_path.file_name().unwrap().to_str().unwrap();
    assert!(
        md.contains(&format!("]({file})")),
        "the markdown shows the chart: {md}"
    );

    // The timeline: in time order; the trigger, then the decision, then healthy, then the webhook.
    let lines = section(&md, "## Timeline");
    let times: Vec<&str> = lines.iter().map(|l| &l[2..10]).collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "{md}");
    let pos = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in the timeline: {md}"))
    };
    let fired: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("trigger fired"))
        .collect();
    assert_eq!(
        fired.len(),
        1,
        "one line per trigger, severities merged: {fired:?}"
    );
    assert!(fired[0].contains("(rollback and immediate)"), "{fired:?}");
    assert!(pos("window starts") <= pos("trigger fired"));
    assert!(pos("trigger fired") < pos("automatic rollback decided by monitor --auto-rollback"));
    assert!(pos("automatic rollback decided") < pos(" healthy ("));
    assert!(pos(" healthy (") <= pos("webhook notified (HTTP 201)"));
    assert!(
        !md.contains("error_rate (error rate > 2% for 4s), error_rate"),
        "{md}"
    );

    // Logs: the replaced container's lines, its error lines counted.
    let logs = section(&md, "## Logs of the replaced container").join("\n");
    assert!(logs.contains("match the error pattern"), "{logs}");
    assert!(logs.contains("-> 500"), "{logs}");

    // The checklist says what was done.
    let webhook_line = section(&md, "## Post-rollback actions")
        .into_iter()
        .find(|l| l.contains("Notify team"))
        .unwrap();
    assert!(
        webhook_line.starts_with("- [x] Notify team: sent to the webhook at ")
            && webhook_line.ends_with("(HTTP 201)"),
        "{webhook_line}"
    );
    assert!(rec
        .seen
        .lock()
        .unwrap()
        .iter()
        .any(|(l, _, _)| l.starts_with("POST /hook")));

    // The page: Chromium builds it; the service's markup stayed text.
    let html = stage
        .dir
        .path()
        .join(inc["html"].as_str().expect("html written"));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("<svg") && !page.contains("src=\"http"),
        "inline, nothing fetched"
    );
    let profile = stage.dir.path().join("chrome");
    let url = format!("file://{}", html.display());
    let dom = chromium(&["--dump-dom".into(), url.clone()], &profile);
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom = scraper::Html::parse_document(&String::from_utf8_lossy(&dom.stdout));
    let sel = |s: &str| scraper::Selector::parse(s).unwrap();
    assert_eq!(dom.select(&sel("script")).count(), 0);
    assert_eq!(dom.select(&sel("img")).count(), 0);
    assert_eq!(dom.select(&sel("svg [data-threshold]")).count(), 1);
    let title: String = dom.select(&sel("title")).next().unwrap().text().collect();
    assert!(title.starts_with("Incident: rollback of"), "{title}");
    let text: String = dom.select(&sel("pre")).flat_map(|p| p.text()).collect();
    assert!(
        text.contains(HOSTILE),
        "the logged markup shows as text: {text}"
    );
    let shots = root().join("target/incident");
    std::fs::create_dir_all(&shots).unwrap();
    let png = shots.join("incident-1280.png");
    let o = chromium(
        &[
            "--window-size=1280,3000".into(),
            format!("--screenshot={}", png.display()),
            url,
        ],
        &profile,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));

    // The week page links the incident from the rollback's line of its timeline.
    let out = stage.dir.path().join("reports");
    let w = stage.run(&["report", "--week", "--out", path_str(&out)]);
    assert!(w.code == 0 || w.code == 3, "{}", w.all());
    let week = std::fs::read_to_string(out.join("index.html")).unwrap();
    let name = record["name"].as_str().unwrap();
    assert!(
        week.contains(&format!(
            r#"<a href="incidents/{name}.html">incident report</a>"#
        )),
        "{week}"
    );
    println!(
        "incident: {} timeline lines, chart {} bytes, screenshot {}",
        lines.len(),
        svg.len(),
        png.display()
    );
}

#[test]
fn a_manual_rollback_without_monitor_samples_says_so_in_words() {
    let good = good_image();
    let next = testsvc_image("dhi-test/authsvc:next", &["FAULT_LATENCY_MS=1"]);
    let stage = Stage::new();
    assert_eq!(stage.deploy(&good).run().code, 0);
    assert_eq!(stage.deploy(&next).run().code, 0);
    let r = stage
        .command(&[
            "rollback",
            "--reason",
            "p99 over budget",
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    let r: Run = r.into();
    assert_eq!(r.code, 0, "{}", r.all());
    let report = r.json()["incident"]["report"].as_str().unwrap().to_string();
    let md = std::fs::read_to_string(stage.dir.path().join(report)).unwrap();
    assert!(md.contains("no samples in the 10 minutes before"), "{md}");
    assert!(
        md.contains("No monitor trigger preceded this rollback"),
        "{md}"
    );
    assert!(
        md.contains("rollback decided by an operator: p99 over budget"),
        "{md}"
    );
    assert!(
        md.contains("- [ ] Notify team: no webhook is configured")
            && md.contains("- [ ] Create GitHub issue: `gh issue create --label incident,rollback,dhi-migration"),
        "unticked, with the way to do it: {md}"
    );
    assert_eq!(json_objects(&md), Vec::<String>::new(), "{md}");
    // Not yet complete: the after-window runs; the report says when it is written again.
    assert!(md.contains("written again"), "{md}");
}
