//! The runbook's "Infrastructure Requirements" as checks with pass/warn/fail: engine, env
//! file (values never printed), staging port, Kong, Redis (optional: warn), OpenTelemetry
//! collector, state dir, registry, and the image a rollback would restore.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::Config;
use crate::engine::Engine;
use crate::exit::Code;
use crate::output::Render;
use crate::probe::reference::ImageRef;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Item {
    pub check: String,
    pub status: Status,
    pub detail: String,
}

/// `preflight`'s outcome: exit 3 when any check failed; warnings do not fail it.
#[derive(Debug, Serialize)]
pub struct Report {
    pub ok: bool,
    pub checks: Vec<Item>,
}

impl Render for Report {
    fn code(&self) -> Code {
        Code::of_check(self.ok)
    }

    fn text(&self) -> String {
        let mut text = String::from("preflight (Infrastructure Requirements):\n");
        for i in &self.checks {
            text += &format!("  {:<4} {:<26} {}\n", i.status.as_str(), i.check, i.detail);
        }
        let count = |s: Status| self.checks.iter().filter(|i| i.status == s).count();
        text + &format!(
            "{} failed, {} warning(s)",
            count(Status::Fail),
            count(Status::Warn)
        )
    }
}

fn item(check: &str, status: Status, detail: impl Into<String>) -> Item {
    Item {
        check: check.into(),
        status,
        detail: detail.into(),
    }
}

pub async fn check(cfg: &Config, state_dir: &Path) -> Report {
    let pf = &cfg.preflight;
    let mut items = Vec::new();

    let engine = match Engine::connect().await {
        Ok(e) => {
            items.push(item(
                "Docker runtime",
                Status::Pass,
                e.server_version()
                    .await
                    .unwrap_or_else(|e| format!("reachable ({e:#})")),
            ));
            Some(e)
        }
        Err(e) => {
            items.push(item("Docker runtime", Status::Fail, format!("{e:#}")));
            None
        }
    };

    let env = if cfg.env_file.exists() {
        match crate::envfile::read(&cfg.env_file) {
            Ok(vars) => {
                let missing: Vec<&String> = pf
                    .required_env
                    .iter()
                    .filter(|k| !vars.iter().any(|v| &v.key == *k && !v.value.is_empty()))
                    .collect();
                if missing.is_empty() {
                    items.push(item(
                        "env file",
                        Status::Pass,
                        format!(
                            "{}: {} variables, all {} required set",
                            cfg.env_file.display(),
                            vars.len(),
                            pf.required_env.len()
                        ),
                    ));
                } else {
                    items.push(item(
                        "env file",
                        Status::Fail,
                        format!(
                            "{}: required but unset or empty: {}",
                            cfg.env_file.display(),
                            missing
                                .iter()
                                .map(|s| s.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
                vars
            }
            Err(e) => {
                items.push(item("env file", Status::Fail, format!("{e:#}")));
                Vec::new()
            }
        }
    } else {
        items.push(item(
            "env file",
            Status::Fail,
            format!(
                "{} does not exist (copy .env.stg.example)",
                cfg.env_file.display()
            ),
        ));
        Vec::new()
    };
    let var = |k: &str| {
        env.iter()
            .find(|v| v.key == k)
            .map(|v| v.value.clone())
            .filter(|v| !v.is_empty())
    };

    let ip = if cfg.container.host_ip.is_empty() {
        "0.0.0.0"
    } else {
        cfg.container.host_ip.as_str()
    };
    let addr = format!("{ip}:{}", cfg.container.host_port);
    match std::net::TcpListener::bind(&addr) {
        Ok(_) => items.push(item(
            "staging port",
            Status::Pass,
            format!("{addr} is free"),
        )),
        Err(_) => {
            let ours = match &engine {
                Some(e) => e
                    .find_container(&cfg.container.name)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|c| {
                        c.host_config
                            .and_then(|h| h.port_bindings)
                            .is_some_and(|pb| {
                                pb.values().flatten().flatten().any(|b| {
                                    b.host_port.as_deref()
                                        == Some(&cfg.container.host_port.to_string())
                                })
                            })
                    }),
                None => false,
            };
            if ours {
                items.push(item(
                    "staging port",
                    Status::Pass,
                    format!("{addr} is held by our container {}", cfg.container.name),
                ));
            } else {
                items.push(item(
                    "staging port",
                    Status::Fail,
                    format!(
                        "{addr} is in use by something other than {}",
                        cfg.container.name
                    ),
                ));
            }
        }
    }

    let client = crate::probe::health::client(pf.timeout);
    match var(&pf.kong_url_var) {
        None => items.push(item(
            "Kong API Gateway",
            Status::Fail,
            format!("{} is not set in the env file", pf.kong_url_var),
        )),
        Some(url) => match crate::probe::health::get_bounded(&client, &url, 4096).await {
            Ok((code, _)) => items.push(item(
                "Kong API Gateway",
                Status::Pass,
                format!("{} answered HTTP {code}", redact_url(&url)),
            )),
            Err(e) => items.push(item(
                "Kong API Gateway",
                Status::Fail,
                format!("{}: {e}", redact_url(&url)),
            )),
        },
    }
    match var(&pf.redis_url_var) {
        None => items.push(item(
            "Redis (optional)",
            Status::Warn,
            format!(
                "{} is not set: the service runs without Redis (graceful fallback)",
                pf.redis_url_var
            ),
        )),
        Some(url) => match redis_ping(&url, pf.timeout).await {
            Ok(answer) => items.push(item(
                "Redis (optional)",
                Status::Pass,
                format!("{} answered {answer}", redact_url(&url)),
            )),
            Err(e) => items.push(item(
                "Redis (optional)",
                Status::Warn,
                format!(
                    "{}: {e}; the service falls back gracefully",
                    redact_url(&url)
                ),
            )),
        },
    }
    match var(&pf.otel_endpoint_var) {
        None => items.push(item(
            "OpenTelemetry collector",
            Status::Fail,
            format!("{} is not set in the env file", pf.otel_endpoint_var),
        )),
        Some(url) => match tcp_reachable(&url, pf.timeout).await {
            Ok(hp) => items.push(item(
                "OpenTelemetry collector",
                Status::Pass,
                format!("{hp} accepts connections"),
            )),
            Err(e) => items.push(item(
                "OpenTelemetry collector",
                Status::Fail,
                format!("{}: {e}", redact_url(&url)),
            )),
        },
    }

    let probe = state_dir.join(".preflight-write-test");
    let writable = std::fs::create_dir_all(state_dir)
        .and_then(|_| std::fs::write(&probe, b"ok"))
        .and_then(|_| std::fs::remove_file(&probe));
    match writable {
        Ok(()) => items.push(item(
            "state dir",
            Status::Pass,
            format!("{} is writable", state_dir.display()),
        )),
        Err(e) => items.push(item(
            "state dir",
            Status::Fail,
            format!("{}: {e}", state_dir.display()),
        )),
    }

    let reg = &cfg.image.registry;
    let mut reg_result = Err(String::new());
    for scheme in ["https", "http"] {
        reg_result =
            crate::probe::health::get_bounded(&client, &format!("{scheme}://{reg}/v2/"), 4096)
                .await;
        if reg_result.is_ok() {
            break;
        }
    }
    match reg_result {
        Ok((code, _)) if code == 200 || code == 401 => items.push(item(
            "registry",
            Status::Pass,
            format!("{reg} speaks the registry API (HTTP {code} on /v2/)"),
        )),
        Ok((code, _)) => items.push(item(
            "registry",
            Status::Fail,
            format!("{reg}/v2/ answered HTTP {code}"),
        )),
        Err(e) => items.push(item("registry", Status::Fail, format!("{reg}: {e}"))),
    }

    // "There is always somewhere to roll back to": the image a rollback would restore must
    // be in the engine or in the registry before the week starts, not discovered missing
    // when a trigger fires.
    let target = crate::store::Store::open(state_dir)
        .and_then(|store| crate::rollout::rollback_target(&store, cfg));
    match target {
        Err(e) => items.push(item("rollback target", Status::Fail, format!("{e:#}"))),
        Ok(t) => {
            let local = match &engine {
                Some(e) => e.inspect_image(&t.image).await.is_ok(),
                None => false,
            };
            if local {
                items.push(item(
                    "rollback target",
                    Status::Pass,
                    format!("{} ({}) is in the engine", t.image, t.source),
                ));
            } else {
                match registry_has(&client, &t.image).await {
                    Ok(()) => items.push(item(
                        "rollback target",
                        Status::Pass,
                        format!("{} ({}) is in the registry", t.image, t.source),
                    )),
                    Err(why) => items.push(item(
                        "rollback target",
                        Status::Fail,
                        format!(
                            "{} ({}) is in neither the engine nor the registry: {why}; push it before the monitoring period starts",
                            t.image, t.source
                        ),
                    )),
                }
            }
        }
    }
    for w in cfg.warnings() {
        items.push(item("config", Status::Warn, w));
    }

    Report {
        ok: !items.iter().any(|i| i.status == Status::Fail),
        checks: items,
    }
}

/// Whether the registry serves a manifest for `reference` (`host[:port]/repo:tag`).
async fn registry_has(client: &reqwest::Client, reference: &str) -> Result<(), String> {
    let image = ImageRef::parse(reference)?;
    let host = image
        .registry()
        .ok_or_else(|| format!("{reference} names no registry host"))?;
    let (repo, tag) = (image.repository(), image.manifest_reference());
    let mut last = String::new();
    for scheme in ["https", "http"] {
        let url = format!("{scheme}://{host}/v2/{repo}/manifests/{tag}");
        let resp = client
            .head(&url)
            .header(
                "Accept",
                "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json",
            )
            .send()
            .await;
        match resp {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) if r.status().as_u16() == 401 => {
                return Err(format!(
                    "{host} asks for credentials, so its presence cannot be confirmed"
                ))
            }
            Ok(r) => {
                return Err(format!(
                    "{host} answered HTTP {} for {repo}:{tag}",
                    r.status().as_u16()
                ))
            }
            Err(e) => last = format!("{host}: {e}"),
        }
    }
    Err(last)
}

/// `redis://[user:pass@]host:port` -> PING; an auth error still proves Redis is there.
async fn redis_ping(url: &str, timeout: Duration) -> Result<String, String> {
    let hp = host_port(url, 6379)?;
    let work = async {
        let mut s = tokio::net::TcpStream::connect(&hp)
            .await
            .map_err(|e| format!("cannot connect to {hp}: {e}"))?;
        s.write_all(b"PING\r\n").await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
        let answer = String::from_utf8_lossy(&buf[..n]).trim().to_string();
        if answer.starts_with("+PONG") || answer.starts_with("-NOAUTH") {
            Ok(answer)
        } else {
            Err(format!("{hp} did not answer PING like Redis ({answer:?})"))
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("no answer within {}", humantime::format_duration(timeout)))?
}

async fn tcp_reachable(url: &str, timeout: Duration) -> Result<String, String> {
    let default = if url.starts_with("https://") {
        443
    } else {
        4318
    };
    let hp = host_port(url, default)?;
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&hp)).await {
        Ok(Ok(_)) => Ok(hp),
        Ok(Err(e)) => Err(format!("cannot connect to {hp}: {e}")),
        Err(_) => Err(format!(
            "no answer from {hp} within {}",
            humantime::format_duration(timeout)
        )),
    }
}

fn host_port(url: &str, default_port: u16) -> Result<String, String> {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    if authority.is_empty() {
        return Err(format!("{} has no host", redact_url(url)));
    }
    Ok(if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:{default_port}")
    })
}

/// URLs can carry passwords (`redis://:secret@host`): never print them.
fn redact_url(url: &str) -> String {
    crate::redact::urls(url)
}
