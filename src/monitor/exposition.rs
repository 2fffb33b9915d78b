//! The monitor as a Prometheus target (`monitor --listen`, `--metrics-file`): its verdicts,
//! its blindness, the CVE count of the image under test and when it last sampled, in the text
//! exposition format, so what PromQL cannot see (a blind or dead monitor, a new CRITICAL CVE)
//! alerts too (`dhi-stage alerts`). Pure: a tick in, text out.

use std::fmt::Write as _;

use super::rules::Verdict;
use super::Tick;

/// A label value as the exposition format escapes it.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// What one series reads from the monitor's state: its value, or None to leave it out
/// (a reading the tick did not have).
type Read = fn(&State) -> Option<f64>;

/// The monitor's state after a tick, as the series read it.
struct State<'a> {
    tick: &'a Tick,
    samples: u64,
}

/// The single-valued series: (name, help, type, read).
const SERIES: &[(&str, &str, &str, Read)] = &[
    (
        "dhi_stage_up",
        "The monitor is running: 1.",
        "gauge",
        |_| Some(1.0),
    ),
    (
        "dhi_stage_last_sample_timestamp_seconds",
        "When the monitor last sampled the service (Unix seconds).",
        "gauge",
        |s| Some(s.tick.sample.ts_ms as f64 / 1000.0),
    ),
    (
        "dhi_stage_samples_total",
        "Samples taken by this monitor process.",
        "counter",
        |s| Some(s.samples as f64),
    ),
    (
        "dhi_stage_health_ok",
        "The last /health probe: 1 healthy, 0 not.",
        "gauge",
        |s| Some(f64::from(u8::from(s.tick.sample.health_ok))),
    ),
    (
        "dhi_stage_memory_mib",
        "Container memory as docker stats shows it (MiB).",
        "gauge",
        |s| s.tick.sample.memory_mib(),
    ),
    (
        "dhi_stage_restarts_total",
        "The container's restart count.",
        "counter",
        |s| s.tick.sample.restart_count.map(|r| r as f64),
    ),
    (
        "dhi_stage_critical_cves",
        "CRITICAL CVEs of the image under test, after VEX, as the last scan says.",
        "gauge",
        |s| s.tick.critical_cves.map(f64::from),
    ),
    (
        "dhi_stage_blind_rules",
        "Rollback triggers without a verdict for longer than their window plus the margin.",
        "gauge",
        |s| Some(s.tick.blind.len() as f64),
    ),
];

/// Whether a trigger's verdict counts for a per-trigger series.
type Counts = fn(&Verdict) -> bool;

/// The per-trigger series (labelled by trigger and severity): (name, help, verdict test).
const VERDICTS: &[(&str, &str, Counts)] = &[
    (
        "dhi_stage_trigger_fired",
        "Whether the rollback trigger fired at the last tick.",
        |v| *v == Verdict::Fired,
    ),
    (
        "dhi_stage_trigger_inconclusive",
        "Whether the monitor could not judge the trigger at the last tick.",
        |v| matches!(v, Verdict::Inconclusive { .. }),
    ),
];

/// The exposition of the monitor's state after `tick` (`samples`: taken by this process).
pub fn render(service: &str, tick: &Tick, samples: u64) -> String {
    let svc = format!("service=\"{}\"", label(service));
    let state = State { tick, samples };
    let mut s = String::new();
    let head = |s: &mut String, name: &str, help: &str, kind: &str| {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    for (name, help, kind, read) in SERIES {
        if let Some(v) = read(&state) {
            head(&mut s, name, help, kind);
            let _ = writeln!(s, "{name}{{{svc}}} {v}");
        }
    }
    for (name, help, want) in VERDICTS {
        head(&mut s, name, help, "gauge");
        for r in &tick.results {
            let _ = writeln!(
                s,
                "{name}{{{svc},trigger=\"{}\",severity=\"{}\"}} {}",
                label(&r.name),
                r.severity.as_str(),
                u8::from(want(&r.verdict))
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_parses_and_escapes_what_it_is_given() {
        let tick = Tick {
            n: 1,
            sample: crate::store::sample::Sample {
                ts_ms: 1_700_000_000_000,
                health_ok: true,
                memory_bytes: Some(64 << 20),
                restart_count: Some(2),
                ..Default::default()
            },
            error_rate_pct: None,
            p95_ms: None,
            p99_ms: None,
            scrape_failures_in_a_row: 0,
            scrape_failures_at_least: false,
            clock_stepped_back_ms: None,
            blind: Vec::new(),
            results: Vec::new(),
            critical_cves: Some(0),
        };
        let text = render("auth\"svc", &tick, 3);
        assert!(
            text.contains("dhi_stage_memory_mib{service=\"auth\\\"svc\"} 64\n"),
            "{text}"
        );
        assert!(text.contains(
            "dhi_stage_last_sample_timestamp_seconds{service=\"auth\\\"svc\"} 1700000000\n"
        ));
        let snap = crate::probe::metrics::parse(&text);
        assert_eq!(snap.errors, 0, "{text}");
        assert_eq!(snap.series.len(), 8, "{text}");
    }
}
