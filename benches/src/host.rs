//! The host facts every result file carries.

use serde::{Deserialize, Serialize};
use vmm::check_host::{self, HostKind};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    /// `vtx`, `amd-v`, `pvm`, `kvm-unknown` or `no-kvm`.
    pub kind: String,
    pub cpu_model: String,
    pub kernel: String,
    pub cpus: usize,
    pub iopath_version: String,
    pub git_rev: String,
}

impl HostInfo {
    pub fn probe() -> HostInfo {
        let r = check_host::check();
        HostInfo {
            kind: kind_name(r.kind).to_string(),
            cpu_model: r.cpu_model,
            kernel: r.kernel,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            iopath_version: env!("CARGO_PKG_VERSION").to_string(),
            git_rev: env!("IOPATH_GIT_REV").to_string(),
        }
    }
}

fn kind_name(k: HostKind) -> &'static str {
    match k {
        HostKind::Vtx => "vtx",
        HostKind::AmdV => "amd-v",
        HostKind::Pvm => "pvm",
        HostKind::KvmUnknown => "kvm-unknown",
        HostKind::NoKvm => "no-kvm",
    }
}
