//! The hostile-input corpus: one file per case in `tests/bad_input/`, each naming the input
//! (a config patched from the shipped one, an env file, a document, CLI values, a state
//! dir), the documented exit code, what the message must name, and what it must never show.
//! Every case: the exit code as documented, never 101 (a panic), the message naming the
//! file, field or line, no secret echoed, and no temp file left behind.
mod common;
use common::*;
use std::path::Path;

struct Case {
    name: String,
    file: Option<String>,
    content: Option<Vec<u8>>,
    replace: Vec<(String, String)>,
    args: String,
    exit: i32,
    expect: Vec<String>,
    absent: Vec<String>,
    setup: Option<String>,
}

struct FullDir(std::path::PathBuf);

impl FullDir {
    fn new(p: &Path) -> FullDir {
        std::fs::create_dir_all(p).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(p)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "mounting a small tmpfs failed: the full-disk cases need root (CI runs as root)"
        );
        let _ = std::fs::write(p.join("filler"), vec![0u8; 128 * 1024]);
        FullDir(p.to_path_buf())
    }
}

impl Drop for FullDir {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// `\n`, `\\` and `\xNN` escapes, so a case can hold any bytes in one line.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            match b[i + 1] {
                b'n' => {
                    out.push(b'\n');
                    i += 2;
                    continue;
                }
                b'\\' => {
                    out.push(b'\\');
                    i += 2;
                    continue;
                }
                b'x' if i + 3 < b.len()
                    && s.is_char_boundary(i + 2)
                    && s.is_char_boundary(i + 4) =>
                {
                    if let Ok(v) = u8::from_str_radix(&s[i + 2..i + 4], 16) {
                        out.push(v);
                        i += 4;
                        continue;
                    }
                }
                _ => {}
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn parse_case(path: &Path) -> Case {
    let text = std::fs::read_to_string(path).unwrap();
    let mut c = Case {
        name: path.file_stem().unwrap().to_string_lossy().into(),
        file: None,
        content: None,
        replace: Vec::new(),
        args: String::new(),
        exit: -1,
        expect: Vec::new(),
        absent: Vec::new(),
        setup: None,
    };
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# ") else {
            continue;
        };
        let Some((k, v)) = rest.split_once(": ") else {
            continue;
        };
        match k {
            "file" => c.file = Some(v.to_string()),
            "content" => c.content = Some(unescape(v)),
            "replace" => {
                let (a, b) = v.split_once(" => ").expect("replace: OLD => NEW");
                c.replace
                    .push((a.to_string(), String::from_utf8(unescape(b)).unwrap()));
            }
            "args" => c.args = v.to_string(),
            "exit" => c.exit = v.parse().unwrap(),
            "expect" => c.expect.push(v.to_string()),
            "absent" => c.absent.push(v.to_string()),
            "setup" => c.setup = Some(v.to_string()),
            _ => {}
        }
    }
    assert!(
        c.exit >= 0 && !c.args.is_empty(),
        "{}: needs args and exit",
        c.name
    );
    c
}

/// Splits on spaces, keeping "double quoted" words together.
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for ch in s.chars() {
        match ch {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn tmp_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in walk(dir) {
        let n = e.file_name().unwrap().to_string_lossy().to_string();
        if n.ends_with(".tmp") {
            out.push(n);
        }
    }
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn every_hostile_input_gets_a_clear_error_and_its_exit_code() {
    let dir = root().join("tests/bad_input");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "case"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 30, "the corpus is in tests/bad_input/");
    let shipped = std::fs::read_to_string(root().join("config/staging.toml")).unwrap();
    let mut failures = Vec::new();
    let mut panics = 0;
    for p in &paths {
        let c = parse_case(p);
        let stage = Stage::new();
        let work = stage.dir.path().join("case");
        std::fs::create_dir_all(&work).unwrap();
        let file = c.file.as_ref().map(|f| {
            let ext = match f.as_str() {
                "config" => "case.toml".to_string(),
                "env" => "case.env".to_string(),
                other if other.contains('/') => other.to_string(),
                other => format!("case.{other}.json"),
            };
            work.join(ext)
        });
        if let Some(path) = &file {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let bytes = match (&c.content, c.replace.is_empty()) {
                (Some(b), _) => b.clone(),
                (None, false) => {
                    let mut t = shipped.clone();
                    for (a, b) in &c.replace {
                        assert!(
                            t.contains(a.as_str()),
                            "{}: {a:?} is not in the shipped config",
                            c.name
                        );
                        t = t.replacen(a.as_str(), b, 1);
                    }
                    t.into_bytes()
                }
                (None, true) => panic!("{}: file without content", c.name),
            };
            std::fs::write(path, bytes).unwrap();
        }
        // A full filesystem: a 64 KiB tmpfs filled to the last byte (root can mount; the
        // guard unmounts even when the case fails).
        let _full =
            (c.setup.as_deref() == Some("full-dir")).then(|| FullDir::new(&work.join("full")));
        if c.setup.as_deref() == Some("newer-schema") {
            std::fs::create_dir_all(stage.state_dir()).unwrap();
            let db = rusqlite::Connection::open(stage.state_dir().join("state.db")).unwrap();
            db.pragma_update(None, "user_version", 99).unwrap();
        }
        let fill = |s: &str| {
            let mut s = s
                .replace("{full}", work.join("full").to_str().unwrap())
                .replace("{dir}", work.to_str().unwrap());
            if let Some(f) = &file {
                s = s.replace("{file}", f.to_str().unwrap());
            }
            if s.contains("{good_image}") {
                s = s.replace("{good_image}", &good_image());
            }
            s
        };
        let args = words(&fill(&c.args));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = stage.run(&argv);
        let all = format!("{}{}", r.stdout, r.stderr);
        if r.code == 101 {
            panics += 1;
        }
        let mut why = Vec::new();
        if r.code != c.exit {
            why.push(format!("exit {} (want {})", r.code, c.exit));
        }
        for e in &c.expect {
            let e = fill(e);
            if !all.contains(&e) {
                why.push(format!("message does not name {e:?}"));
            }
        }
        for a in &c.absent {
            if all.contains(a.as_str()) {
                why.push(format!("secret {a:?} printed"));
            }
        }
        let left = tmp_files(stage.dir.path());
        if !left.is_empty() {
            why.push(format!("half-written files left: {left:?}"));
        }
        if !why.is_empty() {
            failures.push(format!("{}: {}\n{}", c.name, why.join("; "), r.all()));
        }
    }
    record_reliability(
        "bad-input.txt",
        &format!(
            "hostile-input corpus: {} cases, {} as documented, {panics} panics\n",
            paths.len(),
            paths.len() - failures.len()
        ),
        false,
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
