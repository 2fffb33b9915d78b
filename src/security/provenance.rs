//! Base image provenance: an in-toto statement in a DSSE envelope, signed with ECDSA P-256
//! over SHA-256 of the DSSE pre-authentication encoding (as Docker Hardened Images sign
//! theirs), verified against a pinned PEM public key; then the statement's subject digest, the
//! SLSA builder id (v0.2 and v1) and the materials are checked. Each failure names what failed.

use anyhow::{anyhow, Context, Result};
use base64::Engine as _;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    pub predicate_type: String,
    pub builder_id: String,
    pub subject_digest: String,
    pub materials: Vec<String>,
}

/// DSSE v1 pre-authentication encoding.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

fn b64(s: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(s.trim()))
        .map_err(|e| anyhow!("not base64: {e}"))
}

/// Verifies `envelope` with `key_pem`; `base_digest` is the digest the subject must carry.
pub fn verify(
    envelope: &str,
    key_pem: &str,
    base_digest: &str,
    allowed_builders: &[String],
) -> Result<Verified> {
    let env: Value = serde_json::from_str(envelope).context("provenance file is not JSON")?;
    let payload_type = env["payloadType"]
        .as_str()
        .ok_or_else(|| anyhow!("not a DSSE envelope: no payloadType"))?;
    if payload_type != "application/vnd.in-toto+json" {
        return Err(anyhow!(
            "DSSE payloadType is {payload_type:?}, expected application/vnd.in-toto+json"
        ));
    }
    let payload = b64(env["payload"]
        .as_str()
        .ok_or_else(|| anyhow!("not a DSSE envelope: no payload"))?)
    .context("DSSE payload")?;
    let key = VerifyingKey::from_public_key_pem(key_pem)
        .map_err(|e| anyhow!("the key is not a PEM P-256 public key: {e}"))?;
    let message = pae(payload_type, &payload);
    let sigs = env["signatures"]
        .as_array()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| anyhow!("DSSE envelope has no signatures"))?;
    let good = sigs.iter().any(|s| {
        let Some(raw) = s["sig"].as_str().and_then(|x| b64(x).ok()) else {
            return false;
        };
        let sig = Signature::from_der(&raw).or_else(|_| Signature::from_slice(&raw));
        sig.is_ok_and(|sig| key.verify(&message, &sig).is_ok())
    });
    if !good {
        return Err(anyhow!("signature verification failed: the payload was altered or was not signed by the pinned key"));
    }
    let st: Value = serde_json::from_slice(&payload)
        .context("the signed payload is not a JSON in-toto statement")?;
    let subjects: Vec<String> = st["subject"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            s.pointer("/digest/sha256")
                .and_then(Value::as_str)
                .map(|d| format!("sha256:{d}"))
        })
        .collect();
    let want = if base_digest.starts_with("sha256:") {
        base_digest.to_string()
    } else {
        format!("sha256:{base_digest}")
    };
    if !subjects.contains(&want) {
        return Err(anyhow!("subject digest mismatch: the attestation is for {subjects:?}, the base image is {want}"));
    }
    let predicate_type = st["predicateType"].as_str().unwrap_or("").to_string();
    let p = &st["predicate"];
    let (builder, materials) = if predicate_type.contains("slsa.dev/provenance/v1") {
        (
            p.pointer("/runDetails/builder/id").and_then(Value::as_str),
            p.pointer("/buildDefinition/resolvedDependencies")
                .and_then(Value::as_array),
        )
    } else if predicate_type.contains("slsa.dev/provenance/v0.2") {
        (
            p.pointer("/builder/id").and_then(Value::as_str),
            p.get("materials").and_then(Value::as_array),
        )
    } else {
        return Err(anyhow!(
            "predicateType {predicate_type:?} is not SLSA provenance v0.2 or v1"
        ));
    };
    let builder = builder
        .ok_or_else(|| anyhow!("the provenance names no builder id"))?
        .to_string();
    if !allowed_builders.iter().any(|b| b == &builder) {
        return Err(anyhow!(
            "builder {builder:?} is not in the allow-list ({allowed_builders:?})"
        ));
    }
    let materials = materials
        .into_iter()
        .flatten()
        .map(|m| {
            let d = m
                .pointer("/digest/sha256")
                .and_then(Value::as_str)
                .map(|d| format!("@sha256:{d}"))
                .unwrap_or_default();
            format!("{}{d}", m["uri"].as_str().unwrap_or(""))
        })
        .collect();
    Ok(Verified {
        predicate_type,
        builder_id: builder,
        subject_digest: want,
        materials,
    })
}
