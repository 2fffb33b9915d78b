//! dhi-stage: parse, set up logging, run one command, map its outcome to the documented exit
//! status. Results go to stdout (text or exactly one JSON document); logs go to stderr.

mod alerting;
mod cli;
#[cfg(feature = "kubernetes")]
mod cluster;
mod commands;
mod config;
mod engine;
mod envfile;
mod exit;
mod files;
mod front;
mod image;
mod load;
mod lock;
mod monitor;
mod notify;
mod output;
mod preflight;
mod probe;
mod redact;
mod report;
mod rollout;
mod security;
mod service;
mod status;
mod store;
mod synth;
mod validate;
mod watch;

use clap::Parser;

use crate::cli::{Cli, LogFormat};
use crate::output::Format;

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => usage_error(e),
    };
    init_tracing(&cli);
    let format = cli.output;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(exit::Code::Operational.as_i32());
        }
    };
    let result = runtime.block_on(commands::run(cli));
    let code = match result {
        Ok(outcome) => {
            match format {
                // Whatever a source echoed, no credential this process knows is printed.
                Format::Json => println_safe(&redact::scrub(
                    &serde_json::to_string_pretty(&outcome.json).unwrap_or_default(),
                )),
                Format::Text => println_safe(&redact::scrub(outcome.text.trim_end())),
            }
            outcome.code
        }
        Err(err) => {
            let code = exit::code_of(&err);
            // Printed once, with its cause chain, as ripgrep does.
            let message = redact::scrub(&format!("{err:#}")).into_owned();
            eprintln!("error: {message}");
            if format == Format::Json {
                let doc =
                    serde_json::json!({"ok": false, "exit_code": code.as_i32(), "error": message});
                println_safe(&serde_json::to_string_pretty(&doc).unwrap_or_default());
            }
            code
        }
    };
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    std::process::exit(code.as_i32());
}

/// clap's own message and status (2; help and version are 0), plus, when the arguments ask
/// for JSON, the one document a script reads: an image reference clap rejected is a usage
/// error like any other.
fn usage_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    let _ = e.print();
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        std::process::exit(0);
    }
    let args: Vec<String> = std::env::args().collect();
    let json = args
        .windows(2)
        .any(|w| w[0] == "--output" && w[1] == "json")
        || args.iter().any(|a| a == "--output=json");
    if json {
        let message = e.kind().as_str().unwrap_or("usage error").to_string();
        let detail = e.to_string();
        let doc = serde_json::json!({"ok": false, "exit_code": exit::Code::Usage.as_i32(),
            "error": detail.lines().next().map(|l| l.trim_start_matches("error: ").to_string()).unwrap_or(message)});
        println_safe(&serde_json::to_string_pretty(&doc).unwrap_or_default());
    }
    std::process::exit(exit::Code::Usage.as_i32());
}

/// A closed pipe (`dhi-stage status | head -1`) is not an error.
fn println_safe(s: &str) {
    use std::io::Write;
    if s.is_empty() {
        return;
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{s}").and_then(|_| out.flush());
}

/// stderr for log lines, with every credential the process knows masked (`redact::scrub`):
/// a log line at -vv can carry what a server echoed as well as any other output.
struct ScrubbedStderr;

impl std::io::Write for ScrubbedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(redact::scrub(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn init_tracing(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let level = if cli.quiet {
        "error"
    } else {
        match cli.verbose {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{level},hyper=warn,hyper_util=warn,reqwest=warn,bollard=warn,rustls=warn"
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| ScrubbedStderr)
        .with_target(false);
    match cli.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
