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

/// The exposition of the monitor's state after `tick` (`samples`: taken by this process).
pub fn render(service: &str, tick: &Tick, samples: u64) -> String {
    let svc = format!("service=\"{}\"", label(service));
    let mut s = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, rows: Vec<(String, f64)>| {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(s, "{name}{{{labels}}} {v}");
        }
    };
    let one = |v: f64| vec![(svc.clone(), v)];
    let t = &tick.sample;
    gauge(
        "dhi_stage_up",
        "The monitor is running: 1.",
        "gauge",
        one(1.0),
    );
    gauge(
        "dhi_stage_last_sample_timestamp_seconds",
        "When the monitor last sampled the service (Unix seconds).",
        "gauge",
        one(t.ts_ms as f64 / 1000.0),
    );
    gauge(
        "dhi_stage_samples_total",
        "Samples taken by this monitor process.",
        "counter",
        one(samples as f64),
    );
    gauge(
        "dhi_stage_health_ok",
        "The last /health probe: 1 healthy, 0 not.",
        "gauge",
        one(f64::from(u8::from(t.health_ok))),
    );
    if let Some(m) = t.memory_mib() {
        gauge(
            "dhi_stage_memory_mib",
            "Container memory as docker stats shows it (MiB).",
            "gauge",
            one(m),
        );
    }
    if let Some(r) = t.restart_count {
        gauge(
            "dhi_stage_restarts_total",
            "The container's restart count.",
            "counter",
            one(r as f64),
        );
    }
    if let Some(c) = tick.critical_cves {
        gauge(
            "dhi_stage_critical_cves",
            "CRITICAL CVEs of the image under test, after VEX, as the last scan says.",
            "gauge",
            one(f64::from(c)),
        );
    }
    gauge(
        "dhi_stage_blind_rules",
        "Rollback triggers without a verdict for longer than their window plus the margin.",
        "gauge",
        one(tick.blind.len() as f64),
    );
    let verdicts = |want: fn(&Verdict) -> bool| {
        tick.results
            .iter()
            .map(|r| {
                (
                    format!(
                        "{svc},trigger=\"{}\",severity=\"{}\"",
                        label(&r.name),
                        r.severity.as_str()
                    ),
                    f64::from(u8::from(want(&r.verdict))),
                )
            })
            .collect()
    };
    gauge(
        "dhi_stage_trigger_fired",
        "Whether the rollback trigger fired at the last tick.",
        "gauge",
        verdicts(|v| *v == Verdict::Fired),
    );
    gauge(
        "dhi_stage_trigger_inconclusive",
        "Whether the monitor could not judge the trigger at the last tick.",
        "gauge",
        verdicts(|v| matches!(v, Verdict::Inconclusive { .. })),
    );
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
