//! The exit statuses, in one place. CI jobs branch on these, so they are a contract:
//! 0 ok, 1 operational error, 2 usage, 3 a check or criterion failed, 4 a rollback trigger
//! fired, 5 a rollback failed, 6 the monitor is blind (a rule could not be judged for
//! longer than its window plus a margin: inconclusive is never ok).

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    Ok = 0,
    Operational = 1,
    Usage = 2,
    CheckFailed = 3,
    TriggerFired = 4,
    RollbackFailed = 5,
    Blind = 6,
}

impl Code {
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// A check's status: 0 when it passed, 3 when it did not.
    pub fn of_check(passed: bool) -> Code {
        if passed {
            Code::Ok
        } else {
            Code::CheckFailed
        }
    }
}

/// The exit statuses as documented: `--help`, `man` and the README's table are made from
/// this one table (a test holds the README to it word for word).
pub const TABLE: &[(Code, &str, &str)] = &[
    (
        Code::Ok,
        "ok",
        "ok",
    ),
    (
        Code::Operational,
        "operational error",
        "operational error (engine, registry, network, a TLS handshake the engine or we refused, the Kubernetes API server's refusal, state lock held, a state dir that cannot be created, a store from a newer dhi-stage, a deploy or rollback interrupted before it changed anything)",
    ),
    (
        Code::Usage,
        "usage",
        "usage: bad flags, bad config (with file:line and key), bad image reference, missing env file, production rollback without `--approved-by` (Docker or Kubernetes), an engine choice that names no engine (`--host`, `--docker-context`, `DOCKER_HOST`, `ssh://`), a Prometheus URL or credential variable that is not usable, `--target kubernetes` in a build without the `kubernetes` feature",
    ),
    (
        Code::CheckFailed,
        "a check or criterion failed",
        "a check or criterion failed: image too large, deploy not healthy or not verified (on Kubernetes: the rollout past its progress deadline, a pod not hardened), `status --target kubernetes` mid-rollout or a pod not ready, hardening missing, service unhealthy (`status`), score < 12/12 or HIGH/CRITICAL CVEs or provenance failed (`validate`), a preflight fail, load thresholds breached, a report recommending investigate/rollback, the week page saying blocked or rolled back, the gate not passing",
    ),
    (
        Code::TriggerFired,
        "a rollback trigger fired",
        "a rollback trigger fired (monitor)",
    ),
    (
        Code::RollbackFailed,
        "a rollback failed",
        "a rollback failed (the target is not available, or did not become healthy)",
    ),
    (
        Code::Blind,
        "the monitor is blind (a rule inconclusive for too long)",
        "the monitor is blind: a rule had no verdict for longer than its window plus `monitoring.blind_margin` (no metrics, no traffic, no samples, engine unreachable, no CVE scan)",
    ),
];

/// "Exit status: 0 ok, 1 operational error, ...": the line `--help` and `man` end with.
pub fn summary() -> String {
    let codes: Vec<String> = TABLE
        .iter()
        .map(|(c, short, _)| format!("{} {short}", c.as_i32()))
        .collect();
    format!("Exit status: {}.", codes.join(", "))
}

/// The README's table, as `README.md` must show it.
#[cfg(test)]
fn markdown_table() -> String {
    let mut t = String::from("| code | meaning |\n|---|---|\n");
    for (c, _, long) in TABLE {
        t.push_str(&format!("| {} | {long} |\n", c.as_i32()));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_shows_the_exit_table_word_for_word() {
        let readme = include_str!("../README.md");
        assert!(
            readme.contains(&markdown_table()),
            "README.md's '## Exit codes' table differs from exit::TABLE; it should read:\n{}",
            markdown_table()
        );
        assert_eq!(TABLE.len(), 7);
        assert!(
            summary().contains("6 the monitor is blind"),
            "{}",
            summary()
        );
    }
}

/// An error that carries its exit status; anything else that escapes is operational (1).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub code: Code,
    pub message: String,
}

pub fn failure(code: Code, message: impl Into<String>) -> anyhow::Error {
    Failure {
        code,
        message: message.into(),
    }
    .into()
}

pub fn code_of(err: &anyhow::Error) -> Code {
    err.chain()
        .find_map(|e| e.downcast_ref::<Failure>())
        .map(|f| f.code)
        .unwrap_or(Code::Operational)
}
