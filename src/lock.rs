//! The state lock: mutating commands (deploy, rollback) hold an exclusive `flock` on
//! `<state-dir>/lock` so two operators, or cron and an operator, never interleave container
//! replacements. The holder writes who it is into the file so a refused caller can say.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::exit::{failure, Code};

pub struct StateLock {
    file: File,
}

impl StateLock {
    /// Takes the lock, waiting up to `wait` (zero: fail at once, naming the holder).
    pub fn acquire(dir: &Path, command: &str, wait: Duration) -> Result<StateLock> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create state dir {}", dir.display()))?;
        let path = dir.join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open lock file {}", path.display()))?;
        let deadline = Instant::now() + wait;
        loop {
            // SAFETY: flock on a descriptor we own; released when the file is closed.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(err).with_context(|| format!("cannot lock {}", path.display()));
            }
            if Instant::now() >= deadline {
                // The holder writes who it is just after it takes the lock: give it a moment.
                let mut holder = String::new();
                for _ in 0..25 {
                    holder.clear();
                    let _ = file.rewind();
                    let _ = file.read_to_string(&mut holder);
                    if !holder.trim().is_empty() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    "another process"
                } else {
                    holder
                };
                return Err(failure(
                    Code::Operational,
                    format!(
                        "state is locked by {holder} ({}); wait for it or pass --lock-wait DURATION",
                        path.display()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(
            file,
            "pid {} running `dhi-stage {command}` since {}",
            std::process::id(),
            crate::store::now()
        )?;
        file.flush()?;
        Ok(StateLock { file })
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
    }
}
