//! CPU time this process used (all threads, user and system), for "host CPU per I/O".

use std::time::Duration;

use vmm::bench_vm::{self, BenchRun, BenchVmConfig};

use crate::block::vhost_backend::BackendProcess;

/// User plus system time of every thread of this process so far, including io_uring workers
/// and the vCPU threads (whose guest time counts as this process's).
pub fn process_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill; CLOCK_PROCESS_CPUTIME_ID needs
    // nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// User plus system time of another process so far (all its threads), from
/// `/proc/PID/stat`; `None` once it is gone or if the file does not parse.
pub fn process_time_of(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|h| *h > 0)?;
    Some(Duration::from_nanos((utime + stime) * 1_000_000_000 / hz))
}

/// Runs a bench VM and returns the CPU time it took, per process: this one (`vmm`: every VMM
/// thread, the polling vCPU included) and, if one serves the VM, the `backend` daemon.
pub fn measured_vm_run(
    cfg: BenchVmConfig,
    backend: Option<&BackendProcess>,
) -> Result<(BenchRun, Vec<(String, f64)>), bench_vm::Error> {
    let cpu0 = process_time();
    let backend_cpu0 = backend.map(|b| b.cpu_time());
    let run = bench_vm::run(cfg)?;
    let mut processes = vec![("vmm".to_string(), (process_time() - cpu0).as_secs_f64())];
    if let (Some(b), Some(t0)) = (backend, backend_cpu0) {
        processes.push(("backend".to_string(), (b.cpu_time() - t0).as_secs_f64()));
    }
    Ok((run, processes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_work_advances_process_time() {
        let before = process_time();
        let mut x = 0u64;
        let t = std::time::Instant::now();
        // Spin until the clock moves or a generous deadline passes (a loaded machine may
        // give this thread little CPU, so no fixed ratio to wall time is assumed).
        while process_time() - before < Duration::from_millis(10) && t.elapsed().as_secs() < 30 {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(process_time() - before >= Duration::from_millis(10));
    }

    #[test]
    fn another_process_is_measured_from_proc() {
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 5",
            ])
            .spawn()
            .unwrap();
        let pid = child.id();
        let t = std::time::Instant::now();
        let mut seen = Duration::ZERO;
        while t.elapsed() < Duration::from_secs(5) {
            seen = process_time_of(pid).unwrap();
            if seen >= Duration::from_millis(50) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(seen >= Duration::from_millis(50), "{seen:?}");
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(process_time_of(pid), None, "gone after reaping");
    }
}
