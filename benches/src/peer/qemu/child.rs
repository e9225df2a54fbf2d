//! Watches the QEMU process: waits for it with a time limit, and samples its CPU time when the
//! guest starts (so firmware boot, emulated instruction by instruction on PVM, can be told
//! apart from the job) and when it exits (before it is reaped, while /proc still has it).

use std::io;
use std::process::{Child, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(10);

/// How the watch ended.
#[derive(Debug)]
pub struct Watched {
    /// `None` when the time limit ran out and the process was killed.
    pub status: Option<ExitStatus>,
    /// Spawn to exit.
    pub wall: Duration,
    /// Mark to exit, if the mark was seen.
    pub wall_after_mark: Option<Duration>,
    /// User plus system time of all of QEMU's threads over its life.
    pub cpu: Option<Duration>,
    /// The same, from the mark to exit.
    pub cpu_after_mark: Option<Duration>,
}

/// Waits for `child` (started at `started`) for at most `timeout`, then kills it. `mark` is
/// polled until it first returns true; CPU time and wall time are sampled at that moment.
pub fn watch(
    child: &mut Child,
    started: Instant,
    timeout: Duration,
    mut mark: impl FnMut() -> bool,
) -> io::Result<Watched> {
    let pid = child.id();
    let mut at_mark: Option<(Instant, Option<Duration>)> = None;
    loop {
        if exited_unreaped(pid)? {
            let cpu = cpu_time(pid);
            let status = child.wait()?;
            let end = Instant::now();
            return Ok(Watched {
                status: Some(status),
                wall: end - started,
                wall_after_mark: at_mark.map(|(t, _)| end - t),
                cpu,
                cpu_after_mark: at_mark.and_then(|(_, c)| Some(cpu? - c?)),
            });
        }
        if at_mark.is_none() && mark() {
            at_mark = Some((Instant::now(), cpu_time(pid)));
        }
        if started.elapsed() >= timeout {
            // Our own child, by its handle: SIGKILL, then reap it.
            child.kill()?;
            child.wait()?;
            return Ok(Watched {
                status: None,
                wall: started.elapsed(),
                wall_after_mark: None,
                cpu: None,
                cpu_after_mark: None,
            });
        }
        thread::sleep(POLL);
    }
}

/// Whether `pid` (our child) has exited, leaving it unreaped for `Child::wait`.
fn exited_unreaped(pid: u32) -> io::Result<bool> {
    // SAFETY: siginfo_t is plain data; all zeroes is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid siginfo_t for the kernel to fill; WNOWAIT leaves the child
    // waitable, WNOHANG returns at once while it runs.
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            pid,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: waitid either filled `info` for an exited child or left it zeroed (si_pid 0).
    Ok(unsafe { info.si_pid() } != 0)
}

/// User plus system time of every thread of `pid`, from /proc (also for a zombie).
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = parse_stat_ticks(&stat)?;
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&hz| hz > 0)?;
    Some(Duration::from_nanos(
        ticks.saturating_mul(1_000_000_000) / hz,
    ))
}

/// utime + stime (fields 14 and 15) of a /proc/PID/stat line. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted from its closing parenthesis.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    #[test]
    fn stat_ticks_skip_a_hostile_command_name() {
        let line = "4242 (qemu) x (y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 5";
        assert_eq!(parse_stat_ticks(line), Some(325));
        assert_eq!(parse_stat_ticks("4242 (qemu) S 1"), None);
    }

    #[test]
    fn a_quick_child_is_reaped_with_its_status() {
        let mut child = Command::new("sh").args(["-c", "exit 5"]).spawn().unwrap();
        let w = watch(&mut child, Instant::now(), Duration::from_secs(30), || {
            false
        })
        .unwrap();
        assert_eq!(w.status.and_then(|s| s.code()), Some(5));
        assert!(w.cpu.is_some());
    }

    #[test]
    fn a_child_past_its_time_is_killed() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let t = Instant::now();
        let w = watch(&mut child, t, Duration::from_millis(100), || true).unwrap();
        assert!(w.status.is_none());
        assert!(t.elapsed() < Duration::from_secs(10));
    }
}
