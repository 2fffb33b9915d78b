//! `completions` and `man`: generated from the clap tree, printed as they are.

use anyhow::Result;
use clap::CommandFactory;
use serde::Serialize;

use crate::cli::Cli;
use crate::exit::Code;
use crate::output::{Outcome, Render};

/// A generated document: `{"completions": ...}` or `{"man": ...}` in JSON, the text as is.
#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
enum Generated {
    Completions(String),
    Man(String),
}

impl Render for Generated {
    fn code(&self) -> Code {
        Code::Ok
    }

    fn text(&self) -> String {
        match self {
            Generated::Completions(t) | Generated::Man(t) => t.clone(),
        }
    }
}

pub fn completions(shell: clap_complete::Shell) -> Outcome {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "dhi-stage", &mut buf);
    Outcome::of(&Generated::Completions(
        String::from_utf8_lossy(&buf).into(),
    ))
}

pub fn man() -> Result<Outcome> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut buf)?;
    Ok(Outcome::of(&Generated::Man(
        String::from_utf8_lossy(&buf).into(),
    )))
}
