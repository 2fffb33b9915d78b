//! The production promotion gate over days 1..N, judged from a real run's store.
mod common;
use common::*;

#[test]
fn gate_fails_on_missing_days_and_says_what_is_missing() {
    let stage = Stage::new();
    assert_eq!(stage.deploy(&good_image()).run().code, 0);
    let r = stage.call("monitor").args(&["--once", "--day", "1"]).run();
    assert_eq!(r.code, 0, "{}", r.all());
    let r = stage.gate(7).json().run();
    assert_eq!(r.code, 3, "{}", r.all());
    let j = r.json();
    let health = j["criteria"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["criterion"].as_str().unwrap().starts_with("Health"))
        .unwrap()
        .clone();
    assert!(
        health["evidence"]
            .as_str()
            .unwrap()
            .contains("day 2: no data"),
        "{health}"
    );
    let text = stage.gate(7).run();
    assert!(text.stdout.contains("DO NOT PROMOTE"), "{}", text.all());
    assert!(text.stdout.contains("(attested)"));
}
