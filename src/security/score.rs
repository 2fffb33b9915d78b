//! The security score: twelve checks, each with its standard's ID, the evidence and the fix,
//! so "12/12" is something anyone can audit. Image checks read the image config and every
//! layer; runtime checks read the running container (or the spec deploy would create).
//! Pure functions over gathered facts.

use std::collections::HashMap;

use serde::Serialize;

use super::hardening;
use super::layers::Filesystem;

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub id: u8,
    pub name: String,
    pub standard: String,
    pub passed: bool,
    pub evidence: String,
    pub fix: String,
}

#[derive(Debug, Clone, Default)]
pub struct ImageFacts {
    pub user: String,
    pub env: Vec<String>,
    pub labels: HashMap<String, String>,
    pub history: Vec<String>,
    pub size_bytes: u64,
    pub healthcheck: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RuntimeFacts {
    /// "container NAME" or "deploy spec (nothing running)".
    pub source: String,
    pub read_only: bool,
    pub cap_drop: Vec<String>,
    pub cap_add: Vec<String>,
    pub security_opt: Vec<String>,
    pub privileged: bool,
    pub namespaces: Vec<(String, String)>,
    pub mount_sources: Vec<String>,
    pub tmpfs: HashMap<String, String>,
    pub memory: i64,
    pub nano_cpus: i64,
    pub cpu_quota: i64,
    pub pids_limit: i64,
    pub restart_policy: String,
    pub restart_count: Option<i64>,
    pub health_probe: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Provenance {
    pub verified: bool,
    pub detail: String,
}

pub struct Inputs<'a> {
    pub image: &'a ImageFacts,
    pub fs: &'a Filesystem,
    pub runtime: &'a RuntimeFacts,
    pub expected_uid: u32,
    pub max_size_bytes: u64,
    pub provenance: Option<&'a Provenance>,
}

const SHELLS: &[&str] = &["sh", "bash", "ash", "dash", "zsh", "ksh", "busybox"];
const PACKAGE_MANAGERS: &[&str] = &[
    "apt", "apt-get", "dpkg", "apk", "yum", "dnf", "rpm", "microdnf", "pip", "pip3",
];
const PRIVILEGE_TOOLS: &[&str] = &["sudo", "su", "doas"];
const BIN_DIRS: &[&str] = &[
    "bin",
    "sbin",
    "usr/bin",
    "usr/sbin",
    "usr/local/bin",
    "usr/local/sbin",
];
const SECRET_WORDS: &[&str] = &[
    "PASSWORD",
    "PASSWD",
    "SECRET",
    "TOKEN",
    "API_KEY",
    "APIKEY",
    "PRIVATE_KEY",
    "ACCESS_KEY",
    "CREDENTIAL",
];

fn secret_name(key: &str) -> bool {
    let k = key.to_ascii_uppercase();
    SECRET_WORDS.iter().any(|w| k.contains(w))
}

/// `KEY=value` pairs whose key names a secret and whose value is set.
fn secret_assignments(items: &[String]) -> Vec<String> {
    items
        .iter()
        .flat_map(|i| i.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter_map(|w| {
            let (k, v) = w.split_once('=')?;
            let k = k.trim_start_matches("--build-arg").trim();
            (secret_name(k) && !v.trim_matches('"').is_empty() && !v.starts_with('$'))
                .then(|| k.to_string())
        })
        .collect()
}

fn secret_files(fs: &Filesystem) -> Vec<String> {
    fs.files
        .iter()
        .filter(|(p, _)| hardening::looks_like_secret_file(p) && fs.present.contains(p.as_str()))
        .filter(|(p, data)| {
            let text = String::from_utf8_lossy(data);
            let name = p.rsplit('/').next().unwrap_or(p);
            if name.ends_with(".pem") || name.ends_with(".key") {
                text.contains("PRIVATE KEY")
            } else if name == ".npmrc" {
                text.contains("_auth")
            } else if name == ".env" {
                text.lines().any(|l| {
                    l.split_once('=')
                        .is_some_and(|(k, v)| secret_name(k) && !v.trim().is_empty())
                })
            } else {
                true
            }
        })
        .map(|(p, _)| format!("/{p}"))
        .collect()
}

fn present_tools(fs: &Filesystem, names: &[&str]) -> Vec<String> {
    BIN_DIRS
        .iter()
        .flat_map(|d| names.iter().map(move |n| format!("{d}/{n}")))
        .filter(|p| fs.present.contains(p))
        .map(|p| format!("/{p}"))
        .collect()
}

fn check(id: u8, name: &str, standard: &str, passed: bool, evidence: String, fix: &str) -> Check {
    Check {
        id,
        name: name.into(),
        standard: standard.into(),
        passed,
        evidence,
        fix: fix.into(),
    }
}

pub fn score(i: &Inputs<'_>) -> Vec<Check> {
    let img = i.image;
    let rt = i.runtime;
    let mut out = Vec::with_capacity(12);

    let uid_ok =
        hardening::User::parse(&img.user).is_ok_and(|u| !u.is_root() && u.uid == i.expected_uid);
    out.push(check(
        1,
        "non-root numeric user",
        "CIS 4.1, CIS-DI-0001",
        uid_ok,
        format!("image USER {:?}, expected {}", img.user, i.expected_uid),
        "set `USER 65532:65532` (numeric, so Kubernetes runAsNonRoot can verify it)",
    ));

    let setuid: Vec<String> =
        i.fs.entries
            .iter()
            .filter(|e| !e.is_dir && !e.is_link && e.mode & 0o6000 != 0)
            .map(|e| format!("/{} ({:o}, layer {})", e.path, e.mode, e.layer + 1))
            .collect();
    out.push(check(
        2,
        "no setuid/setgid files in any layer",
        "CIS 4.8, CIS-DI-0008",
        setuid.is_empty(),
        if setuid.is_empty() {
            format!(
                "{} entries in {} layers, none with mode & 06000",
                i.fs.entries.len(),
                i.fs.layers
            )
        } else {
            setuid.join(", ")
        },
        "remove the files or their bits (`chmod a-s`) in the build stage",
    ));

    let mut tools = present_tools(i.fs, SHELLS);
    tools.extend(present_tools(i.fs, PACKAGE_MANAGERS));
    tools.extend(present_tools(i.fs, PRIVILEGE_TOOLS));
    out.push(check(
        3,
        "no shell, package manager or sudo",
        "DKL-DI-0001, CIS 4.3",
        tools.is_empty(),
        if tools.is_empty() {
            "none found in the final filesystem".into()
        } else {
            tools.join(", ")
        },
        "use a DHI/distroless runtime stage; keep shells and package managers in the build stage",
    ));

    let mut secrets: Vec<String> = secret_assignments(&img.env)
        .into_iter()
        .map(|k| format!("ENV {k}"))
        .collect();
    let labels: Vec<String> = img.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    secrets.extend(
        secret_assignments(&labels)
            .into_iter()
            .map(|k| format!("LABEL {k}")),
    );
    secrets.extend(
        secret_assignments(&img.history)
            .into_iter()
            .map(|k| format!("history: {k}")),
    );
    secrets.extend(secret_files(i.fs).into_iter().map(|p| format!("file {p}")));
    secrets.sort();
    secrets.dedup();
    out.push(check(4, "no secrets in ENV, labels, history or files", "CIS 4.10, CIS-DI-0010", secrets.is_empty(),
        if secrets.is_empty() { "no secret-named variables with values, no key or credential files".into() } else { secrets.join(", ") },
        "pass secrets at run time (env file, secret store), never at build time; use BuildKit secret mounts"));

    out.push(check(
        5,
        "image size within the limit",
        "runbook: <=58MB",
        img.size_bytes <= i.max_size_bytes,
        format!(
            "{:.2} MB of {:.0} MB (MB = 10^6 bytes)",
            img.size_bytes as f64 / 1e6,
            i.max_size_bytes as f64 / 1e6
        ),
        "drop build tooling from the runtime stage; multi-stage build",
    ));

    let base_digest = img
        .labels
        .get("org.opencontainers.image.base.digest")
        .filter(|d| d.starts_with("sha256:"));
    let pinned = base_digest.is_some()
        || img
            .labels
            .get("org.opencontainers.image.base.name")
            .is_some_and(|n| n.contains("@sha256:"));
    let prov_ok = i.provenance.is_some_and(|p| p.verified);
    out.push(check(6, "base image provenance verified and pinned by digest", "DKL-DI-0006", pinned && prov_ok,
        format!("base pinned: {}; provenance: {}", base_digest.map(String::as_str).unwrap_or(if pinned { "by name@digest" } else { "no" }),
            i.provenance.map(|p| p.detail.as_str()).unwrap_or("not verified (pass --provenance FILE --key PEM)")),
        "FROM <dhi-image>@sha256:...; label org.opencontainers.image.base.digest; verify the DHI attestation with its published key"));

    out.push(check(
        7,
        "read-only root filesystem",
        "CIS 5.13",
        rt.read_only,
        format!("{}: ReadonlyRootfs {}", rt.source, rt.read_only),
        "--read-only",
    ));

    let drop_all = hardening::drops_all_capabilities(&rt.cap_drop);
    let extra = hardening::extra_capabilities(&rt.cap_add);
    out.push(check(
        8,
        "all capabilities dropped",
        "CIS 5.4",
        drop_all && extra.is_empty(),
        format!(
            "{}: CapDrop {:?}, CapAdd {:?}",
            rt.source, rt.cap_drop, rt.cap_add
        ),
        "--cap-drop=ALL (add back at most NET_BIND_SERVICE)",
    ));

    let nnp = hardening::no_new_privileges(&rt.security_opt);
    out.push(check(
        9,
        "no-new-privileges, not privileged",
        "CIS 5.26, CIS 5.5",
        nnp && !rt.privileged,
        format!(
            "{}: SecurityOpt {:?}, Privileged {}",
            rt.source, rt.security_opt, rt.privileged
        ),
        "--security-opt=no-new-privileges:true, never --privileged",
    ));

    let unconfined = rt
        .security_opt
        .iter()
        .any(|o| o.replace(':', "=") == "seccomp=unconfined");
    let host_ns: Vec<String> = rt
        .namespaces
        .iter()
        .filter(|(_, v)| v == "host")
        .map(|(k, _)| k.clone())
        .collect();
    let sensitive: Vec<&String> = rt
        .mount_sources
        .iter()
        .filter(|s| {
            let s = s.trim_end_matches('/');
            s.ends_with("docker.sock")
                || ["/proc", "/sys", "/dev", "/etc"]
                    .iter()
                    .any(|p| s == *p || s.starts_with(&format!("{p}/")))
                || s.is_empty()
        })
        .collect();
    out.push(check(10, "seccomp confined, no host namespaces or sensitive mounts", "CIS 5.21, 5.6-5.17, 5.31",
        !unconfined && host_ns.is_empty() && sensitive.is_empty(),
        format!("{}: seccomp {}, host namespaces {:?}, sensitive mounts {:?}", rt.source, if unconfined { "unconfined" } else { "default" }, host_ns, sensitive),
        "keep the default seccomp profile; no --net/--pid/--ipc/--uts/--userns=host; never mount docker.sock, /proc, /sys, /dev or /etc"));

    let bad_tmpfs: Vec<String> = rt
        .tmpfs
        .iter()
        .filter(|(_, o)| {
            let opts: Vec<&str> = o.split(',').collect();
            !hardening::tmpfs_lacks(&opts).is_empty()
                || !opts.iter().any(|x| x.starts_with("size="))
        })
        .map(|(p, o)| format!("{p}:{o}"))
        .collect();
    let limits = rt.memory > 0 && (rt.nano_cpus > 0 || rt.cpu_quota > 0) && rt.pids_limit > 0;
    out.push(check(
        11,
        "tmpfs noexec,nosuid with size; memory, CPU, pids limits",
        "CIS 5.11, 5.12, 5.29",
        bad_tmpfs.is_empty() && limits,
        format!(
            "{}: tmpfs {:?}{}; memory {} B, NanoCpus {}, PidsLimit {}",
            rt.source,
            rt.tmpfs,
            if bad_tmpfs.is_empty() {
                String::new()
            } else {
                format!(" (lacking: {})", bad_tmpfs.join(" "))
            },
            rt.memory,
            rt.nano_cpus,
            rt.pids_limit
        ),
        "--tmpfs PATH:noexec,nosuid,size=N; --memory, --cpus, --pids-limit",
    ));

    let health = img.healthcheck || rt.health_probe.is_some();
    let restarts_ok = rt.restart_count.is_none_or(|c| c <= 3);
    out.push(check(
        12,
        "health check defined; restart unless-stopped, bounded restarts",
        "CIS 4.6, 5.15",
        health && rt.restart_policy == "unless-stopped" && restarts_ok,
        format!(
            "{}; restart policy {:?}, restarts {}",
            if img.healthcheck {
                "image HEALTHCHECK".to_string()
            } else {
                rt.health_probe
                    .clone()
                    .map(|p| format!("probe {p}"))
                    .unwrap_or("no health check".into())
            },
            rt.restart_policy,
            rt.restart_count
                .map(|c| c.to_string())
                .unwrap_or("n/a (not running)".into())
        ),
        "HEALTHCHECK or a /health probe; --restart=unless-stopped; find why it restarts",
    ));
    out
}
