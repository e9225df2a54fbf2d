//! What the host must offer the QEMU peer: the QEMU binary, /dev/kvm, and the TSC rate QEMU's
//! vCPU will run at (the guest needs it to bound its waits; we need it to turn ticks into time).

use std::path::{Path, PathBuf};

use vmm::memory::RamConfig;
use vmm::vm::Vm;

/// The QEMU system emulator the peer runs, looked up on PATH.
pub const QEMU: &str = "qemu-system-x86_64";
pub const KVM: &str = "/dev/kvm";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating a throwaway KVM VM")]
    Vm(#[source] vmm::vm::Error),
    #[error("creating a vCPU in the throwaway VM")]
    Vcpu(#[source] std::io::Error),
    #[error("KVM_GET_TSC_KHZ")]
    GetTscKhz(#[source] std::io::Error),
    #[error("KVM reports a TSC frequency of 0 kHz")]
    Zero,
}

/// The QEMU binary on PATH, if there is one.
pub fn find_qemu() -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join(QEMU))
        .find(|p| p.is_file())
}

pub fn kvm_present() -> bool {
    Path::new(KVM).exists()
}

/// The TSC frequency KVM gives a new vCPU. QEMU does not change it unless told to
/// (`tsc-frequency`), so QEMU's vCPU ticks at this rate too.
pub fn tsc_khz() -> Result<u64, Error> {
    let vm = Vm::new(RamConfig {
        size: 1 << 20,
        hugepages: false,
    })
    .map_err(Error::Vm)?;
    let vcpu = vm
        .fd()
        .create_vcpu(0)
        .map_err(|e| Error::Vcpu(std::io::Error::from_raw_os_error(e.errno())))?;
    let khz = vcpu
        .get_tsc_khz()
        .map_err(|e| Error::GetTscKhz(std::io::Error::from_raw_os_error(e.errno())))?;
    match u64::from(khz) {
        0 => Err(Error::Zero),
        khz => Ok(khz),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_reports_a_plausible_tsc_rate() {
        if !kvm_present() {
            eprintln!("skipped: {KVM} is absent");
            return;
        }
        let khz = tsc_khz().unwrap();
        // 100 MHz .. 10 GHz.
        assert!((100_000..10_000_000).contains(&khz), "{khz} kHz");
    }
}
