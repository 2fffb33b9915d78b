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
    // Conventions are read by probe::reading over the same parser; what it parses must
    // survive the store's JSON round trip as numbers.
    for s in &parsed.series {
        let json = serde_json::to_string(&metrics::Snapshot { requests_total: s.value, ..Default::default() })
            .expect("a snapshot always serialises");
        let back: metrics::Snapshot = serde_json::from_str(&json).expect("and reads back");
        assert_eq!(back.requests_total.is_nan(), s.value.is_nan());
    }
});
