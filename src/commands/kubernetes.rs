//! `--target kubernetes` for deploy and rollback (`rollout::kubernetes`); without the
//! `kubernetes` cargo feature, a usage error that says how to get it.

use anyhow::Result;

use crate::output::Outcome;
use crate::rollout::rollback::{Approval, Context};

#[cfg(feature = "kubernetes")]
pub async fn deploy(ctx: &Context<'_>, image: &str, progress: &dyn Fn(&str)) -> Result<Outcome> {
    let out = crate::rollout::kubernetes::deploy(ctx, image, progress).await?;
    Ok(Outcome::of(&out))
}

#[cfg(feature = "kubernetes")]
pub async fn rollback(
    ctx: &Context<'_>,
    approval: &Approval,
    reason: Option<String>,
    progress: &dyn Fn(&str),
) -> Result<Outcome> {
    let out = crate::rollout::kubernetes::rollback(ctx, approval, reason, progress).await?;
    Ok(Outcome::of(&out))
}

#[cfg(feature = "kubernetes")]
pub async fn status(cfg: &crate::config::Config) -> Result<Outcome> {
    Ok(Outcome::of(&crate::rollout::kubernetes::status(cfg).await?))
}

#[cfg(not(feature = "kubernetes"))]
pub async fn status(_: &crate::config::Config) -> Result<Outcome> {
    Err(missing())
}

#[cfg(not(feature = "kubernetes"))]
fn missing() -> anyhow::Error {
    crate::exit::failure(
        crate::exit::Code::Usage,
        crate::rollout::kubernetes::WITHOUT_FEATURE,
    )
}

#[cfg(not(feature = "kubernetes"))]
pub async fn deploy(_: &Context<'_>, _: &str, _: &dyn Fn(&str)) -> Result<Outcome> {
    Err(missing())
}

#[cfg(not(feature = "kubernetes"))]
pub async fn rollback(
    _: &Context<'_>,
    _: &Approval,
    _: Option<String>,
    _: &dyn Fn(&str),
) -> Result<Outcome> {
    Err(missing())
}
