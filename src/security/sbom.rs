//! The software bill of materials, read offline from the image's own package databases:
//! Debian `var/lib/dpkg/status`, distroless/DHI `var/lib/dpkg/status.d/*`, Alpine
//! `lib/apk/db/installed`, `package.json` of every `node_modules` package, and the Bun
//! runtime's version. Written as CycloneDX 1.5 JSON (or SPDX 2.3 JSON).

use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::layers::Filesystem;
use super::version::Ecosystem;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Component {
    pub ecosystem: String,
    pub name: String,
    pub version: String,
    pub purl: String,
}

impl Component {
    pub fn ecosystem(&self) -> Option<Ecosystem> {
        match self.ecosystem.as_str() {
            "deb" => Some(Ecosystem::Debian),
            "apk" => Some(Ecosystem::Alpine),
            "npm" => Some(Ecosystem::Npm),
            _ => None,
        }
    }
}

/// RFC 822-style stanzas: `Package:`, `Version:`, `Architecture:` (dpkg) or `P:`, `V:`, `A:` (apk).
fn stanzas(text: &str) -> Vec<Vec<(String, String)>> {
    text.split("\n\n")
        .map(|block| {
            block
                .lines()
                .filter(|l| !l.starts_with(' ') && !l.starts_with('\t'))
                .filter_map(|l| {
                    l.split_once(':')
                        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                })
                .collect::<Vec<_>>()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

fn field<'a>(s: &'a [(String, String)], k: &str) -> Option<&'a str> {
    s.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str())
}

pub fn components(fs: &Filesystem, bun_version: Option<&str>) -> Vec<Component> {
    let mut out = Vec::new();
    // A dpkg database means a Debian-family namespace whatever else the image holds (an apk
    // database beside it does not make dpkg packages Alpine's); Ubuntu says so in os-release.
    let os_id = ["etc/os-release", "usr/lib/os-release"]
        .iter()
        .find_map(|p| fs.files.get(*p))
        .map(|d| String::from_utf8_lossy(d).to_string())
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("ID=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        });
    let distro = match os_id.as_deref() {
        Some("ubuntu") => "ubuntu",
        _ => "debian",
    };
    for (path, data) in &fs.files {
        let text = String::from_utf8_lossy(data);
        if path == "var/lib/dpkg/status" || path.starts_with("var/lib/dpkg/status.d/") {
            for s in stanzas(&text) {
                let (Some(name), Some(version)) = (field(&s, "Package"), field(&s, "Version"))
                else {
                    continue;
                };
                // dpkg keeps removed packages with "deinstall ok config-files".
                if field(&s, "Status").is_some_and(|st| !st.ends_with("installed")) {
                    continue;
                }
                let arch = field(&s, "Architecture").unwrap_or("all");
                out.push(Component {
                    ecosystem: "deb".into(),
                    name: name.into(),
                    version: version.into(),
                    purl: format!("pkg:deb/{distro}/{name}@{}?arch={arch}", encode(version)),
                });
            }
        } else if path == "lib/apk/db/installed" {
            for s in stanzas(&text) {
                let (Some(name), Some(version)) = (field(&s, "P"), field(&s, "V")) else {
                    continue;
                };
                let arch = field(&s, "A").unwrap_or("noarch");
                out.push(Component {
                    ecosystem: "apk".into(),
                    name: name.into(),
                    version: version.into(),
                    purl: format!("pkg:apk/alpine/{name}@{version}?arch={arch}"),
                });
            }
        } else if path.ends_with("/package.json") && path.contains("node_modules/") {
            // Only a package's own manifest: node_modules/<name>/package.json or node_modules/@scope/<name>/package.json.
            let after = path
                .rsplit_once("node_modules/")
                .map(|(_, a)| a)
                .unwrap_or("");
            let depth = after.matches('/').count();
            let scoped = after.starts_with('@');
            if (scoped && depth != 2) || (!scoped && depth != 1) {
                continue;
            }
            let Ok(v) = serde_json::from_slice::<Value>(data) else {
                continue;
            };
            let (Some(name), Some(version)) = (v["name"].as_str(), v["version"].as_str()) else {
                continue;
            };
            let purl_name = name.replacen('@', "%40", 1);
            out.push(Component {
                ecosystem: "npm".into(),
                name: name.into(),
                version: version.into(),
                purl: format!("pkg:npm/{purl_name}@{version}"),
            });
        }
    }
    if let Some(v) = bun_version {
        out.push(Component {
            ecosystem: "generic".into(),
            name: "bun".into(),
            version: v.into(),
            purl: format!("pkg:generic/bun@{v}"),
        });
    }
    out.sort();
    out.dedup();
    out
}

fn encode(v: &str) -> String {
    v.replace('%', "%25")
        .replace(':', "%3A")
        .replace('+', "%2B")
}

/// A stable serial number: the same image and components give the same SBOM.
fn serial(image_digest: &str, comps: &[Component]) -> String {
    let mut h = Sha256::new();
    h.update(image_digest.as_bytes());
    for c in comps {
        h.update(c.purl.as_bytes());
    }
    let d = h.finalize();
    let x: String = d.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-4{}-8{}-{}",
        &x[0..8],
        &x[8..12],
        &x[13..16],
        &x[17..20],
        &x[20..32]
    )
}

pub fn cyclonedx(image: &str, image_digest: &str, comps: &[Component]) -> Value {
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": format!("urn:uuid:{}", serial(image_digest, comps)),
        "version": 1,
        "metadata": {
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "tools": {"components": [{"type": "application", "name": "dhi-stage", "version": env!("CARGO_PKG_VERSION")}]},
            "component": {
                "type": "container",
                "bom-ref": image,
                "name": image,
                "version": image_digest,
                "hashes": image_digest.strip_prefix("sha256:").map(|h| vec![json!({"alg": "SHA-256", "content": h})]).unwrap_or_default(),
            }
        },
        "components": comps.iter().map(|c| json!({
            "type": if c.ecosystem == "generic" { "application" } else { "library" },
            "bom-ref": c.purl,
            "name": c.name,
            "version": c.version,
            "purl": c.purl,
        })).collect::<Vec<_>>(),
    })
}

pub fn spdx(image: &str, image_digest: &str, comps: &[Component]) -> Value {
    let id = |c: &Component| {
        format!(
            "SPDXRef-Package-{}-{}",
            c.ecosystem,
            c.name.replace(|ch: char| !ch.is_ascii_alphanumeric(), "-")
        )
    };
    let mut packages = vec![json!({
        "SPDXID": "SPDXRef-Image", "name": image, "versionInfo": image_digest, "downloadLocation": "NOASSERTION",
        "primaryPackagePurpose": "CONTAINER",
    })];
    packages.extend(comps.iter().map(|c| json!({
        "SPDXID": id(c), "name": c.name, "versionInfo": c.version, "downloadLocation": "NOASSERTION",
        "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": c.purl}],
    })));
    let mut rels = vec![
        json!({"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": "SPDXRef-Image"}),
    ];
    rels.extend(comps.iter().map(|c| json!({"spdxElementId": "SPDXRef-Image", "relationshipType": "CONTAINS", "relatedSpdxElement": id(c)})));
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("sbom-{image}"),
        "documentNamespace": format!("https://dhi-stage.invalid/spdx/{}", serial(image_digest, comps)),
        "creationInfo": {"created": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "creators": [format!("Tool: dhi-stage-{}", env!("CARGO_PKG_VERSION"))]},
        "packages": packages,
        "relationships": rels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_dpkg_status_d_apk_and_node_modules() {
        let mut fs = Filesystem::default();
        fs.files.insert("var/lib/dpkg/status".into(), b"Package: libc6\nStatus: install ok installed\nVersion: 2.36-9+deb12u4\nArchitecture: amd64\nDescription: x\n multi line\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n".to_vec());
        fs.files.insert(
            "var/lib/dpkg/status.d/openssl".into(),
            b"Package: openssl\nVersion: 3.0.11-1~deb12u2\nArchitecture: amd64\n".to_vec(),
        );
        fs.files.insert(
            "app/node_modules/jose/package.json".into(),
            br#"{"name":"jose","version":"5.2.0"}"#.to_vec(),
        );
        fs.files.insert(
            "app/node_modules/@scope/pkg/package.json".into(),
            br#"{"name":"@scope/pkg","version":"1.0.0"}"#.to_vec(),
        );
        fs.files.insert(
            "app/node_modules/jose/dist/package.json".into(),
            br#"{"type":"module"}"#.to_vec(),
        );
        let c = components(&fs, Some("1.3.0"));
        let purls: Vec<&str> = c.iter().map(|c| c.purl.as_str()).collect();
        assert_eq!(
            purls,
            vec![
                "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64",
                "pkg:deb/debian/openssl@3.0.11-1~deb12u2?arch=amd64",
                "pkg:generic/bun@1.3.0",
                "pkg:npm/%40scope/pkg@1.0.0",
                "pkg:npm/jose@5.2.0",
            ]
        );
        let bom = cyclonedx("img", "sha256:ab", &c);
        assert_eq!(bom["specVersion"], "1.5");
        assert_eq!(bom["components"].as_array().unwrap().len(), 5);
    }

    #[test]
    fn dpkg_packages_are_debian_even_beside_an_apk_database() {
        let mut fs = Filesystem::default();
        fs.files.insert(
            "var/lib/dpkg/status.d/libc6".into(),
            b"Package: libc6\nVersion: 2.36-9\nArchitecture: amd64\n".to_vec(),
        );
        fs.files.insert(
            "lib/apk/db/installed".into(),
            b"P:musl\nV:1.2.4-r2\n\n".to_vec(),
        );
        let c = components(&fs, None);
        let deb: Vec<&str> = c
            .iter()
            .filter(|c| c.ecosystem == "deb")
            .map(|c| c.purl.as_str())
            .collect();
        assert_eq!(deb, vec!["pkg:deb/debian/libc6@2.36-9?arch=amd64"]);
        fs.files.insert(
            "etc/os-release".into(),
            b"NAME=\"Ubuntu\"\nID=ubuntu\n".to_vec(),
        );
        assert!(components(&fs, None)
            .iter()
            .any(|c| c.purl == "pkg:deb/ubuntu/libc6@2.36-9?arch=amd64"));
    }
}
