//! The slim iopath VMM: a KVM VM, its vCPU loop, buses and device models, and the loaders that
//! get the bench guest (and later Linux) running.

pub mod bench_vm;
pub mod boot;
pub mod bus;
pub mod check_host;
pub mod devices;
pub mod memory;
pub mod units;
pub mod vcpu;
pub mod vm;

/// One line: an error and each of its causes, as binaries print it.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}
