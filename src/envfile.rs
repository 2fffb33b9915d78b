//! Env files read exactly as `docker run --env-file` reads them (docker/cli `opts/envfile.go`).
//!
//! The container must see what `docker run --env-file .env.stg` would give it, so this is not
//! dotenv: values are literal (quotes and trailing spaces stay), a bare `KEY` passes the
//! caller's value through (and is dropped when the caller has none), `#` starts a comment only
//! at the start of a line.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// One `KEY=value` entry as the container will receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    pub key: String,
    pub value: String,
}

impl EnvVar {
    pub fn docker(&self) -> String {
        format!("{}={}", self.key, self.value)
    }
}

/// Reads the env file for the container; a missing file is a usage error naming it and
/// saying where the template is.
pub fn read_for_container(path: &Path) -> Result<Vec<EnvVar>> {
    use crate::exit::{failure, Code};
    if !path.exists() {
        return Err(failure(
            Code::Usage,
            format!("env file {} does not exist; copy .env.stg.example to {} and fill it in, or pass --env-file", path.display(), path.display()),
        ));
    }
    read(path).map_err(|e| failure(Code::Usage, format!("{e:#}")))
}

pub fn read(path: &Path) -> Result<Vec<EnvVar>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read env file {}", path.display()))?;
    let vars = parse(&bytes, &path.display().to_string(), |k| {
        std::env::var(k).ok()
    })?;
    // The service's secrets (JWT_SECRET, *_TOKEN, ...) are masked wherever they come back.
    crate::redact::remember_env(vars.iter().map(|v| (v.key.as_str(), v.value.as_str())));
    Ok(vars)
}

/// Parses env-file bytes; `lookup` resolves bare keys (the caller's environment in real use).
pub fn parse(
    bytes: &[u8],
    origin: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Vec<EnvVar>> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut out = Vec::new();
    for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let n = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let Ok(line) = std::str::from_utf8(raw) else {
            bail!("env file {origin} contains invalid utf8 bytes at line {n}");
        };
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (line, None),
        };
        if key.is_empty() {
            // The line is not echoed: `=hunter2` is a value without its name.
            bail!("env file {origin}:{n}: no variable name before '=' (the line is not shown: it may hold a secret)");
        }
        if key.contains(char::is_whitespace) {
            // Not echoed either: a pasted `Bearer ...` token lands here.
            bail!(
                "env file {origin}:{n}: the text before '=' contains whitespace, so it is not a variable name (not shown: it may be a secret)"
            );
        }
        match value {
            Some(v) => out.push(EnvVar {
                key: key.into(),
                value: v.into(),
            }),
            None => {
                if let Some(v) = lookup(key) {
                    out.push(EnvVar {
                        key: key.into(),
                        value: v,
                    });
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<(String, String)> {
        parse(s.as_bytes(), "t", |k| {
            (k == "FROM_CALLER").then(|| "caller value".to_string())
        })
        .unwrap()
        .into_iter()
        .map(|e| (e.key, e.value))
        .collect()
    }

    fn kv(k: &str, v: &str) -> (String, String) {
        (k.into(), v.into())
    }

    #[test]
    fn where_docker_and_dotenv_differ() {
        // dotenv strips quotes, trims values, expands ${X} and cuts inline comments; Docker does none.
        assert_eq!(p("A=\"quoted\"\n"), vec![kv("A", "\"quoted\"")]);
        assert_eq!(p("A='single'\n"), vec![kv("A", "'single'")]);
        assert_eq!(
            p("A=value # not a comment\n"),
            vec![kv("A", "value # not a comment")]
        );
        assert_eq!(p("A=trailing  \n"), vec![kv("A", "trailing  ")]);
        assert_eq!(p("A=${HOME}\n"), vec![kv("A", "${HOME}")]);
        assert_eq!(p("A= leading\n"), vec![kv("A", " leading")]);
        assert_eq!(p("A=x=y\n"), vec![kv("A", "x=y")]);
        assert_eq!(p("A=\n"), vec![kv("A", "")]);
    }

    #[test]
    fn bare_keys_pass_the_callers_value_or_vanish() {
        assert_eq!(
            p("FROM_CALLER\nNOT_SET\n"),
            vec![kv("FROM_CALLER", "caller value")]
        );
    }

    #[test]
    fn comments_blank_lines_bom_and_crlf() {
        assert_eq!(
            p("\u{feff}# c\n\n   # indented comment\n  B=1\r\n"),
            vec![kv("B", "1")]
        );
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse(b"A=1\nBearer abc.def.ghi=2\n", "f.env", |_| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("f.env:2") && e.contains("whitespace"), "{e}");
        assert!(
            !e.contains("abc.def"),
            "a pasted token is never echoed: {e}"
        );
        let e = parse(b"=hunter2\n", "f.env", |_| None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("f.env:1") && e.contains("no variable name"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "a value is never echoed: {e}");
        let e = parse(b"A=\xff\n", "f.env", |_| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid utf8") && e.contains("line 1"), "{e}");
    }
}
