//! Talking to the service over HTTP: the `/health` probe, and image reference checks that
//! keep bad input from ever reaching the engine.

pub mod conventions;
pub mod health;
pub mod metrics;
pub mod reading;
pub mod reference;
