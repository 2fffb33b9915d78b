//! Samples on disk: about 100-150 bytes each instead of ~730, so a week at a 1 s interval
//! is tens of MB, not half a GB, and a day is read in one indexed range.
//!
//! What repeats is stored once and referred to by id:
//! - `sample_series`: whose samples (target, day, deployment, role, container), with the
//!   counters a cron run continues from (CPU, log cursor), kept for the series' newest row
//!   only, since nothing else reads them;
//! - `sample_texts`: health details and error reasons (the same few strings all week);
//! - `sample_layouts`: a histogram's bucket bounds.
//!
//! A row (`sample_rows`) holds typed readings and the scrape as a small blob (`codec.rs`).
//! The view `samples` reads like the old table (metrics as the blob), for `sqlite3` users.
//! A day's report reads its digest (`day_digests`, see `report::digest`), brought up to
//! date with the rows written since, so no report reads a day twice.

use std::collections::HashMap;
use std::rc::Rc;

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use super::codec;
use super::sample::Sample;
use super::Store;

pub const SCHEMA: &str = r#"
CREATE TABLE sample_series (
    id INTEGER PRIMARY KEY,
    target TEXT NOT NULL,
    day INTEGER,
    deployment_id INTEGER,
    role TEXT,
    container TEXT,
    container_id TEXT,
    last_id INTEGER,                   -- newest row of the series; the counters below are its
    cpu_total_ns INTEGER,
    system_cpu_ns INTEGER,
    log_cursor_ns INTEGER
);
CREATE INDEX sample_series_target ON sample_series(target, deployment_id);
CREATE INDEX sample_series_day ON sample_series(day, target);
CREATE TABLE sample_texts (
    id INTEGER PRIMARY KEY,
    text TEXT NOT NULL UNIQUE
);
CREATE TABLE sample_layouts (
    id INTEGER PRIMARY KEY,
    les TEXT NOT NULL UNIQUE           -- bucket bounds, comma-separated, `inf` last
);
CREATE TABLE sample_rows (
    id INTEGER PRIMARY KEY,
    series INTEGER NOT NULL REFERENCES sample_series(id),
    ts_ms INTEGER NOT NULL,
    health_ok INTEGER NOT NULL,
    health_http_status INTEGER,
    health_latency_ms REAL,
    health_detail INTEGER,             -- sample_texts.id (JSON)
    metrics BLOB,                      -- codec.rs
    memory_bytes INTEGER,
    cpu_pct REAL,
    restart_count INTEGER,
    oom_killed INTEGER,
    log_errors INTEGER,
    scrape_error INTEGER,              -- sample_texts.id
    parse_errors INTEGER NOT NULL DEFAULT 0,
    engine_error INTEGER               -- sample_texts.id
);
CREATE INDEX sample_rows_series_ts ON sample_rows(series, ts_ms);
CREATE TABLE day_digests (
    day INTEGER NOT NULL,
    target TEXT NOT NULL,
    format INTEGER NOT NULL,           -- the digest's version; another is recomputed
    through_id INTEGER NOT NULL,       -- the newest sample row it includes
    digest TEXT NOT NULL,              -- JSON
    PRIMARY KEY (day, target)
);
"#;

const VIEW: &str = r#"
CREATE VIEW samples AS
SELECT r.id, r.ts_ms, s.day, s.deployment_id, s.target, s.container, r.health_ok,
       r.health_http_status, r.health_latency_ms, hd.text AS health_detail, r.metrics,
       r.memory_bytes, r.cpu_pct, r.restart_count, r.oom_killed, r.log_errors, s.role,
       s.container_id, se.text AS scrape_error, r.parse_errors, ee.text AS engine_error,
       CASE WHEN r.id = s.last_id THEN s.cpu_total_ns END AS cpu_total_ns,
       CASE WHEN r.id = s.last_id THEN s.system_cpu_ns END AS system_cpu_ns,
       CASE WHEN r.id = s.last_id THEN s.log_cursor_ns END AS log_cursor_ns
FROM sample_rows r JOIN sample_series s ON s.id = r.series
LEFT JOIN sample_texts hd ON hd.id = r.health_detail
LEFT JOIN sample_texts se ON se.id = r.scrape_error
LEFT JOIN sample_texts ee ON ee.id = r.engine_error;
"#;

type SeriesKey = (
    String,
    Option<u32>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// Ids already looked up, both ways. Bounded: a cache that outgrows its size starts over.
#[derive(Default)]
pub struct Interned {
    series: HashMap<SeriesKey, i64>,
    text_ids: HashMap<String, i64>,
    texts: HashMap<i64, Rc<str>>,
    details: HashMap<i64, Value>,
    layout_ids: HashMap<String, i64>,
    layouts: HashMap<i64, Rc<[f64]>>,
    /// The detail id of the row read last into the sample being reused.
    last_detail: Option<i64>,
}

const CACHE_MAX: usize = 4096;

fn bounded<K, V>(m: &mut HashMap<K, V>) -> &mut HashMap<K, V> {
    if m.len() >= CACHE_MAX {
        m.clear();
    }
    m
}

/// The id of `value` in a table of unique values, added when new: (insert, select) SQL.
fn intern(
    conn: &Connection,
    ids: &mut HashMap<String, i64>,
    (insert, select): (&str, &str),
    value: &str,
) -> rusqlite::Result<i64> {
    if let Some(id) = ids.get(value) {
        return Ok(*id);
    }
    conn.prepare_cached(insert)?.execute([value])?;
    let id: i64 = conn
        .prepare_cached(select)?
        .query_row([value], |r| r.get(0))?;
    bounded(ids).insert(value.to_string(), id);
    Ok(id)
}

fn text_id(conn: &Connection, cache: &mut Interned, text: &str) -> rusqlite::Result<i64> {
    const SQL: (&str, &str) = (
        "INSERT INTO sample_texts(text) VALUES (?1) ON CONFLICT(text) DO NOTHING",
        "SELECT id FROM sample_texts WHERE text=?1",
    );
    intern(conn, &mut cache.text_ids, SQL, text)
}

fn layout_id(conn: &Connection, cache: &mut Interned, key: &str) -> rusqlite::Result<i64> {
    const SQL: (&str, &str) = (
        "INSERT INTO sample_layouts(les) VALUES (?1) ON CONFLICT(les) DO NOTHING",
        "SELECT id FROM sample_layouts WHERE les=?1",
    );
    intern(conn, &mut cache.layout_ids, SQL, key)
}

fn series_id(conn: &Connection, cache: &mut Interned, s: &Sample) -> rusqlite::Result<i64> {
    let key: SeriesKey = (
        s.target.clone(),
        s.day,
        s.deployment_id,
        s.role.clone(),
        s.container.clone(),
        s.container_id.clone(),
    );
    if let Some(id) = cache.series.get(&key) {
        return Ok(*id);
    }
    let found: Option<i64> = conn
        .prepare_cached(
            "SELECT id FROM sample_series WHERE target=?1 AND day IS ?2 AND deployment_id IS ?3
             AND role IS ?4 AND container IS ?5 AND container_id IS ?6",
        )?
        .query_row(params![key.0, key.1, key.2, key.3, key.4, key.5], |r| {
            r.get(0)
        })
        .optional()?;
    let id = match found {
        Some(id) => id,
        None => {
            conn.prepare_cached(
                "INSERT INTO sample_series(target, day, deployment_id, role, container, container_id)
                 VALUES (?1,?2,?3,?4,?5,?6)",
            )?
            .execute(params![key.0, key.1, key.2, key.3, key.4, key.5])?;
            conn.last_insert_rowid()
        }
    };
    bounded(&mut cache.series).insert(key, id);
    Ok(id)
}

/// Writes one sample (with `id` when converting old rows, so their order is kept).
fn insert(
    conn: &Connection,
    cache: &mut Interned,
    s: &Sample,
    id: Option<i64>,
) -> rusqlite::Result<i64> {
    let series = series_id(conn, cache, s)?;
    let detail = match &s.health_detail {
        Value::Null => None,
        v => Some(text_id(conn, cache, &v.to_string())?),
    };
    let scrape_error = match &s.scrape_error {
        None => None,
        Some(t) => Some(text_id(conn, cache, t)?),
    };
    let engine_error = match &s.engine_error {
        None => None,
        Some(t) => Some(text_id(conn, cache, t)?),
    };
    let metrics = match &s.metrics {
        None => None,
        Some(m) => Some(codec::encode(
            m,
            layout_id(conn, cache, &codec::layout_key(m))?,
        )),
    };
    conn.prepare_cached(
        "INSERT INTO sample_rows(id, series, ts_ms, health_ok, health_http_status, health_latency_ms,
           health_detail, metrics, memory_bytes, cpu_pct, restart_count, oom_killed, log_errors,
           scrape_error, parse_errors, engine_error)
         VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16)",
    )?
    .execute(params![
        id,
        series,
        s.ts_ms,
        s.health_ok,
        s.health_http_status,
        s.health_latency_ms,
        detail,
        metrics,
        s.memory_bytes.map(|m| m as i64),
        s.cpu_pct,
        s.restart_count,
        s.oom_killed,
        s.log_errors,
        scrape_error,
        s.parse_errors,
        engine_error,
    ])?;
    let id = conn.last_insert_rowid();
    conn.prepare_cached(
        "UPDATE sample_series SET last_id=?2, cpu_total_ns=?3, system_cpu_ns=?4, log_cursor_ns=?5
         WHERE id=?1 AND (last_id IS NULL OR last_id < ?2)",
    )?
    .execute(params![
        series,
        id,
        s.cpu_total_ns.map(|v| v as i64),
        s.system_cpu_ns.map(|v| v as i64),
        s.log_cursor_ns,
    ])?;
    Ok(id)
}

/// Migration 3: every row of the JSON-era `samples` table into the compact tables, in
/// the order they were taken, then the old name becomes the view.
pub fn convert_v2_rows(conn: &Connection) -> rusqlite::Result<()> {
    let mut cache = Interned::default();
    {
        let mut stmt = conn.prepare(
            "SELECT id, ts_ms, day, deployment_id, target, container, health_ok, health_http_status,
                    health_latency_ms, health_detail, metrics, memory_bytes, cpu_pct, restart_count,
                    oom_killed, log_errors, role, container_id, scrape_error, parse_errors,
                    engine_error, cpu_total_ns, system_cpu_ns, log_cursor_ns
             FROM samples ORDER BY id",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let s = Sample {
                ts_ms: r.get(1)?,
                day: r.get(2)?,
                deployment_id: r.get(3)?,
                target: r.get(4)?,
                container: r.get(5)?,
                health_ok: r.get(6)?,
                health_http_status: r.get(7)?,
                health_latency_ms: r.get(8)?,
                health_detail: r
                    .get::<_, Option<String>>(9)?
                    .and_then(|s| serde_json::from_str(&s).ok())
                    .unwrap_or(Value::Null),
                metrics: r
                    .get::<_, Option<String>>(10)?
                    .and_then(|s| serde_json::from_str(&s).ok()),
                memory_bytes: r.get::<_, Option<i64>>(11)?.map(|m| m as u64),
                cpu_pct: r.get(12)?,
                restart_count: r.get(13)?,
                oom_killed: r.get(14)?,
                log_errors: r.get(15)?,
                role: r.get(16)?,
                container_id: r.get(17)?,
                scrape_error: r.get(18)?,
                parse_errors: r.get(19)?,
                engine_error: r.get(20)?,
                cpu_total_ns: r.get::<_, Option<i64>>(21)?.map(|v| v as u64),
                system_cpu_ns: r.get::<_, Option<i64>>(22)?.map(|v| v as u64),
                log_cursor_ns: r.get(23)?,
            };
            insert(conn, &mut cache, &s, Some(r.get(0)?))?;
        }
    }
    conn.execute_batch("DROP TABLE samples;")?;
    conn.execute_batch(VIEW)
}

const SELECT: &str =
    "SELECT r.id, r.ts_ms, s.day, s.deployment_id, s.target, s.container, r.health_ok,
       r.health_http_status, r.health_latency_ms, r.health_detail, r.metrics, r.memory_bytes,
       r.cpu_pct, r.restart_count, r.oom_killed, r.log_errors, s.role, s.container_id,
       r.scrape_error, r.parse_errors, r.engine_error,
       CASE WHEN r.id = s.last_id THEN s.cpu_total_ns END,
       CASE WHEN r.id = s.last_id THEN s.system_cpu_ns END,
       CASE WHEN r.id = s.last_id THEN s.log_cursor_ns END
FROM sample_rows r JOIN sample_series s ON s.id = r.series";

/// The columns a day's digest reads: a week is read in a fraction of the time whole rows
/// take (`fill_for_digest` reads them).
const SELECT_FOR_DIGEST: &str =
    "SELECT r.id, r.ts_ms, s.deployment_id, r.health_ok, r.health_http_status,
       r.health_detail, r.metrics, r.memory_bytes, r.restart_count, r.log_errors
FROM sample_rows r JOIN sample_series s ON s.id = r.series";

/// Sets `o` from `v` without a new allocation when it already holds the same text.
fn set_opt(o: &mut Option<String>, v: Option<&str>) {
    match (o.as_deref(), v) {
        (Some(a), Some(b)) if a == b => {}
        _ => *o = v.map(str::to_string),
    }
}

fn text(conn: &Connection, cache: &mut Interned, id: i64) -> rusqlite::Result<Rc<str>> {
    if let Some(t) = cache.texts.get(&id) {
        return Ok(t.clone());
    }
    let t: String = conn
        .prepare_cached("SELECT text FROM sample_texts WHERE id=?1")?
        .query_row([id], |r| r.get(0))?;
    let t: Rc<str> = t.into();
    bounded(&mut cache.texts).insert(id, t.clone());
    Ok(t)
}

fn layout(conn: &Connection, cache: &mut Interned, id: i64) -> rusqlite::Result<Rc<[f64]>> {
    if let Some(l) = cache.layouts.get(&id) {
        return Ok(l.clone());
    }
    let key: String = conn
        .prepare_cached("SELECT les FROM sample_layouts WHERE id=?1")?
        .query_row([id], |r| r.get(0))?;
    let les: Rc<[f64]> = codec::parse_layout(&key).unwrap_or_default().into();
    bounded(&mut cache.layouts).insert(id, les.clone());
    Ok(les)
}

/// Reads a row of a query into a sample, returning its row id.
type Filler =
    fn(&Connection, &mut Interned, &rusqlite::Row<'_>, &mut Sample) -> rusqlite::Result<i64>;

/// Reads row `r` of `SELECT` into `s`, reusing its buffers (a day is read into one sample).
fn fill(
    conn: &Connection,
    cache: &mut Interned,
    r: &rusqlite::Row<'_>,
    s: &mut Sample,
) -> rusqlite::Result<i64> {
    s.ts_ms = r.get(1)?;
    s.day = r.get(2)?;
    s.deployment_id = r.get(3)?;
    let target = r.get_ref(4)?.as_str()?;
    if s.target != target {
        s.target = target.to_string();
    }
    set_opt(&mut s.container, r.get_ref(5)?.as_str_or_null()?);
    s.health_ok = r.get(6)?;
    s.health_http_status = r.get(7)?;
    s.health_latency_ms = r.get(8)?;
    fill_detail(conn, cache, r.get(9)?, s)?;
    fill_metrics(conn, cache, r.get_ref(10)?.as_blob_or_null()?, s)?;
    s.memory_bytes = r.get::<_, Option<i64>>(11)?.map(|m| m as u64);
    s.cpu_pct = r.get(12)?;
    s.restart_count = r.get(13)?;
    s.oom_killed = r.get(14)?;
    s.log_errors = r.get(15)?;
    set_opt(&mut s.role, r.get_ref(16)?.as_str_or_null()?);
    set_opt(&mut s.container_id, r.get_ref(17)?.as_str_or_null()?);
    if let Some(id) = r.get::<_, Option<i64>>(18)? {
        s.scrape_error = Some(text(conn, cache, id)?.to_string());
    }
    s.parse_errors = r.get(19)?;
    s.engine_error = match r.get::<_, Option<i64>>(20)? {
        None => None,
        Some(id) => Some(text(conn, cache, id)?.to_string()),
    };
    s.cpu_total_ns = r.get::<_, Option<i64>>(21)?.map(|v| v as u64);
    s.system_cpu_ns = r.get::<_, Option<i64>>(22)?.map(|v| v as u64);
    s.log_cursor_ns = r.get(23)?;
    r.get(0)
}

/// Reads a row of `SELECT_FOR_DIGEST` into `s` (the other fields are left as they are).
fn fill_for_digest(
    conn: &Connection,
    cache: &mut Interned,
    r: &rusqlite::Row<'_>,
    s: &mut Sample,
) -> rusqlite::Result<i64> {
    s.ts_ms = r.get(1)?;
    s.deployment_id = r.get(2)?;
    s.health_ok = r.get(3)?;
    s.health_http_status = r.get(4)?;
    fill_detail(conn, cache, r.get(5)?, s)?;
    fill_metrics(conn, cache, r.get_ref(6)?.as_blob_or_null()?, s)?;
    s.memory_bytes = r.get::<_, Option<i64>>(7)?.map(|m| m as u64);
    s.restart_count = r.get(8)?;
    s.log_errors = r.get(9)?;
    r.get(0)
}

fn fill_detail(
    conn: &Connection,
    cache: &mut Interned,
    detail_id: Option<i64>,
    s: &mut Sample,
) -> rusqlite::Result<()> {
    // The same detail as the row before (almost every row of a healthy day): kept as is.
    if detail_id.is_none() || detail_id != cache.last_detail {
        cache.last_detail = detail_id;
        s.health_detail = match detail_id {
            None => Value::Null,
            Some(id) => match cache.details.get(&id) {
                Some(v) => v.clone(),
                None => {
                    let v: Value =
                        serde_json::from_str(&text(conn, cache, id)?).unwrap_or(Value::Null);
                    bounded(&mut cache.details).insert(id, v.clone());
                    v
                }
            },
        };
    }
    Ok(())
}

/// Decodes a stored scrape into `s.metrics` (reusing its buffers); a blob that cannot be
/// read leaves the scrape missing with the reason, never zeros.
fn fill_metrics(
    conn: &Connection,
    cache: &mut Interned,
    blob: Option<&[u8]>,
    s: &mut Sample,
) -> rusqlite::Result<()> {
    s.scrape_error = None;
    match blob {
        None => s.metrics = None,
        Some(blob) => {
            let les = match codec::layout_of(blob) {
                Some(id) => layout(conn, cache, id)?,
                None => Rc::from(Vec::new()),
            };
            let mut m = s.metrics.take().unwrap_or_default();
            match codec::decode_into(blob, &les, &mut m) {
                Some(()) => s.metrics = Some(m),
                None => {
                    s.metrics = None;
                    s.scrape_error = Some("the stored scrape could not be read".into());
                }
            }
        }
    }
    Ok(())
}

impl Store {
    /// Stores one sample: its series, texts, row and the series' cursor in one transaction,
    /// so a tick commits once. IMMEDIATE takes the write lock first (waiting out another
    /// writer): a transaction that read first could not write after another one committed.
    /// Inside `batch` the batch's transaction already does this.
    pub fn insert_sample(&self, s: &Sample) -> Result<i64> {
        // No credential the process knows is stored, whatever the service or engine echoed.
        let scrubbed;
        let s = if crate::redact::any_known() {
            scrubbed = scrub_sample(s);
            &scrubbed
        } else {
            s
        };
        let write = || insert(&self.conn, &mut self.interned.borrow_mut(), s, None);
        let stored = (|| {
            if !self.conn.is_autocommit() {
                return write();
            }
            self.conn.execute_batch("BEGIN IMMEDIATE")?;
            let r = write();
            match &r {
                Ok(_) => self.conn.execute_batch("COMMIT")?,
                Err(_) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    self.forget_interned();
                }
            }
            r
        })();
        stored.with_context(|| format!("cannot store the sample in {}", self.path.display()))
    }

    /// Drops the ids looked up so far: after a rollback some may name rows that are gone.
    pub(super) fn forget_interned(&self) {
        *self.interned.borrow_mut() = Interned::default();
    }

    /// Streams the rows matching `filter` in `order` through `f`, one reused sample.
    fn scan(
        &self,
        filter: &str,
        order: &str,
        p: impl rusqlite::Params,
        f: impl FnMut(i64, &Sample),
    ) -> Result<()> {
        self.scan_with((SELECT, fill), filter, order, p, f)
    }

    fn scan_with(
        &self,
        (select, fill): (&str, Filler),
        filter: &str,
        order: &str,
        p: impl rusqlite::Params,
        mut f: impl FnMut(i64, &Sample),
    ) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("{select} WHERE {filter} ORDER BY {order}"))?;
        let mut rows = stmt.query(p)?;
        let mut cache = self.interned.borrow_mut();
        cache.last_detail = None;
        let mut s = Sample::default();
        while let Some(r) = rows.next()? {
            let id = fill(&self.conn, &mut cache, r, &mut s)?;
            f(id, &s);
        }
        Ok(())
    }

    fn collect(&self, filter: &str, order: &str, p: impl rusqlite::Params) -> Result<Vec<Sample>> {
        let mut out = Vec::new();
        self.scan(filter, order, p, |_, s| out.push(s.clone()))?;
        Ok(out)
    }

    /// The monitor's history: samples in the order they were *taken* (insertion), not by
    /// timestamp, so a clock stepped back cannot make an older reading the latest.
    pub fn samples_as_taken(
        &self,
        target: &str,
        since_ms: i64,
        deployment_id: Option<i64>,
    ) -> Result<Vec<Sample>> {
        self.collect(
            "s.target=?1 AND r.ts_ms>=?2 AND (?3 IS NULL OR s.deployment_id=?3)",
            "r.id",
            params![target, since_ms, deployment_id],
        )
    }

    /// Streams the samples of `target` (of `deployment_id` when given) from `since_ms` on,
    /// oldest first, with what a digest reads (`SELECT_FOR_DIGEST`).
    pub fn scan_since(
        &self,
        target: &str,
        since_ms: i64,
        deployment_id: Option<i64>,
        f: impl FnMut(i64, &Sample),
    ) -> Result<()> {
        self.scan_with(
            (SELECT_FOR_DIGEST, fill_for_digest),
            "s.target=?1 AND r.ts_ms>=?2 AND (?3 IS NULL OR s.deployment_id=?3)",
            "r.ts_ms, r.id",
            params![target, since_ms, deployment_id],
            f,
        )
    }

    /// The time of the last sample of `target` (and `deployment_id`) at or before `at_ms`:
    /// where a window ending now must start reading to be covered.
    pub fn anchor_ms(
        &self,
        target: &str,
        deployment_id: Option<i64>,
        at_ms: i64,
    ) -> Result<Option<i64>> {
        Ok(self.conn.query_row(
            "SELECT MAX((SELECT MAX(ts_ms) FROM sample_rows WHERE series=s.id AND ts_ms<=?3))
             FROM sample_series s WHERE target=?1 AND (?2 IS NULL OR deployment_id=?2)",
            params![target, deployment_id, at_ms],
            |r| r.get(0),
        )?)
    }

    /// The latest sample taken of `target` for `deployment_id`: where a cron run continues.
    pub fn last_sample(&self, target: &str, deployment_id: Option<i64>) -> Result<Option<Sample>> {
        Ok(self
            .collect(
                "r.id=(SELECT MAX(last_id) FROM sample_series WHERE target=?1 AND (?2 IS NULL OR deployment_id=?2))",
                "r.id",
                params![target, deployment_id],
            )?
            .pop())
    }

    /// The target the first sample labelled `day` watched: a day is one service's (rates
    /// across two services would mean nothing).
    pub fn day_target(&self, day: u32) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT target FROM sample_series s WHERE day=?1
                 ORDER BY (SELECT MIN(ts_ms) FROM sample_rows WHERE series=s.id) LIMIT 1",
                [day],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Streams the day's samples (of its target) with a row id above `after_id`, oldest
    /// first, through `f(row id, sample)`: a day is never held in memory whole. Only what
    /// a digest reads is filled in (`SELECT_FOR_DIGEST`).
    pub fn scan_day(
        &self,
        day: u32,
        target: &str,
        after_id: i64,
        mut f: impl FnMut(i64, &Sample),
    ) -> Result<()> {
        // A day is one series after another (a deployment, then the baseline, ...): each is
        // read in time order straight off its index, with no sort. Series that overlap in
        // time (two monitors at once) are merged by SQLite instead.
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, (SELECT MIN(ts_ms) FROM sample_rows WHERE series=s.id),
                    (SELECT MAX(ts_ms) FROM sample_rows WHERE series=s.id)
             FROM sample_series s WHERE day=?1 AND target=?2 ORDER BY 2, id",
        )?;
        let series: Vec<(i64, Option<i64>, Option<i64>)> = stmt
            .query_map(params![day, target], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<Result<_, _>>()?;
        let disjoint = series.windows(2).all(|w| match (w[0].2, w[1].1) {
            (Some(end), Some(start)) => end < start,
            _ => true,
        });
        if !disjoint {
            return self.scan_with(
                (SELECT_FOR_DIGEST, fill_for_digest),
                "r.series IN (SELECT id FROM sample_series WHERE day=?1 AND target=?2) AND r.id>?3",
                "r.ts_ms, r.id",
                params![day, target, after_id],
                f,
            );
        }
        for (id, _, _) in series {
            self.scan_with(
                (SELECT_FOR_DIGEST, fill_for_digest),
                "r.series=?1 AND r.id>?2",
                "r.ts_ms, r.id",
                params![id, after_id],
                &mut f,
            )?;
        }
        Ok(())
    }

    /// The deployment the day's last sample watched (of the day's target).
    pub fn last_deployment_of_day(&self, day: u32) -> Result<Option<i64>> {
        let Some(target) = self.day_target(day)? else {
            return Ok(None);
        };
        Ok(self
            .conn
            .query_row(
                "SELECT deployment_id FROM sample_series s WHERE day=?1 AND target=?2
                 ORDER BY (SELECT MAX(ts_ms) FROM sample_rows WHERE series=s.id) DESC, id DESC LIMIT 1",
                params![day, target],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    /// The newest row id labelled `day` (of `target`): whether a stored digest is current.
    pub fn day_last_id(&self, day: u32, target: &str) -> Result<Option<i64>> {
        Ok(self.conn.query_row(
            "SELECT MAX(last_id) FROM sample_series WHERE day=?1 AND target=?2",
            params![day, target],
            |r| r.get(0),
        )?)
    }

    /// When the first sample labelled `day` was taken (ms), if any was.
    pub fn first_sample_ms(&self, day: u32) -> Result<Option<i64>> {
        Ok(self.conn.query_row(
            "SELECT MIN((SELECT MIN(ts_ms) FROM sample_rows WHERE series=s.id))
             FROM sample_series s WHERE day=?1",
            [day],
            |r| r.get(0),
        )?)
    }

    /// The highest day label any sample carries.
    pub fn latest_day(&self) -> Result<Option<u32>> {
        Ok(self.conn.query_row(
            "SELECT MAX(day) FROM sample_series s
             WHERE EXISTS (SELECT 1 FROM sample_rows WHERE series=s.id)",
            [],
            |r| r.get(0),
        )?)
    }

    /// A stored digest of `day`: (format, newest row included, JSON).
    pub fn day_digest(&self, day: u32, target: &str) -> Result<Option<(i64, i64, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT format, through_id, digest FROM day_digests WHERE day=?1 AND target=?2",
                params![day, target],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?)
    }

    pub fn put_day_digest(
        &self,
        day: u32,
        target: &str,
        format: i64,
        through_id: i64,
        digest: &str,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO day_digests(day, target, format, through_id, digest) VALUES (?1,?2,?3,?4,?5)
             ON CONFLICT(day, target) DO UPDATE SET format=?3, through_id=?4, digest=?5",
            params![day, target, format, through_id, digest],
        )?;
        Ok(())
    }
}

/// The sample's texts (errors, health detail) with remembered credentials masked.
fn scrub_sample(s: &Sample) -> Sample {
    let text = |t: &Option<String>| t.as_ref().map(|t| crate::redact::scrub(t).into_owned());
    let mut out = s.clone();
    out.scrape_error = text(&s.scrape_error);
    out.engine_error = text(&s.engine_error);
    let detail = s.health_detail.to_string();
    if let crate::redact::Cow::Owned(clean) = crate::redact::scrub(&detail) {
        out.health_detail = serde_json::from_str(&clean).unwrap_or(serde_json::Value::Null);
    }
    out
}
