//! A state store written by the previous schema (version 2: every sample a row of JSON,
//! `tests/fixtures/store-v2/state.db`, a synthetic week at 30 min written by dhi-stage
//! before issue H) is converted in place the first time this dhi-stage opens it: every row
//! is still there with every value, and each day's report gives the numbers the previous
//! version gave for the same store (`reports-by-v2.json`, recorded with it).
mod common;
use common::*;

use rusqlite::Connection;

type Row = Vec<rusqlite::types::Value>;

const COLUMNS: &str =
    "id, ts_ms, day, deployment_id, target, container, health_ok, health_http_status,
    health_latency_ms, health_detail, memory_bytes, cpu_pct, restart_count, oom_killed, log_errors,
    role, container_id, scrape_error, parse_errors, engine_error";

fn rows(db: &Connection) -> Vec<(Row, Option<rusqlite::types::Value>)> {
    let mut st = db
        .prepare(&format!(
            "SELECT {COLUMNS}, metrics FROM samples ORDER BY id"
        ))
        .unwrap();
    let n = st.column_count();
    st.query_map([], |r| {
        let row: Row = (0..n - 1).map(|i| r.get(i).unwrap()).collect();
        Ok((row, r.get(n - 1).ok()))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn a_store_of_the_previous_schema_is_converted_in_place_and_reports_the_same() {
    let stage = Stage::new();
    let dir = stage.state_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let fixture = root().join("tests/fixtures/store-v2");
    std::fs::copy(fixture.join("state.db"), dir.join("state.db")).unwrap();
    let before = {
        let db = Connection::open(dir.join("state.db")).unwrap();
        let v: i64 = db
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, 2, "the fixture is a version-2 store");
        rows(&db)
    };
    assert_eq!(before.len(), 336);

    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("reports-by-v2.json")).unwrap())
            .unwrap();
    let out = stage.state_dir().join("reports");
    let mut compared = 0;
    for day in 1..=7u32 {
        let r = stage.run(&[
            "report",
            "--day",
            &day.to_string(),
            "--out",
            path_str(&out),
            "--output",
            "json",
        ]);
        let want = &expected[day.to_string()];
        assert_eq!(
            r.code as i64,
            want["exit"].as_i64().unwrap(),
            "day {day}: {}",
            r.stderr
        );
        let got: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        for (k, w) in want["metrics"].as_object().unwrap() {
            let g = &got["metrics"][k];
            let same = match (w.as_f64(), g.as_f64()) {
                (Some(a), Some(b)) => close(a, b),
                _ => w == g,
            };
            assert!(same, "day {day} {k}: v2 said {w}, now {g}");
            compared += 1;
        }
    }

    let db = Connection::open(dir.join("state.db")).unwrap();
    let v: i64 = db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        v, 4,
        "converted, then issue P's deployment target columns added"
    );
    let after = rows(&db);
    assert_eq!(after.len(), before.len(), "every sample kept");
    let mut values = 0;
    for ((b, bm), (a, am)) in before.iter().zip(&after) {
        for (i, (x, y)) in b.iter().zip(a).enumerate() {
            // health_detail is JSON text: the same document, maybe with keys reordered.
            let same = match (x, y) {
                (rusqlite::types::Value::Text(x), rusqlite::types::Value::Text(y)) if i == 9 => {
                    serde_json::from_str::<serde_json::Value>(x).unwrap()
                        == serde_json::from_str::<serde_json::Value>(y).unwrap()
                }
                _ => x == y,
            };
            assert!(same, "row {:?} column {i}: {x:?} became {y:?}", b[0]);
            values += 1;
        }
        // The scrape: the JSON the old row held against the blob decoded as documented.
        match (bm, am) {
            (Some(rusqlite::types::Value::Text(old)), Some(rusqlite::types::Value::Blob(new))) => {
                let old: serde_json::Value = serde_json::from_str(old).unwrap();
                let new = common::scrape::scrape(&db, new);
                for k in ["requests_total", "requests_5xx", "buckets"] {
                    assert_eq!(old[k], new[k], "row {:?} {k}", b[0]);
                }
                values += 1;
            }
            (Some(rusqlite::types::Value::Null) | None, Some(rusqlite::types::Value::Null)) => {}
            (x, y) => panic!("row {:?} metrics: {x:?} became {y:?}", b[0]),
        }
    }
    let size = std::fs::metadata(dir.join("state.db")).unwrap().len();
    let line = format!(
        "store migration: {} samples converted, {values} values and {compared} report figures as version 2 had them; file {} KB (was 280 KB)\n",
        after.len(),
        size / 1024
    );
    record_reliability("store-migration.txt", &line, false);
    // A second open applies nothing again.
    let r = stage.run(&["report", "--day", "1", "--out", path_str(&out)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(rows(&db).len(), before.len());
}
