//! The stored scrape, decoded the way `src/store/codec.rs` documents it, written apart from
//! the tool's own decoder so a test reading the store checks the format, not the code.

use rusqlite::Connection;

fn varint(b: &[u8], at: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let byte = b[*at];
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return v;
        }
        shift += 7;
    }
}

fn float(b: &[u8], at: &mut usize) -> f64 {
    let v = f64::from_le_bytes(b[*at..*at + 8].try_into().unwrap());
    *at += 8;
    v
}

/// The scrape in `blob` (a `samples.metrics` value) as the JSON the store once held:
/// `{requests_total, requests_5xx, duration_count, duration_sum, buckets: [[le, count], ...]}`
/// with `le` "+Inf" for the last bucket, as the JSON said it.
pub fn scrape(db: &Connection, blob: &[u8]) -> serde_json::Value {
    let flags = blob[0];
    let mut at = 1;
    let layout = varint(blob, &mut at) as i64;
    let les: String = db
        .query_row(
            "SELECT les FROM sample_layouts WHERE id=?1",
            [layout],
            |r| r.get(0),
        )
        .unwrap();
    let les: Vec<f64> = if les.is_empty() {
        Vec::new()
    } else {
        les.split(',').map(|x| x.parse().unwrap()).collect()
    };
    let (total, e5, count, sum, counts): (f64, f64, f64, f64, Vec<f64>) = if flags & 1 == 1 {
        let total = varint(blob, &mut at) as f64;
        let e5 = varint(blob, &mut at) as f64;
        let count = varint(blob, &mut at) as f64;
        let sum = float(blob, &mut at);
        let mut counts = Vec::new();
        let mut prev = 0i64;
        for i in 0..les.len() {
            let v = varint(blob, &mut at);
            let c = if i == 0 {
                v as i64
            } else {
                prev + ((v >> 1) as i64 ^ -((v & 1) as i64))
            };
            counts.push(c as f64);
            prev = c;
        }
        (total, e5, count, sum, counts)
    } else {
        let total = float(blob, &mut at);
        let e5 = float(blob, &mut at);
        let count = float(blob, &mut at);
        let sum = float(blob, &mut at);
        let counts = les.iter().map(|_| float(blob, &mut at)).collect();
        (total, e5, count, sum, counts)
    };
    let buckets: Vec<serde_json::Value> = les
        .iter()
        .zip(counts)
        .map(|(le, c)| {
            if le.is_finite() {
                serde_json::json!([le, c])
            } else {
                serde_json::json!(["+Inf", c])
            }
        })
        .collect();
    serde_json::json!({
        "requests_total": total,
        "requests_5xx": e5,
        "duration_count": count,
        "duration_sum": sum,
        "buckets": buckets,
    })
}
