//! Which Docker Engine to talk to, found the way the docker CLI finds it: `--host`, else
//! `--context`, else `DOCKER_HOST` (with `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH`), else
//! `DOCKER_CONTEXT`, else the current context in `$DOCKER_CONFIG/config.json`, else the local
//! socket. A context is read from the CLI's own store (`contexts/meta/<sha256 of the name>/
//! meta.json`, TLS files under `contexts/tls/<sha256>/docker/`). Pure resolution over an
//! environment snapshot: no engine is touched here, so it is tested with a table.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

pub const LOCAL_SOCKET: &str = "unix:///var/run/docker.sock";

/// Where the engine is and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `unix:///path` or `tcp://host:port`.
    pub host: String,
    pub tls: Option<Tls>,
    /// Where it came from, in words: "--host", "context staging", "DOCKER_HOST", "default".
    pub source: String,
}

/// Mutual TLS: the CA that signed the engine's certificate, and our certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `DOCKER_TLS_VERIFY` unset with a cert path, or a context's SkipTLSVerify: the docker
    /// CLI then does not verify the server. dhi-stage refuses that (see `check_tls_files`).
    pub verify: bool,
}

/// The engine of this process, resolved once: neither the command line nor the environment
/// changes while it runs, so every connect reuses it instead of re-reading config.json.
static CHOSEN: OnceLock<Result<Endpoint, String>> = OnceLock::new();

/// Resolves the engine from the command line's choice (`--host`, `--docker-context`) over
/// the environment; the first call decides for the process.
pub fn choose(host: Option<&str>, context: Option<&str>) -> Result<Endpoint> {
    CHOSEN
        .get_or_init(|| {
            let env: HashMap<String, String> = std::env::vars().collect();
            resolve(host, context, &env).map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// The endpoint for this process (the environment's alone when nothing was chosen).
pub fn current() -> Result<Endpoint> {
    choose(None, None)
}

fn docker_config_dir(env: &HashMap<String, String>) -> PathBuf {
    match env.get("DOCKER_CONFIG") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(env.get("HOME").map(String::as_str).unwrap_or("/root")).join(".docker"),
    }
}

pub fn resolve(
    host_flag: Option<&str>,
    context_flag: Option<&str>,
    env: &HashMap<String, String>,
) -> Result<Endpoint> {
    let var = |k: &str| env.get(k).filter(|v| !v.is_empty()).map(String::as_str);
    if host_flag.is_some() && context_flag.is_some() {
        bail!("--host and --docker-context name two engines; give one");
    }
    let config_dir = docker_config_dir(env);
    if let Some(h) = host_flag {
        return from_host(h, "--host", env, &config_dir);
    }
    if let Some(c) = context_flag {
        return from_context(c, &config_dir);
    }
    if let Some(h) = var("DOCKER_HOST") {
        return from_host(h, "DOCKER_HOST", env, &config_dir);
    }
    let context = match var("DOCKER_CONTEXT") {
        Some(c) => Some(c.to_string()),
        None => current_context(&config_dir)?,
    };
    match context.as_deref() {
        None | Some("default") => Ok(Endpoint {
            host: LOCAL_SOCKET.into(),
            tls: None,
            source: "default".into(),
        }),
        Some(c) => from_context(c, &config_dir),
    }
}

/// A host given directly: TLS when `DOCKER_TLS_VERIFY` is set (files from `DOCKER_CERT_PATH`,
/// else the docker config dir), as the docker CLI does.
fn from_host(
    host: &str,
    source: &str,
    env: &HashMap<String, String>,
    config_dir: &Path,
) -> Result<Endpoint> {
    let host = check_host(host, source)?;
    let verify = env
        .get("DOCKER_TLS_VERIFY")
        .is_some_and(|v| !v.is_empty() && v != "0");
    let tls = if verify && host.starts_with("tcp://") {
        let dir = env
            .get("DOCKER_CERT_PATH")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| config_dir.to_path_buf());
        Some(tls_files(&dir, true))
    } else {
        None
    };
    Ok(Endpoint {
        host,
        tls,
        source: source.into(),
    })
}

fn check_host(host: &str, source: &str) -> Result<String> {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix("ssh://") {
        bail!(
            "{source} {host}: ssh:// engines are not supported; forward the socket instead \
             (`ssh -NL /tmp/engine.sock:/var/run/docker.sock {rest}` and --host unix:///tmp/engine.sock), \
             or expose the engine over TLS (tcp:// with DOCKER_TLS_VERIFY=1)"
        );
    }
    if host.starts_with("unix://") || host.starts_with("tcp://") {
        return Ok(host.to_string());
    }
    if host.starts_with('/') {
        return Ok(format!("unix://{host}"));
    }
    bail!("{source} {host:?} is not an engine address: use unix:///path/to/docker.sock or tcp://host:port")
}

fn tls_files(dir: &Path, verify: bool) -> Tls {
    Tls {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        verify,
    }
}

/// `currentContext` from `$DOCKER_CONFIG/config.json`, when that file names one.
fn current_context(config_dir: &Path) -> Result<Option<String>> {
    let path = config_dir.join("config.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(_) => return Ok(None),
    };
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    Ok(v["currentContext"].as_str().map(str::to_string))
}

/// A context from the docker CLI's store.
fn from_context(name: &str, config_dir: &Path) -> Result<Endpoint> {
    if name == "default" {
        return Ok(Endpoint {
            host: LOCAL_SOCKET.into(),
            tls: None,
            source: "context default".into(),
        });
    }
    let id = hex(&Sha256::digest(name.as_bytes()));
    let meta = config_dir.join("contexts/meta").join(&id).join("meta.json");
    let text = std::fs::read_to_string(&meta).map_err(|e| {
        anyhow!(
            "docker context {name:?} not found ({}: {e}); `docker context ls` lists them",
            meta.display()
        )
    })?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", meta.display()))?;
    let docker = &v["Endpoints"]["docker"];
    let host = docker["Host"].as_str().ok_or_else(|| {
        anyhow!(
            "docker context {name:?} has no docker endpoint host ({})",
            meta.display()
        )
    })?;
    let source = format!("context {name}");
    let host = check_host(host, &source)?;
    let tls_dir = config_dir.join("contexts/tls").join(&id).join("docker");
    let tls = (host.starts_with("tcp://") && tls_dir.is_dir()).then(|| {
        tls_files(
            &tls_dir,
            !docker["SkipTLSVerify"].as_bool().unwrap_or(false),
        )
    });
    Ok(Endpoint { host, tls, source })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Endpoint {
    /// The engine's host name when it is remote (tcp://), for the probe's base URL.
    pub fn remote_host(&self) -> Option<&str> {
        let rest = self.host.strip_prefix("tcp://")?;
        let authority = rest.split('/').next().unwrap_or(rest);
        let host = match authority.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
            _ => authority,
        };
        Some(host.trim_start_matches('[').trim_end_matches(']'))
    }

    /// Before any handshake: the TLS files exist and say what they are, so a missing client
    /// certificate is named as such instead of surfacing as the server's refusal.
    pub fn check_tls_files(&self) -> Result<()> {
        let Some(t) = &self.tls else { return Ok(()) };
        if !t.verify {
            bail!(
                "{} ({}) would skip verifying the engine's certificate (DOCKER_TLS_VERIFY unset or SkipTLSVerify); dhi-stage only talks TLS to an engine it can verify: set DOCKER_TLS_VERIFY=1",
                self.host, self.source
            );
        }
        for (what, path, marker) in [
            ("CA certificate", &t.ca, "CERTIFICATE"),
            ("client certificate", &t.cert, "CERTIFICATE"),
            ("client key", &t.key, "PRIVATE KEY"),
        ] {
            let text = std::fs::read_to_string(path).map_err(|e| {
                anyhow!(
                    "TLS to {}: the {what} {} cannot be read ({e}); DOCKER_CERT_PATH must hold ca.pem, cert.pem and key.pem",
                    self.host,
                    path.display()
                )
            })?;
            if !text.contains(marker) {
                bail!(
                    "TLS to {}: {} is not a PEM {what}",
                    self.host,
                    path.display()
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn precedence_is_the_docker_clis() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().to_str().unwrap();
        let e = env(&[
            ("DOCKER_CONFIG", cfg),
            ("DOCKER_HOST", "tcp://10.0.0.5:2376"),
        ]);
        // --host beats DOCKER_HOST; DOCKER_HOST beats the default.
        let r = resolve(Some("unix:///tmp/x.sock"), None, &e).unwrap();
        assert_eq!(
            (r.host.as_str(), r.source.as_str()),
            ("unix:///tmp/x.sock", "--host")
        );
        let r = resolve(None, None, &e).unwrap();
        assert_eq!(
            (r.host.as_str(), r.tls.is_none()),
            ("tcp://10.0.0.5:2376", true)
        );
        // DOCKER_TLS_VERIFY: the three files from DOCKER_CERT_PATH.
        let e2 = env(&[
            ("DOCKER_CONFIG", cfg),
            ("DOCKER_HOST", "tcp://10.0.0.5:2376"),
            ("DOCKER_TLS_VERIFY", "1"),
            ("DOCKER_CERT_PATH", "/certs"),
        ]);
        let t = resolve(None, None, &e2).unwrap().tls.unwrap();
        assert_eq!(t.ca, PathBuf::from("/certs/ca.pem"));
        assert_eq!(t.key, PathBuf::from("/certs/key.pem"));
        let r = resolve(None, None, &env(&[("DOCKER_CONFIG", cfg)])).unwrap();
        assert_eq!(
            (r.host.as_str(), r.source.as_str()),
            (LOCAL_SOCKET, "default")
        );
        assert!(resolve(Some("unix:///a"), Some("b"), &e).is_err());
    }

    #[test]
    fn contexts_are_read_from_the_clis_store() {
        let dir = tempfile::tempdir().unwrap();
        let id = hex(&Sha256::digest(b"staging"));
        let meta = dir.path().join("contexts/meta").join(&id);
        std::fs::create_dir_all(&meta).unwrap();
        std::fs::write(
            meta.join("meta.json"),
            r#"{"Name":"staging","Metadata":{},"Endpoints":{"docker":{"Host":"tcp://stg.example:2376","SkipTLSVerify":false}}}"#,
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("contexts/tls").join(&id).join("docker")).unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"currentContext":"staging"}"#,
        )
        .unwrap();
        let e = env(&[("DOCKER_CONFIG", dir.path().to_str().unwrap())]);
        let r = resolve(None, None, &e).unwrap();
        assert_eq!(r.host, "tcp://stg.example:2376");
        assert_eq!(r.source, "context staging");
        assert!(r.tls.as_ref().unwrap().verify);
        assert_eq!(r.remote_host(), Some("stg.example"));
        // DOCKER_CONTEXT=default and --context default mean the local socket.
        let mut e2 = e.clone();
        e2.insert("DOCKER_CONTEXT".into(), "default".into());
        assert_eq!(resolve(None, None, &e2).unwrap().host, LOCAL_SOCKET);
        let err = resolve(None, Some("nope"), &e).unwrap_err().to_string();
        assert!(err.contains("docker context \"nope\" not found"), "{err}");
    }

    #[test]
    fn ssh_and_nonsense_hosts_are_refused_with_what_to_do() {
        let e = env(&[]);
        let err = resolve(Some("ssh://ops@stg"), None, &e)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ssh -NL"), "{err}");
        assert!(resolve(Some("stg:2376"), None, &e).is_err());
        assert_eq!(
            resolve(Some("/run/docker.sock"), None, &e).unwrap().host,
            "unix:///run/docker.sock"
        );
    }
}
