//! Stand-in for the authentication service that dhi-stage deploys in tests and demos.
//!
//! It speaks just enough HTTP/1.1 (keep-alive, Content-Length) to serve `/health`,
//! `/metrics` (Prometheus text), two auth-like routes for load, and an admin route that
//! changes faults at run time. Every fault can also be set at start through `FAULT_*`
//! variables, so an image can be built that is broken in a known way. std + libc only, so
//! it links statically into a `FROM scratch` image.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Upper bounds of the latency histogram, in seconds (Prometheus' defaults plus finer low buckets).
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5,
];

#[derive(Clone, Debug, Default)]
struct Faults {
    error_rate: f64,
    latency_ms: u64,
    tail_latency_ms: u64,
    tail_fraction: f64,
    mem_growth_mb_per_min: f64,
    health_unhealthy: bool,
    degraded_dep: String,
    hang: bool,
    /// How `/metrics` misbehaves: "" (well), garbage, missing, oversized, exemplars, flaky
    /// (every other scrape fails), nan (counters read NaN).
    metrics_mode: String,
}

impl Faults {
    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let bad = || format!("bad value {value:?} for {key}");
        match key {
            "error_rate" => self.error_rate = value.parse().map_err(|_| bad())?,
            "latency_ms" => self.latency_ms = value.parse().map_err(|_| bad())?,
            "tail_latency_ms" => self.tail_latency_ms = value.parse().map_err(|_| bad())?,
            "tail_fraction" => self.tail_fraction = value.parse().map_err(|_| bad())?,
            "mem_growth_mb_per_min" => {
                self.mem_growth_mb_per_min = value.parse().map_err(|_| bad())?
            }
            "health_unhealthy" => self.health_unhealthy = truthy(value),
            "degraded_dep" => self.degraded_dep = value.to_string(),
            "hang" => self.hang = truthy(value),
            "metrics_mode" => match value {
                "" | "garbage" | "missing" | "oversized" | "exemplars" | "flaky" | "nan" => {
                    self.metrics_mode = value.to_string()
                }
                _ => return Err(bad()),
            },
            // Process-wide knobs, applied when set (at start or through /admin/faults).
            "ignore_sigterm" => install_sigterm(truthy(value)),
            "crash_after_s" => schedule_crash(value.parse().map_err(|_| bad())?),
            // Allocates this much at once (an OOM kill under a smaller memory limit).
            "allocate_mb" => {
                let mb: usize = value.parse().map_err(|_| bad())?;
                std::thread::spawn(move || {
                    let mut v: Vec<Vec<u8>> = Vec::new();
                    for _ in 0..mb {
                        let mut block = vec![0u8; 1 << 20];
                        for i in (0..block.len()).step_by(4096) {
                            block[i] = 1;
                        }
                        v.push(block);
                    }
                    std::thread::sleep(Duration::from_secs(3600));
                    drop(v);
                });
            }
            _ => return Err(format!("unknown fault {key}")),
        }
        Ok(())
    }

    fn render(&self) -> String {
        format!(
            "{{\"error_rate\":{},\"latency_ms\":{},\"tail_latency_ms\":{},\"tail_fraction\":{},\"mem_growth_mb_per_min\":{},\"health_unhealthy\":{},\"degraded_dep\":\"{}\",\"hang\":{},\"metrics_mode\":\"{}\"}}",
            self.error_rate, self.latency_ms, self.tail_latency_ms, self.tail_fraction,
            self.mem_growth_mb_per_min, self.health_unhealthy, self.degraded_dep, self.hang, self.metrics_mode
        )
    }
}

fn truthy(v: &str) -> bool {
    matches!(v, "1" | "true" | "yes" | "on")
}

/// One route's latency histogram: bucket counts, count, sum in µs.
type RouteHistogram = ([u64; BUCKETS.len()], u64, u64);

#[derive(Default)]
struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// Per (method, route, status): bucket counts, count and sum (µs), for the OpenTelemetry
    /// exposition (`METRICS_CONVENTION=otel`), whose histogram carries route and status.
    by_route: Mutex<BTreeMap<(String, String, u16), RouteHistogram>>,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

struct State {
    faults: Mutex<Faults>,
    metrics: Metrics,
    served: AtomicU64,
    ballast: Mutex<Vec<Vec<u8>>>,
}

fn flood_logs(mib_per_s: u64) {
    use std::io::Write;
    let line = format!("{}\n", "x".repeat(1000));
    let err = format!("error: flood {}\n", "y".repeat(986));
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout());
    loop {
        let second = std::time::Instant::now();
        for i in 0..mib_per_s * 1024 {
            let l = if i % 10 == 0 { &err } else { &line };
            if out.write_all(l.as_bytes()).is_err() {
                return;
            }
        }
        let _ = out.flush();
        if let Some(rest) = Duration::from_secs(1).checked_sub(second.elapsed()) {
            std::thread::sleep(rest);
        }
    }
}

fn main() {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut faults = Faults::default();
    for (var, key) in [
        ("FAULT_ERROR_RATE", "error_rate"),
        ("FAULT_LATENCY_MS", "latency_ms"),
        ("FAULT_TAIL_LATENCY_MS", "tail_latency_ms"),
        ("FAULT_TAIL_FRACTION", "tail_fraction"),
        ("FAULT_MEM_GROWTH_MB_PER_MIN", "mem_growth_mb_per_min"),
        ("FAULT_HEALTH_UNHEALTHY", "health_unhealthy"),
        ("FAULT_DEGRADED_DEP", "degraded_dep"),
        ("FAULT_HANG", "hang"),
    ] {
        if let Some(v) = env(var) {
            if let Err(e) = faults.set(key, &v) {
                eprintln!("error: {var}: {e}");
                std::process::exit(2);
            }
        }
    }
    if env("FAULT_CRASH_AT_START").is_some_and(|v| truthy(&v)) {
        eprintln!("error: crashing at start as FAULT_CRASH_AT_START asks");
        std::process::exit(70);
    }
    install_sigterm(env("FAULT_IGNORE_SIGTERM").is_some_and(|v| truthy(&v)));

    let state = Arc::new(State {
        faults: Mutex::new(faults),
        metrics: Metrics::default(),
        served: AtomicU64::new(0),
        ballast: Mutex::new(Vec::new()),
    });
    if let Some(mb) = env("FAULT_BASELINE_MEM_MB").and_then(|v| v.parse::<usize>().ok()) {
        grow(&state, mb * 1024 * 1024);
    }
    // A chatty service: this many MiB of log lines a second (one in ten says "error"), so a
    // status or monitor tick meets an hour of logs far larger than it may hold.
    if let Some(mib) = env("FAULT_LOG_FLOOD_MIB_PER_S").and_then(|v| v.parse::<u64>().ok()) {
        std::thread::spawn(move || flood_logs(mib));
    }
    if let Some(v) = env("FAULT_CRASH_AFTER_S") {
        match v.parse() {
            Ok(secs) => schedule_crash(secs),
            Err(_) => {
                eprintln!("error: FAULT_CRASH_AFTER_S={v:?} is not a number of seconds");
                std::process::exit(2);
            }
        }
    }
    {
        let state = state.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            let per_min = state.faults.lock().unwrap().mem_growth_mb_per_min;
            if per_min > 0.0 {
                grow(&state, (per_min * 1024.0 * 1024.0 / 60.0) as usize);
            }
        });
    }

    let port = env("PORT").unwrap_or_else(|| "3000".into());
    let listener = match TcpListener::bind(format!("0.0.0.0:{port}")) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on port {port}: {e}");
            std::process::exit(1);
        }
    };
    println!("authsvc listening on :{port}");
    for conn in listener.incoming().flatten() {
        let state = state.clone();
        std::thread::spawn(move || serve(conn, &state));
    }
}

fn schedule_crash(secs: f64) {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs_f64(secs));
        eprintln!("error: crashing after {secs}s as asked");
        std::process::exit(71);
    });
}

/// Allocates and touches `bytes` so that they count in the resident set.
fn grow(state: &State, bytes: usize) {
    let mut block = vec![0u8; bytes];
    for i in (0..block.len()).step_by(4096) {
        block[i] = 1;
    }
    state.ballast.lock().unwrap().push(block);
}

extern "C" fn on_sigterm(_: libc::c_int) {
    unsafe { libc::_exit(0) }
}

fn install_sigterm(ignore: bool) {
    // As PID 1 in a container a signal without a handler is dropped, so honouring SIGTERM
    // needs a handler; ignoring it is what a badly written service does.
    let handler = if ignore {
        libc::SIG_IGN
    } else {
        on_sigterm as *const () as libc::sighandler_t
    };
    unsafe {
        libc::signal(libc::SIGTERM, handler);
        libc::signal(libc::SIGINT, handler);
    }
}

struct Request {
    method: String,
    path: String,
    query: String,
    keep_alive: bool,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let version = parts.next().unwrap_or("HTTP/1.0").to_string();
    let mut keep_alive = version == "HTTP/1.1";
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
            if k == "content-length" {
                length = v.parse().unwrap_or(0).min(1 << 20);
            } else if k == "connection" {
                keep_alive = v != "close";
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target, String::new()),
    };
    Some(Request {
        method,
        path,
        query,
        keep_alive,
    })
}

fn serve(conn: TcpStream, state: &State) {
    let _ = conn.set_nodelay(true);
    let mut writer = match conn.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(conn);
    while let Some(req) = read_request(&mut reader) {
        let started = Instant::now();
        let faults = state.faults.lock().unwrap().clone();
        let is_admin = req.path.starts_with("/admin") || req.path == "/metrics";
        if faults.hang && !is_admin {
            // Accept and never answer: the caller's timeout is what is being tested.
            std::thread::sleep(Duration::from_secs(3600));
            return;
        }
        let n = state.served.fetch_add(1, Ordering::Relaxed);
        if !is_admin {
            let mut delay = faults.latency_ms;
            if faults.tail_fraction > 0.0 && crosses(n, faults.tail_fraction) {
                delay += faults.tail_latency_ms;
            }
            if delay > 0 {
                std::thread::sleep(Duration::from_millis(delay));
            }
        }
        let inject_error = !is_admin
            && req.path != "/health"
            && faults.error_rate > 0.0
            && crosses(n, faults.error_rate);
        let (status, ctype, body, route) = route(&req, state, &faults, inject_error);
        if status >= 500 {
            // The whole target, query included, as a careless service logs it (the secret
            // canary test relies on a token landing in the log this way).
            let q = if req.query.is_empty() {
                String::new()
            } else {
                format!("?{}", req.query)
            };
            eprintln!("error: {} {}{q} -> {status}", req.method, req.path);
        }
        if route != "/metrics" {
            record(state, &req.method, route, status, started.elapsed());
        }
        let reason = match status {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            404 => "Not Found",
            503 => "Service Unavailable",
            _ => "Internal Server Error",
        };
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
            body.len(),
            if req.keep_alive { "keep-alive" } else { "close" }
        );
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(body.as_bytes()).is_err()
        {
            return;
        }
        if !req.keep_alive {
            return;
        }
    }
}

/// Deterministic fraction: request n is picked when floor((n+1)*f) > floor(n*f), so exactly
/// `f` of every long run is picked and tests need no luck.
fn crosses(n: u64, fraction: f64) -> bool {
    ((n + 1) as f64 * fraction).floor() > (n as f64 * fraction).floor()
}

fn route(
    req: &Request,
    state: &State,
    faults: &Faults,
    inject_error: bool,
) -> (u16, &'static str, String, &'static str) {
    const JSON: &str = "application/json";
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/health") => {
            let dep = |name: &str| {
                if faults.degraded_dep == name {
                    "degraded"
                } else {
                    "healthy"
                }
            };
            let status = if faults.health_unhealthy {
                "unhealthy"
            } else {
                "healthy"
            };
            let code = if faults.health_unhealthy { 503 } else { 200 };
            static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
            let id = ID.get_or_init(|| std::env::var("SERVICE_ID").unwrap_or_default());
            let id = if id.is_empty() {
                String::new()
            } else {
                format!(",\"service_id\":\"{id}\"")
            };
            let body = format!(
                "{{\"status\":\"{status}\",\"timestamp\":\"{}\",\"dependencies\":{{\"kong\":\"{}\",\"telemetry\":\"{}\"}}{id}}}",
                rfc3339_now(), dep("kong"), dep("telemetry")
            );
            (code, JSON, body, "/health")
        }
        ("GET", "/metrics") => {
            static SCRAPES: AtomicU64 = AtomicU64::new(0);
            let n = SCRAPES.fetch_add(1, Ordering::Relaxed);
            let text = metrics_text(state);
            const PROM: &str = "text/plain; version=0.0.4";
            match faults.metrics_mode.as_str() {
                "missing" => (404, JSON, "{\"error\":\"not found\"}".into(), "/metrics"),
                "flaky" if n % 2 == 1 => (500, JSON, "{\"error\":\"scrape failed\"}".into(), "/metrics"),
                "garbage" => (
                    200,
                    PROM,
                    format!("x}} 1 {{\nnot a metric line\nhttp_requests_total{{status=\"500\" 7\n{text}\u{0}\u{7f}garbage\n"),
                    "/metrics",
                ),
                "oversized" => {
                    let pad = "# padding padding padding padding padding padding padding padding\n"
                        .repeat(5 * 1024 * 1024 / 64);
                    (200, PROM, format!("{pad}{text}"), "/metrics")
                }
                "exemplars" => {
                    let t: String = text
                        .lines()
                        .map(|l| {
                            if l.starts_with("http_request_duration_seconds_bucket") {
                                format!("{l} # {{trace_id=\"4bf92f3577b34da6\"}} 0.05 1700000000.000\n")
                            } else {
                                format!("{l}\n")
                            }
                        })
                        .collect();
                    (200, "application/openmetrics-text; version=1.0.0", format!("{t}# EOF\n"), "/metrics")
                }
                "nan" => {
                    let t: String = text
                        .lines()
                        .map(|l| {
                            if l.starts_with("http_requests_total") {
                                let (k, _) = l.rsplit_once(' ').unwrap_or((l, ""));
                                format!("{k} NaN\n")
                            } else {
                                format!("{l}\n")
                            }
                        })
                        .collect();
                    (200, PROM, t, "/metrics")
                }
                _ => (200, PROM, text, "/metrics"),
            }
        }
        (_, "/auth/login") | (_, "/auth/verify") if inject_error => {
            let route = if req.path == "/auth/login" {
                "/auth/login"
            } else {
                "/auth/verify"
            };
            (500, JSON, "{\"error\":\"injected fault\"}".into(), route)
        }
        ("POST", "/auth/login") => (
            200,
            JSON,
            "{\"token\":\"stand-in-token\",\"expires_in\":900}".into(),
            "/auth/login",
        ),
        ("GET", "/auth/verify") => (
            200,
            JSON,
            "{\"valid\":true,\"sub\":\"user-1\"}".into(),
            "/auth/verify",
        ),
        ("GET", "/admin/faults") => (200, JSON, faults.render(), "/admin/faults"),
        ("POST", "/admin/faults") => {
            let mut f = state.faults.lock().unwrap();
            for pair in req.query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, "1"));
                if let Err(e) = f.set(k, v) {
                    return (400, JSON, format!("{{\"error\":\"{e}\"}}"), "/admin/faults");
                }
            }
            (200, JSON, f.render(), "/admin/faults")
        }
        ("POST", "/admin/crash") => {
            eprintln!("error: crashing on request");
            std::process::exit(72);
        }
        _ => (404, JSON, "{\"error\":\"not found\"}".into(), "other"),
    }
}

fn record(state: &State, method: &str, route: &str, status: u16, took: Duration) {
    *state
        .metrics
        .requests
        .lock()
        .unwrap()
        .entry((method.to_string(), route.to_string(), status))
        .or_default() += 1;
    let secs = took.as_secs_f64();
    let mut by_route = state.metrics.by_route.lock().unwrap();
    let entry = by_route
        .entry((method.to_string(), route.to_string(), status))
        .or_insert(([0; BUCKETS.len()], 0, 0));
    entry.1 += 1;
    entry.2 += took.as_micros() as u64;
    for (i, le) in BUCKETS.iter().enumerate() {
        if secs <= *le {
            state.metrics.buckets[i].fetch_add(1, Ordering::Relaxed);
            entry.0[i] += 1;
        }
    }
    drop(by_route);
    state.metrics.count.fetch_add(1, Ordering::Relaxed);
    state
        .metrics
        .sum_micros
        .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
}

/// The OpenTelemetry SDK's Prometheus exposition under the stable HTTP semantic
/// conventions: no request counter, one histogram in seconds labelled with the route, the
/// method and the status code (as `opentelemetry-exporter-prometheus` writes it).
fn otel_metrics_text(state: &State) -> String {
    let mut out = String::from("# HELP http_server_request_duration_seconds Duration of HTTP server requests.\n# TYPE http_server_request_duration_seconds histogram\n");
    for ((m, r, s), (b, count, sum)) in state.metrics.by_route.lock().unwrap().iter() {
        let labels = format!("http_request_method=\"{m}\",http_response_status_code=\"{s}\",http_route=\"{r}\",otel_scope_name=\"testsvc\"");
        for (i, le) in BUCKETS.iter().enumerate() {
            out += &format!(
                "http_server_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {}\n",
                b[i]
            );
        }
        out += &format!(
            "http_server_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}\n"
        );
        out += &format!("http_server_request_duration_seconds_count{{{labels}}} {count}\n");
        out += &format!(
            "http_server_request_duration_seconds_sum{{{labels}}} {}\n",
            *sum as f64 / 1e6
        );
    }
    out += &format!(
        "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}\n",
        rss_bytes()
    );
    out
}

fn metrics_text(state: &State) -> String {
    if std::env::var("METRICS_CONVENTION").is_ok_and(|v| v == "otel") {
        return otel_metrics_text(state);
    }
    let mut out = String::from(
        "# HELP http_requests_total Total HTTP requests.\n# TYPE http_requests_total counter\n",
    );
    for ((m, r, s), n) in state.metrics.requests.lock().unwrap().iter() {
        out += &format!("http_requests_total{{method=\"{m}\",route=\"{r}\",status=\"{s}\"}} {n}\n");
    }
    out += "# HELP http_request_duration_seconds HTTP request latency.\n# TYPE http_request_duration_seconds histogram\n";
    for (i, le) in BUCKETS.iter().enumerate() {
        out += &format!(
            "http_request_duration_seconds_bucket{{le=\"{le}\"}} {}\n",
            state.metrics.buckets[i].load(Ordering::Relaxed)
        );
    }
    let count = state.metrics.count.load(Ordering::Relaxed);
    out += &format!("http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}\n");
    out += &format!(
        "http_request_duration_seconds_sum {}\nhttp_request_duration_seconds_count {count}\n",
        state.metrics.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    );
    out += &format!(
        "# HELP process_resident_memory_bytes Resident memory size in bytes.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}\n",
        rss_bytes()
    );
    out
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

fn rfc3339_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant), to avoid a date crate in a static binary.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
