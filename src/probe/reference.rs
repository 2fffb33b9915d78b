//! Image references checked against Docker's grammar (distribution/reference), so a typo is
//! reported as what it is before any engine call.

/// An image reference, `[host[:port]/]path[:tag][@sha256:hex]`, checked once where it enters
/// (clap parses arguments into it) and then carried as parts, so no caller splits strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    raw: String,
    /// `host[:port]` when the first path component names a registry.
    registry: Option<String>,
    /// The path without registry, tag or digest: `team/auth`.
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageRef {
    pub fn parse(r: &str) -> Result<ImageRef, String> {
        parse(r)
    }

    pub fn registry(&self) -> Option<&str> {
        self.registry.as_deref()
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// What a registry serves a manifest under: the digest when pinned, else the tag
    /// (`latest` when there is neither, as Docker assumes).
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

impl std::str::FromStr for ImageRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse(s)
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.raw)
    }
}

impl serde::Serialize for ImageRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

/// Ok when `r` is a valid reference; the error names what is wrong with it.
pub fn check(r: &str) -> Result<(), String> {
    parse(r).map(|_| ())
}

fn parse(r: &str) -> Result<ImageRef, String> {
    let bad = |why: &str| Err(format!("invalid image reference {r:?}: {why}"));
    if r.is_empty() {
        return bad("empty");
    }
    if r.len() > 255 {
        return bad("longer than 255 characters");
    }
    let (rest, digest) = match r.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (r, None),
    };
    if let Some(d) = digest {
        let Some(hex) = d.strip_prefix("sha256:") else {
            return bad("digest must be sha256:<64 hex>");
        };
        if hex.len() != 64
            || !hex
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        {
            return bad("digest must be sha256:<64 lowercase hex>");
        }
    }
    // A tag is after the last ':' that comes after the last '/'.
    let slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (name, tag) = match rest[slash..].rfind(':') {
        Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            return bad("tag must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}");
        }
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    let mut registry = None;
    if parts.len() > 1 {
        let first = parts[0];
        if first.contains('.') || first.contains(':') || first == "localhost" {
            let (host, port) = first.split_once(':').unwrap_or((first, ""));
            if host.is_empty()
                || !host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
            {
                return bad("registry host is not a valid hostname");
            }
            if !port.is_empty() && port.parse::<u16>().is_err() {
                return bad("registry port is not a number");
            }
            registry = Some(first.to_string());
            parts.remove(0);
        }
    }
    for p in &parts {
        let ok = !p.is_empty()
            && p.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
            })
            && p.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && p.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
        if !ok {
            return bad(
                "repository path components must be lowercase letters, digits and . _ - separators",
            );
        }
    }
    Ok(ImageRef {
        raw: r.to_string(),
        registry,
        repository: parts.join("/"),
        tag: tag.map(str::to_string),
        digest: digest.map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::{check, ImageRef};

    #[test]
    fn accepts_what_docker_accepts() {
        for r in [
            "authentication-service:dhi-staging",
            "127.0.0.1:5000/authentication-service:staging-dhi-20260211",
            "localhost/a/b",
            "registry.example.com/team/auth@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(check(r).is_ok(), "{r}: {:?}", check(r));
        }
    }

    #[test]
    fn rejects_what_docker_rejects() {
        for r in [
            "",
            "Auth-Service:x",
            "auth::tag",
            "auth:-bad",
            "a//b",
            "auth@sha256:xyz",
            "-auth",
            "host:port/x",
        ] {
            assert!(check(r).is_err(), "{r} should be rejected");
        }
    }

    #[test]
    fn parts_are_what_docker_means() {
        let r = ImageRef::parse("127.0.0.1:5000/team/auth:staging-dhi-20260211").unwrap();
        assert_eq!(r.registry(), Some("127.0.0.1:5000"));
        assert_eq!(r.repository(), "team/auth");
        assert_eq!(r.tag(), Some("staging-dhi-20260211"));
        assert_eq!(r.manifest_reference(), "staging-dhi-20260211");
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let r = ImageRef::parse(&format!("localhost/a/b@{d}")).unwrap();
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            (Some("localhost"), "a/b", None)
        );
        assert_eq!(r.manifest_reference(), d);
        let r: ImageRef = "authentication-service".parse().unwrap();
        assert_eq!((r.registry(), r.manifest_reference()), (None, "latest"));
        assert_eq!(r.to_string(), "authentication-service");
    }
}
