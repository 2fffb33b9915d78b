//! Registry credentials the way the docker CLI finds them: `--username/--password-stdin`
//! first, else the `auths` entry for the registry in `$DOCKER_CONFIG/config.json` (default
//! `~/.docker/config.json`). Credential helpers (`credsStore`) are not run.

use std::path::PathBuf;

use anyhow::{Context, Result};
use base64::Engine as _;
use bollard::auth::DockerCredentials;

pub fn config_path() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var("HOME")
        .ok()
        .map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// Credentials for `registry` (host[:port]) from the Docker config file, if it has any.
pub fn from_docker_config(registry: &str) -> Result<Option<DockerCredentials>> {
    let Some(path) = config_path() else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    let Some(auths) = json.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    let entry = auths.iter().find(|(k, _)| {
        let host = k
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        host.split('/').next() == Some(registry)
    });
    let Some((_, entry)) = entry else {
        return Ok(None);
    };
    let Some(encoded) = entry.get("auth").and_then(|a| a.as_str()) else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .with_context(|| format!("{}: auths.{registry}.auth is not base64", path.display()))?;
    let decoded = String::from_utf8(decoded)
        .with_context(|| format!("{}: auths.{registry}.auth is not UTF-8", path.display()))?;
    let (user, pass) = decoded.split_once(':').with_context(|| {
        format!(
            "{}: auths.{registry}.auth is not user:password",
            path.display()
        )
    })?;
    Ok(Some(explicit(registry, user, pass)))
}

pub fn explicit(registry: &str, user: &str, password: &str) -> DockerCredentials {
    DockerCredentials {
        username: Some(user.to_string()),
        password: Some(password.to_string()),
        serveraddress: Some(registry.to_string()),
        ..Default::default()
    }
}
