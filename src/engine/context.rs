//! The build context as the engine wants it: a tar of the directory, minus what
//! `.dockerignore` excludes. Patterns are matched with gitignore rules anchored at the
//! context root, which agree with Docker's for the usual forms (`target`, `*.log`, `**/x`,
//! `!keep`); the Dockerfile and `.dockerignore` are always sent, as Docker does.

use std::path::Path;

use anyhow::{bail, Context, Result};
use ignore::gitignore::{Gitignore, GitignoreBuilder};

pub fn tar_context(dir: &Path, dockerfile: &str) -> Result<Vec<u8>> {
    if !dir.is_dir() {
        bail!("build context {} is not a directory", dir.display());
    }
    if !dir.join(dockerfile).is_file() {
        bail!("no {dockerfile} in build context {}", dir.display());
    }
    let ignore = read_dockerignore(dir)?;
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    add_dir(&mut builder, dir, dir, &ignore, dockerfile)?;
    builder
        .into_inner()
        .context("cannot finish the context tar")
}

fn read_dockerignore(dir: &Path) -> Result<Gitignore> {
    let mut b = GitignoreBuilder::new(dir);
    if let Ok(text) = std::fs::read_to_string(dir.join(".dockerignore")) {
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (neg, pat) = match line.strip_prefix('!') {
                Some(p) => ("!", p),
                None => ("", line),
            };
            let pat = pat.trim_start_matches("./").trim_start_matches('/');
            b.add_line(None, &format!("{neg}/{pat}"))
                .with_context(|| format!(".dockerignore: bad pattern {line:?}"))?;
        }
    }
    b.build().context("cannot compile .dockerignore")
}

fn add_dir(
    b: &mut tar::Builder<Vec<u8>>,
    root: &Path,
    dir: &Path,
    ignore: &Gitignore,
    dockerfile: &str,
) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let rel = path.strip_prefix(root).unwrap_or(&path);
        let ft = entry.file_type()?;
        let always = rel == Path::new(dockerfile) || rel == Path::new(".dockerignore");
        if !always
            && ignore
                .matched_path_or_any_parents(rel, ft.is_dir())
                .is_ignore()
        {
            continue;
        }
        if ft.is_dir() {
            b.append_dir(rel, &path)?;
            add_dir(b, root, &path, ignore, dockerfile)?;
        } else {
            b.append_path_with_name(&path, rel)
                .with_context(|| format!("cannot add {} to the context", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(tar: &[u8]) -> Vec<String> {
        let mut a = tar::Archive::new(tar);
        a.entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn honours_dockerignore() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::write(p.join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(p.join(".dockerignore"), "*.log\nsecrets\n!keep.log\n").unwrap();
        std::fs::write(p.join("app"), "x").unwrap();
        std::fs::write(p.join("debug.log"), "x").unwrap();
        std::fs::write(p.join("keep.log"), "x").unwrap();
        std::fs::create_dir(p.join("secrets")).unwrap();
        std::fs::write(p.join("secrets/key.pem"), "x").unwrap();
        let n = names(&tar_context(p, "Dockerfile").unwrap());
        assert!(
            n.contains(&"app".to_string()) && n.contains(&"keep.log".to_string()),
            "{n:?}"
        );
        assert!(
            !n.iter()
                .any(|x| x.contains("debug.log") || x.contains("secrets")),
            "{n:?}"
        );
        assert!(n.contains(&"Dockerfile".to_string()) && n.contains(&".dockerignore".to_string()));
    }
}
