//! The runbook's hardening rules, once: a numeric non-root user, all capabilities dropped
//! (at most NET_BIND_SERVICE back), no-new-privileges, tmpfs mounts noexec and nosuid, no
//! credential files in the image. The deploy's refusal (`engine::spec`), Step 4's
//! verification (`rollout::verify`) and the security score (`security::score`) all ask here,
//! so the three can never disagree about what "hardened" means.

/// `uid[:gid]` as Docker's `--user` and Kubernetes' runAsUser/runAsGroup take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    /// None when only a uid was given (the image's primary group applies).
    pub gid: Option<u32>,
}

impl User {
    /// A numeric `uid[:gid]`; a name (`nobody`) is refused, since Kubernetes' runAsNonRoot
    /// cannot verify a name.
    pub fn parse(s: &str) -> Result<User, String> {
        let (uid, gid) = match s.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (s, None),
        };
        let num = |v: &str, what: &str| {
            v.parse::<u32>()
                .map_err(|_| format!("user {s:?}: {what} {v:?} is not a number"))
        };
        Ok(User {
            uid: num(uid, "uid")?,
            gid: gid.map(|g| num(g, "gid")).transpose()?,
        })
    }

    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

/// Whether `user` is the runbook's kind of user: numeric and not root.
pub fn numeric_non_root(user: &str) -> bool {
    User::parse(user).is_ok_and(|u| !u.is_root())
}

/// `--cap-drop=ALL`.
pub fn drops_all_capabilities(cap_drop: &[String]) -> bool {
    cap_drop.iter().any(|c| c.eq_ignore_ascii_case("ALL"))
}

/// Capabilities added back beyond the one the runbook allows (NET_BIND_SERVICE).
pub fn extra_capabilities(cap_add: &[String]) -> Vec<&String> {
    cap_add
        .iter()
        .filter(|c| {
            !c.eq_ignore_ascii_case("NET_BIND_SERVICE")
                && !c.eq_ignore_ascii_case("CAP_NET_BIND_SERVICE")
        })
        .collect()
}

/// `--security-opt=no-new-privileges:true` (or its short form).
pub fn no_new_privileges(security_opt: &[String]) -> bool {
    security_opt
        .iter()
        .any(|o| o == "no-new-privileges:true" || o == "no-new-privileges")
}

/// The options every tmpfs mount needs.
pub const TMPFS_OPTIONS: [&str; 2] = ["noexec", "nosuid"];

/// Which of `TMPFS_OPTIONS` a mount's options lack.
pub fn tmpfs_lacks<'a, S: AsRef<str>>(options: &[S]) -> Vec<&'a str> {
    TMPFS_OPTIONS
        .iter()
        .copied()
        .filter(|needed| !options.iter().any(|o| o.as_ref() == *needed))
        .collect()
}

/// Names of files that hold keys or credentials when present.
pub fn looks_like_secret_file(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    matches!(
        name,
        "id_rsa"
            | "id_dsa"
            | "id_ecdsa"
            | "id_ed25519"
            | ".npmrc"
            | ".pypirc"
            | ".netrc"
            | ".git-credentials"
            | ".env"
    ) || path.ends_with(".aws/credentials")
        || path.ends_with(".docker/config.json")
        || [".pem", ".key", ".p12", ".pfx", ".jks"]
            .iter()
            .any(|s| name.ends_with(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_as_the_runbook_means_them() {
        assert_eq!(
            User::parse("65532:65532"),
            Ok(User {
                uid: 65532,
                gid: Some(65532)
            })
        );
        assert_eq!(
            User::parse("1000"),
            Ok(User {
                uid: 1000,
                gid: None
            })
        );
        assert!(User::parse("nobody").is_err());
        assert!(User::parse("65532:staff").is_err());
        assert!(numeric_non_root("65532:65532"));
        assert!(!numeric_non_root("0:0"));
        assert!(!numeric_non_root("root"));
        assert!(!numeric_non_root(""));
    }

    #[test]
    fn capabilities_options_and_tmpfs() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(drops_all_capabilities(&s(&["all"])));
        assert!(!drops_all_capabilities(&s(&["NET_RAW"])));
        assert_eq!(
            extra_capabilities(&s(&["NET_BIND_SERVICE", "SYS_ADMIN"])),
            vec!["SYS_ADMIN"]
        );
        assert!(no_new_privileges(&s(&["no-new-privileges:true"])));
        assert!(!no_new_privileges(&s(&["seccomp=unconfined"])));
        assert_eq!(tmpfs_lacks(&["rw", "noexec", "size=64m"]), vec!["nosuid"]);
        assert!(tmpfs_lacks(&["noexec", "nosuid"]).is_empty());
    }
}
