//! The harness's own cleanup (`scripts/sweep-test-leftovers.sh`, run by `scripts/test.sh`
//! before the suite): what a killed run left behind goes, what a live run owns stays.

mod common;

use common::*;

/// A process id that no process has (ids are reused, so look rather than guess).
fn dead_pid() -> u32 {
    (3_000_000..4_000_000)
        .find(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
        .unwrap()
}

fn registry_tags(reg: &str) -> Vec<String> {
    let body =
        http_get(&format!("http://{reg}/v2/authentication-service/tags/list")).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["tags"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn leftovers_of_a_killed_run_are_swept_and_a_live_run_is_left_alone() {
    let _serial = registry_push_lock();
    let reg = registry();
    require_registry(&reg);
    let image = good_image();
    let dead = dead_pid();
    let dead_name = format!("dhi-test-{dead}-0");
    let live_name = format!("dhi-test-{}-9999", std::process::id());
    for name in [&dead_name, &live_name] {
        let r = docker(&[
            "run",
            "-d",
            "--name",
            name,
            "--restart",
            "unless-stopped",
            "--user",
            "65532:65532",
            &image,
        ]);
        assert_eq!(r.code, 0, "{}", r.all());
    }
    let dead_tag = format!("{reg}/authentication-service:push-{dead}-0");
    assert_eq!(docker(&["tag", &image, &dead_tag]).code, 0);
    let r = docker(&["push", &dead_tag]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(registry_tags(&reg).contains(&format!("push-{dead}-0")));

    let out = std::process::Command::new("bash")
        .arg(root().join("scripts/sweep-test-leftovers.sh"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");

    let names = docker(&["ps", "-a", "--format", "{{.Names}}"]).stdout;
    let left: Vec<&str> = names
        .lines()
        .filter(|n| n.starts_with("dhi-test-"))
        .collect();
    assert!(
        !left.contains(&dead_name.as_str()),
        "the killed run's container: {left:?}\n{err}"
    );
    assert!(
        left.contains(&live_name.as_str()),
        "a live run's container stays: {left:?}"
    );
    assert!(
        !registry_tags(&reg).contains(&format!("push-{dead}-0")),
        "{err}"
    );
    assert_ne!(
        docker(&["image", "inspect", &dead_tag]).code,
        0,
        "the local tag went too"
    );
    assert_eq!(
        docker(&["image", "inspect", &image]).code,
        0,
        "images in use stay"
    );
    println!("sweep: {}", err.trim().replace('\n', "; "));
    docker(&["rm", "-f", &live_name]);
}
