//! A real Prometheus server on 127.0.0.1 for the PromQL source: its own scrape config (1 s)
//! and a temporary TSDB, stopped when dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Prometheus {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `targets` (host:port) every second as job `authentication-service`;
    /// `web_config` (a --web.config.file body) adds basic auth.
    pub fn start(targets: &[String], web_config: Option<&str>) -> Prometheus {
        let list = targets
            .iter()
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(", ");
        Prometheus::with_config(
            &format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: authentication-service\n    scrape_interval: 1s\n    scrape_timeout: 900ms\n    static_configs:\n      - targets: [{list}]\n"
            ),
            web_config,
        )
    }

    /// A Prometheus with `config` as its prometheus.yml (paths in it may be absolute).
    pub fn with_config(config: &str, web_config: Option<&str>) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let conf = dir.path().join("prometheus.yml");
        std::fs::write(&conf, config).unwrap();
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", conf.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn");
        if let Some(w) = web_config {
            let web = dir.path().join("web.yml");
            std::fs::write(&web, w).unwrap();
            cmd.arg(format!("--web.config.file={}", web.display()));
        }
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("prometheus is needed (bash scripts/setup.sh installs Debian's prometheus): {e}")
            });
        let p = Prometheus {
            port,
            child,
            _dir: dir,
        };
        let ready = super::wait_for(
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
            Duration::from_secs(30),
        );
        assert!(ready, "prometheus did not listen: {}", p.log());
        p
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An instant query's result list (`/api/v1/query`).
    pub fn query(&self, q: &str) -> Vec<serde_json::Value> {
        let url = format!(
            "{}/api/v1/query?query={}",
            self.url(),
            q.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' =>
                        (b as char).to_string(),
                    b => format!("%{b:02X}"),
                })
                .collect::<String>()
        );
        let body = super::http_get(&url).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self._dir.path()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
