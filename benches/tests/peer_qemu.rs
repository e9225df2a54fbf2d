//! The bench guest under QEMU (`--peer qemu`): booted through its PVH entry, it drives QEMU's
//! emulated NVMe controller and its virtio-blk device; the host checks the backing file itself.
//! Also checks that the PVH entry leaves the same GDT, TSS and page tables as our VMM writes.
//!
//! Needs qemu-system-x86_64 and /dev/kvm; skips with one line otherwise.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use backends::engine::BackendSpec;
use iopath_bench::block::BlockWork;
use iopath_bench::peer::qemu::args::{qemu_args, RunFiles};
use iopath_bench::peer::qemu::{self, QemuBlockJob, QemuDisk};
use iopath_mailbox::layout::{GDT_GPA, PDPT_GPA, PD_GPA, PML4_GPA, RAM_MIN, TSS_GPA};
use iopath_mailbox::{pattern, Job, Mailbox, Status, Workload};
use vmm::boot::long_mode;
use vmm::guest_image::BENCH_GUEST;
use vmm::memory::{GuestRam, RamConfig};

const DISK_BYTES: u64 = 4 << 20;
const SEED: u64 = 0x9e11_0e11;

fn qemu_or_skip() -> bool {
    match qemu::available() {
        Ok(_) => true,
        Err(e) => {
            eprintln!(
                "skipped: {}",
                e.skip_reason().unwrap_or("QEMU peer unavailable")
            );
            false
        }
    }
}

fn disk(dir: &tempfile::TempDir, fill: u8) -> (PathBuf, BackendSpec) {
    let path = dir.path().join("disk.img");
    std::fs::write(&path, vec![fill; DISK_BYTES as usize]).unwrap();
    let spec = BackendSpec::File {
        path: path.clone(),
        // tmpfs (a common /tmp) has no O_DIRECT, which cache=none needs.
        direct: false,
        read_only: false,
    };
    (path, spec)
}

fn block_job(disk: QemuDisk, workload: Workload) -> QemuBlockJob {
    QemuBlockJob {
        disk,
        work: BlockWork {
            workload,
            block_size: 4096,
            queue_depth: 4,
            ops: 0,
            duration: Duration::ZERO,
            region_bytes: 0,
            seed: SEED,
        },
        memory: 256 << 20,
    }
}

fn run(job: &QemuBlockJob) -> qemu::QemuBlockRun {
    match qemu::run_block(job) {
        Ok(run) => run,
        Err(e) => panic!(
            "{}\n--- console ---\n{}",
            vmm::error_chain(&e),
            e.console_tail().unwrap_or("")
        ),
    }
}

/// A verify job over the first 2 MiB of a 4 MiB disk at `path` (filled with 0xee): 16 KiB I/Os
/// (PRP lists on NVMe, multi-page chains on virtio) at depth 8; the pattern must land in the file
/// and the rest of it must stay untouched.
fn verify_lands_in_the_file(disk: QemuDisk, path: &Path) {
    let region = 2 << 20;
    let mut job = block_job(disk, Workload::Verify);
    job.work.block_size = 16384;
    job.work.queue_depth = 8;
    job.work.region_bytes = region;
    let run = run(&job);
    let res = run.results;
    assert_eq!(res.errors, 0, "{}", run.console);
    assert_eq!(res.device_bytes, DISK_BYTES);
    // Every block written once and read once.
    assert_eq!(res.ops, 2 * region / 16384);
    assert_eq!(res.bytes, 2 * region);
    assert!(run.tsc_khz > 0);

    let data = std::fs::read(path).unwrap();
    assert_eq!(data.len() as u64, DISK_BYTES);
    assert_eq!(
        pattern::check_image(SEED, &data, region as usize, 0xee),
        Ok(())
    );
}

#[test]
fn verify_through_qemu_nvme_lands_in_the_backing_file() {
    if !qemu_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (path, backend) = disk(&dir, 0xee);
    verify_lands_in_the_file(QemuDisk::Nvme(backend), &path);
}

#[test]
fn verify_through_qemu_virtio_blk_lands_in_the_backing_file() {
    if !qemu_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (path, backend) = disk(&dir, 0xee);
    verify_lands_in_the_file(QemuDisk::VirtioBlk(backend), &path);
}

#[test]
fn random_reads_through_qemu_nvme_complete() {
    if !qemu_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_, backend) = disk(&dir, 0x5a);
    let mut job = block_job(QemuDisk::Nvme(backend), Workload::RandRead);
    job.work.ops = 1000;
    let run = run(&job);
    let res = run.results;
    assert_eq!((res.ops, res.errors), (1000, 0), "{}", run.console);
    assert_eq!(res.bytes, 1000 * 4096);
    assert_eq!(res.latency.count(), 1000);
    assert!(res.elapsed_ticks > 0);
    let us = res.elapsed_ticks as f64 * 1000.0 / run.tsc_khz as f64;
    eprintln!(
        "qemu nvme randread 4k qd4: {:.0} IOPS, QEMU CPU {:?} for the job ({:?} total), wall {:?}",
        res.ops as f64 / (us / 1e6),
        run.qemu_cpu_guest,
        run.qemu_cpu_total,
        run.wall
    );
}

/// A guest given no job fails at once, leaving the boot tables its PVH entry built; they must
/// be what our VMM writes, apart from the accessed/dirty bits the CPU sets while walking them.
#[test]
fn pvh_entry_builds_the_tables_our_vmm_writes() {
    if !qemu_or_skip() {
        return;
    }
    let qemu_bin = qemu::available().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = RunFiles {
        kernel: dir.path().join("guest.elf"),
        ram: dir.path().join("ram"),
        mailbox: dir.path().join("mailbox.bin"),
        console: dir.path().join("console.log"),
    };
    std::fs::write(&files.kernel, BENCH_GUEST).unwrap();
    std::fs::write(&files.mailbox, Mailbox::new(Job::default()).as_bytes()).unwrap();
    let args = qemu_args(
        &files,
        128 << 20,
        &QemuDisk::Nvme(BackendSpec::Null { size: 1 << 20 }),
    );
    let status = Command::new(qemu_bin)
        .args(&args)
        .stdin(Stdio::null())
        .status()
        .unwrap();
    let console = std::fs::read_to_string(&files.console).unwrap_or_default();
    // isa-debug-exit: (Failed << 1) | 1; the guest reports the unknown job kind.
    assert_eq!(
        status.code(),
        Some((Status::Failed as i32) << 1 | 1),
        "{console}"
    );
    assert!(console.contains("unknown job kind 0"), "{console}");

    let ours = GuestRam::new(RamConfig {
        size: RAM_MIN,
        hugepages: false,
    })
    .unwrap();
    long_mode::write_tables(ours.memory()).unwrap();
    let theirs = File::open(&files.ram).unwrap();
    let read = |f: &File, at: u64, len: u64| {
        let mut b = vec![0u8; len as usize];
        f.read_exact_at(&mut b, at).unwrap();
        b
    };
    // GDT (7 descriptors; the TSS one busy after `ltr`), TSS and its I/O bitmap.
    let tss_end = TSS_GPA + 0x68 + 65536 / 8 + 1;
    for (what, at, len) in [("GDT", GDT_GPA, 7 * 8), ("TSS", TSS_GPA, tss_end - TSS_GPA)] {
        assert!(
            read(ours.file(), at, len) == read(&theirs, at, len),
            "{what} differs"
        );
    }
    let entries = |f: &File, at: u64, n: u64| -> Vec<u64> {
        read(f, at, n * 8)
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()) & !ACCESSED_DIRTY)
            .collect()
    };
    assert_eq!(
        entries(ours.file(), PML4_GPA, 512),
        entries(&theirs, PML4_GPA, 512)
    );
    let (our_pdpt, their_pdpt) = (
        entries(ours.file(), PDPT_GPA, 512),
        entries(&theirs, PDPT_GPA, 512),
    );
    assert_eq!(our_pdpt[..4], their_pdpt[..4]);
    // Past 4 GiB, our VMM maps nothing; the PVH entry adds 1 GiB pages where the CPU has them.
    for (g, &e) in their_pdpt.iter().enumerate().skip(4) {
        assert!(
            e == 0 || (g < 64 && e == (g as u64) << 30 | 0x87),
            "PDPT[{g}] = {e:#x}"
        );
    }
    let pds = 4 * 512;
    assert_eq!(
        entries(ours.file(), PD_GPA, pds),
        entries(&theirs, PD_GPA, pds)
    );
    eprintln!(
        "PVH entry mapped {} GiB (1 GiB pages {})",
        4 + their_pdpt[4..].iter().filter(|&&e| e != 0).count(),
        if their_pdpt[4] != 0 {
            "available"
        } else {
            "not offered to the guest"
        }
    );
}

/// Accessed and dirty bits of a page-table entry.
const ACCESSED_DIRTY: u64 = (1 << 5) | (1 << 6);

/// QEMU refusing to start (here: no vhost-user backend behind the socket) is reported with
/// QEMU's own words, not as a guest problem.
#[test]
fn a_qemu_that_cannot_start_is_reported_with_its_stderr() {
    if !qemu_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let job = block_job(
        QemuDisk::VhostUserBlk {
            socket: dir.path().join("nobody-listens.sock"),
        },
        Workload::Read,
    );
    let err = qemu::run_block(&job).unwrap_err();
    let chain = vmm::error_chain(&err);
    assert!(matches!(err, qemu::Error::Exited { .. }), "{chain}");
    assert!(chain.contains("nobody-listens.sock"), "{chain}");
}
