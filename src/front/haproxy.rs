//! Debian's HAProxy as the front of the two slots, owned by the tool: its configuration (one
//! frontend on the service's public port, one backend with a server per slot, active health
//! checks on the health path, a runtime socket and a server-state file under the state dir),
//! started in master-worker mode, and switched through the runtime API — a line protocol on a
//! Unix socket, one command per connection, spoken here directly.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Admin, SlotState};

/// The backend and its servers, as the configuration names them.
pub const BACKEND: &str = "slots";

pub fn server(slot: usize) -> String {
    format!("slot{}", slot + 1)
}

/// Where the front's files live: `<state dir>/front/`.
#[derive(Debug, Clone)]
pub struct Files {
    pub dir: PathBuf,
}

impl Files {
    pub fn new(state_dir: &Path) -> Files {
        Files {
            dir: state_dir.join("front"),
        }
    }
    pub fn config(&self) -> PathBuf {
        self.dir.join("haproxy.cfg")
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.join("haproxy.sock")
    }
    pub fn pid(&self) -> PathBuf {
        self.dir.join("haproxy.pid")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("server-state")
    }
}

/// What the front listens on and routes to.
#[derive(Debug, Clone)]
pub struct Layout {
    pub bind_ip: String,
    pub port: u16,
    pub slots: [u16; 2],
    pub health_path: String,
}

/// The configuration HAProxy runs with. Both servers start in maintenance; the server-state
/// file (written after every switch) brings back the active slot across a reload or restart.
/// `X-Dhi-Slot` on every response names the slot that answered.
pub fn config(f: &Files, l: &Layout) -> String {
    format!(
        "# Written by `dhi-stage front up`; it is rewritten there, do not edit.
global
    master-worker
    pidfile {pid}
    stats socket {sock} mode 600 level admin
    server-state-file {state}

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout http-request 10s
    # A request whose server refused the connection is sent again, to the other slot if it is up.
    retries 3
    option redispatch 1
    load-server-state-from-file global

frontend dhi_stage
    bind {ip}:{port}
    default_backend {BACKEND}
    http-response set-header X-Dhi-Slot %[srv_name]

backend {BACKEND}
    option httpchk GET {health}
    http-check expect status 200
    default-server inter 500ms fastinter 250ms downinter 500ms rise 1 fall 2
    server {s1} 127.0.0.1:{p1} check disabled
    server {s2} 127.0.0.1:{p2} check disabled
",
        pid = f.pid().display(),
        sock = f.socket().display(),
        state = f.state().display(),
        ip = l.bind_ip,
        port = l.port,
        health = l.health_path,
        s1 = server(0),
        s2 = server(1),
        p1 = l.slots[0],
        p2 = l.slots[1],
    )
}

/// A runtime API command: connect, send one line, read the answer to EOF (bounded: 1 MiB,
/// 5 s). An error line from HAProxy is an error here.
pub async fn command(socket: &Path, line: &str) -> Result<String> {
    let talk = async {
        let mut s = tokio::net::UnixStream::connect(socket).await.with_context(|| {
            format!(
                "the front (HAProxy) is not running: nothing answers on {} (run `dhi-stage front up`)",
                socket.display()
            )
        })?;
        s.write_all(format!("{line}\n").as_bytes()).await?;
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            if out.len() > 1 << 20 {
                bail!("HAProxy's answer to `{line}` is over 1 MiB");
            }
        }
        anyhow::Ok(String::from_utf8_lossy(&out).into_owned())
    };
    let out = tokio::time::timeout(Duration::from_secs(5), talk)
        .await
        .map_err(|_| anyhow!("HAProxy did not answer `{line}` within 5 s"))??;
    let first = out.lines().next().unwrap_or("").trim();
    // The runtime API says what went wrong in words, never with a status code.
    let refused = [
        "Unknown command",
        "No such",
        "Require ",
        "Permission denied",
        "Invalid",
    ];
    if refused.iter().any(|r| first.starts_with(r)) {
        bail!("HAProxy refused `{line}`: {first}");
    }
    Ok(out)
}

/// A runtime API table: each row as (column, value) pairs, columns from its `# ` header.
fn rows(text: &str) -> Vec<Vec<(&str, &str)>> {
    let mut cols: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for l in text.lines() {
        match l.strip_prefix("# ") {
            Some(h) => cols = h.split_whitespace().collect(),
            None => out.push(cols.iter().copied().zip(l.split_whitespace()).collect()),
        }
    }
    out
}

fn column<'a>(row: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
    row.iter().find(|(c, _)| *c == name).map(|(_, v)| *v)
}

/// `show servers state`, by column name: (server, op state, admin bits).
pub fn parse_state(text: &str) -> Vec<(String, u32, u32)> {
    rows(text)
        .iter()
        .filter_map(|r| {
            let (name, op, admin) = (
                column(r, "srv_name")?,
                column(r, "srv_op_state")?,
                column(r, "srv_admin_state")?,
            );
            Some((name.to_string(), op.parse().ok()?, admin.parse().ok()?))
        })
        .collect()
}

/// `show servers conn`, by column name: (server, connections in use).
pub fn parse_conns(text: &str) -> Vec<(String, u64)> {
    rows(text)
        .iter()
        .filter_map(|r| {
            let id = column(r, "bkname/svname")?;
            let name = id.rsplit('/').next().unwrap_or(id).to_string();
            Some((name, column(r, "used_cur")?.parse().ok()?))
        })
        .collect()
}

/// The admin state's bits (HAProxy's `srv_admin_state`): maintenance (forced, inherited,
/// resolution, hostname) and drain (forced, inherited). 0x04, "in maintenance from the
/// configuration" (`disabled`), stays set after `set server … state ready` although the
/// server then serves (seen on 2.6.12): it is not maintenance here.
const MAINT: u32 = 0x01 | 0x02 | 0x20 | 0x40;
const DRAIN: u32 = 0x08 | 0x10;

pub fn admin_of(bits: u32) -> Admin {
    if bits & MAINT != 0 {
        Admin::Maint
    } else if bits & DRAIN != 0 {
        Admin::Drain
    } else {
        Admin::Ready
    }
}

/// The slots as HAProxy has them now.
pub async fn state(f: &Files) -> Result<[SlotState; 2]> {
    let states =
        parse_state(&command(&f.socket(), &format!("show servers state {BACKEND}")).await?);
    let conns = parse_conns(&command(&f.socket(), &format!("show servers conn {BACKEND}")).await?);
    let one = |slot: usize| -> Result<SlotState> {
        let name = server(slot);
        let (_, op, admin) = states.iter().find(|s| s.0 == name).ok_or_else(|| {
            anyhow!("HAProxy has no server {BACKEND}/{name}: is its configuration ours?")
        })?;
        Ok(SlotState {
            slot,
            admin: admin_of(*admin),
            up: *op == 2,
            connections: conns.iter().find(|c| c.0 == name).map(|c| c.1).unwrap_or(0),
        })
    };
    Ok([one(0)?, one(1)?])
}

pub async fn set(f: &Files, slot: usize, admin: Admin) -> Result<()> {
    command(
        &f.socket(),
        &format!(
            "set server {BACKEND}/{} state {}",
            server(slot),
            admin.as_str()
        ),
    )
    .await
    .map(|_| ())
}

/// Writes `show servers state` to the server-state file, so a reload or a restart of
/// HAProxy keeps which slot serves.
pub async fn save(f: &Files) -> Result<()> {
    let text = command(&f.socket(), "show servers state").await?;
    crate::files::write_atomic(&f.state(), &text)
}

/// The master's pid, if it runs.
pub fn running(f: &Files) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(f.pid()).ok()?.trim().parse().ok()?;
    // Signal 0 asks whether the process exists.
    (unsafe { libc::kill(pid, 0) } == 0).then_some(pid)
}

/// Checks the configuration and starts HAProxy (master-worker, daemon) unless it runs.
/// Returns whether it was started now.
pub async fn up(f: &Files, l: &Layout) -> Result<bool> {
    std::fs::create_dir_all(&f.dir)
        .with_context(|| format!("cannot create {}", f.dir.display()))?;
    crate::files::write_atomic(&f.config(), &config(f, l))?;
    if running(f).is_some() {
        return Ok(false);
    }
    let haproxy = |args: &[&str]| {
        std::process::Command::new("haproxy")
            .args(args)
            .output()
            .map_err(|e| anyhow!("haproxy cannot be run ({e}): install Debian's haproxy (bash scripts/setup.sh does)"))
    };
    let cfg = f.config().display().to_string();
    let check = haproxy(&["-c", "-q", "-f", &cfg])?;
    if !check.status.success() {
        bail!(
            "HAProxy refuses the configuration {cfg}: {}",
            String::from_utf8_lossy(&check.stderr).trim()
        );
    }
    let started = haproxy(&["-W", "-D", "-f", &cfg])?;
    if !started.status.success() {
        bail!(
            "HAProxy did not start (is port {} taken?): {}",
            l.port,
            String::from_utf8_lossy(&started.stderr).trim()
        );
    }
    // The socket appears once the worker is up.
    for _ in 0..50 {
        if command(&f.socket(), "show info").await.is_ok() {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "HAProxy started but its runtime socket {} does not answer",
        f.socket().display()
    )
}

/// Stops HAProxy (the master and its workers), waiting up to 10 s.
pub async fn down(f: &Files) -> Result<bool> {
    let Some(pid) = running(f) else {
        return Ok(false);
    };
    unsafe { libc::kill(pid, libc::SIGTERM) };
    for _ in 0..100 {
        if running(f).is_none() {
            let _ = std::fs::remove_file(f.pid());
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("HAProxy (pid {pid}) did not stop within 10 s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_apis_tables_are_read_by_column_name() {
        // As HAProxy 2.6 prints them (recorded from Debian's 2.6.12).
        let state = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n3 slots 1 slot1 127.0.0.1 2 0 1 1 12 6 3 4 6 0 0 0 - 3101 - 0 0 - - 0\n3 slots 2 slot2 127.0.0.1 0 5 1 1 12 1 0 0 14 0 0 0 - 3102 - 0 0 - - 0\n";
        let s = parse_state(state);
        assert_eq!(s, vec![("slot1".into(), 2, 0), ("slot2".into(), 0, 5)]);
        assert_eq!(admin_of(0), Admin::Ready);
        assert_eq!(admin_of(1), Admin::Maint);
        assert_eq!(admin_of(8), Admin::Drain);
        // `disabled` in the config leaves 0x04 set after `state ready`: it serves.
        assert_eq!(admin_of(4), Admin::Ready);
        assert_eq!(admin_of(5), Admin::Maint);
        assert_eq!(admin_of(12), Admin::Drain);
        let conns = "# bkname/svname bkid/svid addr port - purge_delay used_cur used_max need_est unsafe_nb safe_nb idle_lim idle_cur idle_per_thr[2]\nslots/slot1 3/1 127.0.0.1 3101 - 5000 4 9 4 0 0 -1 0 0 0\nslots/slot2 3/2 127.0.0.1 3102 - 5000 0 0 0 0 0 -1 0 0 0\n";
        assert_eq!(
            parse_conns(conns),
            vec![("slot1".into(), 4), ("slot2".into(), 0)]
        );
    }
}
