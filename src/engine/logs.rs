//! Reading a container's logs the way `docker logs --since 1h | grep -c error` does: lines
//! are counted as they stream and only the last few matching ones are kept, within a byte
//! and a time budget, so a chatty service (or an engine whose log stream never ends) costs
//! a bounded amount of memory and time. When a budget cuts the read short the count is a
//! lower bound, and `cut` says so.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;

/// The budget of one read.
#[derive(Debug, Clone, Copy)]
pub struct LogLimits {
    /// Bytes read from the engine before the read stops.
    pub max_bytes: u64,
    /// A line longer than this is cut to it (the rest is skipped, the line still counts).
    pub max_line: usize,
    /// How many of the last matching lines are kept for display.
    pub keep_last: usize,
    /// How long the whole read may take.
    pub within: Duration,
}

impl LogLimits {
    /// 8 MiB and 10 s: an hour of a busy service's logs, well under the monitor's memory.
    pub const fn new(keep_last: usize, within: Duration) -> Self {
        LogLimits {
            max_bytes: 8 << 20,
            max_line: 16 << 10,
            keep_last,
            within,
        }
    }
}

/// What one read found.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LogScan {
    /// Lines read that are newer than the resume point.
    pub lines: u64,
    /// Of those, lines the caller's pattern matched.
    pub matched: u64,
    /// The last `keep_last` matching lines, oldest first.
    pub last: VecDeque<String>,
    /// The engine's timestamp of the newest line read (ns since the epoch), to resume from.
    pub newest_ns: i128,
    /// Why the read stopped before the stream ended: the counts are lower bounds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cut: Option<String>,
}

/// Splits a stream of chunks into timestamped lines and counts them, holding at most one
/// partial line (itself bounded) between chunks.
pub struct LogCounter<'a> {
    limits: LogLimits,
    after_ns: i128,
    matches: &'a dyn Fn(&str) -> bool,
    partial: Vec<u8>,
    /// The partial line outgrew `max_line`: the rest of it is skipped.
    overlong: bool,
    bytes: u64,
    pub scan: LogScan,
}

impl<'a> LogCounter<'a> {
    pub fn new(limits: LogLimits, after_ns: i128, matches: &'a dyn Fn(&str) -> bool) -> Self {
        LogCounter {
            limits,
            after_ns,
            matches,
            partial: Vec::new(),
            overlong: false,
            bytes: 0,
            scan: LogScan {
                newest_ns: after_ns,
                ..Default::default()
            },
        }
    }

    /// Feeds one chunk; false once the byte budget is spent (the caller stops reading).
    pub fn feed(&mut self, chunk: &[u8]) -> bool {
        self.bytes += chunk.len() as u64;
        let mut rest = chunk;
        while let Some(i) = rest.iter().position(|b| *b == b'\n') {
            self.push(&rest[..i]);
            let line = std::mem::take(&mut self.partial);
            self.overlong = false;
            self.line(&line);
            rest = &rest[i + 1..];
        }
        self.push(rest);
        if self.bytes > self.limits.max_bytes {
            self.scan.cut = Some(format!(
                "stopped after {} MiB of logs",
                self.limits.max_bytes >> 20
            ));
            return false;
        }
        true
    }

    /// The stream ended (or was stopped): the last line without a newline counts too.
    pub fn finish(mut self, cut: Option<String>) -> LogScan {
        let line = std::mem::take(&mut self.partial);
        if !line.is_empty() {
            self.line(&line);
        }
        if self.scan.cut.is_none() {
            self.scan.cut = cut;
        }
        self.scan
    }

    fn push(&mut self, bytes: &[u8]) {
        let room = self.limits.max_line.saturating_sub(self.partial.len());
        if bytes.len() > room {
            self.overlong = true;
        }
        self.partial
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn line(&mut self, raw: &[u8]) {
        let l = String::from_utf8_lossy(raw);
        let l = l.trim_end_matches('\r');
        if l.is_empty() {
            return;
        }
        let (ts, text) = l.split_once(' ').unwrap_or((l, ""));
        let ns = chrono::DateTime::parse_from_rfc3339(ts)
            .ok()
            .and_then(|t| t.timestamp_nanos_opt())
            .map(i128::from)
            .unwrap_or(0);
        // Lines at or before the resume point were counted by the previous read.
        if ns != 0 && ns <= self.after_ns {
            return;
        }
        self.scan.newest_ns = self.scan.newest_ns.max(ns);
        self.scan.lines += 1;
        if (self.matches)(text) {
            self.scan.matched += 1;
            if self.limits.keep_last > 0 {
                if self.scan.last.len() == self.limits.keep_last {
                    self.scan.last.pop_front();
                }
                self.scan.last.push_back(text.to_string());
            }
        }
    }
}

/// The runbook's `grep -c error`, case-insensitive, without allocating a lowered copy.
pub fn is_error_line(line: &str) -> bool {
    line.as_bytes()
        .windows(5)
        .any(|w| w.eq_ignore_ascii_case(b"error"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LogLimits {
        LogLimits {
            max_bytes: 1 << 20,
            max_line: 64,
            keep_last: 2,
            within: Duration::from_secs(1),
        }
    }

    #[test]
    fn counts_across_chunk_boundaries_and_keeps_only_the_last_matches() {
        let m = is_error_line;
        let mut c = LogCounter::new(limits(), 0, &m);
        let text = "2026-01-01T00:00:01Z ok\n2026-01-01T00:00:02Z ERROR one\n2026-01-01T00:00:03Z an error two\n2026-01-01T00:00:04Z Error three";
        // Split mid-line and mid-timestamp.
        for chunk in text.as_bytes().chunks(7) {
            assert!(c.feed(chunk));
        }
        let s = c.finish(None);
        assert_eq!((s.lines, s.matched), (4, 3));
        assert_eq!(s.last, ["an error two", "Error three"]);
        assert!(s.cut.is_none());
        assert_eq!(
            s.newest_ns,
            chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:04Z")
                .unwrap()
                .timestamp_nanos_opt()
                .unwrap() as i128
        );
    }

    #[test]
    fn an_endless_line_and_an_endless_stream_stay_bounded() {
        let m = is_error_line;
        let mut c = LogCounter::new(limits(), 0, &m);
        let junk = vec![b'x'; 4096];
        let mut fed = 0u64;
        while c.feed(&junk) {
            fed += 1;
            assert!(fed < 1000, "the byte budget never stopped the read");
        }
        assert!(
            c.partial.len() <= 64,
            "one line is held at most max_line long"
        );
        let s = c.finish(None);
        assert_eq!(s.lines, 1);
        assert!(s.cut.unwrap().contains("stopped after 1 MiB"));
    }

    #[test]
    fn lines_already_counted_are_skipped() {
        let m = |_: &str| true;
        let after = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:02Z")
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap() as i128;
        let mut c = LogCounter::new(limits(), after, &m);
        c.feed(b"2026-01-01T00:00:02Z old\n2026-01-01T00:00:03Z new\n");
        assert_eq!(c.finish(None).lines, 1);
    }
}
