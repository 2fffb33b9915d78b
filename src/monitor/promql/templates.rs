//! PromQL written from a metric convention, so Prometheus is asked about the same series
//! the direct scrape reads (`probe::reading`): the same request counter (or histogram count),
//! the same spelling of a server error, the finest latency histogram in its unit, and the
//! monitor's probe paths left out by the route label. `$selector` and `$rate` are filled in
//! by the caller.

use crate::config::Metric;
use crate::probe::conventions::{Convention, ServerError, Unit};

/// The template for `metric`, or None when the convention has nothing for it.
pub fn of(c: &Convention, metric: Metric, exclude: &[String]) -> Option<String> {
    match metric {
        Metric::ErrorRatePct => error_rate(c, exclude),
        Metric::P95LatencyMs => quantile(c, "0.95", exclude),
        Metric::P99LatencyMs => quantile(c, "0.99", exclude),
        _ => None,
    }
}

/// `,route!~"/health|/metrics"`: a series without the label matches too (its value is "").
fn not_probes(c: &Convention, exclude: &[String]) -> String {
    match c.route_labels.first() {
        Some(label) if !exclude.is_empty() => {
            let paths: Vec<String> = exclude.iter().map(|p| regex_quote(p)).collect();
            format!(",{label}!~\"{}\"", paths.join("|"))
        }
        _ => String::new(),
    }
}

fn regex_quote(s: &str) -> String {
    s.chars()
        .flat_map(|ch| {
            let escape = ".+*?()[]{}|^$\\".contains(ch);
            // Inside a PromQL string a backslash is itself escaped.
            escape
                .then_some("\\\\")
                .into_iter()
                .flat_map(str::chars)
                .chain([ch])
        })
        .collect()
}

fn error_rate(c: &Convention, exclude: &[String]) -> Option<String> {
    let series = match &c.counter {
        Some(counter) => counter.clone(),
        None => format!("{}_count", c.latency.first()?.0),
    };
    let status = c.status_labels.first()?;
    let errors = match c.server_error {
        ServerError::Code => format!("{status}=~\"5..\""),
        ServerError::Grouped => format!("{status}=~\"5..|5xx\""),
        ServerError::Outcome => "outcome=\"SERVER_ERROR\"".to_string(),
    };
    let not = not_probes(c, exclude);
    Some(format!(
        "100 * sum(rate({series}{{$selector{not},{errors}}}[$rate])) / sum(rate({series}{{$selector{not}}}[$rate]))"
    ))
}

fn quantile(c: &Convention, q: &str, exclude: &[String]) -> Option<String> {
    let (h, unit) = c.latency.first()?;
    let to_ms = match unit {
        Unit::Seconds => "1000",
        Unit::Millis => "1",
    };
    let not = not_probes(c, exclude);
    Some(format!(
        "{to_ms} * histogram_quantile({q}, sum by (le) (rate({h}_bucket{{$selector{not}}}[$rate])))"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::conventions::{preset_named, presets};

    #[test]
    fn every_preset_has_an_error_rate_and_latency_query() {
        for c in presets() {
            for m in [
                Metric::ErrorRatePct,
                Metric::P95LatencyMs,
                Metric::P99LatencyMs,
            ] {
                let q = of(c, m, &["/health".into()]).unwrap_or_else(|| panic!("{} {m:?}", c.name));
                assert!(q.contains("$selector") && q.contains("$rate"), "{q}");
            }
        }
        let ms = of(
            preset_named("otel-legacy").unwrap(),
            Metric::P99LatencyMs,
            &[],
        )
        .unwrap();
        assert!(ms.starts_with("1 * histogram_quantile(0.99"), "{ms}");
        let grouped = of(preset_named("fastapi").unwrap(), Metric::ErrorRatePct, &[]).unwrap();
        assert!(grouped.contains(r#"status=~"5..|5xx""#), "{grouped}");
    }
}
