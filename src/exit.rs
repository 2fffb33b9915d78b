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
