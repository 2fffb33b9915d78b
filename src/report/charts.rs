//! Charts as plain SVG, written by hand: a line chart with threshold lines and a target band
//! is a few dozen elements, and hand-written SVG needs no fonts and renders the same in every
//! browser. Each series is a `<polyline>` carrying `data-series`, so tests can parse it.

use std::fmt::Write as _;

use super::DayData;
use crate::config::{Config, Metric};

pub struct Series {
    pub name: String,
    pub color: &'static str,
    /// (minutes since the day's first sample, value)
    pub points: Vec<(f64, f64)>,
}

pub struct Line {
    pub label: String,
    pub y: f64,
    pub color: &'static str,
}

pub struct Band {
    pub label: String,
    pub lo: f64,
    pub hi: f64,
}

const W: f64 = 720.0;
const H: f64 = 330.0;
const L: f64 = 60.0;
const R: f64 = 150.0;
const T: f64 = 36.0;
const B: f64 = 66.0;

use super::esc;

/// The target band: a shaded area between two values, labelled at the right.
fn band_area(s: &mut String, b: &Band, py: &dyn Fn(f64) -> f64) {
    let _ = write!(
        s,
        r##"<rect data-band="{l}" x="{L}" y="{y}" width="{w}" height="{h}" fill="#2e7d32" fill-opacity="0.12"/><text x="{tx}" y="{ty}" fill="#2e7d32">{l}</text>"##,
        l = esc(&b.label),
        y = py(b.hi),
        w = W - L - R,
        h = py(b.lo) - py(b.hi),
        tx = W - R + 6.0,
        ty = py((b.lo + b.hi) / 2.0) + 4.0,
    );
}

/// Gridlines and labels at round y values.
fn y_ticks(s: &mut String, ticks: &[f64], py: &dyn Fn(f64) -> f64, grid: &str) {
    for v in ticks {
        let _ = write!(
            s,
            r##"<line x1="{L}" y1="{y}" x2="{x2}" y2="{y}" stroke="{grid}"/><text x="{tx}" y="{ty}" text-anchor="end">{lab}</text>"##,
            y = py(*v),
            x2 = W - R,
            tx = L - 6.0,
            ty = py(*v) + 4.0,
            lab = tick_label(*v)
        );
    }
}

/// The `i`th legend entry along the bottom, clear of the threshold labels on the right.
fn legend_entry(s: &mut String, i: usize, name: &str, color: &str, y: f64) {
    let lx = L + 200.0 * i as f64;
    let _ = write!(
        s,
        r#"<line x1="{lx}" y1="{y}" x2="{x2}" y2="{y}" stroke="{color}" stroke-width="3"/><text x="{tx}" y="{ty}" fill="{color}">{n}</text>"#,
        x2 = lx + 18.0,
        tx = lx + 24.0,
        ty = y + 4.0,
        n = esc(name)
    );
}

/// Dashed horizontal lines (targets, trigger thresholds), labelled at the right.
fn threshold_lines(s: &mut String, lines: &[Line], py: &dyn Fn(f64) -> f64) {
    for l in lines {
        let _ = write!(
            s,
            r##"<line data-threshold="{lab}" x1="{L}" y1="{y}" x2="{x2}" y2="{y}" stroke="{c}" stroke-dasharray="6 4"/><text x="{tx}" y="{ty}" fill="{c}">{lab}</text>"##,
            lab = esc(&l.label),
            y = py(l.y),
            x2 = W - R,
            c = l.color,
            tx = W - R + 6.0,
            ty = py(l.y) + 4.0
        );
    }
}

pub fn line_chart(
    title: &str,
    y_unit: &str,
    origin_ms: i64,
    series: &[Series],
    lines: &[Line],
    band: Option<&Band>,
) -> String {
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let x_max = xs.fold(1.0_f64, f64::max);
    let mut y_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0_f64, f64::max);
    y_max = lines
        .iter()
        .map(|l| l.y)
        .chain(band.map(|b| b.hi))
        .fold(y_max, f64::max)
        * 1.05;
    // Round ticks (0, 50, 100, ...), and the axis ends on the last of them.
    let ticks = nice_ticks(y_max);
    y_max = *ticks.last().unwrap_or(&1.0);
    let px = |x: f64| L + x / x_max * (W - L - R);
    let py = |y: f64| T + (1.0 - y / y_max) * (H - T - B);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12"><title>{t}</title><rect width="{W}" height="{H}" fill="white"/><text x="{L}" y="22" font-size="15" font-weight="bold">{t}</text>"#,
        t = esc(title)
    );
    if let Some(b) = band {
        band_area(&mut s, b, &py);
    }
    // Axes and five y ticks.
    let _ = write!(
        s,
        r##"<line x1="{L}" y1="{T}" x2="{L}" y2="{}" stroke="#444"/><line x1="{L}" y1="{}" x2="{}" y2="{}" stroke="#444"/>"##,
        H - B,
        H - B,
        W - R,
        H - B
    );
    y_ticks(&mut s, &ticks, &py, "#ddd");
    let _ = write!(
        s,
        r##"<text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">{}</text>"##,
        H / 2.0,
        H / 2.0,
        esc(y_unit)
    );
    for (x, label) in hour_ticks(origin_ms, x_max) {
        let _ = write!(
            s,
            r##"<line x1="{x}" y1="{T}" x2="{x}" y2="{b}" stroke="#eee"/><text x="{x}" y="{ty}" text-anchor="middle">{label}</text>"##,
            x = px(x),
            b = H - B,
            ty = H - B + 16.0
        );
    }
    let _ = write!(
        s,
        r##"<text x="{}" y="{}" text-anchor="middle">time of day (UTC)</text>"##,
        (L + W - R) / 2.0,
        H - 36.0
    );
    threshold_lines(&mut s, lines, &py);
    for (i, se) in series.iter().enumerate() {
        let pts: Vec<String> = se
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline data-series="{n}" data-points="{k}" fill="none" stroke="{c}" stroke-width="2" points="{p}"/>"#,
            n = esc(&se.name),
            k = se.points.len(),
            c = se.color,
            p = pts.join(" ")
        );
        legend_entry(&mut s, i, &se.name, se.color, H - 14.0);
    }
    s += "</svg>\n";
    s
}

/// Ticks on whole hours of the day (UTC) for an axis in minutes since `origin_ms`: every
/// 1, 2, 3, 4, 6 or 12 hours, whichever keeps it to eight or fewer; (minutes, "HH:00").
pub fn hour_ticks(origin_ms: i64, span_min: f64) -> Vec<(f64, String)> {
    let span_h = span_min / 60.0;
    let step_h = [1, 2, 3, 4, 6, 12]
        .into_iter()
        .find(|s| span_h / f64::from(*s) <= 8.0)
        .unwrap_or(24);
    let step_ms = i64::from(step_h) * 3_600_000;
    let mut t = origin_ms.div_euclid(step_ms) * step_ms;
    if t < origin_ms {
        t += step_ms;
    }
    let mut out = Vec::new();
    while (t - origin_ms) as f64 / 60_000.0 <= span_min {
        let label = chrono::DateTime::from_timestamp_millis(t)
            .map(|d| d.format("%H:%M").to_string())
            .unwrap_or_default();
        out.push(((t - origin_ms) as f64 / 60_000.0, label));
        t += step_ms;
    }
    out
}

/// The report's three charts: (file name, title, SVG).
pub fn day_charts(d: &DayData, cfg: &Config) -> Vec<(String, String, String)> {
    let c = &d.digest.charts;
    let t0 = d.digest.first_ms.unwrap_or(0);
    let minutes = |series: &super::digest::ChartSeries| -> Vec<(f64, f64)> {
        series
            .points
            .iter()
            .map(|(t, v)| ((t - t0) as f64 / 60_000.0, *v))
            .collect()
    };
    let mem = minutes(&c.memory_mib);
    let tg = &cfg.monitoring.targets;
    let threshold = |list: &[crate::config::TriggerRule], m: Metric| {
        list.iter().find(|r| r.metric == m).map(|r| r.threshold)
    };
    let mut mem_lines = Vec::new();
    if let Some(y) = threshold(&cfg.monitoring.rollback_triggers, Metric::MemoryMib) {
        mem_lines.push(Line {
            label: format!("rollback {y:.0} MiB"),
            y,
            color: "#ef6c00",
        });
    }
    if let Some(y) = threshold(&cfg.monitoring.immediate_triggers, Metric::MemoryMib) {
        mem_lines.push(Line {
            label: format!("immediate {y:.0} MiB"),
            y,
            color: "#c62828",
        });
    }
    let memory = line_chart(
        &format!("Memory, day {}", d.day),
        "MiB (as docker stats shows)",
        t0,
        &[Series {
            name: "memory".into(),
            color: "#1565c0",
            points: mem,
        }],
        &mem_lines,
        Some(&Band {
            label: format!(
                "target {:.0}-{:.0} MiB",
                tg.memory_min_mib, tg.memory_max_mib
            ),
            lo: tg.memory_min_mib,
            hi: tg.memory_max_mib,
        }),
    );
    let latency = line_chart(
        &format!("Latency (per interval, service histogram), day {}", d.day),
        "ms",
        t0,
        &[
            Series {
                name: "P95".into(),
                color: "#6a1b9a",
                points: minutes(&c.p95_ms),
            },
            Series {
                name: "P99".into(),
                color: "#00838f",
                points: minutes(&c.p99_ms),
            },
        ],
        &[
            Line {
                label: format!("P95 target {}ms", tg.p95_latency.as_millis()),
                y: tg.p95_latency.as_secs_f64() * 1000.0,
                color: "#6a1b9a",
            },
            Line {
                label: format!("P99 target {}ms", tg.p99_latency.as_millis()),
                y: tg.p99_latency.as_secs_f64() * 1000.0,
                color: "#00838f",
            },
        ],
        None,
    );
    // Health success as a running rate, so one failure shows as a dip, not a spike to zero.
    let health = minutes(&c.health_running_pct);
    let health = line_chart(
        &format!("Health check success and error rate, day {}", d.day),
        "%",
        t0,
        &[
            Series {
                name: "health success % (running)".into(),
                color: "#2e7d32",
                points: health,
            },
            Series {
                name: "error rate % (per interval)".into(),
                color: "#c62828",
                points: minutes(&c.error_rate_pct),
            },
        ],
        &[Line {
            label: "rollback: error 2%".into(),
            y: 2.0,
            color: "#c62828",
        }],
        None,
    );
    vec![
        (format!("day-{}-memory.svg", d.day), "Memory".into(), memory),
        (
            format!("day-{}-latency.svg", d.day),
            "Latency".into(),
            latency,
        ),
        (
            format!("day-{}-health.svg", d.day),
            "Health and errors".into(),
            health,
        ),
    ]
}

/// A series on the period's time axis: (Unix ms, value).
pub struct TimeSeries {
    pub name: String,
    pub color: &'static str,
    pub points: Vec<(i64, f64)>,
}

/// Round tick values from 0 to at least `max`: steps of 1, 2 or 5 times a power of ten.
pub fn nice_ticks(max: f64) -> Vec<f64> {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let raw = max / 4.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let n = (max / step).ceil() as usize;
    (0..=n).map(|i| i as f64 * step).collect()
}

fn tick_label(v: f64) -> String {
    if v == v.trunc() {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').to_string()
    }
}

/// The opening of a scalable chart: the SVG element, its title, a white ground.
fn svg_open(title: &str) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12"><title>{t}</title><rect width="{W}" height="{H}" fill="white"/><text x="{L}" y="22" font-size="15" font-weight="bold">{t}</text>"#,
        t = esc(title)
    )
}

/// An SVG path through (Unix ms, value) points that breaks (a move, not a line) where two
/// points are more than `gap_ms` apart: a stretch without data never reads as a trend.
fn gapped_path(
    points: &[(i64, f64)],
    gap_ms: i64,
    px: &dyn Fn(i64) -> f64,
    py: &dyn Fn(f64) -> f64,
) -> String {
    let mut path = String::new();
    let mut prev: Option<i64> = None;
    for (t, v) in points {
        let cmd = if prev.is_some_and(|p| t - p <= gap_ms) {
            'L'
        } else {
            'M'
        };
        let _ = write!(path, "{cmd}{:.1},{:.1} ", px(*t), py(*v));
        prev = Some(*t);
    }
    path
}

/// A time chart's frame: x across `(start, end)` in Unix ms, y from 0 to a round maximum a
/// little above the data (`ticks`, its gridlines).
struct Frame {
    start: i64,
    end: i64,
    y_max: f64,
    ticks: Vec<f64>,
}

impl Frame {
    fn new(start: i64, end: i64, data_max: f64) -> Frame {
        let ticks = nice_ticks(data_max * 1.05);
        Frame {
            start,
            end: end.max(start + 1),
            y_max: *ticks.last().unwrap_or(&1.0),
            ticks,
        }
    }

    fn px(&self, t: i64) -> f64 {
        L + (t - self.start) as f64 / (self.end - self.start) as f64 * (W - L - R)
    }

    fn py(&self, y: f64) -> f64 {
        T + (1.0 - y / self.y_max) * (H - T - B)
    }
}

/// The two axis lines and the y unit, rotated along the y axis.
fn axes(s: &mut String, y_unit: &str) {
    let _ = write!(
        s,
        r##"<line x1="{L}" y1="{T}" x2="{L}" y2="{yb}" stroke="#444"/><line x1="{L}" y1="{yb}" x2="{xr}" y2="{yb}" stroke="#444"/><text x="14" y="{m}" transform="rotate(-90 14 {m})" text-anchor="middle">{u}</text>"##,
        yb = H - B,
        xr = W - R,
        m = H / 2.0,
        u = esc(y_unit)
    );
}

/// One series as a path, broken where points are further apart than `gap_ms`.
fn series_path(s: &mut String, se: &TimeSeries, gap_ms: i64, f: &Frame, width: f64) {
    let path = gapped_path(&se.points, gap_ms, &|t| f.px(t), &|y| f.py(y));
    let _ = write!(
        s,
        r#"<path data-series="{n}" data-points="{k}" fill="none" stroke="{c}" stroke-width="{width}" d="{p}"/>"#,
        n = esc(&se.name),
        k = se.points.len(),
        c = se.color,
        p = path.trim_end()
    );
}

/// A line chart over the whole period: one gridline and label per day (its date), y ticks
/// at round values, the target band and trigger lines. Gaps of more than two hours between
/// points break the line, so a stretch without data never reads as a straight trend.
pub fn week_chart(
    title: &str,
    y_unit: &str,
    (start, end): (i64, i64),
    series: &[TimeSeries],
    lines: &[Line],
    band: Option<&Band>,
) -> String {
    let data_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .chain(lines.iter().map(|l| l.y))
        .chain(band.map(|b| b.hi))
        .fold(0.0_f64, f64::max);
    let f = Frame::new(start, end, data_max);
    let (px, py) = (|t: i64| f.px(t), |y: f64| f.py(y));
    let end = f.end;
    let mut s = svg_open(title);
    if let Some(b) = band {
        band_area(&mut s, b, &py);
    }
    y_ticks(&mut s, &f.ticks, &py, "#e4e4e4");
    let mut day = start;
    let mut n = 1;
    while day <= end {
        let x = px(day);
        let date = chrono::DateTime::from_timestamp_millis(day)
            .map(|d| d.format("%b %d").to_string())
            .unwrap_or_default();
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="{T}" x2="{x:.1}" y2="{yb}" stroke="#e4e4e4"/><text x="{x:.1}" y="{y1}" text-anchor="middle">{date}</text>"##,
            yb = H - B,
            y1 = H - B + 16.0,
        );
        if day < end {
            let _ = write!(
                s,
                r##"<text x="{:.1}" y="{}" text-anchor="middle" fill="#666">day {n}</text>"##,
                px(day + 43_200_000).min(W - R),
                H - B + 30.0
            );
        }
        day += 86_400_000;
        n += 1;
    }
    axes(&mut s, y_unit);
    threshold_lines(&mut s, lines, &py);
    for (i, se) in series.iter().enumerate() {
        series_path(&mut s, se, 2 * 3_600_000, &f, 1.6);
        legend_entry(&mut s, i, &se.name, se.color, H - 12.0);
    }
    s += "</svg>\n";
    s
}

/// What an incident chart marks besides the series: the trigger's threshold, the stretch
/// that breached it (shaded), and moments (the decision, healthy again) as vertical lines.
pub struct Marks<'a> {
    pub threshold: Option<Line>,
    /// (from, to) in Unix ms.
    pub breach: Option<(i64, i64)>,
    /// (Unix ms, label)
    pub moments: &'a [(i64, String)],
}

/// Clock ticks across `(start, end)` in Unix ms, eight at most: every 5, 10, 15 or 30 seconds
/// ("HH:MM:SS") for a short incident, every 1 to 60 minutes ("HH:MM") for a longer one.
fn clock_ticks(start: i64, end: i64) -> Vec<(i64, String)> {
    let span_s = (end - start) as f64 / 1000.0;
    let step_s = [5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600]
        .into_iter()
        .find(|s| span_s / f64::from(*s) <= 8.0)
        .unwrap_or(7200);
    let format = if step_s < 60 { "%H:%M:%S" } else { "%H:%M" };
    let step_ms = i64::from(step_s) * 1000;
    let mut t = start.div_euclid(step_ms) * step_ms;
    if t < start {
        t += step_ms;
    }
    let mut out = Vec::new();
    while t <= end {
        let label = chrono::DateTime::from_timestamp_millis(t)
            .map(|d| d.format(format).to_string())
            .unwrap_or_default();
        out.push((t, label));
        t += step_ms;
    }
    out
}

/// The chart of an incident: one metric from before the breach to after the restore, on a
/// clock-time axis, with what `Marks` adds. The series breaks where samples are further
/// apart than two minutes (a monitor that was not running is not a straight line).
pub fn incident_chart(
    title: &str,
    y_unit: &str,
    (start, end): (i64, i64),
    series: &TimeSeries,
    marks: &Marks,
) -> String {
    let data_max = series
        .points
        .iter()
        .map(|p| p.1)
        .chain(marks.threshold.as_ref().map(|l| l.y))
        .fold(0.0_f64, f64::max);
    let f = Frame::new(start, end, data_max);
    let (px, py) = (|t: i64| f.px(t), |y: f64| f.py(y));
    let end = f.end;
    let mut s = svg_open(title);
    if let Some((a, b)) = marks.breach {
        let (x0, x1) = (px(a.max(start)), px(b.min(end)));
        let _ = write!(
            s,
            r##"<rect data-breach="window" x="{x0:.1}" y="{T}" width="{w:.1}" height="{h}" fill="#c62828" fill-opacity="0.12"><title>breached the trigger's threshold</title></rect>"##,
            w = (x1 - x0).max(1.0),
            h = H - T - B
        );
    }
    y_ticks(&mut s, &f.ticks, &py, "#e4e4e4");
    for (t, label) in clock_ticks(start, end) {
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="{T}" x2="{x:.1}" y2="{yb}" stroke="#eee"/><text x="{x:.1}" y="{ty}" text-anchor="middle">{label}</text>"##,
            x = px(t),
            yb = H - B,
            ty = H - B + 16.0
        );
    }
    axes(&mut s, y_unit);
    let _ = write!(
        s,
        r##"<text x="{c}" y="{tl}" text-anchor="middle">time (UTC)</text>"##,
        c = (L + W - R) / 2.0,
        tl = H - 36.0
    );
    if let Some(l) = &marks.threshold {
        threshold_lines(&mut s, std::slice::from_ref(l), &py);
    }
    for (i, (t, label)) in marks.moments.iter().enumerate() {
        let x = px(*t);
        let _ = write!(
            s,
            r##"<line data-mark="{lab}" x1="{x:.1}" y1="{T}" x2="{x:.1}" y2="{yb}" stroke="#333" stroke-width="1.5"/><text x="{tx:.1}" y="{ty}" fill="#333">{lab}</text>"##,
            lab = esc(label),
            yb = H - B,
            tx = x + 4.0,
            ty = T + 12.0 + 14.0 * i as f64
        );
    }
    series_path(&mut s, series, 120_000, &f, 2.0);
    legend_entry(&mut s, 0, &series.name, series.color, H - 12.0);
    s += "</svg>\n";
    s
}

#[cfg(test)]
mod tests {
    use super::nice_ticks;

    #[test]
    fn the_time_axis_is_in_whole_hours_of_the_day() {
        // 09:40 UTC, a 10-hour day: ticks at 10:00, 12:00, ... every 2 h.
        let origin = chrono::DateTime::parse_from_rfc3339("2026-11-28T09:40:00Z")
            .unwrap()
            .timestamp_millis();
        let ticks = super::hour_ticks(origin, 600.0);
        let labels: Vec<&str> = ticks.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(labels, ["10:00", "12:00", "14:00", "16:00", "18:00"]);
        assert_eq!(ticks[0].0, 20.0);
        // A whole day from midnight: every 3 h, eight intervals.
        let day = super::hour_ticks(origin - origin.rem_euclid(86_400_000), 1440.0);
        assert_eq!(day.len(), 9);
        assert_eq!(day[1].1, "03:00");
    }

    #[test]
    fn ticks_are_round_and_cover_the_data() {
        for (max, want) in [
            (1.0, vec![0.0, 0.5, 1.0]),
            (3.1, vec![0.0, 1.0, 2.0, 3.0, 4.0]),
            (105.0, vec![0.0, 50.0, 100.0, 150.0]),
            (157.5, vec![0.0, 50.0, 100.0, 150.0, 200.0]),
            (0.0, vec![0.0, 0.5, 1.0]),
            (f64::NAN, vec![0.0, 0.5, 1.0]),
        ] {
            assert_eq!(nice_ticks(max), want, "max {max}");
        }
    }
}
