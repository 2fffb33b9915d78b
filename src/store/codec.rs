//! The on-disk form of one metrics scrape: a few bytes instead of a JSON object.
//!
//! A scrape is two counters, a latency histogram, its sum and count, and maybe the process'
//! resident memory. The bucket bounds (`le`) are the same on every scrape of a service, so
//! they are stored once per layout (`sample_layouts`) and a row holds only its layout's id.
//! The values are cumulative counters, whole numbers in practice, so the blob is:
//!
//! ```text
//! byte 0      flags: bit 0 = whole-number form, bit 1 = resident memory present
//! varint      layout id
//! whole-number form (every value finite, >= 0, integral, below 2^53):
//!   varint    requests_total, requests_5xx, duration_count
//!   8 bytes   duration_sum (f64, little endian: a sum of seconds is not whole)
//!   varint    first bucket's count, then zig-zag varint of each next bucket minus the one
//!             before (cumulative buckets rise, so these are small)
//!   varint    resident memory bytes, when flagged
//! float form (a NaN, a fraction, a negative: kept exactly, so a NaN still reads as unusable):
//!   8 bytes   each of the same values as f64, little endian
//! ```
//!
//! Varints are LEB128 (7 bits a byte, low first). A week of 1 s scrapes of the runbook's
//! buckets costs about 40-60 bytes a scrape this way, against ~500 as JSON.

use crate::probe::metrics::Snapshot;

const WHOLE: u8 = 1;
const RSS: u8 = 2;

/// Bucket bounds as stored in `sample_layouts.les`: `0.005,0.01,…,inf`.
pub fn layout_key(s: &Snapshot) -> String {
    let mut k = String::new();
    for (i, (le, _)) in s.buckets.iter().enumerate() {
        if i > 0 {
            k.push(',');
        }
        k.push_str(&le.to_string());
    }
    k
}

/// The bounds of a stored layout key; None when the key is not one this code wrote.
pub fn parse_layout(key: &str) -> Option<Vec<f64>> {
    if key.is_empty() {
        return Some(Vec::new());
    }
    key.split(',').map(|x| x.parse::<f64>().ok()).collect()
}

fn whole(v: f64) -> bool {
    v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < 9_007_199_254_740_992.0
}

/// Encodes a scrape for layout `layout` (the id of `layout_key(s)`).
pub fn encode(s: &Snapshot, layout: i64) -> Vec<u8> {
    let rss = s.resident_memory_bytes;
    let is_whole = [s.requests_total, s.requests_5xx, s.duration_count]
        .into_iter()
        .chain(s.buckets.iter().map(|b| b.1))
        .chain(rss)
        .all(whole);
    let mut out = Vec::with_capacity(16 + s.buckets.len() * 3);
    out.push(if is_whole { WHOLE } else { 0 } | if rss.is_some() { RSS } else { 0 });
    put_varint(&mut out, layout as u64);
    if is_whole {
        put_varint(&mut out, s.requests_total as u64);
        put_varint(&mut out, s.requests_5xx as u64);
        put_varint(&mut out, s.duration_count as u64);
        out.extend_from_slice(&s.duration_sum.to_le_bytes());
        let mut prev: i64 = 0;
        for (i, (_, c)) in s.buckets.iter().enumerate() {
            let c = *c as i64;
            if i == 0 {
                put_varint(&mut out, c as u64);
            } else {
                put_varint(&mut out, zigzag(c - prev));
            }
            prev = c;
        }
        if let Some(r) = rss {
            put_varint(&mut out, r as u64);
        }
    } else {
        for v in [
            s.requests_total,
            s.requests_5xx,
            s.duration_count,
            s.duration_sum,
        ]
        .into_iter()
        .chain(s.buckets.iter().map(|b| b.1))
        .chain(rss)
        {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

/// The layout id a blob refers to (read first, to look its bounds up).
pub fn layout_of(blob: &[u8]) -> Option<i64> {
    let mut at = 1;
    get_varint(blob, &mut at).map(|v| v as i64)
}

/// Decodes a blob into `into` (reusing its bucket vector), given its layout's bounds.
/// None when the blob is cut or does not match the layout: the row is then read as a
/// scrape that could not be used, never as zeros.
pub fn decode_into(blob: &[u8], les: &[f64], into: &mut Snapshot) -> Option<()> {
    let flags = *blob.first()?;
    let mut at = 1;
    get_varint(blob, &mut at)?;
    into.buckets.clear();
    if flags & WHOLE != 0 {
        into.requests_total = get_varint(blob, &mut at)? as f64;
        into.requests_5xx = get_varint(blob, &mut at)? as f64;
        into.duration_count = get_varint(blob, &mut at)? as f64;
        into.duration_sum = get_f64(blob, &mut at)?;
        let mut prev: i64 = 0;
        for (i, le) in les.iter().enumerate() {
            let v = get_varint(blob, &mut at)?;
            let c = if i == 0 { v as i64 } else { prev + unzigzag(v) };
            into.buckets.push((*le, c as f64));
            prev = c;
        }
        into.resident_memory_bytes = if flags & RSS != 0 {
            Some(get_varint(blob, &mut at)? as f64)
        } else {
            None
        };
    } else {
        into.requests_total = get_f64(blob, &mut at)?;
        into.requests_5xx = get_f64(blob, &mut at)?;
        into.duration_count = get_f64(blob, &mut at)?;
        into.duration_sum = get_f64(blob, &mut at)?;
        for le in les {
            into.buckets.push((*le, get_f64(blob, &mut at)?));
        }
        into.resident_memory_bytes = if flags & RSS != 0 {
            Some(get_f64(blob, &mut at)?)
        } else {
            None
        };
    }
    (at == blob.len()).then_some(())
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn get_varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn get_f64(b: &[u8], at: &mut usize) -> Option<f64> {
    let bytes: [u8; 8] = b.get(*at..*at + 8)?.try_into().ok()?;
    *at += 8;
    Some(f64::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(s: &Snapshot) -> Snapshot {
        let les = parse_layout(&layout_key(s)).unwrap();
        let blob = encode(s, 7);
        assert_eq!(layout_of(&blob), Some(7));
        let mut out = Snapshot::default();
        decode_into(&blob, &les, &mut out).expect("decodes");
        out
    }

    fn same(a: &Snapshot, b: &Snapshot) -> bool {
        let eq = |x: f64, y: f64| x == y || (x.is_nan() && y.is_nan());
        eq(a.requests_total, b.requests_total)
            && eq(a.requests_5xx, b.requests_5xx)
            && eq(a.duration_sum, b.duration_sum)
            && eq(a.duration_count, b.duration_count)
            && a.buckets.len() == b.buckets.len()
            && a.buckets
                .iter()
                .zip(&b.buckets)
                .all(|(x, y)| x.0 == y.0 && eq(x.1, y.1))
            && match (a.resident_memory_bytes, b.resident_memory_bytes) {
                (Some(x), Some(y)) => eq(x, y),
                (None, None) => true,
                _ => false,
            }
    }

    fn runbook_scrape(total: u64) -> Snapshot {
        let les = [
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let mut buckets: Vec<(f64, f64)> = les
            .iter()
            .enumerate()
            .map(|(i, le)| (*le, (total * (i as u64 + 1) / 12) as f64))
            .collect();
        buckets.push((f64::INFINITY, total as f64));
        Snapshot {
            requests_total: total as f64,
            requests_5xx: (total / 1000) as f64,
            buckets,
            duration_sum: total as f64 * 0.0193,
            duration_count: total as f64,
            resident_memory_bytes: Some(92_000_000.0),
        }
    }

    #[test]
    fn a_weeks_scrape_is_small_and_exact() {
        // Ten requests a second for a week: the counters of the last scrape.
        let s = runbook_scrape(6_048_000);
        let blob = encode(&s, 1);
        assert!(blob.len() <= 60, "{} bytes", blob.len());
        assert!(same(&s, &roundtrip(&s)));
    }

    #[test]
    fn nan_fractions_and_decreasing_buckets_survive() {
        let mut s = runbook_scrape(1000);
        s.requests_total = f64::NAN;
        assert!(same(&s, &roundtrip(&s)));
        let mut s = runbook_scrape(1000);
        s.buckets[3].1 = 2.5;
        assert!(same(&s, &roundtrip(&s)));
        let mut s = runbook_scrape(1000);
        s.buckets[5].1 = 1.0; // not cumulative: a broken exporter, kept as it said
        assert!(same(&s, &roundtrip(&s)));
        let s = Snapshot::default();
        assert!(same(&s, &roundtrip(&s)));
    }

    #[test]
    fn a_cut_or_mismatched_blob_is_refused() {
        let s = runbook_scrape(1000);
        let les = parse_layout(&layout_key(&s)).unwrap();
        let blob = encode(&s, 1);
        let mut out = Snapshot::default();
        for n in 0..blob.len() {
            assert!(
                decode_into(&blob[..n], &les, &mut out).is_none(),
                "cut at {n}"
            );
        }
        assert!(decode_into(&blob, &les[1..], &mut out).is_none());
    }

    proptest! {
        #[test]
        fn any_scrape_roundtrips(
            total in prop_oneof![Just(f64::NAN), 0.0f64..1e15, (0u64..1u64 << 52).prop_map(|v| v as f64)],
            e in 0u64..1_000_000,
            counts in proptest::collection::vec(prop_oneof![0u64..1u64 << 40, Just(0)], 0..20),
            sum in proptest::num::f64::ANY,
            rss in proptest::option::of(0u64..1u64 << 40),
        ) {
            let mut buckets: Vec<(f64, f64)> = counts.iter().enumerate().map(|(i, c)| (0.001 * (i + 1) as f64, *c as f64)).collect();
            if !buckets.is_empty() {
                let n = buckets.len() - 1;
                buckets[n].0 = f64::INFINITY;
            }
            let s = Snapshot {
                requests_total: total,
                requests_5xx: e as f64,
                buckets,
                duration_sum: sum,
                duration_count: e as f64,
                resident_memory_bytes: rss.map(|v| v as f64),
            };
            prop_assert!(same(&s, &roundtrip(&s)));
        }
    }
}
