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
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let list = targets
            .iter()
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let conf = dir.path().join("prometheus.yml");
        std::fs::write(
            &conf,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: authentication-service\n    scrape_interval: 1s\n    scrape_timeout: 900ms\n    static_configs:\n      - targets: [{list}]\n"
            ),
        )
        .unwrap();
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
