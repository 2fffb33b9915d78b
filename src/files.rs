//! Files the tool writes (reports, charts, the week page): whole or not at all.

use std::path::Path;

use anyhow::Result;

/// Writes a file whole or not at all, and durably: a temp file beside it with a name no
/// other writer uses, fsynced, renamed over the target, and the directory fsynced so the
/// rename survives a crash. A failure leaves the old file (or none) and no temp file.
pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
    write_atomic_mode(path, text, 0o644)
}

/// `write_atomic` with the file's permission bits (0600 for a file holding a secret: it is
/// never readable by others, not even for a moment).
pub fn write_atomic_mode(path: &Path, text: &str, mode: u32) -> Result<()> {
    use anyhow::Context;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(".{name}.{}.{nanos}.tmp", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.with_context(|| format!("cannot write {}", path.display()))
}
