//! Stands in for `/usr/local/bin/bun` so the runbook's `bun --version` check can pass and
//! fail: it prints `$BUN_VERSION` (baked into the image at build time), default 1.3.0.
fn main() {
    let version = std::env::var("BUN_VERSION").ok().filter(|v| !v.is_empty());
    match std::env::args().nth(1).as_deref() {
        Some("--version") | Some("-v") => println!("{}", version.as_deref().unwrap_or("1.3.0")),
        _ => {
            eprintln!("bun stand-in: only --version is supported");
            std::process::exit(2);
        }
    }
}
