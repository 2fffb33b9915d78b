//! validate: the 12-check score on real images, SBOM extraction, CVEs with VEX, provenance.
mod common;
use common::*;
use std::path::{Path, PathBuf};

const BASE_DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const BUILDER: &str = "https://github.com/docker-hardened-images/builder@v1";

fn hardened() -> String {
    testsvc_image(
        "dhi-test/authsvc:hardened",
        &[&format!("BASE_DIGEST={BASE_DIGEST}")],
    )
}

fn openssl(args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl (installed by scripts/setup.sh)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A DSSE envelope signed with a fresh P-256 key by the openssl CLI; returns (envelope, public key).
fn attestation(dir: &Path, name: &str, subject: &str, builder: &str) -> (PathBuf, PathBuf) {
    use base64::Engine as _;
    let key = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub.pem"));
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        path_str(&key),
    ]);
    openssl(&[
        "ec",
        "-in",
        path_str(&key),
        "-pubout",
        "-out",
        path_str(&public),
    ]);
    let statement = serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "dhi.io/static", "digest": {"sha256": subject.trim_start_matches("sha256:")}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {"buildDefinition": {"buildType": "https://docker.com/buildkit", "resolvedDependencies": [{"uri": "pkg:docker/debian@bookworm", "digest": {"sha256": "22"}}]},
                      "runDetails": {"builder": {"id": builder}}}
    })
    .to_string();
    let ptype = "application/vnd.in-toto+json";
    let pae = format!(
        "DSSEv1 {} {ptype} {} {statement}",
        ptype.len(),
        statement.len()
    );
    let pae_file = dir.join(format!("{name}.pae"));
    std::fs::write(&pae_file, pae).unwrap();
    let sig = dir.join(format!("{name}.sig"));
    openssl(&[
        "dgst",
        "-sha256",
        "-sign",
        path_str(&key),
        "-out",
        path_str(&sig),
        path_str(&pae_file),
    ]);
    let b64 = base64::engine::general_purpose::STANDARD;
    let env = serde_json::json!({"payloadType": ptype, "payload": b64.encode(&statement), "signatures": [{"keyid": name, "sig": b64.encode(std::fs::read(&sig).unwrap())}]});
    let env_file = dir.join(format!("{name}.dsse.json"));
    std::fs::write(&env_file, env.to_string()).unwrap();
    (env_file, public)
}

fn validate(stage: &Stage, image: &str, extra: &[&str]) -> Run {
    let mut args = vec!["validate", "--image", image, "--output", "json"];
    args.extend_from_slice(extra);
    stage.run(&args)
}

fn failed_checks(r: &Run) -> Vec<u64> {
    r.json()["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] == false)
        .map(|c| c["id"].as_u64().unwrap())
        .collect()
}

/// Builds `FROM dhi-test/authsvc:hardened` plus `lines`, with `files` (path, mode, bytes) in the context.
fn derived(tag: &str, lines: &str, files: &[(&str, u32, &[u8])]) -> String {
    use std::os::unix::fs::PermissionsExt;
    hardened();
    let dir = tempfile::tempdir().unwrap();
    for (p, mode, data) in files {
        let f = dir.path().join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, data).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM dhi-test/authsvc:hardened\n{lines}\n"),
    )
    .unwrap();
    let s = Stage::new();
    let r = s.run(&["build", "--context", path_str(dir.path()), "--tag", tag]);
    assert_eq!(r.code, 0, "{}", r.all());
    tag.to_string()
}

#[test]
fn the_hardened_image_scores_12_and_each_flaw_costs_exactly_one() {
    let stage = Stage::new();
    let (env, key) = attestation(stage.dir.path(), "dhi", BASE_DIGEST, BUILDER);
    let prov = ["--provenance", path_str(&env), "--key", path_str(&key)];
    let r = validate(&stage, &hardened(), &prov);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.json()["score"], 12, "{}", r.all());

    let cases: Vec<(String, u64, Vec<&str>)> = vec![
        // COPY drops setuid bits (Docker's builder does); ADD of a tar keeps them, as a package would.
        (
            derived(
                "dhi-test/flaw:setuid",
                "ADD tool.tar /",
                &[("tool.tar", 0o644, &setuid_tar())],
            ),
            2,
            vec![],
        ),
        (
            derived(
                "dhi-test/flaw:shell",
                "COPY sh /bin/sh",
                &[("sh", 0o755, b"#!")],
            ),
            3,
            vec![],
        ),
        (
            derived("dhi-test/flaw:secret", "ENV API_TOKEN=abc123", &[]),
            4,
            vec![],
        ),
        (derived("dhi-test/flaw:root", "USER 0:0", &[]), 1, vec![]),
        (hardened(), 5, vec!["--max-size", "1"]),
    ];
    for (image, check, extra) in cases {
        let mut args: Vec<&str> = prov.to_vec();
        args.extend(extra);
        let r = validate(&stage, &image, &args);
        assert_eq!(r.code, 3, "{image}: {}", r.all());
        assert_eq!(r.json()["score"], 11, "{image}: {}", r.all());
        assert_eq!(failed_checks(&r), vec![check], "{image}");
    }
    // Without provenance, check 6 cannot pass.
    let r = validate(&stage, &hardened(), &[]);
    assert_eq!(failed_checks(&r), vec![6]);
}

#[test]
fn an_unhardened_container_fails_the_runtime_checks() {
    let stage = Stage::new();
    let image = good_image();
    let r = docker(&["run", "-d", "--name", &stage.name, &image]);
    assert_eq!(r.code, 0, "{}", r.all());
    let r = validate(&stage, &image, &[]);
    assert_eq!(r.code, 3);
    assert!(
        r.json()["runtime_source"]
            .as_str()
            .unwrap()
            .starts_with("container"),
        "{}",
        r.all()
    );
    let failed = failed_checks(&r);
    for id in [7, 8, 9, 11, 12] {
        assert!(
            failed.contains(&id),
            "check {id} should fail for a plain docker run: {failed:?}"
        );
    }
    // The same image deployed hardened passes them.
    let _ = docker(&["rm", "-f", &stage.name]);
    assert_eq!(stage.deploy(&image).run().code, 0);
    let failed = failed_checks(&validate(&stage, &image, &[]));
    assert_eq!(failed, vec![6], "only provenance is missing");
}

fn setuid_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o4755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    b.append_data(&mut h, "usr/local/bin/tool", &b"x"[..])
        .unwrap();
    b.into_inner().unwrap()
}

fn sbom_image() -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let w = |rel: &str, data: &str| {
        let f = p.join(rel);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, data).unwrap();
    };
    w("rootfs/var/lib/dpkg/status", "Package: libc6\nStatus: install ok installed\nVersion: 2.36-9+deb12u4\nArchitecture: amd64\n\nPackage: zlib1g\nStatus: install ok installed\nVersion: 1:1.2.13.dfsg-1\nArchitecture: amd64\n");
    w(
        "rootfs/var/lib/dpkg/status.d/openssl",
        "Package: openssl\nVersion: 3.0.11-1~deb12u1\nArchitecture: amd64\n",
    );
    w(
        "rootfs/lib/apk/db/installed",
        "C:Q1abc\nP:musl\nV:1.2.4-r2\nA:x86_64\n\nP:busybox-extras\nV:1.36.1-r5\nA:x86_64\n",
    );
    w(
        "rootfs/app/node_modules/jose/package.json",
        r#"{"name":"jose","version":"4.15.4"}"#,
    );
    w(
        "rootfs/app/node_modules/@hono/node-server/package.json",
        r#"{"name":"@hono/node-server","version":"1.8.0"}"#,
    );
    w(
        "Dockerfile",
        "FROM scratch\nCOPY rootfs/ /\nENV BUN_VERSION=1.3.0\nUSER 65532:65532\n",
    );
    let s = Stage::new();
    let r = s.run(&[
        "build",
        "--context",
        path_str(p),
        "--tag",
        "dhi-test/sbom:1",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    "dhi-test/sbom:1".into()
}

#[test]
fn sbom_lists_exactly_the_packages_in_the_image() {
    let stage = Stage::new();
    let out = stage.dir.path().join("sbom.cdx.json");
    let r = validate(&stage, &sbom_image(), &["--sbom-out", path_str(&out)]);
    let bom: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(bom["bomFormat"], "CycloneDX");
    assert_eq!(bom["specVersion"], "1.5");
    assert_eq!(bom["metadata"]["component"]["type"], "container");
    let mut purls: Vec<String> = bom["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["purl"].as_str().unwrap().to_string())
        .collect();
    purls.sort();
    assert_eq!(
        purls,
        vec![
            "pkg:apk/alpine/busybox-extras@1.36.1-r5?arch=x86_64",
            "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64",
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64",
            "pkg:deb/debian/openssl@3.0.11-1~deb12u1?arch=amd64",
            "pkg:deb/debian/zlib1g@1%3A1.2.13.dfsg-1?arch=amd64",
            "pkg:generic/bun@1.3.0",
            "pkg:npm/%40hono/node-server@1.8.0",
            "pkg:npm/jose@4.15.4",
        ],
        "{}",
        r.all()
    );
    let spdx = stage.dir.path().join("sbom.spdx.json");
    validate(
        &stage,
        &sbom_image(),
        &["--sbom-out", path_str(&spdx), "--sbom-format", "spdx"],
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&spdx).unwrap()).unwrap();
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    assert_eq!(
        doc["packages"].as_array().unwrap().len(),
        9,
        "the image and its 8 packages"
    );
}

fn osv_fixture(dir: &Path) -> PathBuf {
    let db = dir.join("osv");
    for (eco, id, body) in [
        (
            "Debian",
            "DSA-0001",
            r#"{"id":"DSA-0001","aliases":["CVE-2026-0001"],"affected":[{"package":{"ecosystem":"Debian:12","name":"openssl"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"3.0.11-1~deb12u2"}]}],"ecosystem_specific":{"severity":"critical"}}]}"#,
        ),
        (
            "Debian",
            "DSA-0002",
            r#"{"id":"DSA-0002","aliases":["CVE-2026-0002"],"affected":[{"package":{"ecosystem":"Debian:12","name":"zlib1g"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"1:1.2.13.dfsg-2"}]}]}],"severity":[{"type":"CVSS_V3","score":"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:N"}]}"#,
        ),
        (
            "Debian",
            "DSA-0003",
            r#"{"id":"DSA-0003","aliases":["CVE-2026-0003"],"affected":[{"package":{"ecosystem":"Debian:12","name":"libc6"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"2.36-9+deb12u3"}]}],"ecosystem_specific":{"severity":"high"}}]}"#,
        ),
        (
            "npm",
            "GHSA-0004",
            r#"{"id":"GHSA-0004","aliases":["CVE-2026-0004"],"affected":[{"package":{"ecosystem":"npm","name":"jose"},"ranges":[{"type":"SEMVER","events":[{"introduced":"4.0.0"},{"fixed":"4.15.5"}]}],"database_specific":{"severity":"MODERATE"}}]}"#,
        ),
        (
            "Alpine",
            "ALPINE-0005",
            r#"{"id":"ALPINE-0005","aliases":["CVE-2026-0005"],"affected":[{"package":{"ecosystem":"Alpine:v3.19","name":"musl"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"1.2.4_git20230717-r0"}]}],"database_specific":{"severity":"HIGH"}}]}"#,
        ),
    ] {
        std::fs::create_dir_all(db.join(eco)).unwrap();
        std::fs::write(db.join(eco).join(format!("{id}.json")), body).unwrap();
    }
    db
}

fn vex_fixture(dir: &Path) -> PathBuf {
    let p = dir.join("vex.json");
    std::fs::write(&p, r#"{"@context":"https://openvex.dev/ns/v0.2.0","@id":"https://example.com/vex/1","author":"sec","timestamp":"2026-11-01T00:00:00Z","version":1,"statements":[
        {"vulnerability":{"name":"CVE-2026-0001"},"products":[{"@id":"pkg:deb/debian/openssl@3.0.11-1~deb12u1?arch=amd64"}],"status":"not_affected","justification":"vulnerable_code_not_in_execute_path"},
        {"vulnerability":{"name":"CVE-2026-0002"},"products":[{"@id":"pkg:deb/debian/zlib1g@1%3A1.2.13.dfsg-1"}],"status":"under_investigation"},
        {"vulnerability":{"name":"CVE-2026-0005"},"products":[{"@id":"pkg:apk/alpine/musl@1.2.4-r2"}],"status":"fixed"}]}"#).unwrap();
    p
}

#[test]
fn osv_matching_and_vex_give_exact_counts() {
    let stage = Stage::new();
    let db = osv_fixture(stage.dir.path());
    let vex = vex_fixture(stage.dir.path());
    let r = validate(
        &stage,
        &sbom_image(),
        &["--osv-db", path_str(&db), "--vex", path_str(&vex)],
    );
    let cve = r.json()["cve"].clone();
    // openssl: CRITICAL (3.0.11-1~deb12u1 < fixed ~deb12u2); zlib1g: CVSS 9.1 = CRITICAL (the epoch
    // makes 1:1.2.13.dfsg-1 < 1:1.2.13.dfsg-2); libc6: not affected (deb12u4 >= fixed deb12u3);
    // jose: MODERATE = MEDIUM (semver 4.15.4 in [4.0.0, 4.15.5)); musl: HIGH (apk: 1.2.4-r2 <
    // 1.2.4_git20230717-r0, _git being a post-release suffix).
    assert_eq!(
        cve["before"],
        serde_json::json!({"critical": 2, "high": 1, "medium": 1, "low": 0, "unknown": 0}),
        "{}",
        r.all()
    );
    // VEX: openssl not_affected (justified) and musl fixed suppress; zlib1g under_investigation does not.
    assert_eq!(
        cve["after_vex"],
        serde_json::json!({"critical": 1, "high": 0, "medium": 1, "low": 0, "unknown": 0})
    );
    assert_eq!(cve["suppressed"], 2);
    assert_eq!(r.code, 3, "a CRITICAL remains");
    assert!(stage
        .run(&[
            "validate",
            "--image",
            &sbom_image(),
            "--osv-db",
            path_str(&db),
            "--vex",
            path_str(&vex)
        ])
        .stdout
        .contains("VEX suppressed: 2"));
}

#[test]
fn trivy_and_grype_reports_give_the_same_counts() {
    let stage = Stage::new();
    let vex = vex_fixture(stage.dir.path());
    let trivy = stage.dir.path().join("trivy.json");
    std::fs::write(&trivy, r#"{"SchemaVersion":2,"Results":[{"Target":"img","Vulnerabilities":[
        {"VulnerabilityID":"CVE-2026-0001","PkgName":"openssl","InstalledVersion":"3.0.11-1~deb12u1","FixedVersion":"3.0.11-1~deb12u2","Severity":"CRITICAL","PkgIdentifier":{"PURL":"pkg:deb/debian/openssl@3.0.11-1~deb12u1?arch=amd64"}},
        {"VulnerabilityID":"CVE-2026-0002","PkgName":"zlib1g","InstalledVersion":"1:1.2.13.dfsg-1","Severity":"CRITICAL","PkgIdentifier":{"PURL":"pkg:deb/debian/zlib1g@1%3A1.2.13.dfsg-1?arch=amd64"}},
        {"VulnerabilityID":"CVE-2026-0004","PkgName":"jose","InstalledVersion":"4.15.4","Severity":"MEDIUM","PkgIdentifier":{"PURL":"pkg:npm/jose@4.15.4"}}]}]}"#).unwrap();
    let grype = stage.dir.path().join("grype.json");
    std::fs::write(&grype, r#"{"matches":[
        {"vulnerability":{"id":"CVE-2026-0001","severity":"Critical"},"artifact":{"name":"openssl","version":"3.0.11-1~deb12u1","purl":"pkg:deb/debian/openssl@3.0.11-1~deb12u1?arch=amd64"}},
        {"vulnerability":{"id":"CVE-2026-0002","severity":"Critical"},"artifact":{"name":"zlib1g","version":"1:1.2.13.dfsg-1","purl":"pkg:deb/debian/zlib1g@1%3A1.2.13.dfsg-1?arch=amd64"}},
        {"vulnerability":{"id":"GHSA-0004","severity":"Medium"},"relatedVulnerabilities":[{"id":"CVE-2026-0004"}],"artifact":{"name":"jose","version":"4.15.4","purl":"pkg:npm/jose@4.15.4"}}]}"#).unwrap();
    let image = sbom_image();
    let t = validate(
        &stage,
        &image,
        &["--scan-report", path_str(&trivy), "--vex", path_str(&vex)],
    )
    .json()["cve"]
        .clone();
    let g = validate(
        &stage,
        &image,
        &["--scan-report", path_str(&grype), "--vex", path_str(&vex)],
    )
    .json()["cve"]
        .clone();
    assert_eq!(t["before"], g["before"]);
    assert_eq!(t["after_vex"], g["after_vex"]);
    assert_eq!(
        t["after_vex"],
        serde_json::json!({"critical": 1, "high": 0, "medium": 1, "low": 0, "unknown": 0})
    );
    assert_eq!(
        (t["suppressed"].clone(), g["suppressed"].clone()),
        (serde_json::json!(1), serde_json::json!(1))
    );
    // A CRITICAL left is recorded for the monitor's immediate trigger.
    let db = rusqlite::Connection::open(stage.state_dir().join("state.db")).unwrap();
    let detail: String = db
        .query_row(
            "SELECT detail FROM validations WHERE kind='cve' ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&detail).unwrap()["after_vex"]["critical"],
        1
    );
}

#[test]
fn provenance_failures_say_which() {
    let stage = Stage::new();
    let d = stage.dir.path();
    let image = hardened();
    let (good, key) = attestation(d, "good", BASE_DIGEST, BUILDER);
    let (_, other_key) = attestation(d, "other", BASE_DIGEST, BUILDER);
    let (wrong_subject, wrong_subject_key) = attestation(
        d,
        "subject",
        "sha256:2222222222222222222222222222222222222222222222222222222222222222",
        BUILDER,
    );
    let (bad_builder, bad_builder_key) =
        attestation(d, "builder", BASE_DIGEST, "https://evil.example/builder");
    let tampered = d.join("tampered.json");
    let mut env: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&good).unwrap()).unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = String::from_utf8(b64.decode(env["payload"].as_str().unwrap()).unwrap())
        .unwrap()
        .replace("buildkit", "buildkat");
    env["payload"] = b64.encode(payload).into();
    std::fs::write(&tampered, env.to_string()).unwrap();

    let check = |envelope: &Path, key: &Path| {
        validate(
            &stage,
            &image,
            &["--provenance", path_str(envelope), "--key", path_str(key)],
        )
        .json()["provenance"]["detail"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        check(&good, &key).starts_with("verified"),
        "{}",
        check(&good, &key)
    );
    assert!(check(&tampered, &key).contains("signature verification failed"));
    assert!(check(&good, &other_key).contains("signature verification failed"));
    assert!(check(&wrong_subject, &wrong_subject_key).contains("subject digest mismatch"));
    assert!(check(&bad_builder, &bad_builder_key).contains("not in the allow-list"));
}

#[test]
fn bad_inputs_are_usage_errors() {
    let stage = Stage::new();
    let r = stage.run(&[
        "validate",
        "--image",
        &good_image(),
        "--vex",
        "/nonexistent/vex.json",
    ]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("/nonexistent/vex.json"));
    let r = stage.run(&["validate", "--image", "dhi-test/nope:none"]);
    assert_eq!(r.code, 2, "{}", r.all());
}

#[test]
fn push_attaches_the_sbom_as_a_sidecar_tag() {
    let reg = registry();
    require_registry(&reg);
    let stage = Stage::new();
    let image = good_image();
    let sbom = stage.dir.path().join("sbom.json");
    assert_eq!(
        validate(&stage, &image, &["--sbom-out", path_str(&sbom)]).json()["sbom"]["written_to"],
        path_str(&sbom)
    );
    let tag = unique("sbom");
    let r = stage.run(&[
        "push",
        "--image",
        &image,
        "--registry",
        &reg,
        "--tag",
        &tag,
        "--sbom",
        path_str(&sbom),
        "--output",
        "json",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    let sidecar = r.json()["sbom"]["reference"].as_str().unwrap().to_string();
    assert_eq!(sidecar, format!("{reg}/{}:{tag}.sbom", stage.repo));
    // Pull it back from the registry and read the document out of it.
    let _ = docker(&["rmi", &sidecar]);
    assert_eq!(docker(&["pull", &sidecar]).code, 0);
    let c = unique("sbom-read");
    assert_eq!(docker(&["create", "--name", &c, &sidecar, "x"]).code, 0);
    let out = stage.dir.path().join("pulled.json");
    let cp = docker(&["cp", &format!("{c}:/sbom.json"), path_str(&out)]);
    let _ = docker(&["rm", "-f", &c]);
    assert_eq!(cp.code, 0, "{}", cp.all());
    assert_eq!(
        std::fs::read_to_string(out).unwrap(),
        std::fs::read_to_string(&sbom).unwrap()
    );
}

#[test]
fn a_critical_cve_recorded_for_the_deployed_image_is_an_immediate_trigger() {
    let stage = Stage::new();
    let image = good_image();
    assert_eq!(stage.deploy(&image).run().code, 0);
    let report = stage.dir.path().join("trivy.json");
    std::fs::write(&report, r#"{"Results":[{"Vulnerabilities":[{"VulnerabilityID":"CVE-2026-9999","PkgName":"bun","InstalledVersion":"1.3.0","Severity":"CRITICAL"}]}]}"#).unwrap();
    assert_eq!(
        stage
            .run(&[
                "validate",
                "--image",
                &image,
                "--scan-report",
                path_str(&report)
            ])
            .code,
        3
    );
    let r = stage.run(&["monitor", "--once", "--output", "json"]);
    assert_eq!(r.code, 4, "{}", r.all());
    assert_eq!(r.json()["fired"][0]["name"], "critical_cve");
}
