//! `/metrics` in the Prometheus text format: a small parser, and the few aggregations the
//! runbook needs (requests by status, the latency histogram, `histogram_quantile`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses exposition text; malformed lines are skipped (a scrape is evidence, not input to reject).
pub fn parse(text: &str) -> Vec<Series> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Series> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line.rfind('}')?;
            (
                &line[..open],
                parse_labels(&line[open + 1..close])?,
                &line[close + 1..],
            )
        }
        None => {
            let sp = line.find(char::is_whitespace)?;
            (&line[..sp], BTreeMap::new(), &line[sp..])
        }
    };
    let value = match rest.split_whitespace().next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Series {
        name: name.trim().to_string(),
        labels,
        value,
    })
}

fn parse_labels(s: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(out);
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        chars.next()?; // '='
        if chars.next()? != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.insert(key.trim().to_string(), value);
    }
}

/// What one scrape says, reduced to what rates and quantiles need; stored with each sample.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    pub requests_total: f64,
    pub requests_5xx: f64,
    /// Cumulative latency buckets: (upper bound in seconds, count), sorted, +Inf last.
    #[serde(with = "inf_buckets")]
    pub buckets: Vec<(f64, f64)>,
    pub duration_sum: f64,
    pub duration_count: f64,
    pub resident_memory_bytes: Option<f64>,
}

pub fn snapshot(series: &[Series]) -> Snapshot {
    let mut s = Snapshot::default();
    let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for x in series {
        match x.name.as_str() {
            "http_requests_total" => {
                s.requests_total += x.value;
                if x.labels
                    .get("status")
                    .or_else(|| x.labels.get("code"))
                    .is_some_and(|c| c.starts_with('5'))
                {
                    s.requests_5xx += x.value;
                }
            }
            "http_request_duration_seconds_bucket" => {
                let le = match x.labels.get("le").map(String::as_str) {
                    Some("+Inf") => f64::INFINITY,
                    Some(v) => match v.parse::<f64>() {
                        Ok(v) => v,
                        Err(_) => continue,
                    },
                    None => continue,
                };
                buckets.entry(le.to_bits()).or_insert((le, 0.0)).1 += x.value;
            }
            "http_request_duration_seconds_sum" => s.duration_sum += x.value,
            "http_request_duration_seconds_count" => s.duration_count += x.value,
            "process_resident_memory_bytes" => s.resident_memory_bytes = Some(x.value),
            _ => {}
        }
    }
    let mut b: Vec<(f64, f64)> = buckets.into_values().collect();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    s.buckets = b;
    s
}

/// JSON has no infinity: the `+Inf` bound is stored as the string Prometheus uses.
mod inf_buckets {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Bound {
        Finite(f64),
        Text(String),
    }

    pub fn serialize<S: Serializer>(b: &[(f64, f64)], s: S) -> Result<S::Ok, S::Error> {
        let v: Vec<(Bound, f64)> = b
            .iter()
            .map(|(le, c)| {
                (
                    if le.is_finite() {
                        Bound::Finite(*le)
                    } else {
                        Bound::Text("+Inf".into())
                    },
                    *c,
                )
            })
            .collect();
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(f64, f64)>, D::Error> {
        let v: Vec<(Bound, f64)> = Vec::deserialize(d)?;
        v.into_iter()
            .map(|(le, c)| match le {
                Bound::Finite(f) => Ok((f, c)),
                Bound::Text(t) if t == "+Inf" => Ok((f64::INFINITY, c)),
                Bound::Text(t) => Err(serde::de::Error::custom(format!("bad bucket bound {t:?}"))),
            })
            .collect()
    }
}

/// Counter increase between two readings the way Prometheus' `increase()` treats resets: a
/// drop means the process restarted and counted from zero, so the new value is the increase.
pub fn increase(before: f64, after: f64) -> f64 {
    if after >= before {
        after - before
    } else {
        after
    }
}

/// Bucket-wise increase of two cumulative histograms with the same bounds.
pub fn bucket_increase(before: &[(f64, f64)], after: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let reset =
        after.last().map(|a| a.1).unwrap_or(0.0) < before.last().map(|b| b.1).unwrap_or(0.0);
    after
        .iter()
        .map(|(le, c)| {
            let prev = if reset {
                0.0
            } else {
                before
                    .iter()
                    .find(|(l, _)| l == le)
                    .map(|(_, c)| *c)
                    .unwrap_or(0.0)
            };
            (*le, (c - prev).max(0.0))
        })
        .collect()
}

/// Prometheus' `histogram_quantile`: find the bucket holding rank q*count and interpolate
/// linearly inside it (from 0 for the first bucket). Returns seconds; None without data.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 || buckets.last()?.0 != f64::INFINITY {
        return None;
    }
    let rank = q * total;
    let idx = buckets.iter().position(|(_, c)| *c >= rank)?;
    if idx == buckets.len() - 1 {
        // In the +Inf bucket: Prometheus answers with the highest finite bound.
        return buckets.len().checked_sub(2).map(|i| buckets[i].0);
    }
    let (upper, count) = buckets[idx];
    let (lower, below) = if idx == 0 {
        (0.0, 0.0)
    } else {
        buckets[idx - 1]
    };
    if count == below {
        return Some(upper);
    }
    Some(lower + (upper - lower) * (rank - below) / (count - below))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP http_requests_total x
http_requests_total{method="GET",route="/health",status="200"} 90
http_requests_total{method="POST",route="/auth/login",status="500"} 10
http_request_duration_seconds_bucket{le="0.1"} 50
http_request_duration_seconds_bucket{le="0.2"} 90
http_request_duration_seconds_bucket{le="+Inf"} 100
http_request_duration_seconds_sum 12.5
http_request_duration_seconds_count 100
process_resident_memory_bytes 5.24288e+07
"#;

    #[test]
    fn snapshot_sums_requests_and_buckets() {
        let s = snapshot(&parse(TEXT));
        assert_eq!((s.requests_total, s.requests_5xx), (100.0, 10.0));
        assert_eq!(
            s.buckets,
            vec![(0.1, 50.0), (0.2, 90.0), (f64::INFINITY, 100.0)]
        );
        assert_eq!(s.resident_memory_bytes, Some(52_428_800.0));
    }

    #[test]
    fn snapshots_survive_a_json_round_trip() {
        let s = snapshot(&parse(TEXT));
        let back: Snapshot = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn quantiles_interpolate_like_prometheus() {
        let b = vec![(0.1, 50.0), (0.2, 90.0), (f64::INFINITY, 100.0)];
        assert!((histogram_quantile(0.5, &b).unwrap() - 0.1).abs() < 1e-9);
        assert!((histogram_quantile(0.7, &b).unwrap() - 0.15).abs() < 1e-9);
        assert_eq!(histogram_quantile(0.95, &b), Some(0.2)); // in +Inf: highest finite bound
        assert_eq!(histogram_quantile(0.5, &[(f64::INFINITY, 0.0)]), None);
    }

    #[test]
    fn counter_resets_count_from_zero() {
        assert_eq!(increase(100.0, 130.0), 30.0);
        assert_eq!(increase(100.0, 7.0), 7.0);
        let d = bucket_increase(
            &[(0.1, 10.0), (f64::INFINITY, 20.0)],
            &[(0.1, 3.0), (f64::INFINITY, 5.0)],
        );
        assert_eq!(d, vec![(0.1, 3.0), (f64::INFINITY, 5.0)]);
    }

    #[test]
    fn labels_with_escapes_and_commas() {
        let s = parse(r#"x{a="1,2",b="q\"uote"} 3"#);
        assert_eq!(s[0].labels["a"], "1,2");
        assert_eq!(s[0].labels["b"], "q\"uote");
    }
}
