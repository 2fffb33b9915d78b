//! Container resources computed as `docker stats` computes them (docker/cli
//! `cli/command/container/stats_helpers.go`): memory is usage minus the inactive file cache
//! (`total_inactive_file` on cgroup v1, `inactive_file` on v2); CPU % is the container's share
//! of system CPU time between two readings times the number of CPUs.

use bollard::models::ContainerStatsResponse;
use serde::Serialize;

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Resources {
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    /// None when there is no previous reading to diff against.
    pub cpu_pct: Option<f64>,
    pub cpu_total_ns: u64,
    pub system_cpu_ns: u64,
    /// CPUs the engine counts (CPU % is of one CPU, as `docker stats` shows it).
    pub cpus: u32,
}

impl Resources {
    /// This reading, with CPU % taken against an `earlier` one when it has none of its own
    /// (a one-shot reading: the engine did not wait a second for a previous value).
    pub fn since(mut self, earlier: &Resources) -> Resources {
        self.cpu_pct = self.cpu_pct.or_else(|| {
            cpu_percent(
                earlier.cpu_total_ns,
                earlier.system_cpu_ns,
                self.cpu_total_ns,
                self.system_cpu_ns,
                self.cpus,
            )
        });
        self
    }
}

pub fn resources(s: &ContainerStatsResponse) -> Option<Resources> {
    let mem = s.memory_stats.as_ref()?;
    let usage = mem.usage?;
    let stats = mem.stats.as_ref();
    let cache = stats
        .and_then(|m| m.get("total_inactive_file").copied().filter(|v| *v < usage))
        .or_else(|| stats.and_then(|m| m.get("inactive_file").copied().filter(|v| *v < usage)))
        .unwrap_or(0);
    let cpu = s.cpu_stats.as_ref();
    let pre = s.precpu_stats.as_ref();
    let total = cpu
        .and_then(|c| c.cpu_usage.as_ref()?.total_usage)
        .unwrap_or(0);
    let system = cpu.and_then(|c| c.system_cpu_usage).unwrap_or(0);
    let online = cpu
        .and_then(|c| {
            c.online_cpus.or_else(|| {
                c.cpu_usage
                    .as_ref()?
                    .percpu_usage
                    .as_ref()
                    .map(|p| p.len() as u32)
            })
        })
        .unwrap_or(1)
        .max(1);
    let pre_total = pre.and_then(|c| c.cpu_usage.as_ref()?.total_usage);
    let pre_system = pre.and_then(|c| c.system_cpu_usage);
    let cpu_pct = match (pre_total, pre_system) {
        (Some(pt), Some(ps)) if ps > 0 => cpu_percent(pt, ps, total, system, online),
        _ => None,
    };
    Some(Resources {
        memory_bytes: usage - cache,
        memory_limit_bytes: mem.limit.unwrap_or(0),
        cpu_pct,
        cpu_total_ns: total,
        system_cpu_ns: system,
        cpus: online,
    })
}

/// Resources read straight from the container's cgroup files on this host, the files the
/// engine itself reads for `docker stats`: a millisecond, where the engine's stats call
/// takes about a second. `pid` is the container's main process as the engine reports it;
/// None when that process is not visible here (a remote engine, another PID namespace) or
/// the cgroup layout is not one this knows (then ask the engine).
pub fn from_cgroup(pid: i64) -> Option<Resources> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let num = |p: &str| read(p)?.trim().parse::<u64>().ok();
    let stat_field = |p: &str, key: &str| {
        read(p)?.lines().find_map(|l| {
            l.strip_prefix(key)?
                .strip_prefix(' ')?
                .trim()
                .parse::<u64>()
                .ok()
        })
    };
    let cgroups = read(&format!("/proc/{pid}/cgroup"))?;
    let (mut memory, mut cpuacct, mut unified) = (None, None, None);
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.is_empty() {
            unified = Some(format!("/sys/fs/cgroup{path}"));
        }
        for c in controllers.split(',') {
            let dir = format!("/sys/fs/cgroup/{controllers}{path}");
            match c {
                "memory" => memory = Some(dir),
                "cpuacct" => cpuacct = Some(dir),
                _ => {}
            }
        }
    }
    let (usage, inactive, limit, cpu_total) = match (memory, cpuacct, unified) {
        (Some(m), Some(c), _) => (
            num(&format!("{m}/memory.usage_in_bytes"))?,
            stat_field(&format!("{m}/memory.stat"), "total_inactive_file").unwrap_or(0),
            num(&format!("{m}/memory.limit_in_bytes"))?,
            num(&format!("{c}/cpuacct.usage"))?,
        ),
        (None, None, Some(u)) => (
            num(&format!("{u}/memory.current"))?,
            stat_field(&format!("{u}/memory.stat"), "inactive_file").unwrap_or(0),
            num(&format!("{u}/memory.max")).unwrap_or(u64::MAX),
            stat_field(&format!("{u}/cpu.stat"), "usage_usec")? * 1000,
        ),
        _ => return None,
    };
    // The engine's system CPU: the first seven fields of /proc/stat's `cpu` line, in ns.
    let proc_stat = read("/proc/stat")?;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let system = proc_stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(7)
        .map(|v| v.parse::<u64>().unwrap_or(0))
        .sum::<u64>()
        * (1_000_000_000 / hz);
    let cpus = proc_stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count()
        .max(1) as u32;
    Some(Resources {
        memory_bytes: usage.saturating_sub(inactive),
        memory_limit_bytes: limit,
        cpu_pct: None,
        cpu_total_ns: cpu_total,
        system_cpu_ns: system,
        cpus,
    })
}

/// CPU % between two readings of (container total ns, system total ns).
pub fn cpu_percent(
    prev_total: u64,
    prev_system: u64,
    total: u64,
    system: u64,
    cpus: u32,
) -> Option<f64> {
    let cpu_delta = total.checked_sub(prev_total)? as f64;
    let sys_delta = system.checked_sub(prev_system)? as f64;
    (sys_delta > 0.0).then(|| cpu_delta / sys_delta * cpus as f64 * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerCpuStats, ContainerCpuUsage, ContainerMemoryStats};

    /// A whole stats document as the engine sends it on a cgroup v2 host: no
    /// `total_inactive_file`, no `percpu_usage`, v2 memory keys. Memory is usage minus
    /// `inactive_file` and CPU % uses `online_cpus`, as `docker stats` does.
    #[test]
    fn a_cgroup_v2_stats_document() {
        let doc = include_str!("../../tests/fixtures/docker/stats-cgroup2.json");
        let s: ContainerStatsResponse = serde_json::from_str(doc).unwrap();
        let r = resources(&s).unwrap();
        assert_eq!(r.memory_bytes, 78_675_968 - 12_582_912);
        assert_eq!(r.memory_limit_bytes, 512 << 20);
        // (2.4e9 - 2.3e9) / (10e12 - 9.998e12) x 2 CPUs x 100
        assert_eq!(r.cpu_pct, Some(10.0));
        assert_eq!(
            (r.cpu_total_ns, r.system_cpu_ns),
            (2_400_000_000, 10_000_000_000_000)
        );
    }

    #[test]
    fn memory_excludes_inactive_file_like_docker_stats() {
        let s = ContainerStatsResponse {
            memory_stats: Some(ContainerMemoryStats {
                usage: Some(100 << 20),
                limit: Some(128 << 20),
                stats: Some([("total_inactive_file".to_string(), 30u64 << 20)].into()),
                ..Default::default()
            }),
            cpu_stats: Some(ContainerCpuStats {
                cpu_usage: Some(ContainerCpuUsage {
                    total_usage: Some(2_000),
                    ..Default::default()
                }),
                system_cpu_usage: Some(20_000),
                online_cpus: Some(2),
                ..Default::default()
            }),
            precpu_stats: Some(ContainerCpuStats {
                cpu_usage: Some(ContainerCpuUsage {
                    total_usage: Some(1_000),
                    ..Default::default()
                }),
                system_cpu_usage: Some(10_000),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = resources(&s).unwrap();
        assert_eq!(r.memory_bytes, 70 << 20);
        assert_eq!(r.cpu_pct, Some(20.0));
    }
}
