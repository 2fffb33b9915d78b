//! A webhook/GitHub endpoint on loopback that records what it is sent.

use std::io::Write;
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
                // A connection closed before a whole request carries nothing to record.
                let Some((head, body)) = super::read_request(&mut conn) else {
                    continue;
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
