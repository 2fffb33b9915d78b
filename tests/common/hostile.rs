//! Neighbours that lie, stall and flood: an HTTP server on loopback whose every answer is
//! decided by the test from the request (a fixed reply, a body that drips a byte at a time,
//! a body of hundreds of MB), and a runner that measures the binary's wall time and peak RSS.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the server answers one request.
pub enum Reply {
    /// Status, content type, body.
    Fixed(u16, &'static str, String),
    /// Headers with a large Content-Length, then one byte every `every` for ever (until the
    /// client hangs up).
    Drip { every: Duration },
    /// `prefix`, then `filler` repeated until `total` bytes, then `suffix` (chunked).
    Flood {
        prefix: String,
        filler: String,
        suffix: String,
        total: u64,
    },
    /// Accepts and never answers.
    Silent,
}

pub struct Hostile {
    pub port: u16,
    /// Every request's head, as received.
    pub seen: Arc<Mutex<Vec<String>>>,
}

impl Hostile {
    pub fn start(answer: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Hostile {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let answer = Arc::new(answer);
        let s2 = seen.clone();
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let (answer, seen) = (answer.clone(), s2.clone());
                std::thread::spawn(move || serve(conn, &*answer, &seen));
            }
        });
        Hostile { port, seen }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn serve(mut conn: TcpStream, answer: &dyn Fn(&str) -> Reply, seen: &Mutex<Vec<String>>) {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
    while let Some((head, _)) = super::read_request(&mut conn) {
        seen.lock().unwrap().push(head.clone());
        let ok = match answer(&head) {
            Reply::Fixed(code, ctype, body) => write!(
                conn,
                "HTTP/1.1 {code} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .is_ok(),
            Reply::Drip { every } => {
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{{"
                );
                while conn.write_all(b" ").is_ok() {
                    std::thread::sleep(every);
                }
                false
            }
            Reply::Flood {
                prefix,
                filler,
                suffix,
                total,
            } => flood(&mut conn, &prefix, &filler, &suffix, total),
            Reply::Silent => {
                let mut b = [0u8; 1];
                let _ = conn.read(&mut b);
                false
            }
        };
        if !ok {
            return;
        }
    }
}

fn flood(conn: &mut TcpStream, prefix: &str, filler: &str, suffix: &str, total: u64) -> bool {
    let chunk = |c: &mut TcpStream, b: &[u8]| {
        write!(c, "{:x}\r\n", b.len())
            .and_then(|_| c.write_all(b))
            .and_then(|_| c.write_all(b"\r\n"))
    };
    if write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let block = filler.repeat((64 * 1024 / filler.len().max(1)).max(1));
    let mut sent = 0u64;
    if chunk(conn, prefix.as_bytes()).is_err() {
        return false;
    }
    while sent < total {
        if chunk(conn, block.as_bytes()).is_err() {
            return false;
        }
        sent += block.len() as u64;
    }
    chunk(conn, suffix.as_bytes()).is_ok() && conn.write_all(b"0\r\n\r\n").is_ok()
}

/// A run of the binary with its wall time and peak resident memory (VmHWM, read every
/// 10 ms until it exits), killed at `limit`.
pub struct Measured {
    pub run: super::Run,
    pub elapsed: Duration,
    pub peak_rss_mib: f64,
    pub killed: bool,
}

pub fn measure(mut cmd: Command, limit: Duration) -> Measured {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dhi-stage");
    let pid = child.id();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut peak_kib = 0u64;
    let mut killed = false;
    let status = loop {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(kib) = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak_kib = peak_kib.max(kib);
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            killed = true;
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = started.elapsed();
    Measured {
        run: super::Run {
            code: status.code().unwrap_or(-1),
            stdout: out_t.join().unwrap(),
            stderr: err_t.join().unwrap(),
        },
        elapsed,
        peak_rss_mib: peak_kib as f64 / 1024.0,
        killed,
    }
}

/// Appends one case's measured result to target/reliability/hostile.tsv (RELIABILITY.md).
pub fn record(case: &str, bound: Duration, m: &Measured, verdict_ok: bool) {
    let dir = super::root().join("target/reliability");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("hostile.tsv");
    let new = !path.exists();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    if new {
        let _ = writeln!(
            f,
            "case\tbound_s\telapsed_s\tpeak_rss_mib\texit\tverdict_ok"
        );
    }
    let _ = writeln!(
        f,
        "{case}\t{:.0}\t{:.2}\t{:.1}\t{}\t{}",
        bound.as_secs_f64(),
        m.elapsed.as_secs_f64(),
        m.peak_rss_mib,
        m.run.code,
        verdict_ok
    );
    println!(
        "hostile {case}: {:.2}s (bound {:.0}s), peak RSS {:.1} MiB, exit {}, verdict ok: {verdict_ok}",
        m.elapsed.as_secs_f64(),
        bound.as_secs_f64(),
        m.peak_rss_mib,
        m.run.code
    );
}

/// The query parameter `key` of a request head's target, percent-decoded.
pub fn param(head: &str, key: &str) -> Option<String> {
    let target = head.lines().next()?.split_whitespace().nth(1)?;
    let query = target.split_once('?')?.1;
    query.split('&').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k == key).then(|| decode(v))
    })
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(h, 16).unwrap_or(b'?'));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into()
}
