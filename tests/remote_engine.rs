//! A remote Docker Engine over mutual TLS: the local engine exposed on 127.0.0.1 by stunnel
//! with certificates made here by openssl (socat cannot serve this: its OpenSSL server has no
//! session id context, so a client that resumes a session, as rustls does, is refused), found through DOCKER_HOST / DOCKER_TLS_VERIFY /
//! DOCKER_CERT_PATH, through --host, and through a docker context; deploy, status and
//! rollback run through it, and a wrong CA, a missing client certificate and an expired
//! client certificate each fail saying which.
mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("openssl is needed (bash scripts/setup.sh installs it): {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and certificates it signs; `expired` makes a client certificate valid only in 2020.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(dir: &Path, name: &str) -> Pki {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        std::fs::write(dir.join("index.txt"), "").unwrap();
        std::fs::write(dir.join("serial"), "1000\n").unwrap();
        std::fs::write(
            dir.join("ca.cnf"),
            "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\n\
             default_md = sha256\npolicy = p\nunique_subject = no\ncopy_extensions = copy\n[p]\ncommonName = supplied\n",
        )
        .unwrap();
        Pki { dir }
    }

    /// Signs a new key's certificate; `ext` is its extensions, `dates` (start, end) or 2 days.
    fn issue(&self, name: &str, ext: &str, dates: Option<(&str, &str)>) -> (PathBuf, PathBuf) {
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        std::fs::write(self.dir.join(format!("{name}.ext")), ext).unwrap();
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                ext,
            ],
        );
        let mut args = vec![
            "ca", "-batch", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key", "-in",
            &csr, "-out", &pem, "-notext",
        ];
        match dates {
            Some((start, end)) => args.extend(["-startdate", start, "-enddate", end]),
            None => args.extend(["-days", "2"]),
        }
        openssl(&self.dir, &args);
        (self.dir.join(pem), self.dir.join(key))
    }
}

/// A directory as DOCKER_CERT_PATH wants it: ca.pem, cert.pem, key.pem.
fn cert_dir(root: &Path, name: &str, ca: &Path, cert: Option<(&Path, &Path)>) -> PathBuf {
    let d = root.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(ca, d.join("ca.pem")).unwrap();
    if let Some((c, k)) = cert {
        std::fs::copy(c, d.join("cert.pem")).unwrap();
        std::fs::copy(k, d.join("key.pem")).unwrap();
    }
    d
}

/// stunnel terminating mutual TLS on 127.0.0.1 in front of the engine's socket; its log
/// counts the connections it accepted, so a test can tell the traffic went through it.
struct TlsEndpoint {
    port: u16,
    child: Child,
    log: PathBuf,
}

impl TlsEndpoint {
    fn start(root: &Path, server: &(PathBuf, PathBuf), ca: &Path) -> TlsEndpoint {
        let port = free_port();
        let log = root.join("stunnel.log");
        let conf = root.join("stunnel.conf");
        std::fs::write(
            &conf,
            format!(
                "foreground = yes\npid =\ndebug = 5\noutput = {}\n[engine]\naccept = 127.0.0.1:{port}\n\
                 connect = /var/run/docker.sock\ncert = {}\nkey = {}\nCAfile = {}\nverifyChain = yes\nrequireCert = yes\n",
                log.display(),
                server.0.display(),
                server.1.display(),
                ca.display()
            ),
        )
        .unwrap();
        let child = Command::new("stunnel")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("stunnel is needed (bash scripts/setup.sh installs stunnel4): {e}")
            });
        assert!(
            wait_for(
                || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
                Duration::from_secs(10)
            ),
            "stunnel did not listen on {port}: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        TlsEndpoint { port, child, log }
    }

    fn host(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    fn accepted(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches("accepted connection")
            .count()
    }
}

impl Drop for TlsEndpoint {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Setup {
    _root: tempfile::TempDir,
    endpoint: TlsEndpoint,
    good: PathBuf,
    wrong_ca: PathBuf,
    no_client_cert: PathBuf,
    expired: PathBuf,
    docker_config: PathBuf,
}

fn setup() -> Setup {
    require_docker();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let ca = Pki::new(r, "dhi-test-ca");
    let other = Pki::new(r, "some-other-ca");
    let server = ca.issue(
        "engine",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth",
        None,
    );
    let client = ca.issue("operator", "extendedKeyUsage=clientAuth", None);
    let old = ca.issue(
        "old-operator",
        "extendedKeyUsage=clientAuth",
        Some(("20200101000000Z", "20200102000000Z")),
    );
    let ca_pem = ca.dir.join("ca.pem");
    let endpoint = TlsEndpoint::start(r, &server, &ca_pem);
    let good = cert_dir(r, "good", &ca_pem, Some((&client.0, &client.1)));
    let wrong_ca = cert_dir(
        r,
        "wrong-ca",
        &other.dir.join("ca.pem"),
        Some((&client.0, &client.1)),
    );
    let no_client_cert = cert_dir(r, "no-client-cert", &ca_pem, None);
    let expired = cert_dir(r, "expired", &ca_pem, Some((&old.0, &old.1)));

    // A docker context named `remote-test`, as `docker context create` writes it.
    let docker_config = r.join("docker-config");
    let id = sha256_hex("remote-test");
    let meta = docker_config.join("contexts/meta").join(&id);
    std::fs::create_dir_all(&meta).unwrap();
    std::fs::write(
        meta.join("meta.json"),
        format!(
            r#"{{"Name":"remote-test","Metadata":{{}},"Endpoints":{{"docker":{{"Host":"{}","SkipTLSVerify":false}}}}}}"#,
            endpoint.host()
        ),
    )
    .unwrap();
    let tls = docker_config.join("contexts/tls").join(&id).join("docker");
    std::fs::create_dir_all(&tls).unwrap();
    for f in ["ca.pem", "cert.pem", "key.pem"] {
        std::fs::copy(good.join(f), tls.join(f)).unwrap();
    }
    Setup {
        _root: root,
        endpoint,
        good,
        wrong_ca,
        no_client_cert,
        expired,
        docker_config,
    }
}

fn sha256_hex(s: &str) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(s.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn through(stage: &mut Stage, host: &str, certs: &Path) {
    stage.extra_env = vec![
        ("DOCKER_HOST".into(), host.into()),
        ("DOCKER_TLS_VERIFY".into(), "1".into()),
        ("DOCKER_CERT_PATH".into(), certs.display().to_string()),
    ];
}

#[test]
fn deploy_status_and_rollback_run_through_a_remote_engine_over_mutual_tls() {
    let s = setup();
    let good = good_image();
    let next = testsvc_image("dhi-test/authsvc:next", &["FAULT_LATENCY_MS=1"]);
    let mut stage = Stage::new();
    through(&mut stage, &s.endpoint.host(), &s.good);
    let before = s.endpoint.accepted();

    let r = stage.deploy(&good).run();
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(stage.deploy(&next).run().code, 0);
    let r = stage.call("status").json().run();
    assert_eq!(r.code, 0, "{}", r.all());
    let j = r.json();
    assert_eq!(j["container"]["running"], true, "{j}");
    assert!(j["container"]["memory_bytes"].as_u64().unwrap() > 0, "{j}");
    let r = stage.rollback().reason("remote test").json().run();
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(stage.inspect()["Config"]["Image"], good.as_str());
    let through_tls = s.endpoint.accepted() - before;
    println!("remote engine: deploy x2, status, rollback over mutual TLS: {through_tls} connections accepted by the TLS endpoint");
    assert!(
        through_tls >= 4,
        "the calls went through the TLS endpoint: {through_tls}"
    );
}

#[test]
fn a_wrong_ca_a_missing_client_cert_and_an_expired_cert_each_say_which() {
    let s = setup();
    let mut stage = Stage::new();
    let cases = [
        (&s.wrong_ca, "not signed by the CA in ca.pem"),
        (&s.no_client_cert, "client certificate"),
        (&s.expired, "expired"),
    ];
    let mut said = 0;
    for (dir, words) in cases {
        through(&mut stage, &s.endpoint.host(), dir);
        let r = stage.call("status").json().run();
        assert_eq!(r.code, 1, "{}", r.all());
        let err = r.json()["engine_error"].as_str().unwrap_or("").to_string();
        assert!(
            err.contains(words),
            "{}: expected {words:?} in {err}",
            dir.display()
        );
        said += 1;
        println!(
            "remote engine, {}: {err}",
            dir.file_name().unwrap().to_string_lossy()
        );
    }
    record_reliability(
        "remote-engine-tls.txt",
        &format!("remote engine over mutual TLS: {said} of 3 certificate faults (wrong CA, missing client cert, expired client cert) failed with exit 1 naming which\n"),
        false,
    );
}

#[test]
fn the_engine_comes_from_host_flag_and_from_a_docker_context() {
    let s = setup();
    let stage = Stage::new();
    // --host with DOCKER_TLS_VERIFY and DOCKER_CERT_PATH, as `docker -H`.
    let r: Run = stage
        .command(&["-H", &s.endpoint.host(), "preflight", "--output", "json"])
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", &s.good)
        .output()
        .unwrap()
        .into();
    let j = r.json();
    let engine = j["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "Docker runtime")
        .unwrap()
        .clone();
    assert_eq!(engine["status"], "pass", "{engine}");

    // A docker context: by name, and as the current context of the docker config.
    let r: Run = stage
        .command(&[
            "--docker-context",
            "remote-test",
            "status",
            "--output",
            "json",
        ])
        .env("DOCKER_CONFIG", &s.docker_config)
        .output()
        .unwrap()
        .into();
    assert!(
        r.code == 0 || r.code == 3,
        "status through the context answered: {}",
        r.all()
    );
    assert!(!r.json()["error"].is_string(), "{}", r.all());
    std::fs::write(
        s.docker_config.join("config.json"),
        r#"{"currentContext":"remote-test"}"#,
    )
    .unwrap();
    let before = s.endpoint.accepted();
    let r: Run = stage
        .command(&["status", "--output", "json"])
        .env("DOCKER_CONFIG", &s.docker_config)
        .output()
        .unwrap()
        .into();
    assert!(!r.json()["error"].is_string(), "{}", r.all());
    assert!(
        s.endpoint.accepted() > before,
        "the current context was used"
    );
    // A context that does not exist is named.
    let r = stage.run(&["--docker-context", "nope", "status"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("docker context \"nope\" not found"),
        "{}",
        r.all()
    );
}
