//! A Linux guest: a fresh VM with what Linux expects of a PC without firmware (COM1, an i8042
//! for reboot, KVM's PIT, PIC, IOAPIC and LAPICs, an MP table), the disks on PCI, the kernel
//! loaded by the 64-bit boot protocol and one thread per vCPU. Runs until the guest reboots or
//! the time-out.
//!
//! On PVM hosts (software virtualization) guest code at CPL0 is emulated, so a stock kernel only
//! gets through its early boot there; VT-x and AMD-V hosts run it to userspace.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_pit_config, KVM_PIT_SPEAKER_DUMMY};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{Killable, SIGRTMIN};

use crate::bench_vm;
use crate::boot::linux::{self as boot, mptable, LinuxBoot};
use crate::bus::{self, Bus};
use crate::devices::done::DoneSignal;
use crate::devices::i8042::{I8042, I8042_BASE, I8042_LEN};
use crate::devices::serial::{ConsoleSink, ConsoleTail, IrqTrigger, Serial};
use crate::disk::DiskConfig;
use crate::memory::RamConfig;
use crate::vcpu::{self, ExitCounters, Vcpu, VcpuShared};
use crate::vm::{self, Vm};

/// Used when no command line is given: the console on COM1, and reboot through the i8042,
/// which ends the run.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k";

const COM1_PORT: u64 = 0x3f8;
const COM1_GSI: u32 = 4;
/// What the i8042 reports on the done signal.
const RESET_STATUS: u32 = 0xfe;
/// How many lines of the guest console an error quotes.
const LOG_LINES: usize = 10;
/// How often the waiting thread looks at the vCPU threads.
const POLL: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open kernel {0}")]
    OpenKernel(PathBuf, #[source] std::io::Error),
    #[error("cannot open initramfs {0}")]
    OpenInitramfs(PathBuf, #[source] std::io::Error),
    #[error("--cpus {cpus}: this host's KVM and the MP table allow 1 to {max}")]
    Cpus { cpus: u8, max: usize },
    #[error("creating the VM failed")]
    Vm(#[source] vm::Error),
    #[error("creating the in-kernel PIT failed")]
    Pit(#[source] kvm_ioctls::Error),
    #[error("creating an eventfd failed")]
    EventFd(#[source] std::io::Error),
    #[error("placing a device failed")]
    Bus(#[source] bus::Error),
    #[error("attaching disks")]
    Disks(#[source] bench_vm::Error),
    #[error("booting {0}")]
    Boot(PathBuf, #[source] boot::Error),
    #[error("vCPU {0}")]
    Vcpu(u8, #[source] vcpu::Error),
    #[error(
        "vCPU {0} stopped on a KVM internal error (on PVM hosts: an instruction the CPL0 \
         emulator cannot run, such as cmpxchg16b)"
    )]
    Internal(u8, String),
    #[error("vCPU kick signal")]
    Kick(#[source] vcpu::Error),
    #[error("spawning a vCPU thread failed")]
    Spawn(#[source] std::io::Error),
    #[error("vCPU thread {0} panicked")]
    VcpuPanic(u8),
    #[error("Linux guest still running after {0:?}; stopped it")]
    Timeout(Duration, String),
}

impl Error {
    /// The last lines the guest printed, for errors that come from the guest.
    pub fn console_tail(&self) -> Option<&str> {
        match self {
            Error::Timeout(_, log) | Error::Internal(_, log) => Some(log),
            _ => None,
        }
    }
}

/// What to run.
pub struct LinuxVmConfig {
    pub ram: RamConfig,
    /// A bzImage or an ELF vmlinux.
    pub kernel: PathBuf,
    pub initramfs: Option<PathBuf>,
    pub cmdline: String,
    pub cpus: u8,
    /// Where the guest console goes besides the kept tail (stdout, a file, or nowhere).
    pub console: Option<Box<dyn Write + Send>>,
    /// Disks, in PCI slot order after the host bridge.
    pub disks: Vec<DiskConfig>,
    /// `None`: run until the guest reboots.
    pub timeout: Option<Duration>,
}

/// How the guest ended the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The guest reset the machine through the i8042 (Linux's `reboot`).
    Reset,
    /// A triple fault (KVM_EXIT_SHUTDOWN): Linux's last-resort reboot method, or a crash.
    TripleFault { vcpu: u8, rip: u64 },
}

#[derive(Debug)]
pub struct LinuxRun {
    pub exit: Exit,
    /// From the start of `run` to the guest's exit.
    pub elapsed: Duration,
    pub console: String,
}

pub fn run(cfg: LinuxVmConfig) -> Result<LinuxRun, Error> {
    let t0 = Instant::now();
    let mut kernel =
        File::open(&cfg.kernel).map_err(|e| Error::OpenKernel(cfg.kernel.clone(), e))?;
    let mut initramfs = match &cfg.initramfs {
        Some(p) => Some(File::open(p).map_err(|e| Error::OpenInitramfs(p.clone(), e))?),
        None => None,
    };
    vcpu::install_kick_handler().map_err(Error::Kick)?;
    let vm = Vm::new(cfg.ram).map_err(Error::Vm)?;
    let max = vm.kvm().get_max_vcpus().min(usize::from(mptable::MAX_CPUS));
    if cfg.cpus == 0 || usize::from(cfg.cpus) > max {
        return Err(Error::Cpus {
            cpus: cfg.cpus,
            max,
        });
    }
    // The PIT calibrates the TSC and drives the timer until the LAPIC timer takes over; port
    // 0x61's speaker bits are served in the kernel too.
    vm.fd()
        .create_pit2(kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        })
        .map_err(Error::Pit)?;

    let reset = DoneSignal::new();
    let pio = Bus::new();
    let mmio = Bus::new();
    let _clear_buses = crate::bus::ClearOnDrop(vec![pio.clone(), mmio.clone()]);
    let console = legacy_devices(&vm, &pio, cfg.console, reset.clone())?;
    bench_vm::attach_disks(&vm, &cfg.disks, &pio, &mmio).map_err(Error::Disks)?;
    // The host bridge and one slot per disk (more than 31 disks failed above).
    let pci_slots = u8::try_from(cfg.disks.len() + 1).unwrap_or(u8::MAX);

    let entry = boot::load(
        vm.ram().memory(),
        vm.ram().size(),
        LinuxBoot {
            kernel: &mut kernel,
            initramfs: initramfs.as_mut(),
            cmdline: &cfg.cmdline,
            cpus: cfg.cpus,
            pci_slots,
        },
    )
    .map_err(|e| Error::Boot(cfg.kernel.clone(), e))?;
    log::info!(
        "{:?} kernel entry {:#x}, initramfs {:x?}",
        entry.format,
        entry.rip,
        entry.initramfs
    );

    let shared = VcpuShared {
        pio,
        mmio,
        counters: Arc::new(ExitCounters::default()),
        done: reset.clone(),
        stop: Arc::new(AtomicBool::new(false)),
        entered: Arc::new(OnceLock::new()),
    };
    let mut handles = Vec::new();
    for id in 0..cfg.cpus {
        let v = Vcpu::new(&vm, id, shared.clone()).map_err(|e| Error::Vcpu(id, e))?;
        v.setup_linux(&vm, id, cfg.cpus, (id == 0).then_some(entry.rip))
            .map_err(|e| Error::Vcpu(id, e))?;
        handles.push(spawn(id, v)?);
    }

    wait(&reset, &handles, cfg.timeout);
    let results = stop_all(&shared, handles);
    let elapsed = t0.elapsed();
    match outcome(reset.get().is_some(), results, &console)? {
        Some(exit) => Ok(LinuxRun {
            exit,
            elapsed,
            console: console.text(),
        }),
        // Nothing ended the guest: the time-out did.
        None => Err(Error::Timeout(
            cfg.timeout.unwrap_or(elapsed),
            console.last_lines(LOG_LINES),
        )),
    }
}

/// How the guest ended, from the reset signal and what the vCPU threads returned; `None` if
/// nothing did (the time-out stopped it).
fn outcome(
    reset: bool,
    results: Vec<(u8, thread::Result<VcpuResult>)>,
    console: &ConsoleTail,
) -> Result<Option<Exit>, Error> {
    let mut exit = reset.then_some(Exit::Reset);
    for (id, result) in results {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(vcpu::Error::Shutdown { rip })) => {
                exit.get_or_insert(Exit::TripleFault { vcpu: id, rip });
            }
            Ok(Err(vcpu::Error::Internal(_))) => {
                return Err(Error::Internal(id, console.last_lines(LOG_LINES)))
            }
            Ok(Err(e)) => return Err(Error::Vcpu(id, e)),
            Err(_) => return Err(Error::VcpuPanic(id)),
        }
    }
    Ok(exit)
}

/// COM1 on IRQ 4 and the i8042, whose reset signals `reset`.
fn legacy_devices(
    vm: &Vm,
    pio: &Bus,
    out: Option<Box<dyn Write + Send>>,
    reset: Arc<DoneSignal>,
) -> Result<ConsoleTail, Error> {
    let sink = ConsoleSink::new(out);
    let tail = sink.tail();
    let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd)?;
    vm.register_irqfd(&irq, COM1_GSI).map_err(Error::Vm)?;
    pio.insert(
        Arc::new(Mutex::new(Serial::new(IrqTrigger(irq), sink))),
        COM1_PORT,
        8,
    )
    .map_err(Error::Bus)?;
    let i8042 = I8042::new(Box::new(move || reset.signal(RESET_STATUS)));
    pio.insert(Arc::new(Mutex::new(i8042)), I8042_BASE, I8042_LEN)
        .map_err(Error::Bus)?;
    Ok(tail)
}

type VcpuResult = Result<(), vcpu::Error>;
type VcpuHandle = (u8, JoinHandle<VcpuResult>);

fn spawn(id: u8, v: Vcpu) -> Result<VcpuHandle, Error> {
    let h = thread::Builder::new()
        .name(format!("vcpu{id}"))
        .spawn(move || v.run())
        .map_err(Error::Spawn)?;
    Ok((id, h))
}

/// Waits for the guest to reset, a vCPU thread to end (a triple fault or an error), or the
/// time-out.
fn wait(reset: &DoneSignal, handles: &[VcpuHandle], timeout: Option<Duration>) {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let slice = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => left.min(POLL),
                _ => return,
            },
            None => POLL,
        };
        if reset.wait(slice).is_some() || handles.iter().any(|(_, h)| h.is_finished()) {
            return;
        }
    }
}

/// Stops every vCPU thread and collects what each returned (or its panic).
fn stop_all(
    shared: &VcpuShared,
    handles: Vec<VcpuHandle>,
) -> Vec<(u8, thread::Result<VcpuResult>)> {
    shared.stop.store(true, Ordering::Release);
    handles
        .into_iter()
        .map(|(id, h)| {
            while !h.is_finished() {
                // A vCPU halted in the kernel or spinning in the guest only returns to the loop
                // when interrupted.
                let _ = h.kill(SIGRTMIN());
                thread::sleep(Duration::from_millis(1));
            }
            (id, h.join())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn console() -> ConsoleTail {
        ConsoleSink::new(None).tail()
    }

    fn ok(id: u8) -> (u8, thread::Result<VcpuResult>) {
        (id, Ok(Ok(())))
    }

    #[test]
    fn an_i8042_reset_is_a_reboot_even_if_a_vcpu_triple_faulted_after() {
        let r = vec![ok(0), (1, Ok(Err(vcpu::Error::Shutdown { rip: 0x1234 })))];
        assert_eq!(outcome(true, r, &console()).unwrap(), Some(Exit::Reset));
    }

    #[test]
    fn a_triple_fault_is_a_reset_of_the_vcpu_that_took_it() {
        let r = vec![(0, Ok(Err(vcpu::Error::Shutdown { rip: 0x1234 }))), ok(1)];
        assert_eq!(
            outcome(false, r, &console()).unwrap(),
            Some(Exit::TripleFault {
                vcpu: 0,
                rip: 0x1234
            })
        );
    }

    #[test]
    fn nothing_ending_the_guest_is_the_time_out() {
        assert_eq!(
            outcome(false, vec![ok(0), ok(1)], &console()).unwrap(),
            None
        );
    }

    #[test]
    fn vcpu_failures_are_errors_naming_the_vcpu() {
        let r = vec![ok(0), (1, Ok(Err(vcpu::Error::Internal(0))))];
        let e = outcome(false, r, &console()).unwrap_err();
        assert!(matches!(e, Error::Internal(1, _)), "{e}");
        assert!(e.to_string().contains("cmpxchg16b"));
        let r = vec![(0, Ok(Err(vcpu::Error::FailEntry(7))))];
        assert!(matches!(
            outcome(false, r, &console()),
            Err(Error::Vcpu(0, vcpu::Error::FailEntry(7)))
        ));
        let r = vec![(2, Err(Box::new("boom") as Box<dyn std::any::Any + Send>))];
        assert!(matches!(
            outcome(true, r, &console()),
            Err(Error::VcpuPanic(2))
        ));
    }
}
