//! `/metrics` in the Prometheus text format (0.0.4) and OpenMetrics 1.0: a parser that never
//! panics, and the few aggregations the runbook needs (requests by status, the latency
//! histogram, `histogram_quantile`). A scrape is evidence, not input to reject: a line the
//! parser cannot read is counted as that scrape's parse error and the rest is kept.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// What one exposition held: its series, and how many lines could not be read.
/// (The monitor reads scrapes through `probe::reading`; this whole-text form is what the
/// fuzz target and the property tests drive.)
#[allow(dead_code)]
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    pub series: Vec<Series>,
    pub errors: u32,
    /// The first unreadable line: (1-based line number, why), for the operator.
    pub first_error: Option<(usize, String)>,
}

/// Parses exposition text line by line. `# EOF` (OpenMetrics) ends it; comments, `# HELP`,
/// `# TYPE` and `# UNIT` are skipped; exemplars and timestamps are read and dropped.
#[allow(dead_code)]
pub fn parse(text: &str) -> Parsed {
    let mut out = Parsed::default();
    each_sample(text, |i, parsed| match parsed {
        Ok(s) => out.series.push(s),
        Err(why) => {
            out.errors = out.errors.saturating_add(1);
            if out.first_error.is_none() {
                out.first_error = Some((i + 1, why.to_string()));
            }
        }
    });
    out
}

/// Every sample line of an exposition, parsed, with its 0-based line number: the one walk
/// over the text that `parse` and `probe::reading` share (`# EOF` ends it, comments skipped).
pub(crate) fn each_sample(text: &str, mut f: impl FnMut(usize, Result<Series, &'static str>)) {
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line == "# EOF" {
            break;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        f(i, parse_sample(line));
    }
}

/// A cursor over one line; every method checks bounds, so no input can index out of range.
struct Line<'a> {
    s: &'a str,
    at: usize,
}

impl<'a> Line<'a> {
    fn peek(&self) -> Option<char> {
        self.s[self.at..].chars().next()
    }
    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += c.len_utf8();
        Some(c)
    }
    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|c| c == ' ' || c == '\t') {
            self.bump();
        }
    }
    fn take_while(&mut self, f: impl Fn(char) -> bool) -> &'a str {
        let start = self.at;
        while self.peek().is_some_and(&f) {
            self.bump();
        }
        &self.s[start..self.at]
    }
    fn rest(&self) -> &'a str {
        &self.s[self.at..]
    }
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn parse_sample(line: &str) -> Result<Series, &'static str> {
    let mut l = Line { s: line, at: 0 };
    let mut name = String::new();
    if l.peek().is_some_and(is_name_start) {
        name = l.take_while(is_name_char).to_string();
    } else if l.peek() != Some('{') {
        return Err("a sample line must start with a metric name or '{'");
    }
    let mut labels = BTreeMap::new();
    let after_name = l.at;
    l.skip_ws();
    let spaced = l.at > after_name;
    if l.peek() == Some('{') {
        l.bump();
        parse_labels(&mut l, &mut labels, &mut name)?;
        l.skip_ws();
    } else if !spaced {
        return Err("no space between metric name and value");
    }
    if name.is_empty() {
        return Err("no metric name");
    }
    let value = parse_value(l.take_while(|c| c != ' ' && c != '\t'))?;
    l.skip_ws();
    // An optional timestamp, then an optional exemplar (`# {labels} value [ts]`).
    if l.peek().is_some_and(|c| c != '#') {
        let ts = l.take_while(|c| c != ' ' && c != '\t');
        if ts.parse::<f64>().map(|t| !t.is_finite()).unwrap_or(true) {
            return Err("bad timestamp after the value");
        }
        l.skip_ws();
    }
    if l.peek() == Some('#') {
        l.bump();
        l.skip_ws();
        if l.bump() != Some('{') {
            return Err("an exemplar must start with '{'");
        }
        let mut ex = BTreeMap::new();
        let mut no_name = String::from("exemplar");
        parse_labels(&mut l, &mut ex, &mut no_name)?;
        l.skip_ws();
        parse_value(l.take_while(|c| c != ' ' && c != '\t'))?;
        l.skip_ws();
        if !l.rest().is_empty() {
            let ts = l.take_while(|c| c != ' ' && c != '\t');
            ts.parse::<f64>().map_err(|_| "bad exemplar timestamp")?;
            l.skip_ws();
        }
    }
    if !l.rest().is_empty() {
        return Err("unexpected text after the sample");
    }
    Ok(Series {
        name,
        labels,
        value,
    })
}

/// Reads `a="x",b="y"}` (the opening brace already taken). A quoted string without `=` is
/// the metric name (Prometheus 3 / OpenMetrics 2 UTF-8 names).
fn parse_labels(
    l: &mut Line<'_>,
    out: &mut BTreeMap<String, String>,
    name: &mut String,
) -> Result<(), &'static str> {
    loop {
        l.skip_ws();
        match l.peek() {
            Some('}') => {
                l.bump();
                return Ok(());
            }
            None => return Err("labels not closed with '}'"),
            _ => {}
        }
        let key = if l.peek() == Some('"') {
            l.bump();
            quoted(l)?
        } else {
            if !l.peek().is_some_and(is_name_start) {
                return Err("bad label name");
            }
            l.take_while(is_name_char).to_string()
        };
        l.skip_ws();
        match l.peek() {
            Some('=') => {
                l.bump();
                l.skip_ws();
                if l.bump() != Some('"') {
                    return Err("a label value must be quoted");
                }
                let value = quoted(l)?;
                if out.insert(key, value).is_some() {
                    return Err("a label appears twice");
                }
            }
            Some(',') | Some('}') if name.is_empty() => *name = key,
            _ => return Err("expected '=' after a label name"),
        }
        l.skip_ws();
        match l.peek() {
            Some(',') => {
                l.bump();
            }
            Some('}') => {}
            _ => return Err("expected ',' or '}' between labels"),
        }
    }
}

/// The rest of a quoted string (the opening quote already taken), with `\\`, `\"` and `\n`.
fn quoted(l: &mut Line<'_>) -> Result<String, &'static str> {
    let mut v = String::new();
    loop {
        match l.bump().ok_or("unterminated quoted string")? {
            '\\' => match l.bump().ok_or("unterminated escape")? {
                'n' => v.push('\n'),
                '\\' => v.push('\\'),
                '"' => v.push('"'),
                // Prometheus keeps an unknown escape as written.
                c => {
                    v.push('\\');
                    v.push(c)
                }
            },
            '"' => return Ok(v),
            c => v.push(c),
        }
    }
}

/// A sample value as Go's `strconv.ParseFloat` reads it: NaN and ±Inf in any case.
pub(crate) fn parse_value(v: &str) -> Result<f64, &'static str> {
    if v.is_empty() {
        return Err("no value");
    }
    let lower = v.to_ascii_lowercase();
    match lower.trim_start_matches(['+', '-']) {
        "inf" | "infinity" => {
            return Ok(if lower.starts_with('-') {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            })
        }
        "nan" => return Ok(f64::NAN),
        _ => {}
    }
    // Digits, sign, point and exponent only: Rust's parser would also take words Go rejects.
    if !v
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
    {
        return Err("the value is not a number");
    }
    v.parse().map_err(|_| "the value is not a number")
}

/// What one scrape says, reduced to what rates and quantiles need; stored with each sample.
/// Non-finite values (NaN, ±Inf) survive the store: JSON has no such numbers, so they are
/// written as Prometheus' own words ("NaN", "+Inf", "-Inf").
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    #[serde(with = "num")]
    pub requests_total: f64,
    #[serde(with = "num")]
    pub requests_5xx: f64,
    /// Cumulative latency buckets: (upper bound in seconds, count), sorted, +Inf last.
    #[serde(with = "num_pairs")]
    pub buckets: Vec<(f64, f64)>,
    #[serde(with = "num")]
    pub duration_sum: f64,
    #[serde(with = "num")]
    pub duration_count: f64,
    #[serde(with = "num_opt", default)]
    pub resident_memory_bytes: Option<f64>,
}

impl Snapshot {
    /// Whether the counters rates are computed from are all numbers: a NaN or infinite
    /// counter gives no rate (never a "clear" one).
    /// Counters a rate can be computed from: finite and not negative (a counter cannot go
    /// below zero; a service or proxy that says so is not believed).
    pub fn usable(&self) -> bool {
        let counter = |v: f64| v.is_finite() && v >= 0.0;
        counter(self.requests_total)
            && counter(self.requests_5xx)
            && self.buckets.iter().all(|(_, c)| counter(*c))
    }
}

fn num_to_json(v: f64) -> serde_json::Value {
    if v.is_finite() {
        serde_json::json!(v)
    } else if v.is_nan() {
        "NaN".into()
    } else if v > 0.0 {
        "+Inf".into()
    } else {
        "-Inf".into()
    }
}

fn num_from_json<E: serde::de::Error>(v: &serde_json::Value) -> Result<f64, E> {
    match v {
        serde_json::Value::Number(n) => n.as_f64().ok_or_else(|| E::custom("bad number")),
        serde_json::Value::String(t) => {
            parse_value(t).map_err(|_| E::custom(format!("bad number {t:?}")))
        }
        _ => Err(E::custom("expected a number")),
    }
}

mod num {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        super::num_to_json(*v).serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        super::num_from_json(&serde_json::Value::deserialize(d)?)
    }
}

mod num_opt {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        v.map(super::num_to_json).serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Null => Ok(None),
            v => super::num_from_json(&v).map(Some),
        }
    }
}

pub mod num_pairs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    pub fn serialize<S: Serializer>(b: &[(f64, f64)], s: S) -> Result<S::Ok, S::Error> {
        b.iter()
            .map(|(le, c)| (super::num_to_json(*le), super::num_to_json(*c)))
            .collect::<Vec<_>>()
            .serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(f64, f64)>, D::Error> {
        Vec::<(serde_json::Value, serde_json::Value)>::deserialize(d)?
            .iter()
            .map(|(le, c)| Ok((super::num_from_json(le)?, super::num_from_json(c)?)))
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
    // The usual case, bounds alike bucket for bucket, pairs them without a search.
    let aligned = before.len() == after.len() && before.iter().zip(after).all(|(b, a)| b.0 == a.0);
    after
        .iter()
        .enumerate()
        .map(|(i, (le, c))| {
            let prev = if reset {
                0.0
            } else if aligned {
                before[i].1
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

/// The bucket `(lower, upper]` (seconds) that holds the q-quantile: what a histogram can
/// actually say of it (the interpolated value is one point inside). None without data; in
/// the +Inf bucket the upper bound is infinite.
pub fn quantile_bucket(q: f64, buckets: &[(f64, f64)]) -> Option<(f64, f64)> {
    let total = buckets.last()?.1;
    if total <= 0.0 || buckets.last()?.0 != f64::INFINITY {
        return None;
    }
    let rank = q * total;
    let idx = buckets.iter().position(|(_, c)| *c >= rank)?;
    let lower = if idx == 0 { 0.0 } else { buckets[idx - 1].0 };
    Some((lower, buckets[idx].0))
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

    /// A scrape read as the monitor reads it (`probe::reading`, auto, probes counted).
    fn snap(text: &str) -> Snapshot {
        crate::probe::reading::read(text, &crate::probe::reading::Reader::default()).snapshot
    }

    #[test]
    fn snapshot_sums_requests_and_buckets() {
        let s = snap(TEXT);
        assert_eq!((s.requests_total, s.requests_5xx), (100.0, 10.0));
        assert_eq!(
            s.buckets,
            vec![(0.1, 50.0), (0.2, 90.0), (f64::INFINITY, 100.0)]
        );
        assert_eq!(s.resident_memory_bytes, Some(52_428_800.0));
    }

    #[test]
    fn snapshots_survive_a_json_round_trip() {
        let s = snap(TEXT);
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
        let s = parse(r#"x{a="1,2",b="q\"uote",c="back\\slash\nnl"} 3"#).series;
        assert_eq!(s[0].labels["a"], "1,2");
        assert_eq!(s[0].labels["b"], "q\"uote");
        assert_eq!(s[0].labels["c"], "back\\slash\nnl");
    }

    #[test]
    fn malformed_lines_are_counted_not_fatal() {
        let p = parse("x} 1 {\nok 2\ny{a=\"1\" 3\nz{a=1} 4\nw 5 6 7\n{} 1\n");
        assert_eq!(p.series.len(), 1, "{p:?}");
        assert_eq!(p.series[0].name, "ok");
        assert_eq!(p.errors, 5);
        assert_eq!(p.first_error.unwrap().0, 1);
    }

    #[test]
    fn exemplars_timestamps_and_eof() {
        let text = "# TYPE a counter\na_total{x=\"1\"} 50 # {trace_id=\"a\"} 0.05 1700000000.1\nb 7 1700000000000\nc{le=\"+Inf\"} 9 # {} 1\n# EOF\nd 1\n";
        let p = parse(text);
        assert_eq!(p.errors, 0, "{p:?}");
        let v: Vec<(&str, f64)> = p
            .series
            .iter()
            .map(|s| (s.name.as_str(), s.value))
            .collect();
        assert_eq!(v, vec![("a_total", 50.0), ("b", 7.0), ("c", 9.0)]);
    }

    #[test]
    fn utf8_names_in_braces() {
        let p = parse(r#"{"http.requests",status="500"} 3"#);
        assert_eq!(p.series[0].name, "http.requests");
        assert_eq!(p.series[0].labels["status"], "500");
    }

    #[test]
    fn nan_and_infinities_read_and_survive_the_store() {
        let text = "http_requests_total{status=\"200\"} NaN\nhttp_request_duration_seconds_bucket{le=\"+Inf\"} +Inf\nprocess_resident_memory_bytes -Inf\n";
        assert_eq!(parse(text).errors, 0);
        let s = snap(text);
        assert!(s.requests_total.is_nan());
        assert!(!s.usable());
        let back: Snapshot = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert!(back.requests_total.is_nan());
        assert_eq!(back.buckets, vec![(f64::INFINITY, f64::INFINITY)]);
        assert_eq!(back.resident_memory_bytes, Some(f64::NEG_INFINITY));
    }

    /// A real exposition (the test service's) for the property test to mutate.
    const REAL: &str = "# HELP http_requests_total Total HTTP requests.\n# TYPE http_requests_total counter\nhttp_requests_total{method=\"GET\",route=\"/health\",status=\"200\"} 12\nhttp_requests_total{method=\"POST\",route=\"/auth/login\",status=\"500\"} 3\n# TYPE http_request_duration_seconds histogram\nhttp_request_duration_seconds_bucket{le=\"0.005\"} 10\nhttp_request_duration_seconds_bucket{le=\"+Inf\"} 15\nhttp_request_duration_seconds_sum 0.0421\nhttp_request_duration_seconds_count 15\nprocess_resident_memory_bytes 5.24288e+07\n";

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let text = String::from_utf8_lossy(&bytes);
            let s = snap(&text);
            let back: Snapshot = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
            proptest::prop_assert_eq!(back.buckets.len(), s.buckets.len());
        }

        #[test]
        fn mutated_expositions_never_panic(pos in 0usize..400, cut in 0usize..20, insert in "[{}\\\"#= ,a-z0-9.+-]{0,6}") {
            let mut t = REAL.to_string();
            let pos = pos.min(t.len());
            let pos = (0..=pos).rev().find(|p| t.is_char_boundary(*p)).unwrap_or(0);
            let end = (pos + cut).min(t.len());
            let end = (end..=t.len()).find(|p| t.is_char_boundary(*p)).unwrap_or(t.len());
            t.replace_range(pos..end, &insert);
            let p = parse(&t);
            // Every line is either read or counted.
            let lines = t.lines().filter(|l| !l.trim().is_empty() && !l.trim().starts_with('#')).count();
            proptest::prop_assert!(p.series.len() + p.errors as usize <= lines);
            let _ = snap(&t);
        }
    }
}
