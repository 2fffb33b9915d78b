//! `deploy`: the runbook's Step 3 (`docker run` hardened) and Step 4 (verification), with a
//! health poll instead of `sleep 10` and an automatic restore of the previous container.

use std::time::Instant;

use anyhow::Result;
use serde_json::json;

use super::Ctx;
use crate::cli::DeployArgs;
use crate::engine::spec::{hardened, DeploySpec};
use crate::engine::Engine;
use crate::exit::{failure, Code};
use crate::lock::StateLock;
use crate::output::Outcome;
use crate::rollout::{self, checks_json, checks_pass, render_checks};
use crate::store::NewDeployment;

pub async fn run(ctx: Ctx, a: DeployArgs) -> Result<Outcome> {
    let ctx = ctx.with_target(&a.target)?;
    let cfg = &ctx.config;
    let image = a
        .image
        .clone()
        .unwrap_or_else(|| cfg.staging_ref(chrono::Utc::now().date_naive()));
    crate::probe::reference::check(&image).map_err(|e| failure(Code::Usage, e))?;
    if a.kubernetes {
        let manifest = crate::engine::kubernetes::deployment(cfg, &image);
        let text = serde_json::to_string_pretty(&manifest)?;
        return Ok(Outcome::new(Code::Ok, manifest, text));
    }
    let env = super::read_env_file(&cfg.env_file)?;
    let spec = DeploySpec::from_config(cfg, &image, env);
    let gaps = spec.hardening_gaps();

    if a.dry_run {
        return Ok(dry_run(&spec, &gaps));
    }
    if !gaps.is_empty() && !a.allow_insecure {
        return Err(failure(
            Code::CheckFailed,
            format!("refusing to deploy without the runbook's hardening: {}; fix the config or pass --allow-insecure", gaps.join("; ")),
        ));
    }
    if !gaps.is_empty() {
        tracing::warn!(gaps = ?gaps, "deploying WITHOUT the runbook's hardening (--allow-insecure)");
    }

    // From here a signal cannot cut the process mid-swap: the swap is finished or undone.
    let interrupt = rollout::Interrupt::install();
    let _lock = StateLock::acquire(&ctx.state_dir, "deploy", ctx.lock_wait)?;
    let engine = Engine::connect().await?;
    let progress = ctx.progress();
    let inspected = engine.ensure_image(&image, &|l| progress.line(l)).await?;
    let mut store = ctx.store()?;
    let reconciled = rollout::reconcile(&engine, &mut store, &spec.name, &spec.restart).await?;
    if interrupt.interrupted() {
        return Err(failure(
            Code::Operational,
            "interrupted by SIGINT/SIGTERM before anything was changed",
        ));
    }
    let previous = store.active_deployment(&spec.name)?;
    let digest = crate::engine::repo_digest(&inspected);
    let id = store.insert_deployment(&NewDeployment {
        kind: "deploy".into(),
        image_ref: image.clone(),
        image_id: inspected.id.clone(),
        digest: digest.clone(),
        container_name: spec.name.clone(),
        previous_id: previous.as_ref().map(|p| p.id),
        insecure: !gaps.is_empty(),
    })?;
    store.event("deploy", Some(id), &json!({"phase": "start", "image": image, "insecure_gaps": gaps, "previous_deployment": previous.as_ref().map(|p| p.id)}))?;

    progress.line(&format!("starting {} from {image}", spec.name));
    let started = Instant::now();
    let swap = match rollout::swap(&engine, &spec, cfg.container.stop_grace).await {
        Ok(s) => s,
        Err(e) => {
            store.finish_deployment(id, "failed", Some(&json!({"error": format!("{e:#}")})))?;
            store.event(
                "deploy",
                Some(id),
                &json!({"phase": "failed", "error": format!("{e:#}")}),
            )?;
            return Err(e);
        }
    };
    store.set_container(id, &swap.new_id)?;
    let client = crate::probe::health::client(cfg.verify.probe_timeout);
    let limit = a.wait.unwrap_or(cfg.verify.startup_wait);
    let wait = interrupt
        .wait_healthy(
            &engine,
            &client,
            &swap.new_id,
            &cfg.health_url(),
            limit,
            cfg.verify.poll_interval,
        )
        .await;
    let to_healthy = started.elapsed();
    progress.finish();

    // After the swap every failure takes the restore path, a failed check as much as an
    // engine error while checking.
    let (checks, verify_error) = if wait.healthy {
        match rollout::verify(&engine, cfg, &spec, wait.last.as_ref()).await {
            Ok(c) => (c, None),
            Err(e) => (
                Vec::new(),
                Some(format!("verification could not run: {e:#}")),
            ),
        }
    } else {
        (Vec::new(), None)
    };
    let verified = wait.healthy && verify_error.is_none() && checks_pass(&checks);
    let verification = json!({"wait": wait, "checks": checks_json(&checks)});
    store.event("verify", Some(id), &json!({"passed": verified, "checks": checks_json(&checks), "healthy": wait.healthy, "reason": wait.reason}))?;

    let mut text = format!("deploy {image} as {}\n", spec.name);
    for a in &reconciled.actions {
        text += &format!("  reconciled: {a}\n");
    }
    if let Some(old) = &swap.old {
        text += &format!(
            "  previous container {} ({}) set aside, stopped in {}ms{}\n",
            &old.id[..12.min(old.id.len())],
            old.image,
            old.stop_ms,
            if old.sigkill_needed {
                " (SIGTERM ignored: killed after the stop grace)"
            } else {
                ""
            }
        );
    }
    if verified {
        // Recorded before the old container goes: a run killed between the two is finished
        // by the next one's reconcile instead of undone.
        store.mark_healthy(id, chrono::Utc::now())?;
        if let Err(e) = rollout::commit(&engine, &swap).await {
            tracing::warn!("the previous container could not be removed: {e:#}");
            text += &format!("  warning: the previous container stays aside: {e:#}\n");
        }
        store.finish_deployment(id, "active", Some(&verification))?;
        store.event(
            "deploy",
            Some(id),
            &json!({"phase": "active", "start_to_healthy_ms": to_healthy.as_millis()}),
        )?;
        text += &format!(
            "  healthy after {} ({} probes)\n",
            super::fmt_duration(to_healthy),
            wait.probes
        );
        text += &format!("verification (Step 4):\n{}\n", render_checks(&checks));
        if let Some(body) = wait.last.as_ref().and_then(|h| h.body.as_ref()) {
            text += &format!("health: {body}\n");
        }
        text += &format!(
            "deployment #{id} active; rollback baseline: {}",
            previous
                .as_ref()
                .map(|p| format!("#{} {}", p.id, p.image_ref))
                .unwrap_or("none recorded".into())
        );
        return Ok(Outcome::new(
            Code::Ok,
            json!({"ok": true, "deployment_id": id, "image": image, "image_id": inspected.id, "digest": digest, "container_id": swap.new_id,
                   "start_to_healthy_ms": to_healthy.as_millis(), "checks": checks_json(&checks), "health": wait.last, "previous_deployment": previous.as_ref().map(|p| p.id),
                   "previous_container": swap.old}),
            text,
        ));
    }

    let why = if !wait.healthy {
        wait.reason.clone().unwrap_or_else(|| "not healthy".into())
    } else if let Some(e) = &verify_error {
        e.clone()
    } else {
        let failed: Vec<_> = checks
            .iter()
            .filter(|c| c.ok == Some(false))
            .map(|c| format!("{} ({})", c.check, c.detail))
            .collect();
        format!("verification failed: {}", failed.join("; "))
    };
    text += &format!("  FAILED: {why}\n");
    if !checks.is_empty() {
        text += &format!("verification (Step 4):\n{}\n", render_checks(&checks));
    }
    if a.no_rollback {
        store.finish_deployment(id, "failed", Some(&verification))?;
        store.event(
            "deploy",
            Some(id),
            &json!({"phase": "failed", "reason": why, "restored": false}),
        )?;
        text += "  --no-rollback: the failed container is left in place";
        if let Some(old) = &swap.old {
            text += &format!("; the previous one is stopped as {}", old.renamed_to);
        }
        return Ok(Outcome::new(
            Code::CheckFailed,
            json!({"ok": false, "deployment_id": id, "reason": why, "checks": checks_json(&checks), "restored": false}),
            text,
        ));
    }

    let restore_started = Instant::now();
    let restored = rollout::restore(&engine, &swap).await;
    let mut restore_wait = None;
    if let Ok(true) = restored {
        // Not interruptible: this is what puts service back.
        restore_wait = Some(
            rollout::wait_healthy(
                &engine,
                &client,
                &spec.name,
                &cfg.health_url(),
                limit,
                cfg.verify.poll_interval,
            )
            .await,
        );
    }
    store.finish_deployment(id, "failed", Some(&verification))?;
    let restore_ok = matches!(&restore_wait, Some(w) if w.healthy);
    if restore_ok {
        if let Some(p) = &previous {
            store.reactivate(p.id)?;
        }
    }
    let restore_ms = restore_started.elapsed().as_millis();
    store.event(
        "rollback",
        Some(id),
        &json!({"automatic": true, "reason": why, "restored": restore_ok, "restore_ms": restore_ms, "to": swap.old.as_ref().map(|o| o.image.clone())}),
    )?;
    let code = match (&restored, restore_ok) {
        (Ok(false), _) => {
            text += "  no previous container to restore; the failed one was removed";
            Code::CheckFailed
        }
        (Ok(true), true) => {
            text += &format!("  previous container restored and healthy in {restore_ms}ms");
            Code::CheckFailed
        }
        (Ok(true), false) => {
            text += &format!(
                "  previous container restored but NOT healthy: {}",
                restore_wait.and_then(|w| w.reason).unwrap_or_default()
            );
            Code::RollbackFailed
        }
        (Err(e), _) => {
            text += &format!("  restoring the previous container FAILED: {e:#}");
            Code::RollbackFailed
        }
    };
    Ok(Outcome::new(
        code,
        json!({"ok": false, "deployment_id": id, "reason": why, "checks": checks_json(&checks), "restored": restore_ok, "restore_ms": restore_ms}),
        text,
    ))
}

fn dry_run(spec: &DeploySpec, gaps: &[String]) -> Outcome {
    let mut body = hardened(spec);
    // Env values can be secrets: the keys show what is set, the values stay out of output.
    body.env = Some(
        spec.env
            .iter()
            .map(|e| format!("{}=<redacted>", e.key))
            .collect(),
    );
    let json = json!({
        "dry_run": true,
        "name": spec.name,
        "create_body": body,
        "docker_run": spec.docker_run_line(),
        "hardening_gaps": gaps,
    });
    let text = format!(
        "dry run: nothing was changed. `deploy` would create {}:\n\n{}\n\nengine create body:\n{}{}",
        spec.name,
        spec.docker_run_line(),
        serde_json::to_string_pretty(&json["create_body"]).unwrap_or_default(),
        if gaps.is_empty() { String::new() } else { format!("\n\nWARNING, missing hardening: {}", gaps.join("; ")) }
    );
    Outcome::new(Code::Ok, json, text)
}
