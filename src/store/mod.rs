//! The state store: one SQLite file (`<state-dir>/state.db`, WAL) holding deployments,
//! events, images, samples, validation and test results, so that separate invocations
//! (cron, CI, an operator) share one history. The schema is versioned with `user_version`.

use std::path::Path;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use serde_json::Value;

pub use kinds::{DeploymentKind, DeploymentStatus, EventKind};

pub mod codec;
pub mod events;
pub mod kinds;
pub mod sample;
mod samples;

/// One schema step: its SQL, then any conversion of existing rows that SQL cannot do.
struct Migration {
    sql: &'static str,
    convert: Option<fn(&Connection) -> rusqlite::Result<()>>,
}

/// Migrations in order; `user_version` counts how many have been applied.
const MIGRATIONS: &[Migration] = &[
    Migration {
        sql: r#"
CREATE TABLE images (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    action TEXT NOT NULL,              -- build | push
    reference TEXT NOT NULL,
    image_id TEXT,
    size_bytes INTEGER,
    digest TEXT
);
CREATE TABLE deployments (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,                -- deploy | rollback | drill
    status TEXT NOT NULL,              -- starting | active | failed | superseded
    image_ref TEXT NOT NULL,
    image_id TEXT,
    digest TEXT,
    container_id TEXT,
    container_name TEXT NOT NULL,
    previous_id INTEGER REFERENCES deployments(id),
    insecure INTEGER NOT NULL DEFAULT 0,
    started_at TEXT NOT NULL,
    healthy_at TEXT,
    finished_at TEXT,
    verification TEXT                  -- JSON
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,                -- deploy | verify | trigger | rollback | drill | ...
    deployment_id INTEGER REFERENCES deployments(id),
    detail TEXT NOT NULL               -- JSON
);
CREATE INDEX events_kind_at ON events(kind, at);
CREATE TABLE samples (
    id INTEGER PRIMARY KEY,
    ts_ms INTEGER NOT NULL,
    day INTEGER,
    deployment_id INTEGER,
    target TEXT NOT NULL,              -- base URL the sample was taken from
    container TEXT,
    health_ok INTEGER NOT NULL,
    health_http_status INTEGER,
    health_latency_ms REAL,
    health_detail TEXT,                -- JSON: parsed status, dependencies, error
    metrics TEXT,                      -- JSON: counters and histogram buckets
    memory_bytes INTEGER,
    cpu_pct REAL,
    restart_count INTEGER,
    oom_killed INTEGER,
    log_errors INTEGER
);
CREATE INDEX samples_target_ts ON samples(target, ts_ms);
CREATE TABLE validations (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    image_ref TEXT,
    image_id TEXT,
    kind TEXT NOT NULL,                -- score | sbom | cve | provenance | preflight
    passed INTEGER NOT NULL,
    detail TEXT NOT NULL               -- JSON
);
CREATE TABLE test_results (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    day INTEGER,
    kind TEXT NOT NULL,                -- load:smoke | load:load | e2e | k6-import
    passed INTEGER NOT NULL,
    detail TEXT NOT NULL               -- JSON
);
"#,
        convert: None,
    },
    // Issue F: what a sample could not read and why, the counters a cron run continues from,
    // whose sample it is (the image under test or the baseline), and per-rule blindness.
    Migration {
        sql: r#"
ALTER TABLE samples ADD COLUMN role TEXT;
ALTER TABLE samples ADD COLUMN container_id TEXT;
ALTER TABLE samples ADD COLUMN scrape_error TEXT;
ALTER TABLE samples ADD COLUMN parse_errors INTEGER NOT NULL DEFAULT 0;
ALTER TABLE samples ADD COLUMN engine_error TEXT;
ALTER TABLE samples ADD COLUMN cpu_total_ns INTEGER;
ALTER TABLE samples ADD COLUMN system_cpu_ns INTEGER;
ALTER TABLE samples ADD COLUMN log_cursor_ns INTEGER;
CREATE TABLE rule_states (
    target TEXT NOT NULL,
    deployment_id INTEGER NOT NULL,    -- 0 when no deployment is recorded
    rule TEXT NOT NULL,
    severity TEXT NOT NULL,
    inconclusive_since_ms INTEGER,     -- NULL while the rule has a verdict
    last_conclusive_ms INTEGER,
    reason TEXT,
    alerted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (target, deployment_id, rule, severity)
);
"#,
        convert: None,
    },
    // Issue H: compact samples (see `samples.rs`); the rows are converted in place and the
    // old table's name becomes a view that reads like it.
    Migration {
        sql: samples::SCHEMA,
        convert: Some(samples::convert_v2_rows),
    },
    // Issue P: where a deployment's service answers (its published port and base URL), so
    // later commands act on what was deployed rather than on the configuration's defaults.
    Migration {
        sql: r#"
ALTER TABLE deployments ADD COLUMN host_port INTEGER;
ALTER TABLE deployments ADD COLUMN base_url TEXT;
"#,
        convert: None,
    },
];

/// How long one rule has been without a verdict (for blindness).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RuleState {
    pub rule: String,
    pub severity: String,
    pub inconclusive_since_ms: Option<i64>,
    pub last_conclusive_ms: Option<i64>,
    /// Whether the blindness of this stretch was already announced.
    pub alerted: bool,
}

pub struct Store {
    conn: Connection,
    path: std::path::PathBuf,
    /// When set, rows are stamped with this time instead of the wall clock: the week
    /// generator writes a past week through the same calls the commands use.
    clock: std::cell::Cell<Option<DateTime<Utc>>>,
    /// Ids of sample series, texts and bucket layouts already written or read.
    interned: std::cell::RefCell<samples::Interned>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Deployment {
    pub id: i64,
    pub kind: DeploymentKind,
    pub status: DeploymentStatus,
    pub image_ref: String,
    pub image_id: Option<String>,
    pub digest: Option<String>,
    pub container_id: Option<String>,
    pub container_name: String,
    pub previous_id: Option<i64>,
    pub insecure: bool,
    pub started_at: DateTime<Utc>,
    pub healthy_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub verification: Option<Value>,
    /// The host port the container published (None before issue P's migration).
    pub host_port: Option<u16>,
    /// The base URL its /health and /metrics were read from.
    pub base_url: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewDeployment {
    pub kind: DeploymentKind,
    pub image_ref: String,
    pub image_id: Option<String>,
    pub digest: Option<String>,
    pub container_name: String,
    pub previous_id: Option<i64>,
    pub insecure: bool,
    pub host_port: Option<u16>,
    pub base_url: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub kind: EventKind,
    pub deployment_id: Option<i64>,
    pub detail: Value,
}

impl Event {
    /// The detail as `T`; a detail that does not fit (hand-edited, another version's) reads
    /// as `T::default()` rather than failing a report.
    pub fn detail_as<T: serde::de::DeserializeOwned + Default>(&self) -> T {
        serde_json::from_value(self.detail.clone()).unwrap_or_default()
    }

    pub fn trigger(&self) -> events::TriggerDetail {
        self.detail_as()
    }

    pub fn rollback(&self) -> events::RollbackDetail {
        self.detail_as()
    }

    pub fn drill(&self) -> events::DrillDetail {
        self.detail_as()
    }

    pub fn blind(&self) -> events::BlindDetail {
        self.detail_as()
    }

    pub fn incident(&self) -> events::IncidentDetail {
        self.detail_as()
    }
}

/// One recorded validation (score, sbom, cve, provenance, preflight).
#[derive(Debug, Clone)]
pub struct ValidationRow {
    pub at: DateTime<Utc>,
    pub image_ref: Option<String>,
    pub kind: String,
    pub passed: bool,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store> {
        // The store holds deployments, events and incident detail: owner only.
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("cannot create state dir {}", dir.display()))?;
        }
        let path = dir.join("state.db");
        let mut conn = Connection::open(&path)
            .with_context(|| format!("cannot open state store {}", path.display()))?;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        let at = || format!("state store {}", path.display());
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .with_context(at)?;
        // Switching a new file to WAL takes an exclusive lock and SQLite answers BUSY at once
        // (the busy timeout does not apply) while another first open does the same: retry.
        retry_busy(|| conn.pragma_update(None, "journal_mode", "WAL")).with_context(at)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .with_context(at)?;
        // IMMEDIATE takes the write lock before the version is read, so two first opens of
        // a new state dir serialise instead of both creating the tables.
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .with_context(|| format!("cannot write to the state store {}", path.display()))?;
        let version: usize = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > MIGRATIONS.len() {
            anyhow::bail!(
                "state store {} has schema version {version}, newer than this dhi-stage knows ({}); upgrade dhi-stage",
                path.display(),
                MIGRATIONS.len()
            );
        }
        let mut converted = false;
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version) {
            let failed = || format!("state store {}: migration {} failed", path.display(), i + 1);
            tx.execute_batch(m.sql).with_context(failed)?;
            if let Some(convert) = m.convert {
                convert(&tx).with_context(failed)?;
                converted = version > 0;
            }
            tx.pragma_update(None, "user_version", i + 1)?;
        }
        tx.commit()
            .with_context(|| format!("cannot write to the state store {}", path.display()))?;
        if converted {
            // The old rows' pages are free now; give them back to the file system once.
            conn.execute_batch("VACUUM").with_context(at)?;
        }
        for side in ["state.db-wal", "state.db-shm"] {
            let _ =
                std::fs::set_permissions(dir.join(side), std::fs::Permissions::from_mode(0o600));
        }
        Ok(Store {
            conn,
            path,
            clock: std::cell::Cell::new(None),
            interned: Default::default(),
        })
    }

    /// The state dir this store lives in.
    pub fn dir(&self) -> Option<std::path::PathBuf> {
        self.path.parent().map(|p| p.to_path_buf())
    }

    /// Stamps what is written from now on with `at` (None: the wall clock again).
    pub fn set_clock(&self, at: Option<DateTime<Utc>>) {
        self.clock.set(at);
    }

    fn now(&self) -> String {
        match self.clock.get() {
            Some(at) => at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            None => now(),
        }
    }

    /// Runs `f` in one transaction: a generator writing a week of rows commits once.
    pub fn batch<T>(&mut self, f: impl FnOnce(&Store) -> Result<T>) -> Result<T> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        match f(self) {
            Ok(v) => {
                self.conn.execute_batch("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                self.forget_interned();
                Err(e)
            }
        }
    }

    pub fn record_image(
        &self,
        action: &str,
        reference: &str,
        image_id: Option<&str>,
        size: Option<i64>,
        digest: Option<&str>,
    ) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO images(at, action, reference, image_id, size_bytes, digest) VALUES (?1,?2,?3,?4,?5,?6)",
            params![self.now(), action, reference, image_id, size, digest],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn insert_deployment(&self, d: &NewDeployment) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO deployments(kind, status, image_ref, image_id, digest, container_name, previous_id, insecure, started_at, host_port, base_url)
             VALUES (?1,'starting',?2,?3,?4,?5,?6,?7,?8,?9,?10)",
            params![d.kind, d.image_ref, d.image_id, d.digest, d.container_name, d.previous_id, d.insecure, self.now(), d.host_port, d.base_url],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn set_container(&self, id: i64, container_id: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE deployments SET container_id=?2 WHERE id=?1",
            params![id, container_id],
        )?;
        Ok(())
    }

    pub fn mark_healthy(&self, id: i64, at: DateTime<Utc>) -> Result<()> {
        self.conn.execute(
            "UPDATE deployments SET healthy_at=?2 WHERE id=?1",
            params![id, at.to_rfc3339()],
        )?;
        Ok(())
    }

    /// Closes a deployment attempt. When it becomes `active`, whatever was active for the
    /// same container name is `superseded`, in one transaction.
    pub fn finish_deployment(
        &mut self,
        id: i64,
        status: DeploymentStatus,
        verification: Option<&Value>,
    ) -> Result<()> {
        let stamp = self.now();
        let tx = self.conn.transaction()?;
        if status == DeploymentStatus::Active {
            tx.execute(
                "UPDATE deployments SET status='superseded' WHERE status='active' AND id<>?1
                 AND container_name=(SELECT container_name FROM deployments WHERE id=?1)",
                [id],
            )?;
        }
        tx.execute(
            "UPDATE deployments SET status=?2, finished_at=?3, verification=COALESCE(?4, verification) WHERE id=?1",
            params![id, status, stamp, verification.map(|v| v.to_string())],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Marks an earlier deployment active again (a rollback restored its container as it was).
    pub fn reactivate(&mut self, id: i64) -> Result<()> {
        self.finish_deployment(id, DeploymentStatus::Active, None)
    }

    /// The deployment serving now, whatever its container's name: the one a later command
    /// acts on when the operator names none.
    pub fn latest_active_deployment(&self) -> Result<Option<Deployment>> {
        self.query_deployment("WHERE status='active' ORDER BY id DESC LIMIT 1", params![])
    }

    pub fn active_deployment(&self, container_name: &str) -> Result<Option<Deployment>> {
        self.query_deployment(
            "WHERE status='active' AND container_name=?1 ORDER BY id DESC LIMIT 1",
            params![container_name],
        )
    }

    /// When the latest deploy or rollback of `container_name` that is still in progress
    /// started (a `starting` deployment), if one is.
    pub fn rollout_in_progress(&self, container_name: &str) -> Result<Option<DateTime<Utc>>> {
        Ok(self
            .conn
            .query_row(
                "SELECT started_at FROM deployments WHERE status='starting' AND container_name=?1 ORDER BY id DESC LIMIT 1",
                [container_name],
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .map(|s| parse_time(&s)))
    }

    pub fn deployment(&self, id: i64) -> Result<Option<Deployment>> {
        self.query_deployment("WHERE id=?1", params![id])
    }

    fn query_deployment(
        &self,
        clause: &str,
        p: impl rusqlite::Params,
    ) -> Result<Option<Deployment>> {
        Ok(self
            .conn
            .query_row(
                &format!("{DEPLOYMENT_COLUMNS} {clause}"),
                p,
                row_to_deployment,
            )
            .optional()?)
    }

    pub fn event(
        &self,
        kind: EventKind,
        deployment_id: Option<i64>,
        detail: &impl Serialize,
    ) -> Result<i64> {
        let detail = serde_json::to_value(detail)?.to_string();
        // No credential the process knows is stored, whatever a source echoed into it.
        let detail = crate::redact::scrub(&detail);
        self.conn.execute(
            "INSERT INTO events(at, kind, deployment_id, detail) VALUES (?1,?2,?3,?4)",
            params![self.now(), kind, deployment_id, detail.as_ref()],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn update_rule_states(
        &mut self,
        target: &str,
        deployment_id: Option<i64>,
        now_ms: i64,
        verdicts: &[(String, String, bool)],
    ) -> Result<Vec<RuleState>> {
        let dep = deployment_id.unwrap_or(0);
        let tx = self.conn.transaction()?;
        let mut out = Vec::new();
        for (rule, severity, conclusive) in verdicts {
            if *conclusive {
                tx.execute(
                    "INSERT INTO rule_states(target, deployment_id, rule, severity, inconclusive_since_ms, last_conclusive_ms, alerted)
                     VALUES (?1,?2,?3,?4,NULL,?5,0)
                     ON CONFLICT(target, deployment_id, rule, severity)
                     DO UPDATE SET inconclusive_since_ms=NULL, last_conclusive_ms=?5, alerted=0",
                    params![target, dep, rule, severity, now_ms],
                )?;
            } else {
                tx.execute(
                    "INSERT INTO rule_states(target, deployment_id, rule, severity, inconclusive_since_ms, alerted)
                     VALUES (?1,?2,?3,?4,?5,0)
                     ON CONFLICT(target, deployment_id, rule, severity)
                     DO UPDATE SET inconclusive_since_ms=COALESCE(inconclusive_since_ms, ?5)",
                    params![target, dep, rule, severity, now_ms],
                )?;
            }
            let st = tx.query_row(
                "SELECT inconclusive_since_ms, last_conclusive_ms, alerted FROM rule_states
                 WHERE target=?1 AND deployment_id=?2 AND rule=?3 AND severity=?4",
                params![target, dep, rule, severity],
                |r| {
                    Ok(RuleState {
                        rule: rule.clone(),
                        severity: severity.clone(),
                        inconclusive_since_ms: r.get(0)?,
                        last_conclusive_ms: r.get(1)?,
                        alerted: r.get(2)?,
                    })
                },
            )?;
            out.push(st);
        }
        tx.commit()?;
        Ok(out)
    }

    /// Marks a rule's current blind stretch as announced.
    pub fn mark_blind_alerted(
        &self,
        target: &str,
        deployment_id: Option<i64>,
        rule: &str,
        severity: &str,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE rule_states SET alerted=1 WHERE target=?1 AND deployment_id=?2 AND rule=?3 AND severity=?4",
            params![target, deployment_id.unwrap_or(0), rule, severity],
        )?;
        Ok(())
    }

    /// CRITICAL CVEs left after VEX in the latest CVE validation of this image (by id, else
    /// by reference), if any ran (None also when the scan recorded no count: unknown is not
    /// zero).
    pub fn critical_cves(
        &self,
        image_id: Option<&str>,
        image_ref: Option<&str>,
    ) -> Result<Option<u32>> {
        let Some(image_ref) = image_ref else {
            return Ok(None);
        };
        Ok(self
            .latest_validation_of("cve", image_id, image_ref)?
            .and_then(|(_, _, v)| v.pointer("/after_vex/critical").and_then(Value::as_u64))
            .map(|n| n as u32))
    }

    pub fn record_validation(
        &self,
        image_ref: Option<&str>,
        image_id: Option<&str>,
        kind: &str,
        passed: bool,
        detail: &Value,
    ) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO validations(at, image_ref, image_id, kind, passed, detail) VALUES (?1,?2,?3,?4,?5,?6)",
            params![self.now(), image_ref, image_id, kind, passed, detail.to_string()],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn record_test_result(
        &self,
        day: Option<u32>,
        kind: &str,
        passed: bool,
        detail: &Value,
    ) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO test_results(at, day, kind, passed, detail) VALUES (?1,?2,?3,?4,?5)",
            params![self.now(), day, kind, passed, detail.to_string()],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// (kind, passed, detail, at) of test results recorded for `day`.
    pub fn test_results(&self, day: u32) -> Result<Vec<(String, bool, Value, String)>> {
        let mut stmt = self.conn.prepare(
            "SELECT kind, passed, detail, at FROM test_results WHERE day=?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([day], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                serde_json::from_str(&r.get::<_, String>(2)?).unwrap_or(Value::Null),
                r.get(3)?,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// (image_ref, passed, detail) of the latest validation of `kind` *of this image*: by
    /// image id when both sides have one, else by reference. Evidence about another image
    /// (an older build, a different tag) never counts for the deployed one.
    pub fn latest_validation_of(
        &self,
        kind: &str,
        image_id: Option<&str>,
        image_ref: &str,
    ) -> Result<Option<(Option<String>, bool, Value)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT image_ref, passed, detail FROM validations WHERE kind=?1
                 AND ((?2 IS NOT NULL AND image_id=?2) OR image_ref=?3) ORDER BY id DESC LIMIT 1",
                params![kind, image_id, image_ref],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        serde_json::from_str(&r.get::<_, String>(2)?).unwrap_or(Value::Null),
                    ))
                },
            )
            .optional()?)
    }

    /// Image references that have an SBOM recorded.
    /// Every validation since `from`, oldest first.
    pub fn validations_since(&self, from: DateTime<Utc>) -> Result<Vec<ValidationRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT at, image_ref, kind, passed FROM validations WHERE at >= ?1 ORDER BY at, id",
        )?;
        let from = from.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let rows = stmt.query_map([from], |r| {
            Ok(ValidationRow {
                at: parse_time(&r.get::<_, String>(0)?),
                image_ref: r.get(1)?,
                kind: r.get(2)?,
                passed: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn sbom_images(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare("SELECT DISTINCT image_ref FROM validations WHERE kind='sbom' AND image_ref IS NOT NULL")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn deployments(&self) -> Result<Vec<Deployment>> {
        let mut stmt = self
            .conn
            .prepare(&format!("{DEPLOYMENT_COLUMNS} ORDER BY id"))?;
        let rows = stmt.query_map([], row_to_deployment)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn events(&self, kind: Option<EventKind>) -> Result<Vec<Event>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, at, kind, deployment_id, detail FROM events WHERE (?1 IS NULL OR kind=?1) ORDER BY id",
        )?;
        let rows = stmt.query_map([kind], |r| {
            Ok(Event {
                id: r.get(0)?,
                at: parse_time(&r.get::<_, String>(1)?),
                kind: r.get(2)?,
                deployment_id: r.get(3)?,
                detail: serde_json::from_str(&r.get::<_, String>(4)?).unwrap_or(Value::Null),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

const DEPLOYMENT_COLUMNS: &str = "SELECT id, kind, status, image_ref, image_id, digest, container_id, container_name, previous_id, insecure, started_at, healthy_at, finished_at, verification, host_port, base_url FROM deployments";

fn row_to_deployment(r: &rusqlite::Row<'_>) -> rusqlite::Result<Deployment> {
    Ok(Deployment {
        id: r.get(0)?,
        kind: r.get(1)?,
        status: r.get(2)?,
        image_ref: r.get(3)?,
        image_id: r.get(4)?,
        digest: r.get(5)?,
        container_id: r.get(6)?,
        container_name: r.get(7)?,
        previous_id: r.get(8)?,
        insecure: r.get(9)?,
        started_at: parse_time(&r.get::<_, String>(10)?),
        healthy_at: r.get::<_, Option<String>>(11)?.map(|s| parse_time(&s)),
        finished_at: r.get::<_, Option<String>>(12)?.map(|s| parse_time(&s)),
        verification: r
            .get::<_, Option<String>>(13)?
            .and_then(|s| serde_json::from_str(&s).ok()),
        host_port: r.get(14)?,
        base_url: r.get(15)?,
    })
}

/// Runs `f` again while SQLite answers BUSY without waiting (for up to 10 s): the busy
/// timeout covers ordinary locks, not a journal-mode change racing another connection.
fn retry_busy<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match f() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => return r,
        }
    }
}

pub fn now() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn parse_time(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_supersedes_on_activation() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let d = |r: &str, prev| NewDeployment {
            kind: DeploymentKind::Deploy,
            image_ref: r.into(),
            container_name: "c".into(),
            previous_id: prev,
            image_id: None,
            digest: None,
            insecure: false,
            host_port: None,
            base_url: None,
        };
        let a = s.insert_deployment(&d("a", None)).unwrap();
        s.finish_deployment(a, DeploymentStatus::Active, None)
            .unwrap();
        let b = s.insert_deployment(&d("b", Some(a))).unwrap();
        s.finish_deployment(
            b,
            DeploymentStatus::Active,
            Some(&serde_json::json!({"ok": true})),
        )
        .unwrap();
        drop(s);
        let s = Store::open(dir.path()).unwrap(); // reopening applies nothing twice
        let active = s.active_deployment("c").unwrap().unwrap();
        assert_eq!((active.id, active.previous_id), (b, Some(a)));
        assert_eq!(
            s.deployment(a).unwrap().unwrap().status,
            DeploymentStatus::Superseded
        );
        assert_eq!(active.verification.unwrap()["ok"], true);
    }
}
