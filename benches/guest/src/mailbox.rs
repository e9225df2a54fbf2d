//! Access to the mailbox page. The VMM reads it while the guest runs, so every access is
//! volatile.

use iopath_mailbox::net::NetResults;
use iopath_mailbox::{layout::MAILBOX_GPA, BlockResults, ExitResults, Job, Mailbox, Status};

fn mailbox() -> *mut Mailbox {
    MAILBOX_GPA as *mut Mailbox
}

/// Returns the job if the mailbox is one this guest understands, and marks it running.
pub fn take_job() -> Option<Job> {
    // SAFETY: the VMM identity maps the mailbox page at MAILBOX_GPA, user-accessible.
    let m = unsafe { core::ptr::read_volatile(mailbox()) };
    if !m.is_valid() {
        return None;
    }
    set_status(Status::Running, iopath_mailbox::error::NONE);
    Some(m.job)
}

pub fn set_status(status: Status, code: u32) {
    // SAFETY: as in `take_job`; the fields are naturally aligned.
    unsafe {
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*mailbox()).error), code);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*mailbox()).status), status as u32);
    }
}

pub fn put_exit_results(results: &ExitResults) {
    // SAFETY: as in `take_job`.
    unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!((*mailbox()).exits), *results) };
}

pub fn put_block_results(results: &BlockResults) {
    // SAFETY: as in `take_job`.
    unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!((*mailbox()).block), *results) };
}

pub fn put_net_results(results: &NetResults) {
    // SAFETY: as in `take_job`.
    unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!((*mailbox()).net), *results) };
}
