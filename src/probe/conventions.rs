//! The metric conventions real services expose, as data: which series count requests, how a
//! server error is spelled, which histogram holds latency and in which unit, and which label
//! names the route. `auto` picks one from the first usable scrape; `[monitoring.metrics]
//! convention` pins one; `[monitoring.metrics.custom]` describes a service no preset fits.
//! Every preset was read from its library's own source and checked against a real exposition
//! of it (`tests/fixtures/metrics/`, where each came from is in its first line).

use serde::{Deserialize, Serialize};

/// How a server error (5xx) is spelled in the status label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerError {
    /// A numeric status that starts with 5: `500`, `503`.
    Code,
    /// Grouped classes: `5xx` (prometheus-fastapi-instrumentator's default).
    Grouped,
    /// Micrometer's `outcome="SERVER_ERROR"` (beside its numeric `status`).
    Outcome,
}

impl ServerError {
    pub fn matches(self, label: &str, value: &str) -> bool {
        match self {
            ServerError::Code | ServerError::Grouped => {
                value.starts_with('5') && (label != "outcome")
            }
            ServerError::Outcome => value == "SERVER_ERROR",
        }
    }
}

/// The unit a latency histogram counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Unit {
    #[serde(rename = "s")]
    Seconds,
    #[serde(rename = "ms")]
    Millis,
}

impl Unit {
    /// Seconds per unit: bounds and sums are kept in seconds.
    pub fn to_seconds(self) -> f64 {
        match self {
            Unit::Seconds => 1.0,
            Unit::Millis => 0.001,
        }
    }
}

/// One library's way of exposing HTTP server metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Convention {
    pub name: String,
    /// The library (and version read) it describes, for people.
    #[serde(default)]
    pub library: String,
    /// The request counter, as exposed (with `_total` when the library writes it); none when
    /// requests are the latency histogram's `_count`.
    #[serde(default)]
    pub counter: Option<String>,
    /// Status label names, first present wins (Micrometer: `status`, else `outcome`).
    pub status_labels: Vec<String>,
    pub server_error: ServerError,
    /// Latency histograms (base names, without `_bucket`), finest first, with their unit.
    #[serde(default)]
    pub latency: Vec<(String, Unit)>,
    /// Label names that carry the route (`handler`, `http_route`, `uri`...).
    #[serde(default)]
    pub route_labels: Vec<String>,
}

fn preset(
    name: &str,
    library: &str,
    counter: Option<&str>,
    status: &[&str],
    server_error: ServerError,
    latency: &[(&str, Unit)],
    route: &[&str],
) -> Convention {
    let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    Convention {
        name: name.into(),
        library: library.into(),
        counter: counter.map(String::from),
        status_labels: owned(status),
        server_error,
        latency: latency.iter().map(|(n, u)| (n.to_string(), *u)).collect(),
        route_labels: owned(route),
    }
}

/// The presets, in the order `auto` prefers them when two fit equally.
pub fn presets() -> &'static [Convention] {
    use ServerError::*;
    use Unit::*;
    static P: std::sync::OnceLock<Vec<Convention>> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        vec![
            preset(
                "runbook",
                "the runbook's service (prom-client counter and histogram)",
                Some("http_requests_total"),
                &["status"],
                Code,
                &[("http_request_duration_seconds", Seconds)],
                &["route"],
            ),
            preset(
                "fastapi",
                "prometheus-fastapi-instrumentator",
                Some("http_requests_total"),
                &["status"],
                Grouped,
                // The high-resolution histogram first: the default one has 0.1/0.5/1 s buckets.
                &[
                    ("http_request_duration_highr_seconds", Seconds),
                    ("http_request_duration_seconds", Seconds),
                ],
                &["handler"],
            ),
            preset(
                "flask",
                "prometheus_flask_exporter",
                Some("flask_http_request_total"),
                &["status"],
                Code,
                &[("flask_http_request_duration_seconds", Seconds)],
                &["path", "url_rule"],
            ),
            preset(
                "otel",
                "OpenTelemetry, stable HTTP semantic conventions (Prometheus exporter)",
                None,
                &["http_response_status_code"],
                Code,
                &[("http_server_request_duration_seconds", Seconds)],
                &["http_route"],
            ),
            preset(
                "otel-legacy",
                "OpenTelemetry, HTTP semantic conventions before 1.23 (milliseconds)",
                None,
                &["http_status_code"],
                Code,
                &[
                    ("http_server_duration_milliseconds", Millis),
                    ("http_server_duration", Millis),
                ],
                &["http_route", "http_target"],
            ),
            preset(
                "express-prom-bundle",
                "prom-client with express-prom-bundle (no request counter)",
                None,
                &["status_code"],
                Code,
                &[("http_request_duration_seconds", Seconds)],
                &["path"],
            ),
            preset(
                "prometheus-api-metrics",
                "prometheus-api-metrics 4 (Node; no request counter)",
                None,
                &["code"],
                Code,
                &[("http_request_duration_seconds", Seconds)],
                &["route"],
            ),
            preset(
                "micrometer",
                "Micrometer / Spring Boot actuator",
                None,
                &["status", "outcome"],
                Code,
                // A summary unless `percentiles-histogram` is on: then it has buckets.
                &[("http_server_requests_seconds", Seconds)],
                &["uri"],
            ),
            preset(
                "prometheus-net",
                "prometheus-net (ASP.NET Core)",
                Some("http_requests_received_total"),
                &["code"],
                Code,
                &[("http_request_duration_seconds", Seconds)],
                &["endpoint"],
            ),
            preset(
                "go-promhttp",
                "Go client_golang promhttp (InstrumentHandlerCounter/Duration)",
                Some("http_requests_total"),
                &["code"],
                Code,
                &[("http_request_duration_seconds", Seconds)],
                &["handler"],
            ),
        ]
    })
}

pub fn preset_named(name: &str) -> Option<&'static Convention> {
    presets().iter().find(|c| c.name == name)
}

/// The names `[monitoring.metrics] convention` accepts.
pub fn names() -> Vec<&'static str> {
    let mut v: Vec<&str> = presets().iter().map(|c| c.name.as_str()).collect();
    v.insert(0, "auto");
    v.push("custom");
    v
}

impl Convention {
    /// The counter's name without `_total` too: an OpenMetrics family is named without it,
    /// and some libraries expose counters without the suffix.
    pub fn is_counter(&self, name: &str) -> bool {
        self.counter
            .as_deref()
            .is_some_and(|c| name == c || c.strip_suffix("_total").is_some_and(|base| name == base))
    }

    /// The status label's value on a series, by the convention's label names.
    pub fn status<'a>(
        &self,
        labels: &'a std::collections::BTreeMap<String, String>,
    ) -> Option<(&str, &'a str)> {
        self.status_labels
            .iter()
            .find_map(|l| labels.get(l).map(|v| (l.as_str(), v.as_str())))
    }

    pub fn is_server_error(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        // Micrometer writes both; the numeric status decides when it is there.
        match self.status(labels) {
            Some(("outcome", v)) => ServerError::Outcome.matches("outcome", v),
            Some((l, v)) => self.server_error.matches(l, v),
            None => false,
        }
    }

    pub fn route<'a>(
        &self,
        labels: &'a std::collections::BTreeMap<String, String>,
    ) -> Option<&'a str> {
        self.route_labels
            .iter()
            .find_map(|l| labels.get(l).map(String::as_str))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_has_a_status_label_and_a_way_to_count_requests() {
        for c in presets() {
            assert!(!c.status_labels.is_empty(), "{}", c.name);
            assert!(c.counter.is_some() || !c.latency.is_empty(), "{}", c.name);
        }
        let names = names();
        assert_eq!(names.first(), Some(&"auto"));
        assert!(names.contains(&"otel") && names.contains(&"custom"));
    }

    #[test]
    fn server_errors_are_spelled_per_library() {
        let l = |k: &str, v: &str| [(k.to_string(), v.to_string())].into_iter().collect();
        let fastapi = preset_named("fastapi").unwrap();
        assert!(fastapi.is_server_error(&l("status", "5xx")));
        assert!(!fastapi.is_server_error(&l("status", "4xx")));
        let micrometer = preset_named("micrometer").unwrap();
        assert!(micrometer.is_server_error(&l("status", "503")));
        assert!(micrometer.is_server_error(&l("outcome", "SERVER_ERROR")));
        assert!(!micrometer.is_server_error(&l("outcome", "CLIENT_ERROR")));
        let flask = preset_named("flask").unwrap();
        assert!(flask.is_counter("flask_http_request_total"));
        assert!(flask.is_counter("flask_http_request"));
    }
}
