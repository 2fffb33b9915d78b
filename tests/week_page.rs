//! The week at a glance (`report --week`), opened in headless Chromium: a synthesized week
//! with a restart, a trigger, a rollback, failed probes and a blind stretch, and health
//! details that carry markup and script. The DOM Chromium builds is checked against numbers
//! computed here from the store itself, not by the tool's own code.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use scraper::{Html, Selector};

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

/// What the store says about one day, computed with SQL and plain arithmetic.
#[derive(Debug, Default)]
struct Truth {
    health_pct: f64,
    error_pct: f64,
    mem_lo: f64,
    mem_hi: f64,
    restarts: i64,
    first_ts: i64,
    p95_ms: f64,
    p99_ms: f64,
    /// Least-squares slope of memory over the day, MiB a minute.
    mem_slope: f64,
}

/// Prometheus' `histogram_quantile`: the bucket holding the rank, linear within it.
fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> f64 {
    let total = buckets.last().unwrap().1;
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, cum) in buckets {
        if cum >= rank {
            if le.is_infinite() {
                return lower;
            }
            return lower + (le - lower) * (rank - below) / (cum - below);
        }
        (lower, below) = (le, cum);
    }
    lower
}

fn truth(db: &Path) -> BTreeMap<u32, Truth> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut out: BTreeMap<u32, Truth> = BTreeMap::new();
    let mut q = c
        .prepare(
            "SELECT day, 100.0 * SUM(health_ok) / COUNT(*), MIN(memory_bytes), MAX(memory_bytes), MIN(ts_ms)
             FROM samples WHERE day IS NOT NULL GROUP BY day",
        )
        .unwrap();
    let rows = q
        .query_map([], |r| {
            Ok((
                r.get::<_, u32>(0)?,
                r.get::<_, f64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })
        .unwrap();
    for r in rows {
        let (day, h, lo, hi, first) = r.unwrap();
        out.insert(
            day,
            Truth {
                health_pct: h,
                mem_lo: lo as f64 / 1048576.0,
                mem_hi: hi as f64 / 1048576.0,
                first_ts: first,
                ..Truth::default()
            },
        );
    }
    // Error rate: increases of the two counters between consecutive scrapes of the day, a
    // drop meaning the counter restarted from zero (Prometheus' `increase`).
    let mut q = c
        .prepare("SELECT day, metrics FROM samples WHERE day IS NOT NULL AND metrics IS NOT NULL ORDER BY id")
        .unwrap();
    let mut prev: BTreeMap<u32, (f64, f64)> = BTreeMap::new();
    let mut sums: BTreeMap<u32, (f64, f64)> = BTreeMap::new();
    let rows = q
        .query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, Vec<u8>>(1)?)))
        .unwrap()
        .collect::<Vec<_>>();
    let mut hist_prev: BTreeMap<u32, Vec<(f64, f64)>> = BTreeMap::new();
    let mut hist: BTreeMap<u32, Vec<(f64, f64)>> = BTreeMap::new();
    for r in rows {
        let (day, m) = r.unwrap();
        let m = common::scrape::scrape(&c, &m);
        let buckets: Vec<(f64, f64)> = m["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                let le = b[0].as_f64().unwrap_or(f64::INFINITY);
                (le, b[1].as_f64().unwrap())
            })
            .collect();
        if let Some(before) = hist_prev.get(&day) {
            let acc = hist
                .entry(day)
                .or_insert_with(|| buckets.iter().map(|(le, _)| (*le, 0.0)).collect());
            for ((slot, now), was) in acc.iter_mut().zip(&buckets).zip(before) {
                slot.1 += if now.1 >= was.1 { now.1 - was.1 } else { now.1 };
            }
        }
        hist_prev.insert(day, buckets);
        let (t, e) = (
            m["requests_total"].as_f64().unwrap(),
            m["requests_5xx"].as_f64().unwrap(),
        );
        if let Some((pt, pe)) = prev.get(&day) {
            let inc = |now: f64, before: f64| if now >= before { now - before } else { now };
            let s = sums.entry(day).or_default();
            s.0 += inc(t, *pt);
            s.1 += inc(e, *pe);
        }
        prev.insert(day, (t, e));
    }
    for (day, (t, e)) in sums {
        out.get_mut(&day).unwrap().error_pct = e / t * 100.0;
    }
    for (day, h) in hist {
        let t = out.get_mut(&day).unwrap();
        t.p95_ms = histogram_quantile(0.95, &h) * 1000.0;
        t.p99_ms = histogram_quantile(0.99, &h) * 1000.0;
    }
    // Memory trend: ordinary least squares of MiB over minutes.
    let mut q = c
        .prepare("SELECT day, ts_ms, memory_bytes FROM samples WHERE day IS NOT NULL ORDER BY id")
        .unwrap();
    let mut pts: BTreeMap<u32, Vec<(f64, f64)>> = BTreeMap::new();
    let rows = q
        .query_map([], |r| {
            Ok((
                r.get::<_, u32>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .unwrap();
    for r in rows {
        let (day, ts, mem) = r.unwrap();
        pts.entry(day)
            .or_default()
            .push((ts as f64 / 60_000.0, mem as f64 / 1048576.0));
    }
    for (day, p) in pts {
        let n = p.len() as f64;
        let (mx, my) = (
            p.iter().map(|x| x.0).sum::<f64>() / n,
            p.iter().map(|x| x.1).sum::<f64>() / n,
        );
        let sxy: f64 = p.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
        let sxx: f64 = p.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
        out.get_mut(&day).unwrap().mem_slope = sxy / sxx;
    }
    // Restarts: the rise of each container's restart count within the day.
    let mut q = c
        .prepare("SELECT day, MAX(restart_count) - MIN(restart_count) FROM samples WHERE day IS NOT NULL GROUP BY day, deployment_id")
        .unwrap();
    let rows = q
        .query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, i64>(1)?)))
        .unwrap();
    for r in rows {
        let (day, n) = r.unwrap();
        out.get_mut(&day).unwrap().restarts += n;
    }
    out
}

/// Trigger firings per (rule (severity), day), days bounded by their first samples.
fn firings(db: &Path, days: &BTreeMap<u32, Truth>) -> BTreeMap<(String, u32), usize> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut q = c
        .prepare("SELECT at, detail FROM events WHERE kind='trigger'")
        .unwrap();
    let mut out = BTreeMap::new();
    let rows = q
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap();
    for r in rows {
        let (at, d) = r.unwrap();
        let at = chrono::DateTime::parse_from_rfc3339(&at)
            .unwrap()
            .timestamp_millis();
        let d: serde_json::Value = serde_json::from_str(&d).unwrap();
        let day = days
            .iter()
            .filter(|(_, t)| t.first_ts <= at)
            .map(|(d, _)| *d)
            .max()
            .unwrap();
        let key = format!(
            "{} ({})",
            d["rule"].as_str().unwrap(),
            d["severity"].as_str().unwrap()
        );
        *out.entry((key, day)).or_insert(0) += 1;
    }
    out
}

#[test]
fn the_week_at_a_glance_in_a_real_browser() {
    let stage = Stage::new();
    let out = stage.dir.path().join("reports");
    let w = stage.run(&[
        "synth-week",
        "--days",
        "7",
        "--interval",
        "60s",
        "--seed",
        "11",
        "--hostile",
        "--output",
        "json",
    ]);
    assert_eq!(w.code, 0, "{}", w.all());
    assert_eq!(w.json()["samples"], 7 * 24 * 60, "a week of minutes");

    let r = stage.run(&[
        "report",
        "--week",
        "--out",
        path_str(&out),
        "--output",
        "json",
    ]);
    // Blocked is a failed check for a script: exit 3, with the state in words.
    assert_eq!(r.code, 3, "{}", r.all());
    assert_eq!(r.json()["state"], "blocked", "{}", r.all());
    let page_path = out.join("index.html");
    let page = std::fs::read_to_string(&page_path).unwrap();
    assert!(
        !page.contains("<script"),
        "no script of our own and none injected"
    );
    assert!(
        !page.contains("src=\"http"),
        "self-contained: nothing loaded from anywhere"
    );

    // Chromium builds the DOM (and would run any script that got through).
    let profile = stage.dir.path().join("chrome");
    let url = format!("file://{}", page_path.display());
    let dom = chromium(&["--dump-dom".into(), url.clone()], &profile);
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom = Html::parse_document(&String::from_utf8_lossy(&dom.stdout));

    // Screenshots at a desktop and a phone width, kept as artifacts.
    let shots = root().join("target/week-page");
    std::fs::create_dir_all(&shots).unwrap();
    for (w, h) in [(1280, 2600), (390, 4200)] {
        let png = shots.join(format!("week-{w}.png"));
        let o = chromium(
            &[
                format!("--window-size={w},{h}"),
                format!("--screenshot={}", png.display()),
                url.clone(),
            ],
            &profile,
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let bytes = std::fs::read(&png).unwrap();
        assert!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 30_000,
            "{w}px screenshot"
        );
    }

    // The injection rendered as text: no element came from it, the title is ours.
    assert_eq!(dom.select(&sel("script")).count(), 0);
    assert_eq!(dom.select(&sel("img")).count(), 0);
    let title: String = dom.select(&sel("title")).next().unwrap().text().collect();
    assert!(title.starts_with("DHI staging: day 7 of 7"), "{title}");
    let health_li = dom
        .select(&sel("#timeline li[data-kind=health]"))
        .next()
        .expect("the failed probes are on the timeline");
    let text: String = health_li.text().collect();
    assert!(
        text.contains("<script>document.title='pwned'</script><img src=x onerror=alert(1)>"),
        "the hostile health detail shows as text: {text}"
    );

    // The badge says the state in words.
    let badge: String = dom.select(&sel("#state")).next().unwrap().text().collect();
    assert!(badge.contains("blocked"), "{badge}");

    // Every matrix cell against the store.
    let db = stage.state_dir().join("state.db");
    let days = truth(&db);
    assert_eq!(
        days.keys().copied().collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    let fired = firings(&db, &days);
    let cell = |row: &str, day: u32| -> (String, String) {
        let s = sel(&format!(
            "#matrix tr[data-row=\"{row}\"] td[data-day=\"{day}\"]"
        ));
        let td = dom
            .select(&s)
            .next()
            .unwrap_or_else(|| panic!("cell {row} day {day}"));
        let value: String = td.select(&sel(".value")).next().unwrap().text().collect();
        (td.value().attr("data-state").unwrap().to_string(), value)
    };
    let mut checked = 0;
    for (day, t) in &days {
        let met = |ok: bool| if ok { "met" } else { "not_met" }.to_string();
        assert_eq!(
            cell("Health check success rate", *day),
            (met(t.health_pct >= 100.0), format!("{:.2}%", t.health_pct)),
            "health, day {day}"
        );
        assert_eq!(
            cell("Error rate", *day),
            (met(t.error_pct < 0.01), format!("{:.4}%", t.error_pct)),
            "error rate, day {day}"
        );
        assert_eq!(
            cell("Memory", *day),
            (
                met(t.mem_lo >= 50.0 && t.mem_hi <= 80.0),
                format!("{:.1}-{:.1} MiB", t.mem_lo, t.mem_hi)
            ),
            "memory, day {day}"
        );
        assert_eq!(
            cell("P95 latency", *day),
            (met(t.p95_ms < 100.0), format!("{:.1} ms", t.p95_ms)),
            "P95, day {day}"
        );
        assert_eq!(
            cell("P99 latency", *day),
            (met(t.p99_ms < 200.0), format!("{:.1} ms", t.p99_ms)),
            "P99, day {day}"
        );
        // The growth trigger's 0.1 MB/min: a flatter line is stable (or falling).
        assert!(t.mem_slope.abs() < 0.1, "day {day} slope {}", t.mem_slope);
        assert_eq!(
            cell("Memory trend", *day),
            ("met".into(), "stable".into()),
            "day {day}"
        );
        assert_eq!(
            cell("Container restarts", *day),
            (met(t.restarts == 0), t.restarts.to_string()),
            "restarts, day {day}"
        );
        checked += 7;
        for row in dom.select(&sel("#matrix tr[data-row]")) {
            let name = row.value().attr("data-row").unwrap();
            if !name.ends_with("(rollback)") && !name.ends_with("(immediate)") {
                continue;
            }
            let n = fired.get(&(name.to_string(), *day)).copied().unwrap_or(0);
            let (state, value) = cell(name, *day);
            if n > 0 {
                assert_eq!((state.as_str(), value), ("not_met", format!("fired {n}×")));
            } else if name == "error_rate (rollback)" && *day == 5 {
                // The scrape was refused for 10 minutes: that rule was blind.
                assert_eq!(state, "inconclusive", "{name} day {day}");
            } else {
                assert_eq!(
                    (state.as_str(), value.as_str()),
                    ("met", "clear"),
                    "{name} day {day}"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(fired.values().sum::<usize>(), 1, "the week has one trigger");
    // The scripted week: failed probes on day 4, the burst on day 3, the restart on day 2.
    assert!(days[&4].health_pct < 100.0 && days[&3].error_pct > 0.01 && days[&2].restarts == 1);

    // The timeline: in time order, and the incident in its order.
    let items: Vec<(String, String)> = dom
        .select(&sel("#timeline li"))
        .map(|li| {
            let t = li.select(&sel("time")).next().unwrap();
            (
                t.value().attr("datetime").unwrap().to_string(),
                li.value().attr("data-kind").unwrap().to_string(),
            )
        })
        .collect();
    let mut sorted = items.clone();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(items, sorted, "timeline in time order");
    let kinds: Vec<&str> = items.iter().map(|(_, k)| k.as_str()).collect();
    let pos = |k: &str| {
        kinds
            .iter()
            .position(|x| *x == k)
            .unwrap_or_else(|| panic!("{k} on the timeline: {kinds:?}"))
    };
    assert!(pos("drill") < pos("trigger"));
    assert!(pos("trigger") < pos("rollback"));
    assert!(pos("rollback") < pos("health") && pos("health") < pos("blind"));
    assert_eq!(
        kinds.iter().filter(|k| **k == "e2e").count(),
        7,
        "one E2E run a day"
    );

    // Charts are there, each with a title for readers who cannot see it.
    let charts = dom.select(&sel(".charts svg title")).count();
    assert_eq!(charts, 5, "health, errors, latency, memory, restarts");
    println!(
        "week page: {checked} matrix cells checked against the store; screenshots in {}",
        shots.display()
    );
}

/// With `report.week_page_from_monitor`, a cron run of the monitor writes the page (even a
/// run whose probe failed: nothing listens on its target); without it, it does not.
#[test]
fn a_monitor_run_rewrites_the_week_page_when_configured() {
    let stage = Stage::new();
    let w = stage.run(&["synth-week", "--days", "2", "--interval", "5m"]);
    assert_eq!(w.code, 0, "{}", w.all());
    let cfg = stage.write_config(|t| {
        t.replace(
            "week_page_from_monitor = false",
            "week_page_from_monitor = true",
        )
    });
    let page = stage.dir.path().join("reports/index.html");
    assert!(!page.exists());
    let closed = format!("http://127.0.0.1:{}", free_port());
    let r = stage.run(&[
        "--config",
        path_str(&cfg),
        "monitor",
        "--once",
        "--base-url",
        &closed,
    ]);
    assert_ne!(r.code, 101, "{}", r.all());
    let html = std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{e}\n{}", r.all()));
    assert!(
        html.contains("day 2 of 7") || html.contains("day 3 of 7"),
        "the synthesized period"
    );
    // Without the switch the same run leaves the page alone.
    std::fs::remove_file(&page).unwrap();
    let r = stage.run(&["monitor", "--once", "--base-url", &closed]);
    assert_ne!(r.code, 101, "{}", r.all());
    assert!(!page.exists(), "written without the switch");
}
