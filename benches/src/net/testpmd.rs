//! `--peer testpmd`: DPDK's testpmd on both sides of our vhost-user-net code. As a backend
//! (net_vhost, macswap) it serves the bench guest's virtio-net NIC in place of our daemon; as
//! a frontend (net_virtio_user, txonly), with no VM at all, it drives our daemon in `--sink`
//! mode and its own statistics give the rate. Guest memory and testpmd's are plain shared
//! memory (`--no-huge`): no huge pages are needed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::vhost_net::{self, DaemonMode};
use super::{NetSample, NetWork};
use crate::block::sample::{Counts, Sample};
use crate::block::vhost_backend::{self, BackendProcess};

/// From Debian's `dpdk-dev` package.
pub const TESTPMD: &str = "dpdk-testpmd";
/// How long testpmd may take to initialise and print its first statistics.
const START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("our vhost-user-net daemon")]
    Daemon(#[source] vhost_backend::Error),
    #[error("starting {TESTPMD}")]
    Spawn(#[source] std::io::Error),
    #[error("{TESTPMD} printed fewer than two statistics reports (it ended or stalled)")]
    NoStats,
    #[error("the testpmd frontend sends frames only (tx), not {0}")]
    Workload(&'static str),
}

/// Where testpmd is, if installed.
pub fn find() -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join(TESTPMD))
        .find(|p| p.is_file())
}

/// EAL flags: two lcores (one main, one forwarding), no PCI scan, malloc'd memory, a private
/// runtime directory per instance.
fn testpmd(vdev: &str) -> Command {
    let mut cmd = Command::new(TESTPMD);
    cmd.args(["-l", "0,1", "--no-pci", "--no-huge", "-m", "512"])
        .arg(format!(
            "--file-prefix={}",
            backends::host_net::unique_name("iopmd")
        ))
        .args(["--log-level=error", "--vdev", vdev, "--"])
        .args([
            "--total-num-mbufs=8192",
            "--stats-period=1",
            "--port-topology=loop",
        ]);
    cmd
}

/// testpmd as the vhost-user-net backend of the guest's NIC, swapping MACs of every frame.
pub fn start_backend() -> Result<BackendProcess, vhost_backend::Error> {
    BackendProcess::spawn("net.sock", |socket: &Path| {
        let mut cmd = testpmd(&format!("net_vhost0,iface={},queues=1", socket.display()));
        cmd.arg("--forward-mode=macswap");
        Ok((cmd, TESTPMD.to_string()))
    })
}

/// testpmd as a virtio-user frontend of our daemon (in `--sink` mode), sending `work`'s frames
/// for `work.duration` after its first report; the rate between its first and last reports.
pub fn frontend(
    daemon_bin: Option<&Path>,
    poll_us: u64,
    work: &NetWork,
) -> Result<NetSample, Error> {
    if work.workload != iopath_mailbox::net::NetWorkload::Tx {
        return Err(Error::Workload(work.workload.name()));
    }
    let daemon = vhost_net::start(daemon_bin, &DaemonMode::Sink, poll_us).map_err(Error::Daemon)?;
    let daemon_cpu0 = daemon.cpu_time();
    let mut cmd = testpmd(&format!(
        "net_virtio_user0,path={},queues=1",
        daemon.socket().display()
    ));
    cmd.args([
        "--forward-mode=txonly",
        &format!("--txpkts={}", work.frame_bytes),
    ]);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(Error::Spawn)?;
    let reports = reports(&mut child);
    let first = reports.recv_timeout(START_TIMEOUT);
    let pid = child.id();
    let cpu0 = crate::cpu::process_time_of(pid).unwrap_or_default();
    std::thread::sleep(work.duration);
    let cpu1 = crate::cpu::process_time_of(pid).unwrap_or_default();
    let daemon_cpu = (daemon.cpu_time() - daemon_cpu0).as_secs_f64();
    // A loaded host may print late: wait a little for a report after the run if none came.
    let last = reports
        .try_iter()
        .last()
        .or_else(|| reports.recv_timeout(Duration::from_secs(5)).ok());
    stop(&mut child);
    let (Ok((t0, n0)), Some((t1, n1))) = (first, last) else {
        return Err(Error::NoStats);
    };
    let elapsed_s = (t1 - t0).as_secs_f64();
    let frames = n1.saturating_sub(n0);
    let counts = Counts {
        ops: frames,
        bytes: frames * u64::from(work.frame_bytes),
        errors: 0,
        elapsed_s,
    };
    let mut sample = Sample::new(
        counts,
        &iopath_mailbox::histogram::Histogram::new(),
        1.0,
        None,
        0.0,
    );
    sample.cpu_by_process = vec![
        ("testpmd".into(), (cpu1 - cpu0).as_secs_f64()),
        ("backend".into(), daemon_cpu),
    ];
    sample.cpu_s = sample.cpu_by_process.iter().map(|p| p.1).sum();
    Ok(NetSample {
        sample,
        sent: frames,
        received: 0,
        bad: 0,
        lost: 0,
        foreign: 0,
        far_received: None,
    })
}

/// Every periodic report's TX-packets count, with when it was read.
fn reports(child: &mut Child) -> mpsc::Receiver<(Instant, u64)> {
    let (tx, rx) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(n) = tx_packets(&line) {
                    if tx.send((Instant::now(), n)).is_err() {
                        return;
                    }
                }
            }
        });
    }
    rx
}

/// The count of a periodic report's `TX-packets: N  TX-errors: ...` line.
fn tx_packets(line: &str) -> Option<u64> {
    let rest = line.trim_start().strip_prefix("TX-packets:")?;
    if !rest.contains("TX-errors") {
        return None;
    }
    rest.split_whitespace().next()?.parse().ok()
}

/// SIGINT (testpmd stops forwarding and closes its ports cleanly), then a kill if it lingers.
fn stop(child: &mut Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill sends a signal to our own child, which has not been reaped yet.
        unsafe { libc::kill(pid, libc::SIGINT) };
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_reports_are_read_and_the_final_summary_is_not() {
        assert_eq!(
            tx_packets("  TX-packets: 20736      TX-errors: 0          TX-bytes:  1327104"),
            Some(20736)
        );
        assert_eq!(
            tx_packets("  TX-packets: 99616          TX-dropped: 45367584      TX-total: 1"),
            None
        );
        assert_eq!(tx_packets("  RX-packets: 0 RX-missed: 0"), None);
    }
}
