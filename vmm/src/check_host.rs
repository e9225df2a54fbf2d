//! `iopath-vmm --check-host`: what this host can run, and why not.

use std::fs;
use std::path::Path;

use kvm_ioctls::{Cap, Kvm};
use serde::Serialize;

/// The kind of virtualization the host offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostKind {
    /// Intel VT-x.
    Vtx,
    /// AMD-V (SVM).
    AmdV,
    /// KVM's PVM module: software virtualization, guest CPL3 native, CPL0 emulated.
    Pvm,
    /// /dev/kvm exists but no known hardware flag or PVM module.
    KvmUnknown,
    /// No usable /dev/kvm.
    NoKvm,
}

impl HostKind {
    pub fn describe(self) -> &'static str {
        match self {
            HostKind::Vtx => "VT-x: bench guest and Linux guests run natively",
            HostKind::AmdV => "AMD-V: bench guest and Linux guests run natively",
            HostKind::Pvm => {
                "PVM: bench guest (CPL3) runs natively; Linux guests only start (CPL0 is emulated)"
            }
            HostKind::KvmUnknown => "KVM of unknown kind",
            HostKind::NoKvm => "no /dev/kvm: only the native path runs",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct KvmInfo {
    pub api_version: i32,
    pub irqfd: bool,
    pub ioeventfd: bool,
    pub signal_msi: bool,
    pub irq_routing: bool,
    pub immediate_exit: bool,
    pub user_memory: bool,
    pub max_vcpus: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct HugePages {
    pub size_kib: u64,
    pub total: u64,
    pub free: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct HostReport {
    pub kind: HostKind,
    pub cpu_model: String,
    pub kernel: String,
    pub kvm: Option<KvmInfo>,
    /// Why KVM is unusable, when it is.
    pub kvm_error: Option<String>,
    pub iommu_groups: usize,
    pub vfio: bool,
    pub io_uring: bool,
    pub hugepages: HugePages,
    pub vhost_net: bool,
}

/// Facts the report is derived from, read from /proc and /sys (kept apart so the
/// classification is testable).
pub struct HostFacts {
    pub cpu_flags: Vec<String>,
    pub pvm_module: bool,
    pub kvm_present: bool,
}

pub fn classify(f: &HostFacts) -> HostKind {
    let has = |flag: &str| f.cpu_flags.iter().any(|x| x == flag);
    if !f.kvm_present {
        HostKind::NoKvm
    } else if f.pvm_module && !has("vmx") && !has("svm") {
        HostKind::Pvm
    } else if has("vmx") {
        HostKind::Vtx
    } else if has("svm") {
        HostKind::AmdV
    } else if f.pvm_module {
        HostKind::Pvm
    } else {
        HostKind::KvmUnknown
    }
}

pub fn check() -> HostReport {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let (kvm, kvm_error) = match Kvm::new() {
        Ok(k) => (Some(kvm_info(&k)), None),
        Err(e) => (None, Some(format!("/dev/kvm: {e}"))),
    };
    let facts = HostFacts {
        cpu_flags: field("flags")
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        pvm_module: Path::new("/sys/module/kvm_pvm").exists(),
        kvm_present: kvm.is_some(),
    };
    HostReport {
        kind: classify(&facts),
        cpu_model: field("model name"),
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        kvm,
        kvm_error,
        iommu_groups: fs::read_dir("/sys/kernel/iommu_groups").map_or(0, |d| d.count()),
        vfio: Path::new("/dev/vfio/vfio").exists(),
        io_uring: io_uring_works(),
        hugepages: hugepages(&fs::read_to_string("/proc/meminfo").unwrap_or_default()),
        vhost_net: Path::new("/dev/vhost-net").exists(),
    }
}

fn kvm_info(k: &Kvm) -> KvmInfo {
    KvmInfo {
        api_version: k.get_api_version(),
        irqfd: k.check_extension(Cap::Irqfd),
        ioeventfd: k.check_extension(Cap::Ioeventfd),
        signal_msi: k.check_extension(Cap::SignalMsi),
        irq_routing: k.check_extension(Cap::IrqRouting),
        immediate_exit: k.check_extension(Cap::ImmediateExit),
        user_memory: k.check_extension(Cap::UserMemory),
        max_vcpus: k.get_max_vcpus(),
    }
}

/// io_uring can be compiled in yet disabled (kernel.io_uring_disabled) or blocked by seccomp:
/// only creating a ring tells.
fn io_uring_works() -> bool {
    // struct io_uring_params is 120 bytes; zeroed means "defaults".
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup reads and writes `params`, which is large enough; the returned fd
    // (if any) is closed right away.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd < 0 {
        return false;
    }
    // SAFETY: `fd` is the ring descriptor just created and owned by no one else.
    unsafe { libc::close(fd as i32) };
    true
}

fn hugepages(meminfo: &str) -> HugePages {
    let get = |key: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    HugePages {
        size_kib: get("Hugepagesize:"),
        total: get("HugePages_Total:"),
        free: get("HugePages_Free:"),
    }
}

impl HostReport {
    /// The human table.
    pub fn table(&self) -> String {
        let yes = |b: bool| if b { "yes" } else { "no" };
        let mut rows: Vec<(String, String)> = vec![
            (
                "host kind".into(),
                format!("{:?} ({})", self.kind, self.kind.describe()),
            ),
            ("cpu".into(), self.cpu_model.clone()),
            ("kernel".into(), self.kernel.clone()),
        ];
        match (&self.kvm, &self.kvm_error) {
            (Some(k), _) => {
                rows.push(("kvm api".into(), k.api_version.to_string()));
                rows.push((
                    "kvm caps".into(),
                    format!(
                        "irqfd {} ioeventfd {} signal-msi {} irq-routing {} immediate-exit {} max-vcpus {}",
                        yes(k.irqfd),
                        yes(k.ioeventfd),
                        yes(k.signal_msi),
                        yes(k.irq_routing),
                        yes(k.immediate_exit),
                        k.max_vcpus
                    ),
                ));
            }
            (None, e) => rows.push(("kvm".into(), e.clone().unwrap_or_else(|| "absent".into()))),
        }
        rows.push(("iommu groups".into(), self.iommu_groups.to_string()));
        rows.push((
            "vfio".into(),
            if self.vfio {
                "yes (/dev/vfio/vfio)".into()
            } else {
                "no: kernel VFIO passthrough unavailable, vfio-user only".into()
            },
        ));
        rows.push(("io_uring".into(), yes(self.io_uring).into()));
        rows.push((
            "hugepages".into(),
            format!(
                "{} of {} free ({} KiB pages)",
                self.hugepages.free, self.hugepages.total, self.hugepages.size_kib
            ),
        ));
        rows.push(("vhost-net".into(), yes(self.vhost_net).into()));
        let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        rows.iter()
            .map(|(k, v)| format!("{k:<w$}  {v}\n"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(flags: &[&str], pvm: bool, kvm: bool) -> HostFacts {
        HostFacts {
            cpu_flags: flags.iter().map(|s| s.to_string()).collect(),
            pvm_module: pvm,
            kvm_present: kvm,
        }
    }

    #[test]
    fn classifies_host_kinds() {
        assert_eq!(
            classify(&facts(&["sse2", "vmx"], false, true)),
            HostKind::Vtx
        );
        assert_eq!(classify(&facts(&["svm"], false, true)), HostKind::AmdV);
        assert_eq!(classify(&facts(&["sse2"], true, true)), HostKind::Pvm);
        assert_eq!(classify(&facts(&["vmx"], true, true)), HostKind::Vtx);
        assert_eq!(
            classify(&facts(&["sse2"], false, true)),
            HostKind::KvmUnknown
        );
        assert_eq!(classify(&facts(&["vmx"], false, false)), HostKind::NoKvm);
    }

    #[test]
    fn parses_hugepage_counts() {
        let m = "MemTotal: 1 kB\nHugePages_Total:      16\nHugePages_Free:       12\nHugepagesize:       2048 kB\n";
        let h = hugepages(m);
        assert_eq!((h.size_kib, h.total, h.free), (2048, 16, 12));
    }
}
