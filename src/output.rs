//! What a command hands back to `main` for rendering: a status, one JSON document, and the
//! text a person reads. Commands never print their result themselves, so `--output json`
//! always yields exactly one document on stdout.

use serde_json::Value;

use crate::exit::Code;

#[derive(Debug)]
pub struct Outcome {
    pub code: Code,
    pub json: Value,
    pub text: String,
}

impl Outcome {
    pub fn new(code: Code, json: Value, text: impl Into<String>) -> Self {
        Outcome {
            code,
            json,
            text: text.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Progress for long operations: a spinner on a terminal, plain lines otherwise, nothing with -q.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    plain: bool,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        use std::io::IsTerminal;
        if quiet {
            return Progress {
                bar: None,
                plain: false,
            };
        }
        if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            Progress {
                bar: Some(bar),
                plain: false,
            }
        } else {
            Progress {
                bar: None,
                plain: true,
            }
        }
    }

    pub fn line(&self, msg: &str) {
        let msg = msg.trim_end();
        if msg.is_empty() {
            return;
        }
        if let Some(bar) = &self.bar {
            bar.set_message(msg.to_string());
        } else if self.plain {
            eprintln!("{msg}");
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
