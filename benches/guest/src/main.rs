//! The bench guest: a freestanding ELF that runs at CPL3 in 64-bit mode, takes no interrupts
//! and polls. It reads its job from the mailbox, runs it, writes the results back, logs through
//! the UART and tells the VMM it is done through a port write.
#![no_std]
#![no_main]

mod arch;
mod block;
mod clock;
mod e1000;
mod exits;
mod mailbox;
mod net;
mod nvme;
mod pci;
mod pvh;
mod scratch;
mod stats;
mod uart;
mod virtio;

use iopath_mailbox::{error, JobKind, Status};

/// The VMM enters here with RSP at the top of the stack, RFLAGS.IOPL=3 and interrupts off.
#[no_mangle]
#[link_section = ".text._start"]
pub extern "C" fn _start() -> ! {
    log!("iopath bench guest v{} ready", env!("CARGO_PKG_VERSION"));
    let job = match mailbox::take_job() {
        Some(job) => job,
        None => finish(Status::Failed, error::BAD_MAILBOX),
    };
    match JobKind::from_raw(job.kind) {
        Some(JobKind::Exits) => match exits::run(&job) {
            Ok(results) => {
                mailbox::put_exit_results(&results);
                finish(Status::Done, error::NONE)
            }
            Err(code) => finish(Status::Failed, code),
        },
        Some(JobKind::Block) => match block::run(&job) {
            Ok(results) => {
                mailbox::put_block_results(&results);
                finish(Status::Done, error::NONE)
            }
            Err(code) => finish(Status::Failed, code),
        },
        Some(JobKind::Net) => match net::run(&job) {
            Ok(results) => {
                mailbox::put_net_results(&results);
                finish(Status::Done, error::NONE)
            }
            Err(code) => finish(Status::Failed, code),
        },
        None => {
            log!("unknown job kind {}", job.kind);
            finish(Status::Failed, error::UNKNOWN_JOB)
        }
    }
}

/// Records the outcome and signals the VMM; never returns.
fn finish(status: Status, code: u32) -> ! {
    mailbox::set_status(status, code);
    log!("guest {:?} ({})", status, error::describe(code));
    loop {
        arch::outl(iopath_mailbox::io::DONE_PORT, status as u32);
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    log!("guest panic: {}", info);
    finish(Status::Failed, error::PANIC)
}

/// The precompiled `core` references the unwinder's personality routine even with
/// `panic = "abort"`; the guest never unwinds, so it is never called.
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}
