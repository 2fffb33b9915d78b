//! Keeping secrets out of everything the tool prints, stores or sends: URLs lose their
//! userinfo and secret-looking query values, and copied log lines lose bearer tokens,
//! `password=`-style pairs and any value the env file holds. Pure string functions, so every
//! layer can use them and a test can prove them.

pub use std::borrow::Cow;

/// Query keys whose values are credentials (case-insensitive, matched as substrings).
const SECRET_KEYS: &[&str] = &[
    "token",
    "secret",
    "password",
    "passwd",
    "pwd",
    "key",
    "sig",
    "auth",
    "credential",
    "session",
];

const MASK: &str = "***";

/// `scheme://user:pass@host/path?token=x&q=1` -> `scheme://***@host/path?token=***&q=1`.
/// Works on any text that contains URLs (an error message naming one).
pub fn urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        // The scheme: letters right before "://".
        let scheme_start = after_last(&rest[..i], |c| {
            !(c.is_ascii_alphanumeric() || "+-.".contains(c))
        });
        out.push_str(&rest[..scheme_start]);
        let after = &rest[i + 3..];
        let end = after
            .find(|c: char| c.is_whitespace() || "\"'<>()[]{}`,".contains(c))
            .unwrap_or(after.len());
        out.push_str(&rest[scheme_start..i + 3]);
        out.push_str(&one_url(&after[..end]));
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The part of a URL after `scheme://`.
fn one_url(u: &str) -> String {
    let (authority_end, _) = u
        .char_indices()
        .find(|(_, c)| "/?#".contains(*c))
        .unwrap_or((u.len(), ' '));
    let (authority, tail) = u.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => format!("{MASK}@{}", &authority[at + 1..]),
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        None => tail.to_string(),
        Some((path, query)) => {
            let (query, frag) = match query.split_once('#') {
                Some((q, f)) => (q, Some(f)),
                None => (query, None),
            };
            let q: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if is_secret_key(k) => format!("{k}={MASK}"),
                    _ => pair.to_string(),
                })
                .collect();
            format!(
                "{path}?{}{}",
                q.join("&"),
                frag.map(|f| format!("#{f}")).unwrap_or_default()
            )
        }
    };
    format!("{authority}{tail}")
}

/// The byte index just past the last char matching `pred` (0 if none): a char boundary
/// whatever the char's width (found by fuzzing: `+ 1` is not one after a multibyte char).
fn after_last(s: &str, pred: impl Fn(char) -> bool) -> usize {
    s.char_indices()
        .rev()
        .find(|(_, c)| pred(*c))
        .map(|(i, c)| i + c.len_utf8())
        .unwrap_or(0)
}

fn is_secret_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    SECRET_KEYS.iter().any(|s| k.contains(s))
}

/// Every form in which a credential the configuration names can come back in someone's
/// error page or log: the secret itself, `user:secret`, the base64 of that (an HTTP Basic
/// header echoed), the base64 of the secret alone, and its percent-encoded form.
pub fn credential_forms(user: Option<&str>, secret: &str) -> Vec<String> {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    if secret.is_empty() {
        return Vec::new();
    }
    let mut forms = vec![secret.to_string(), b64(secret)];
    if let Some(u) = user.filter(|u| !u.is_empty()) {
        let pair = format!("{u}:{secret}");
        forms.push(b64(&pair));
        forms.push(pair);
    }
    let encoded: String = secret
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    if encoded != secret {
        forms.push(encoded);
    }
    // The longest first, so a pair is masked whole before its parts.
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    forms.dedup();
    forms
}

/// The credentials a URL carries (its userinfo, secret-looking query values), in every form.
pub fn url_credentials(url: &str) -> Vec<String> {
    let Some((_, rest)) = url.split_once("://") else {
        return Vec::new();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let mut out = Vec::new();
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        out.extend(credential_forms(Some(user), pass));
        if pass.is_empty() {
            out.extend(credential_forms(None, user));
        }
    }
    if let Some((_, query)) = rest.split_once('?') {
        for pair in query.split(['&', '#']) {
            if let Some((k, v)) = pair.split_once('=') {
                if is_secret_key(k) {
                    out.extend(credential_forms(None, v));
                }
            }
        }
    }
    out
}

/// The credentials this process was given (a Prometheus token or password, a kubeconfig's,
/// a URL's userinfo, the env file's secret-keyed values), in every form: `scrub` masks them
/// in everything printed (`main`) and stored (`store`), whatever source echoed them.
static KNOWN: std::sync::RwLock<Vec<String>> = std::sync::RwLock::new(Vec::new());

/// Adds credentials to the process's set (shorter than 4 characters: too common to mask).
pub fn remember(forms: impl IntoIterator<Item = String>) {
    let mut known = KNOWN.write().unwrap_or_else(|e| e.into_inner());
    for f in forms {
        if f.len() >= 4 && !known.contains(&f) {
            known.push(f);
        }
    }
    known.sort_by_key(|f| std::cmp::Reverse(f.len()));
}

/// Remembers the values of an env file whose keys name a secret (`JWT_SECRET`, `*_TOKEN`).
pub fn remember_env<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) {
    remember(
        pairs
            .into_iter()
            .filter(|(k, _)| is_secret_key(k))
            .flat_map(|(_, v)| credential_forms(None, v)),
    );
}

/// `text` with every remembered credential masked; the text itself when none occurs.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let known = KNOWN.read().unwrap_or_else(|e| e.into_inner());
    let mut out = Cow::Borrowed(text);
    for k in known.iter() {
        if out.contains(k.as_str()) {
            out = Cow::Owned(out.replace(k.as_str(), MASK));
        }
    }
    out
}

/// Whether any credential is remembered (the store skips its scrubbing pass otherwise).
pub fn any_known() -> bool {
    !KNOWN.read().unwrap_or_else(|e| e.into_inner()).is_empty()
}

/// A log line as it may be copied into an incident, a webhook or an issue: URLs redacted,
/// `Bearer <token>`, `key=value`/`key: value` pairs with secret-looking keys, and every
/// `known` secret (env-file values of 4+ characters) masked.
pub fn log_line(line: &str, known: &[String]) -> String {
    let mut s = urls(line);
    for secret in known.iter().filter(|v| v.len() >= 4) {
        if s.contains(secret.as_str()) {
            s = s.replace(secret.as_str(), MASK);
        }
    }
    // Bearer / Basic tokens.
    for scheme in ["Bearer ", "bearer ", "BEARER ", "Basic ", "basic "] {
        let mut from = 0;
        while let Some(i) = s[from..].find(scheme) {
            let start = from + i + scheme.len();
            let end = s[start..]
                .find(|c: char| c.is_whitespace() || "\"',;".contains(c))
                .map(|e| start + e)
                .unwrap_or(s.len());
            // Continue after the mask, or right after the scheme when nothing followed it
            // (found by fuzzing: a fixed step can land inside a multibyte char).
            from = if end > start {
                s.replace_range(start..end, MASK);
                start + MASK.len()
            } else {
                start
            };
        }
    }
    // key=value and key: value with a secret-looking key.
    let mut out = String::with_capacity(s.len());
    let mut rest = s.as_str();
    while let Some(i) = rest.find(['=', ':']) {
        // A JSON key ends in a quote: `"token": "x"`.
        let key_end = rest[..i].trim_end_matches(['"', '\'']).len();
        let key_start = after_last(&rest[..key_end], |c| {
            !(c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
        let key = &rest[key_start..key_end];
        out.push_str(&rest[..=i]);
        let mut after = &rest[i + 1..];
        if !key.is_empty() && is_secret_key(key) {
            let lead = after.len() - after.trim_start_matches([' ', '"', '\'']).len();
            out.push_str(&after[..lead]);
            after = &after[lead..];
            let end = after
                .find(|c: char| c.is_whitespace() || "\"',;&".contains(c))
                .unwrap_or(after.len());
            if end > 0 {
                out.push_str(MASK);
            }
            after = &after[end..];
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_is_masked_in_every_form_it_comes_back_in() {
        let forms = credential_forms(Some("ops"), "p@ss word");
        for f in [
            "p@ss word",
            "ops:p@ss word",
            "b3BzOnBAc3Mgd29yZA==",
            "p%40ss%20word",
        ] {
            assert!(forms.contains(&f.to_string()), "{f} missing from {forms:?}");
        }
        let url = url_credentials("https://u:pw123@host/x?token=tk-999&job=a");
        assert!(
            url.contains(&"pw123".to_string()) && url.contains(&"tk-999".to_string()),
            "{url:?}"
        );
        assert!(!url.contains(&"a".to_string()));
        remember(credential_forms(Some("ops"), "zz-secret-41"));
        let echoed = "Authorization: Basic b3BzOnp6LXNlY3JldC00MQ== and zz-secret-41";
        let clean = scrub(echoed);
        assert!(
            !clean.contains("zz-secret-41") && !clean.contains("b3BzOnp6LXNlY3JldC00MQ=="),
            "{clean}"
        );
    }

    #[test]
    fn urls_lose_userinfo_and_secret_query_values() {
        assert_eq!(
            urls("error sending request for url (http://kong:hunter2@127.0.0.1:8001/status?x=1&api_key=abc#f)"),
            "error sending request for url (http://***@127.0.0.1:8001/status?x=1&api_key=***#f)"
        );
        assert_eq!(
            urls("https://hooks.example/services/T0?token=s3cr3t and redis://:pw@h:6379"),
            "https://hooks.example/services/T0?token=*** and redis://***@h:6379"
        );
        assert_eq!(urls("no url here: a=b"), "no url here: a=b");
    }

    #[test]
    fn log_lines_lose_tokens_pairs_and_known_values() {
        let known = vec!["canary-7f3a".to_string(), "ab".to_string()];
        let got = log_line(
            "error: auth failed for Authorization: Bearer eyJhbGciOi.x.y password=hunter2 body={\"token\": \"t0k\"} value canary-7f3a ab",
            &known,
        );
        assert!(!got.contains("eyJhbGciOi"), "{got}");
        assert!(!got.contains("hunter2"), "{got}");
        assert!(!got.contains("t0k"), "{got}");
        assert!(!got.contains("canary-7f3a"), "{got}");
        assert!(
            got.contains("ab"),
            "short values are not masked everywhere: {got}"
        );
        assert!(got.starts_with("error: auth failed"), "{got}");
    }

    #[test]
    fn multibyte_chars_before_a_separator() {
        // Found by `cargo fuzz run redact`: a key preceded by a three-byte char.
        let line = "\u{fffd}a=b \u{00e9}password=x \u{4e2d}://h";
        let out = log_line(line, &[]);
        assert!(out.contains("password=***"), "{out}");
        assert_eq!(urls("\u{fffd}http://u:p@h/"), "\u{fffd}http://***@h/");
        assert_eq!(log_line("[basic \n\u{fffd}i", &[]), "[basic \n\u{fffd}i");
    }

    proptest::proptest! {
        #[test]
        fn redaction_never_panics_and_removes_known_secrets(line in "\\\\PC{0,200}", secret in "[a-z0-9]{6,12}") {
            let with = format!("{line} {secret}");
            let out = log_line(&with, std::slice::from_ref(&secret));
            proptest::prop_assert!(!out.contains(&secret));
            let _ = urls(&line);
        }
    }
}
