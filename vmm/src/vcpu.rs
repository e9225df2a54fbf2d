//! The vCPU thread: KVM_RUN and the dispatch of PIO and MMIO exits to the buses.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use kvm_ioctls::{VcpuExit, VcpuFd};
use serde::{Deserialize, Serialize};

use crate::boot::{bench_guest::Entry, linux, long_mode};
use crate::bus::Bus;
use crate::devices::done::DoneSignal;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating vCPU {0} failed")]
    Create(u8, #[source] kvm_ioctls::Error),
    #[error("reading supported CPUID failed")]
    SupportedCpuid(#[source] kvm_ioctls::Error),
    #[error("setting vCPU state ({0}) failed")]
    SetState(&'static str, #[source] kvm_ioctls::Error),
    #[error("KVM_RUN failed")]
    Run(#[source] kvm_ioctls::Error),
    #[error("guest shut down at rip {rip:#x} (triple fault: an exception with no handler)")]
    Shutdown { rip: u64 },
    #[error("guest halted")]
    Halted,
    #[error("VM entry failed (hardware reason {0:#x})")]
    FailEntry(u64),
    #[error("KVM internal error (suberror {0})")]
    Internal(u32),
    #[error("unexpected exit: {0}")]
    Unexpected(String),
    #[error("KVM accepted {set} of the {want} boot MSRs")]
    Msrs { set: usize, want: usize },
    #[error("installing the vCPU kick signal handler failed (errno {0})")]
    KickHandler(i32),
}

/// VM exits by kind, counted by the vCPU thread and readable while it runs.
#[derive(Default)]
pub struct ExitCounters {
    pub pio_in: AtomicU64,
    pub pio_out: AtomicU64,
    pub mmio_read: AtomicU64,
    pub mmio_write: AtomicU64,
    /// Accesses no device claimed.
    pub unclaimed: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitCounts {
    pub pio_in: u64,
    pub pio_out: u64,
    pub mmio_read: u64,
    pub mmio_write: u64,
    pub unclaimed: u64,
}

impl ExitCounters {
    pub fn snapshot(&self) -> ExitCounts {
        ExitCounts {
            pio_in: self.pio_in.load(Ordering::Relaxed),
            pio_out: self.pio_out.load(Ordering::Relaxed),
            mmio_read: self.mmio_read.load(Ordering::Relaxed),
            mmio_write: self.mmio_write.load(Ordering::Relaxed),
            unclaimed: self.unclaimed.load(Ordering::Relaxed),
        }
    }
}

impl ExitCounts {
    pub fn total(&self) -> u64 {
        self.pio_in + self.pio_out + self.mmio_read + self.mmio_write
    }
}

/// What the vCPU loop shares with the rest of the VMM.
#[derive(Clone)]
pub struct VcpuShared {
    pub pio: Bus,
    pub mmio: Bus,
    pub counters: Arc<ExitCounters>,
    pub done: Arc<DoneSignal>,
    /// Set by the VMM to make the loop return at its next exit (or signal kick).
    pub stop: Arc<AtomicBool>,
    /// When the vCPU first entered the guest.
    pub entered: Arc<OnceLock<Instant>>,
}

pub struct Vcpu {
    fd: VcpuFd,
    shared: VcpuShared,
}

impl Vcpu {
    pub fn new(vm: &crate::vm::Vm, id: u8, shared: VcpuShared) -> Result<Vcpu, Error> {
        let fd = vm
            .fd()
            .create_vcpu(id as u64)
            .map_err(|e| Error::Create(id, e))?;
        let cpuid = vm
            .kvm()
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(Error::SupportedCpuid)?;
        fd.set_cpuid2(&cpuid)
            .map_err(|e| Error::SetState("cpuid", e))?;
        Ok(Vcpu { fd, shared })
    }

    /// TSC frequency the guest sees, in kHz.
    pub fn tsc_khz(&self) -> Option<u32> {
        self.fd.get_tsc_khz().ok()
    }

    /// Puts the vCPU at `entry` in 64-bit mode at CPL3.
    pub fn enter_bench_guest(&self, entry: Entry) -> Result<(), Error> {
        let sregs = self
            .fd
            .get_sregs()
            .map_err(|e| Error::SetState("get sregs", e))?;
        self.fd
            .set_sregs(&long_mode::sregs(sregs))
            .map_err(|e| Error::SetState("sregs", e))?;
        self.fd
            .set_regs(&long_mode::regs(entry.rip, entry.stack_top))
            .map_err(|e| Error::SetState("regs", e))?;
        self.fd
            .set_fpu(&long_mode::fpu())
            .map_err(|e| Error::SetState("fpu", e))?;
        log::debug!("entry regs {:x?}", self.fd.get_regs());
        Ok(())
    }

    /// Prepares vCPU `id` of `cpus` for a Linux guest: CPUID naming its APIC id, the boot MSRs,
    /// LAPIC LINT0/LINT1 and the FPU. Only the boot vCPU gets `entry` and with it registers:
    /// the others stay in the wait-for-SIPI state KVM gives them, and Linux starts them.
    pub fn setup_linux(
        &self,
        vm: &crate::vm::Vm,
        id: u8,
        cpus: u8,
        entry: Option<u64>,
    ) -> Result<(), Error> {
        let mut cpuid = vm
            .kvm()
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(Error::SupportedCpuid)?;
        linux::cpu::patch_cpuid(cpuid.as_mut_slice(), id, cpus);
        self.fd
            .set_cpuid2(&cpuid)
            .map_err(|e| Error::SetState("cpuid", e))?;
        let entries = linux::cpu::boot_msrs();
        let want = entries.len();
        let msrs =
            kvm_bindings::Msrs::from_entries(&entries).map_err(|_| Error::Msrs { set: 0, want })?;
        let set = self
            .fd
            .set_msrs(&msrs)
            .map_err(|e| Error::SetState("msrs", e))?;
        if set != want {
            return Err(Error::Msrs { set, want });
        }
        let mut lapic = self
            .fd
            .get_lapic()
            .map_err(|e| Error::SetState("get lapic", e))?;
        linux::cpu::set_lint(&mut lapic);
        self.fd
            .set_lapic(&lapic)
            .map_err(|e| Error::SetState("lapic", e))?;
        self.fd
            .set_fpu(&long_mode::fpu())
            .map_err(|e| Error::SetState("fpu", e))?;
        if let Some(rip) = entry {
            let sregs = self
                .fd
                .get_sregs()
                .map_err(|e| Error::SetState("get sregs", e))?;
            self.fd
                .set_sregs(&linux::cpu::sregs(sregs))
                .map_err(|e| Error::SetState("sregs", e))?;
            self.fd
                .set_regs(&linux::cpu::regs(rip))
                .map_err(|e| Error::SetState("regs", e))?;
        }
        Ok(())
    }

    /// Runs until the guest signals done, the VMM sets `stop`, or the guest fails.
    pub fn run(mut self) -> Result<(), Error> {
        let s = self.shared.clone();
        s.entered.get_or_init(Instant::now);
        loop {
            if s.stop.load(Ordering::Acquire) || s.done.get().is_some() {
                return Ok(());
            }
            match self.fd.run() {
                Ok(exit) => handle_exit(&s, exit).map_err(|e| match e {
                    Error::Shutdown { .. } => Error::Shutdown {
                        rip: self.fd.get_regs().map_or(0, |r| r.rip),
                    },
                    e => e,
                })?,
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
                Err(e) => return Err(Error::Run(e)),
            }
        }
    }
}

/// Makes a signal (SIGRTMIN) interrupt KVM_RUN: the VMM sends it to a vCPU thread so the loop
/// sees `stop`. The handler itself does nothing.
pub fn install_kick_handler() -> Result<(), Error> {
    static RESULT: OnceLock<Result<(), i32>> = OnceLock::new();
    extern "C" fn kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}
    RESULT
        .get_or_init(|| {
            vmm_sys_util::signal::register_signal_handler(vmm_sys_util::signal::SIGRTMIN(), kick)
                .map_err(|e| e.errno())
        })
        .map_err(Error::KickHandler)
}

fn handle_exit(s: &VcpuShared, exit: VcpuExit<'_>) -> Result<(), Error> {
    let c = &s.counters;
    let claimed = match exit {
        VcpuExit::IoOut(port, data) => {
            c.pio_out.fetch_add(1, Ordering::Relaxed);
            s.pio.write(port as u64, data)
        }
        VcpuExit::IoIn(port, data) => {
            c.pio_in.fetch_add(1, Ordering::Relaxed);
            s.pio.read(port as u64, data)
        }
        VcpuExit::MmioRead(addr, data) => {
            c.mmio_read.fetch_add(1, Ordering::Relaxed);
            s.mmio.read(addr, data)
        }
        VcpuExit::MmioWrite(addr, data) => {
            c.mmio_write.fetch_add(1, Ordering::Relaxed);
            s.mmio.write(addr, data)
        }
        VcpuExit::Intr => true,
        VcpuExit::Hlt => return Err(Error::Halted),
        VcpuExit::Shutdown => return Err(Error::Shutdown { rip: 0 }),
        VcpuExit::FailEntry(reason, _) => return Err(Error::FailEntry(reason)),
        VcpuExit::InternalError => return Err(Error::Internal(0)),
        other => return Err(Error::Unexpected(format!("{other:?}"))),
    };
    if !claimed {
        c.unclaimed.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}
