//! An image's layers as exported by the engine (`docker save` format: `manifest.json` plus
//! one tar per layer, classic or OCI layout), reduced to what the checks need: every entry
//! with its mode in every layer, and the contents of the few files the SBOM reads, resolved
//! to the final filesystem (later layers and whiteouts win).

use std::collections::BTreeMap;
use std::io::Read;

use anyhow::{anyhow, Context, Result};

/// Exports larger than this are refused rather than held in memory.
pub const MAX_EXPORT: usize = 2 << 30;
/// Files read for the SBOM or secret checks are capped at this size.
const MAX_FILE: u64 = 8 << 20;

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub layer: usize,
    pub path: String,
    pub mode: u32,
    pub size: u64,
    pub is_dir: bool,
    pub is_link: bool,
}

#[derive(Debug, Default)]
pub struct Filesystem {
    /// Every entry of every layer, in layer order.
    pub entries: Vec<Entry>,
    /// Final contents of interesting files (path without leading '/').
    pub files: BTreeMap<String, Vec<u8>>,
    pub layers: usize,
    /// Paths present in the final filesystem, after whiteouts.
    pub present: std::collections::BTreeSet<String>,
}

/// Whether a file's content is kept: package databases, package.json in node_modules, and
/// small files whose names suggest keys or credentials.
pub fn interesting(path: &str) -> bool {
    path == "var/lib/dpkg/status"
        || path.starts_with("var/lib/dpkg/status.d/")
        || path == "lib/apk/db/installed"
        || (path.contains("node_modules/") && path.ends_with("/package.json"))
        || super::hardening::looks_like_secret_file(path)
}

/// Reads a `docker save` archive.
pub fn from_save_tar(bytes: &[u8]) -> Result<Filesystem> {
    let mut blobs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut archive = tar::Archive::new(bytes);
    for e in archive
        .entries()
        .context("the image export is not a tar archive")?
    {
        let mut e = e?;
        let path = e
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        if e.header().entry_type().is_file() {
            let mut buf = Vec::with_capacity(e.size() as usize);
            e.read_to_end(&mut buf)?;
            blobs.insert(path, buf);
        }
    }
    let manifest: serde_json::Value = serde_json::from_slice(
        blobs
            .get("manifest.json")
            .ok_or_else(|| anyhow!("the image export has no manifest.json"))?,
    )
    .context("the image export's manifest.json is not JSON")?;
    let layers: Vec<String> = manifest[0]["Layers"]
        .as_array()
        .ok_or_else(|| anyhow!("manifest.json lists no layers"))?
        .iter()
        .filter_map(|l| l.as_str().map(str::to_string))
        .collect();
    let mut fs = Filesystem {
        layers: layers.len(),
        ..Default::default()
    };
    for (i, l) in layers.iter().enumerate() {
        let data = blobs
            .get(l)
            .ok_or_else(|| anyhow!("layer {l} is missing from the export"))?;
        read_layer(&mut fs, i, data).with_context(|| format!("reading layer {l}"))?;
    }
    Ok(fs)
}

fn read_layer(fs: &mut Filesystem, layer: usize, data: &[u8]) -> Result<()> {
    // Layers in a save are plain tars; accept gzip too (OCI blobs may be compressed).
    let mut archive = tar::Archive::new(data);
    for e in archive.entries()? {
        let mut e = e?;
        let path = e
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .trim_start_matches('/')
            .to_string();
        let name = path.rsplit('/').next().unwrap_or(&path).to_string();
        if let Some(hidden) = name.strip_prefix(".wh.") {
            let dir = path
                .rsplit_once('/')
                .map(|(d, _)| format!("{d}/"))
                .unwrap_or_default();
            if hidden == ".wh..opq" {
                fs.files.retain(|k, _| !k.starts_with(&dir));
                fs.present.retain(|k| !k.starts_with(&dir));
            } else {
                let target = format!("{dir}{hidden}");
                let under = format!("{target}/");
                fs.files
                    .retain(|k, _| k != &target && !k.starts_with(&under));
                fs.present
                    .retain(|k| k != &target && !k.starts_with(&under));
            }
            continue;
        }
        let h = e.header();
        let kind = h.entry_type();
        let entry = Entry {
            layer,
            path: path.clone(),
            mode: h.mode().unwrap_or(0),
            size: h.size().unwrap_or(0),
            is_dir: kind.is_dir(),
            is_link: kind.is_symlink() || kind.is_hard_link(),
        };
        if kind.is_file() && entry.size <= MAX_FILE && interesting(&path) {
            let mut buf = Vec::new();
            e.read_to_end(&mut buf)?;
            fs.files.insert(path.clone(), buf);
        } else if kind.is_file() {
            fs.files.remove(&path);
        }
        fs.present.insert(path.trim_end_matches('/').to_string());
        fs.entries.push(entry);
    }
    Ok(())
}
