//! Facts about this machine (hostname, cores, memory, OS, kernel), for templates and
//! `provision facts`. Gathered once per run, from the kernel and /proc: no process scan.

use serde::Serialize;
use sysinfo::{MemoryRefreshKind, RefreshKind, System};

#[derive(Debug, Clone, Serialize)]
pub struct Facts {
    /// The kernel's hostname, as `hostname` prints it.
    pub hostname: String,
    /// The hostname up to its first dot.
    pub short_hostname: String,
    /// Logical CPUs.
    pub cpus: usize,
    /// Physical cores, where the kernel tells.
    pub physical_cores: Option<usize>,
    pub memory_total_bytes: u64,
    pub memory_total_mib: u64,
    /// e.g. `Debian GNU/Linux`.
    pub os_name: Option<String>,
    /// e.g. `12`.
    pub os_version: Option<String>,
    /// e.g. `6.1.0-18-amd64`.
    pub kernel: Option<String>,
    /// e.g. `x86_64`.
    pub arch: String,
}

/// This host's hostname, or `localhost` if the kernel will not say.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

impl Facts {
    pub fn gather() -> Facts {
        let hostname = hostname();
        let system = System::new_with_specifics(
            RefreshKind::nothing().with_memory(MemoryRefreshKind::nothing().with_ram()),
        );
        let memory = system.map_or(0, |s| s.total_memory());
        Facts {
            short_hostname: hostname.split('.').next().unwrap_or(&hostname).to_owned(),
            hostname,
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            physical_cores: System::physical_core_count().ok(),
            memory_total_bytes: memory,
            memory_total_mib: memory / (1024 * 1024),
            os_name: System::name().ok(),
            os_version: System::os_version().ok(),
            kernel: System::kernel_version().ok(),
            arch: System::cpu_arch(),
        }
    }
}
