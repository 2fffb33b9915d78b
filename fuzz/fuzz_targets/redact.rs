//! Redaction on arbitrary text: never panics, and a known secret never survives.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/redact.rs"]
mod redact;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = redact::urls(&text);
    let secret = "canary-0f1e2d".to_string();
    let out = redact::log_line(&format!("{text} {secret}"), std::slice::from_ref(&secret));
    assert!(!out.contains(&secret));
});
