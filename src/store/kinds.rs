//! The words the store keeps in its `kind` and `status` columns, as types: a typo is a
//! compile error, and a reader matches on variants instead of comparing strings. Stored as
//! the same lowercase text as before, so existing stores and `sqlite3` queries keep working.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::{Deserialize, Serialize};

macro_rules! stored_words {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $word),+ }
            }

            pub fn parse(s: &str) -> Option<$name> {
                match s { $($word => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $name {
            fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
                let s = v.as_str()?;
                $name::parse(s).ok_or_else(|| {
                    FromSqlError::Other(format!("unknown {} {s:?} in the store", stringify!($name)).into())
                })
            }
        }
    };
}

stored_words!(
    /// What a deployment row records: a deploy, a rollback, or one leg of a drill.
    DeploymentKind {
        Deploy = "deploy",
        Rollback = "rollback",
        Drill = "drill",
    }
);

stored_words!(
    /// Where a deployment is: `starting` until verified or failed; `active` is the one
    /// serving; `superseded` once another became active.
    DeploymentStatus {
        Starting = "starting",
        Active = "active",
        Failed = "failed",
        Superseded = "superseded",
    }
);

stored_words!(
    /// What an event records; its detail is the matching struct in `store::events`.
    EventKind {
        Deploy = "deploy",
        Verify = "verify",
        Trigger = "trigger",
        Rollback = "rollback",
        RollbackNoop = "rollback-noop", // a rollback to what already runs: nothing changed
        Drill = "drill",
        Blind = "blind",
        Reconcile = "reconcile",
        Notify = "notify",
        Incident = "incident", // an incident report written (again, once its after-window is complete)
        AlertDrill = "alert-drill", // `alerts --drill`: a test alert through Alertmanager
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_unknown_words_are_refused() {
        for k in [EventKind::Trigger, EventKind::Reconcile, EventKind::Notify] {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        assert_eq!(
            DeploymentStatus::parse("superseded"),
            Some(DeploymentStatus::Superseded)
        );
        assert_eq!(DeploymentKind::parse("Deploy"), None);
    }
}
