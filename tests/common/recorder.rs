//! A webhook/GitHub endpoint on loopback that records what it is sent.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

/// An HTTP server on loopback that records every request (method, path, headers, body).
pub struct Recorder {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<(String, String, String)>>>,
}

impl Recorder {
    pub fn start() -> Recorder {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let mut conn = conn;
                conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                    .ok();
                let mut buf = Vec::new();
                let mut tmp = [0u8; 8192];
                // Read headers, then Content-Length bytes of body.
                let (head, body) = loop {
                    let n = conn.read(&mut tmp).unwrap_or(0);
                    if n == 0 {
                        break (String::from_utf8_lossy(&buf).to_string(), String::new());
                    }
                    buf.extend_from_slice(&tmp[..n]);
                    if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..pos]).to_string();
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        while buf.len() < pos + 4 + len {
                            let n = conn.read(&mut tmp).unwrap_or(0);
                            if n == 0 {
                                break;
                            }
                            buf.extend_from_slice(&tmp[..n]);
                        }
                        break (head, String::from_utf8_lossy(&buf[pos + 4..]).to_string());
                    }
                };
                let first = head.lines().next().unwrap_or("").to_string();
                s2.lock().unwrap().push((first, head, body));
                let resp = r#"{"html_url":"https://github.invalid/o/r/issues/1"}"#;
                let _ = write!(conn, "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{resp}", resp.len());
            }
        });
        Recorder { port, seen }
    }
}
