//! Confinement of a container in cgroups, v1 (one hierarchy per controller: memory, cpu,
//! pids) and v2 (one unified hierarchy): creation with the container's limits, joining,
//! reading whether the kernel's OOM killer struck, and removal.

use std::path::{Path, PathBuf};

use crate::runtime::LinuxResources;

/// Where cgroup hierarchies are mounted.
pub const ROOT: &str = "/sys/fs/cgroup";
/// The v1 hierarchies a container has a cgroup in: the three that confine it, and cpuacct,
/// which counts its cpu time.
pub const V1_CONTROLLERS: [&str; 4] = ["memory", "cpu", "pids", "cpuacct"];

/// A cgroup operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct CgroupError {
    /// The file or directory.
    pub path: String,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Which cgroup layout the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Version {
    /// One hierarchy per controller.
    V1,
    /// The unified hierarchy.
    V2,
}

/// The host's layout, if this process can use it (root, controllers mounted).
pub fn detect() -> Option<Version> {
    let root = Path::new(ROOT);
    let writable = |p: &Path| nix::unistd::access(p, nix::unistd::AccessFlags::W_OK).is_ok();
    if root.join("cgroup.controllers").exists() {
        return writable(root).then_some(Version::V2);
    }
    V1_CONTROLLERS[..3]
        .iter()
        .all(|c| writable(&root.join(c)))
        .then_some(Version::V1)
}

/// One container's cgroup (a directory in each hierarchy it uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    version: Version,
    dirs: Vec<PathBuf>,
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    let path = dir.join(file);
    std::fs::write(&path, value).map_err(|source| CgroupError {
        path: path.display().to_string(),
        source,
    })
}

/// cgroup v2's cpu.weight for v1 shares (the conversion runc and the kubelet use).
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    1 + (shares.saturating_sub(2) * 9999) / 262_142
}

impl Cgroup {
    /// The cgroup at `relative` (`flotilla/pod<uid>/<container>`) in each hierarchy.
    pub fn at(version: Version, relative: &str) -> Self {
        let root = Path::new(ROOT);
        let dirs = match version {
            Version::V1 => V1_CONTROLLERS
                .iter()
                .map(|c| root.join(c).join(relative))
                .collect(),
            Version::V2 => vec![root.join(relative)],
        };
        Cgroup { version, dirs }
    }

    /// Its directories (one per hierarchy).
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Creates it with `r`'s limits.
    pub fn create(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        for d in &self.dirs {
            if self.version == Version::V2 {
                enable_v2_controllers(d)?;
            }
            std::fs::create_dir_all(d).map_err(|source| CgroupError {
                path: d.display().to_string(),
                source,
            })?;
        }
        let period = if r.cpu_period > 0 {
            r.cpu_period
        } else {
            crate::resources::CPU_PERIOD
        };
        let quota = if r.cpu_quota > 0 {
            r.cpu_quota.to_string()
        } else {
            "-1".into()
        };
        let pids = if r.pids_limit > 0 {
            r.pids_limit.to_string()
        } else {
            "max".into()
        };
        match self.version {
            Version::V1 => {
                let (memory, cpu, pids_dir) = (&self.dirs[0], &self.dirs[1], &self.dirs[2]);
                if r.memory_limit > 0 {
                    write(memory, "memory.limit_in_bytes", &r.memory_limit.to_string())?;
                    // No swap beyond the limit, so the limit is where the OOM killer acts.
                    let _ = write(
                        memory,
                        "memory.memsw.limit_in_bytes",
                        &r.memory_limit.to_string(),
                    );
                }
                write(cpu, "cpu.shares", &r.cpu_shares.max(2).to_string())?;
                write(cpu, "cpu.cfs_period_us", &period.to_string())?;
                write(cpu, "cpu.cfs_quota_us", &quota)?;
                write(pids_dir, "pids.max", &pids)?;
            }
            Version::V2 => {
                let d = &self.dirs[0];
                if r.memory_limit > 0 {
                    write(d, "memory.max", &r.memory_limit.to_string())?;
                    let _ = write(d, "memory.swap.max", "0");
                }
                write(d, "cpu.weight", &shares_to_weight(r.cpu_shares).to_string())?;
                let max = if r.cpu_quota > 0 {
                    format!("{} {period}", r.cpu_quota)
                } else {
                    format!("max {period}")
                };
                write(d, "cpu.max", &max)?;
                write(d, "pids.max", &pids)?;
            }
        }
        Ok(())
    }

    /// Moves the calling process into it (its children follow).
    pub fn join_self(&self) -> Result<(), CgroupError> {
        let pid = std::process::id().to_string();
        for d in &self.dirs {
            write(d, "cgroup.procs", &pid)?;
        }
        Ok(())
    }

    /// (cpu time in ns, memory working set in bytes) used by its processes.
    pub fn usage(&self) -> (u64, u64) {
        let read =
            |dir: &Path, file: &str| std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        let field = |text: &str, key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        match self.version {
            Version::V1 => {
                let cpu = self
                    .dirs
                    .get(3)
                    .map(|d| read(d, "cpuacct.usage").trim().parse().unwrap_or(0))
                    .unwrap_or(0);
                let usage: u64 = read(&self.dirs[0], "memory.usage_in_bytes")
                    .trim()
                    .parse()
                    .unwrap_or(0);
                let inactive = field(&read(&self.dirs[0], "memory.stat"), "total_inactive_file");
                (cpu, usage.saturating_sub(inactive))
            }
            Version::V2 => {
                let d = &self.dirs[0];
                let cpu = field(&read(d, "cpu.stat"), "usage_usec") * 1000;
                let usage: u64 = read(d, "memory.current").trim().parse().unwrap_or(0);
                let inactive = field(&read(d, "memory.stat"), "inactive_file");
                (cpu, usage.saturating_sub(inactive))
            }
        }
    }

    /// Has the OOM killer killed a process in it?
    pub fn oom_killed(&self) -> bool {
        let (dir, file) = match self.version {
            Version::V1 => (&self.dirs[0], "memory.oom_control"),
            Version::V2 => (&self.dirs[0], "memory.events"),
        };
        std::fs::read_to_string(dir.join(file))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("oom_kill "))
                    .and_then(|n| n.trim().parse::<u64>().ok())
            })
            .is_some_and(|n| n > 0)
    }

    /// Removes it and any cgroup left inside it (once they hold no process); gone already
    /// is fine. Processes just killed leave their cgroup a moment later than their
    /// parent sees them exit, so a busy cgroup is retried for up to [`REMOVE_PATIENCE`]
    /// (this blocks the calling thread meanwhile).
    pub fn remove(&self) -> Result<(), CgroupError> {
        let mut first_error = None;
        for d in &self.dirs {
            if let Err(source) = remove_tree(d) {
                first_error.get_or_insert(CgroupError {
                    path: d.display().to_string(),
                    source,
                });
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// How long a busy cgroup is retried before removal gives up.
pub const REMOVE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// Removes a cgroup directory, its child cgroups first (cgroupfs directories hold only
/// control files, which go with their directory).
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path())?;
            }
        }
    }
    let deadline = std::time::Instant::now() + REMOVE_PATIENCE;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e)
                if e.raw_os_error() == Some(nix::errno::Errno::EBUSY as i32)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    }
}

/// In v2, a cgroup's controllers must be enabled in every ancestor's subtree_control.
fn enable_v2_controllers(dir: &Path) -> Result<(), CgroupError> {
    let root = Path::new(ROOT);
    let mut ancestors: Vec<&Path> = dir
        .ancestors()
        .skip(1)
        .take_while(|a| a.starts_with(root))
        .collect();
    ancestors.reverse();
    for a in ancestors {
        std::fs::create_dir_all(a).map_err(|source| CgroupError {
            path: a.display().to_string(),
            source,
        })?;
        write(a, "cgroup.subtree_control", "+cpu +memory +pids")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removal_takes_child_cgroups_first_and_gone_is_fine() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pod = dir.path().join("pod1");
        std::fs::create_dir_all(pod.join("c1")).expect("container cgroup");
        std::fs::create_dir_all(pod.join("c2")).expect("container cgroup");
        remove_tree(&pod).expect("removed");
        assert!(!pod.exists());
        remove_tree(&pod).expect("gone already is fine");
    }

    #[test]
    fn shares_become_weights_as_runc_converts_them() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }

    #[test]
    fn a_container_has_a_directory_in_each_hierarchy() {
        let v1 = Cgroup::at(Version::V1, "flotilla/pod1/c1");
        assert_eq!(
            v1.dirs(),
            &[
                PathBuf::from("/sys/fs/cgroup/memory/flotilla/pod1/c1"),
                PathBuf::from("/sys/fs/cgroup/cpu/flotilla/pod1/c1"),
                PathBuf::from("/sys/fs/cgroup/pids/flotilla/pod1/c1"),
                PathBuf::from("/sys/fs/cgroup/cpuacct/flotilla/pod1/c1"),
            ]
        );
        assert_eq!(Cgroup::at(Version::V2, "flotilla/x").dirs().len(), 1);
    }
}
