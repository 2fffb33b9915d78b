//! Version ordering per ecosystem, because "fixed in 1:2.3~rc1-2" means nothing without the
//! ecosystem's rules: Debian's dpkg (epoch, upstream, revision, `~` sorting before
//! everything), Alpine's apk (numbers, letter, `_alpha.._p` suffixes, `-rN`), and SemVer for npm.

use std::cmp::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ecosystem {
    Debian,
    Alpine,
    Npm,
}

impl Ecosystem {
    /// OSV ecosystem names carry a release: `Debian:12`, `Alpine:v3.19`.
    pub fn from_osv(s: &str) -> Option<Ecosystem> {
        let base = s.split(':').next().unwrap_or(s);
        match base {
            "Debian" | "Ubuntu" => Some(Ecosystem::Debian),
            "Alpine" => Some(Ecosystem::Alpine),
            "npm" => Some(Ecosystem::Npm),
            _ => None,
        }
    }

    pub fn compare(self, a: &str, b: &str) -> Ordering {
        match self {
            Ecosystem::Debian => dpkg_cmp(a, b),
            Ecosystem::Alpine => apk_cmp(a, b),
            Ecosystem::Npm => semver_cmp(a, b),
        }
    }
}

// ---- dpkg (deb-version(7)) ----

fn split_dpkg(v: &str) -> (u64, &str, &str) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) if e.chars().all(|c| c.is_ascii_digit()) => (e.parse().unwrap_or(0), r),
        _ => (0, v),
    };
    match rest.rsplit_once('-') {
        Some((u, r)) => (epoch, u, r),
        None => (epoch, rest, ""),
    }
}

fn dpkg_order(c: Option<char>) -> i32 {
    match c {
        None => 0,
        Some('~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(c) => c as i32 + 256,
    }
}

/// dpkg's verrevcmp: alternate non-digit runs (compared with `~` lowest, letters before
/// other symbols) and digit runs (compared numerically).
fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let mut first_diff = 0;
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let ac = dpkg_order(a.get(i).copied().filter(|c| !c.is_ascii_digit()));
            let bc = dpkg_order(b.get(j).copied().filter(|c| !c.is_ascii_digit()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            if i < a.len() && !a[i].is_ascii_digit() {
                i += 1;
            }
            if j < b.len() && !b[j].is_ascii_digit() {
                j += 1;
            }
        }
        while i < a.len() && a[i] == '0' {
            i += 1;
        }
        while j < b.len() && b[j] == '0' {
            j += 1;
        }
        while i < a.len() && a[i].is_ascii_digit() && j < b.len() && b[j].is_ascii_digit() {
            if first_diff == 0 {
                first_diff = a[i] as i32 - b[j] as i32;
            }
            i += 1;
            j += 1;
        }
        if i < a.len() && a[i].is_ascii_digit() {
            return Ordering::Greater;
        }
        if j < b.len() && b[j].is_ascii_digit() {
            return Ordering::Less;
        }
        if first_diff != 0 {
            return first_diff.cmp(&0);
        }
    }
    Ordering::Equal
}

pub fn dpkg_cmp(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split_dpkg(a);
    let (eb, ub, rb) = split_dpkg(b);
    ea.cmp(&eb)
        .then_with(|| verrevcmp(ua, ub))
        .then_with(|| verrevcmp(ra, rb))
}

// ---- apk (apk-tools version.c, simplified to its token rules) ----

#[derive(Debug, PartialEq, PartialOrd)]
enum ApkToken {
    Num(u64),
    Letter(char),
    Suffix(i32, u64),
    Rev(u64),
}

fn apk_tokens(v: &str) -> Vec<ApkToken> {
    let mut out = Vec::new();
    let (main, rev) = match v.rsplit_once("-r") {
        Some((m, r)) if r.chars().all(|c| c.is_ascii_digit()) && !r.is_empty() => {
            (m, r.parse().ok())
        }
        _ => (v, None),
    };
    let (base, suffixes) = match main.split_once('_') {
        Some((b, s)) => (b, Some(s)),
        None => (main, None),
    };
    for part in base.split('.') {
        let digits: String = part.chars().take_while(|c| c.is_ascii_digit()).collect();
        out.push(ApkToken::Num(digits.parse().unwrap_or(0)));
        if let Some(l) = part.chars().find(|c| c.is_ascii_alphabetic()) {
            out.push(ApkToken::Letter(l));
        }
    }
    for s in suffixes.into_iter().flat_map(|s| s.split('_')) {
        let name: String = s.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
        let n: u64 = s[name.len()..].parse().unwrap_or(0);
        let rank = match name.as_str() {
            "alpha" => -4,
            "beta" => -3,
            "pre" => -2,
            "rc" => -1,
            "cvs" | "svn" | "git" | "hg" => 1,
            "p" => 2,
            _ => 0,
        };
        out.push(ApkToken::Suffix(rank, n));
    }
    out.push(ApkToken::Rev(rev.unwrap_or(0)));
    out
}

/// Each token as a key whose plain tuple order is apk's: a pre-release suffix is older than
/// anything at its place, then the revision, an unknown suffix, a number, a post-release
/// suffix, and a letter newest. Comparing the key lists lexicographically (a shorter list
/// that is a prefix is older) is a total order on any strings, which sorting needs; pairwise
/// rules per token kind were not transitive (proptest found `_1 <= . <= _` with `_1 > _`).
fn apk_key(t: &ApkToken) -> (u8, u64, u64) {
    match *t {
        ApkToken::Suffix(r, n) if r < 0 => (0, (r + 10) as u64, n),
        ApkToken::Rev(n) => (1, n, 0),
        ApkToken::Suffix(0, n) => (2, 0, n),
        ApkToken::Num(n) => (3, n, 0),
        ApkToken::Suffix(r, n) => (4, r as u64, n),
        ApkToken::Letter(c) => (5, c as u64, 0),
    }
}

pub fn apk_cmp(a: &str, b: &str) -> Ordering {
    let ka: Vec<_> = apk_tokens(a).iter().map(apk_key).collect();
    let kb: Vec<_> = apk_tokens(b).iter().map(apk_key).collect();
    ka.cmp(&kb)
}

// ---- SemVer 2.0 ----

pub fn semver_cmp(a: &str, b: &str) -> Ordering {
    // The semver crate's precedence (build metadata ignored). npm and OSV also write short
    // forms ("v1.2", "1"), read as the missing parts being zero.
    let parse = |v: &str| {
        let v = v.trim().trim_start_matches('v');
        let split = v.find(['-', '+']).unwrap_or(v.len());
        let (core, rest) = v.split_at(split);
        let parts = core.split('.').count();
        let padded = format!("{core}{}{rest}", ".0".repeat(3usize.saturating_sub(parts)));
        semver::Version::parse(&padded).ok()
    };
    // Strings that are not versions sort below every version, and among themselves as
    // text, so the order stays total (sorting and range checks need that).
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => x.cmp_precedence(&y),
        (Some(_), None) => Ordering::Greater,
        (None, Some(_)) => Ordering::Less,
        (None, None) => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn dpkg_ordering() {
        for (a, b, o) in [
            ("1.0", "1.0", Equal),
            ("1.0~rc1", "1.0", Less),
            ("1.0~~", "1.0~", Less),
            ("1:0.9", "2.0", Greater),
            ("2.0-1", "2.0-2", Less),
            ("3.0.11-1~deb12u2", "3.0.11-1", Less),
            ("3.0.11-1~deb12u2", "3.0.11-1~deb12u1", Greater),
            ("1.2a", "1.2", Greater),
            ("1.10", "1.9", Greater),
            ("2.36-9+deb12u4", "2.36-9+deb12u10", Less),
        ] {
            assert_eq!(dpkg_cmp(a, b), o, "{a} vs {b}");
        }
    }

    #[test]
    fn apk_ordering() {
        for (a, b, o) in [
            ("1.2.3-r0", "1.2.3-r1", Less),
            ("1.2.3_rc1-r0", "1.2.3-r0", Less),
            ("1.2.3_p1-r0", "1.2.3-r0", Greater),
            ("1.2.3a-r0", "1.2.3-r0", Greater),
            ("3.1.4-r5", "3.1.4-r5", Equal),
            ("1.10.0-r0", "1.9.9-r0", Greater),
        ] {
            assert_eq!(apk_cmp(a, b), o, "{a} vs {b}");
        }
    }

    #[test]
    fn semver_ordering() {
        for (a, b, o) in [
            ("1.2.3", "1.2.4", Less),
            ("1.0.0-alpha", "1.0.0", Less),
            ("1.0.0-alpha.1", "1.0.0-alpha.beta", Less),
            ("v2.0.0", "1.99.0", Greater),
        ] {
            assert_eq!(semver_cmp(a, b), o, "{a} vs {b}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(10000))]
        /// Every ecosystem's order is a total order on arbitrary strings (what sorting
        /// needs): reflexive, antisymmetric and transitive.
        #[test]
        fn orders_are_total(a in "[0-9a-z.:~+_-]{0,10}", b in "[0-9a-z.:~+_-]{0,10}", c in "[0-9a-z.:~+_-]{0,10}") {
            for eco in [Ecosystem::Debian, Ecosystem::Alpine, Ecosystem::Npm] {
                proptest::prop_assert_eq!(eco.compare(&a, &a), Ordering::Equal, "{:?} reflexive on {}", eco, a);
                proptest::prop_assert_eq!(eco.compare(&a, &b), eco.compare(&b, &a).reverse(), "{:?} antisymmetric on {} {}", eco, a, b);
                let (ab, bc, ac) = (eco.compare(&a, &b), eco.compare(&b, &c), eco.compare(&a, &c));
                if ab != Ordering::Greater && bc != Ordering::Greater {
                    proptest::prop_assert_ne!(ac, Ordering::Greater, "{:?} transitive on {} <= {} <= {}", eco, a, b, c);
                }
            }
        }
    }
}
