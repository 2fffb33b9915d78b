//! What a command hands back to `main` for rendering: a status, one JSON document, and the
//! text a person reads. Commands never print their result themselves, so `--output json`
//! always yields exactly one document on stdout.
//!
//! A domain operation returns a typed outcome (a serde struct) that implements [`Render`];
//! the JSON document is that struct serialized, the text is its `text()`, so both views are
//! of the same value and cannot drift apart.

use serde::Serialize;
use serde_json::Value;

use crate::exit::Code;

/// A typed outcome: its exit status, and its text for people. The JSON is `Serialize`.
pub trait Render: Serialize {
    fn code(&self) -> Code;
    fn text(&self) -> String;
}

#[derive(Debug)]
pub struct Outcome {
    pub code: Code,
    pub json: Value,
    pub text: String,
}

impl Outcome {
    /// The one printer's input for a typed outcome.
    pub fn of<T: Render>(outcome: &T) -> Outcome {
        Outcome {
            code: outcome.code(),
            // A derived Serialize of plain data cannot fail; if it ever did, the text still stands.
            json: serde_json::to_value(outcome).unwrap_or_else(
                |e| serde_json::json!({"error": format!("unserializable outcome: {e}")}),
            ),
            text: outcome.text(),
        }
    }

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
        // Progress lines name servers and echo their words: no known credential is shown.
        let msg = crate::redact::scrub(msg);
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

/// A duration as people read it in a result line: 0.42s, 12.3s.
pub fn fmt_duration(d: std::time::Duration) -> String {
    if d.as_secs_f64() < 10.0 {
        format!("{:.2}s", d.as_secs_f64())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
