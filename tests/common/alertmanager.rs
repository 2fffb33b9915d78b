//! A real Alertmanager (Debian's prometheus-alertmanager) on 127.0.0.1 with a temporary
//! storage and no cluster, loading a configuration the test gives; stopped when dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Alertmanager {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl Alertmanager {
    pub fn start(config: &Path) -> Alertmanager {
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let log = std::fs::File::create(dir.path().join("alertmanager.log")).unwrap();
        let child = Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("prometheus-alertmanager is needed (bash scripts/setup.sh installs Debian's prometheus-alertmanager): {e}")
            });
        let a = Alertmanager { port, child, dir };
        let ready = super::wait_for(
            || super::http_get(&format!("{}/-/ready", a.url())).is_some(),
            Duration::from_secs(30),
        );
        assert!(ready, "alertmanager did not get ready: {}", a.log());
        a
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("alertmanager.log")).unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
