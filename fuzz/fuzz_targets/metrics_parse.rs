//! The Prometheus/OpenMetrics parser on arbitrary bytes: it must never panic, and what it
//! reads must survive the store's JSON round trip.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/probe/metrics.rs"]
mod metrics;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let parsed = metrics::parse(&text);
    let snap = metrics::snapshot(&parsed.series);
    let json = serde_json::to_string(&snap).expect("a snapshot always serialises");
    let back: metrics::Snapshot = serde_json::from_str(&json).expect("and reads back");
    assert_eq!(back.buckets.len(), snap.buckets.len());
    let _ = metrics::histogram_quantile(0.99, &snap.buckets);
});
