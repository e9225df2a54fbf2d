//! The bench guest's contract with the VMM: the guest-physical layout, the ports it uses and the
//! mailbox page through which it receives its job and returns its results.
//!
//! This crate is the only definition; the VMM and the `no_std` guest both depend on it. Every
//! struct is `#[repr(C)]` plain data so either side can read it straight out of guest memory.
//! Bump [`VERSION`] whenever a layout changes: the guest refuses a mailbox of another version.
#![no_std]

/// "IOPM" little-endian.
pub const MAGIC: u32 = 0x4d50_4f49;
pub const VERSION: u32 = 3;

pub mod histogram;
pub mod net;
pub mod offsets;
pub mod pattern;

/// Guest-physical layout. Everything below `RAM_MIN` is identity mapped, user-accessible RAM.
pub mod layout {
    /// GDT and TSS (one page).
    pub const GDT_GPA: u64 = 0x1000;
    pub const TSS_GPA: u64 = 0x1800;
    /// PML4, one PDPT and four page directories (2 MiB pages, 4 GiB identity map).
    pub const PML4_GPA: u64 = 0x9000;
    pub const PDPT_GPA: u64 = 0xa000;
    pub const PD_GPA: u64 = 0xb000;
    /// The mailbox (64 KiB).
    pub const MAILBOX_GPA: u64 = 0x10000;
    pub const MAILBOX_SIZE: u64 = 0x10000;
    /// Where a VMM that boots the guest through its PVH entry (QEMU) puts the mailbox instead:
    /// PC firmware (SeaBIOS) clears 0x7000..0x90000 just before it boots, so the PVH entry
    /// copies the mailbox from here to [`MAILBOX_GPA`]. Results are read back at
    /// `MAILBOX_GPA` as always. Free RAM between 1 MiB and the image.
    pub const PVH_MAILBOX_GPA: u64 = 0x10_0000;
    /// The guest ELF is linked here.
    pub const IMAGE_GPA: u64 = 0x20_0000;
    /// Top of the guest stack (grows down towards the image).
    pub const STACK_TOP: u64 = 0x100_0000;
    /// Guest scratch memory for queues and I/O buffers.
    pub const SCRATCH_GPA: u64 = 0x100_0000;
    pub const SCRATCH_SIZE: u64 = 0x300_0000;
    /// Memory the memory-touch job walks starts here.
    pub const TOUCH_GPA: u64 = 0x400_0000;
    /// Smallest guest RAM the bench guest runs in (without the touch area).
    pub const RAM_MIN: u64 = TOUCH_GPA;
    /// The identity map covers this much (RAM and MMIO below 4 GiB).
    pub const IDENTITY_MAP_SIZE: u64 = 1 << 32;
}

/// Ports and MMIO addresses the guest uses.
pub mod io {
    /// COM1 (8250 UART): the guest's log.
    pub const UART_PORT: u16 = 0x3f8;
    /// A write of a [`crate::Status`] here tells the VMM the guest is finished.
    pub const DONE_PORT: u16 = 0xf4;
    /// A port whose accesses exit to userspace and do nothing: the PIO exit benchmark.
    pub const PIO_PROBE_PORT: u16 = 0xe0;
    /// An MMIO page whose accesses exit to userspace and do nothing.
    pub const MMIO_PROBE_GPA: u64 = 0xd000_0000;
    /// An MMIO page whose writes the VMM registers as an ioeventfd (no userspace exit).
    pub const MMIO_IOEVENTFD_GPA: u64 = 0xd000_1000;
    /// The guest writes [`MARK_BEGIN`] here right before a measured loop and [`MARK_END`]
    /// right after it, so the VMM counts the device exits of the loop alone (not set-up).
    pub const MARK_PORT: u16 = 0xe4;
    pub const MARK_BEGIN: u32 = 1;
    pub const MARK_END: u32 = 2;
}

/// What the guest is asked to run.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobKind {
    /// Exit microbenchmarks and the memory-touch job.
    Exits = 1,
    /// Block I/O through a PCI storage device.
    Block = 2,
    /// Frames through a PCI network device.
    Net = 3,
}

impl JobKind {
    pub fn from_raw(raw: u32) -> Option<JobKind> {
        match raw {
            1 => Some(JobKind::Exits),
            2 => Some(JobKind::Block),
            3 => Some(JobKind::Net),
            _ => None,
        }
    }
}

/// Where the guest is, written by the guest.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Set by the VMM before the guest starts.
    Pending = 0,
    Running = 1,
    Done = 2,
    Failed = 3,
}

impl Status {
    pub fn from_raw(raw: u32) -> Option<Status> {
        match raw {
            0 => Some(Status::Pending),
            1 => Some(Status::Running),
            2 => Some(Status::Done),
            3 => Some(Status::Failed),
            _ => None,
        }
    }
}

/// Why a guest failed, in [`Mailbox::error`].
pub mod error {
    pub const NONE: u32 = 0;
    pub const BAD_MAILBOX: u32 = 1;
    pub const UNKNOWN_JOB: u32 = 2;
    pub const BAD_PARAMETER: u32 = 3;
    pub const PANIC: u32 = 4;
    pub const NO_DEVICE: u32 = 5;
    pub const DEVICE_ERROR: u32 = 6;
    pub const VERIFY_FAILED: u32 = 7;

    pub fn describe(code: u32) -> &'static str {
        match code {
            NONE => "no error",
            BAD_MAILBOX => "the guest found no valid mailbox (magic or version mismatch)",
            UNKNOWN_JOB => "the guest does not know this job kind",
            BAD_PARAMETER => "the guest rejected a job parameter",
            PANIC => "the guest panicked",
            NO_DEVICE => "the guest found no device of the requested kind",
            DEVICE_ERROR => "the device failed to initialise or returned an error status",
            VERIFY_FAILED => "data read back differs from what was written",
            _ => "unknown guest error code",
        }
    }
}

/// The exit microbenchmarks, in the order of [`ExitResults::kinds`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitKind {
    /// `out` to a port handled in the VMM.
    PioWrite = 0,
    /// Load from an MMIO page handled in the VMM.
    MmioRead = 1,
    /// Store to an MMIO page handled in the VMM.
    MmioWrite = 2,
    /// Store to an MMIO address caught in-kernel by an ioeventfd.
    MmioIoeventfd = 3,
    /// `cpuid` leaf 0.
    Cpuid = 4,
    /// First touch of a random 4 KiB page (page-table/EPT population).
    PageTouchFirst = 5,
    /// Later touch of a random 4 KiB page (TLB miss on a populated mapping).
    PageTouchWarm = 6,
}

impl ExitKind {
    pub const COUNT: usize = 7;
    pub const ALL: [ExitKind; ExitKind::COUNT] = [
        ExitKind::PioWrite,
        ExitKind::MmioRead,
        ExitKind::MmioWrite,
        ExitKind::MmioIoeventfd,
        ExitKind::Cpuid,
        ExitKind::PageTouchFirst,
        ExitKind::PageTouchWarm,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ExitKind::PioWrite => "pio-write",
            ExitKind::MmioRead => "mmio-read",
            ExitKind::MmioWrite => "mmio-write",
            ExitKind::MmioIoeventfd => "mmio-ioeventfd",
            ExitKind::Cpuid => "cpuid",
            ExitKind::PageTouchFirst => "page-touch-first",
            ExitKind::PageTouchWarm => "page-touch-warm",
        }
    }
}

/// Parameters of the exits job.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitsJob {
    /// Iterations per repetition of each exit benchmark.
    pub iterations: u32,
    /// Repetitions; the guest reports the minimum and the median.
    pub repetitions: u32,
    /// MiB the memory-touch job walks, starting at [`layout::TOUCH_GPA`] (a power of two, or 0
    /// to skip it).
    pub touch_mib: u32,
    pub _pad: u32,
}

/// Which device a block job drives.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockDevice {
    /// NVMe (PCI class 01:08:02), emulated or passed through.
    Nvme = 1,
    /// virtio-blk (PCI 1af4:1042), modern transport.
    VirtioBlk = 2,
}

impl BlockDevice {
    pub fn from_raw(raw: u32) -> Option<BlockDevice> {
        match raw {
            1 => Some(BlockDevice::Nvme),
            2 => Some(BlockDevice::VirtioBlk),
            _ => None,
        }
    }
}

/// The access pattern of a block job.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    RandRead = 0,
    RandWrite = 1,
    Read = 2,
    Write = 3,
    /// Writes [`pattern`] over the region, reads it back and compares; a mismatch fails the job.
    Verify = 4,
}

impl Workload {
    pub fn from_raw(raw: u32) -> Option<Workload> {
        match raw {
            0 => Some(Workload::RandRead),
            1 => Some(Workload::RandWrite),
            2 => Some(Workload::Read),
            3 => Some(Workload::Write),
            4 => Some(Workload::Verify),
            _ => None,
        }
    }

    pub const ALL: [Workload; 5] = [
        Workload::RandRead,
        Workload::RandWrite,
        Workload::Read,
        Workload::Write,
        Workload::Verify,
    ];

    /// The workload [`Workload::name`] names.
    pub fn from_name(name: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Workload::RandRead => "randread",
            Workload::RandWrite => "randwrite",
            Workload::Read => "read",
            Workload::Write => "write",
            Workload::Verify => "verify",
        }
    }
}

/// Parameters of a block job. The guest stops at `ops` operations or after `duration_ms`,
/// whichever comes first (0 means no limit of that kind; one of them must be set, except for
/// `Verify`, which covers `region_bytes` once).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockJob {
    /// A [`BlockDevice`] value.
    pub device: u32,
    /// A [`Workload`] value.
    pub workload: u32,
    /// Bytes per I/O, a multiple of the device's logical block size.
    pub block_size: u32,
    /// I/Os kept in flight.
    pub queue_depth: u32,
    pub ops: u64,
    pub duration_ms: u64,
    /// Bytes of the device the job covers from offset 0 (0: the whole device).
    pub region_bytes: u64,
}

/// What a block job measured.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockResults {
    pub ops: u64,
    pub bytes: u64,
    /// Commands that completed with an error status.
    pub errors: u64,
    /// TSC ticks from the first submission to the last completion.
    pub elapsed_ticks: u64,
    /// Device geometry as the guest found it.
    pub device_bytes: u64,
    pub lba_bytes: u32,
    pub _pad: u32,
    /// Completion latency per I/O in TSC ticks, see [`histogram`].
    pub latency: histogram::Histogram,
}

/// The job, written by the VMM.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Job {
    /// A [`JobKind`] value.
    pub kind: u32,
    pub _pad: u32,
    /// TSC frequency (KVM_GET_TSC_KHZ), so the guest can bound run time.
    pub tsc_khz: u64,
    pub seed: u64,
    pub exits: ExitsJob,
    pub block: BlockJob,
    pub net: net::NetJob,
}

/// Ticks for one benchmark: `iterations` per repetition; the fastest and the median repetition.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TickStats {
    pub iterations: u64,
    pub min_ticks: u64,
    pub median_ticks: u64,
}

impl TickStats {
    /// Ticks per iteration of the median repetition.
    pub fn median_per_iter(&self) -> Option<f64> {
        (self.iterations > 0).then(|| self.median_ticks as f64 / self.iterations as f64)
    }

    /// Ticks per iteration of the fastest repetition.
    pub fn min_per_iter(&self) -> Option<f64> {
        (self.iterations > 0).then(|| self.min_ticks as f64 / self.iterations as f64)
    }
}

/// Results of the exits job, indexed by [`ExitKind`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitResults {
    pub kinds: [TickStats; ExitKind::COUNT],
}

/// The mailbox page at [`layout::MAILBOX_GPA`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mailbox {
    pub magic: u32,
    pub version: u32,
    pub job: Job,
    /// A [`Status`] value, written by the guest.
    pub status: u32,
    /// An [`error`] code when `status` is `Failed`.
    pub error: u32,
    pub exits: ExitResults,
    pub block: BlockResults,
    pub net: net::NetResults,
}

impl Mailbox {
    pub fn new(job: Job) -> Mailbox {
        Mailbox {
            magic: MAGIC,
            version: VERSION,
            job,
            status: Status::Pending as u32,
            error: error::NONE,
            exits: ExitResults::default(),
            block: BlockResults::default(),
            net: net::NetResults::default(),
        }
    }

    pub fn is_valid(&self) -> bool {
        self.magic == MAGIC && self.version == VERSION
    }

    /// The bytes the VMM writes into guest memory.
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: `Mailbox` is repr(C) plain data with no padding bytes (every field is a u32 or
        // u64 and the u32s come in pairs), so every byte is initialised.
        unsafe {
            core::slice::from_raw_parts(
                self as *const Mailbox as *const u8,
                core::mem::size_of::<Mailbox>(),
            )
        }
    }

    /// Reads a mailbox back from guest memory bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Mailbox> {
        if bytes.len() < core::mem::size_of::<Mailbox>() {
            return None;
        }
        // SAFETY: the length was checked; every bit pattern is a valid `Mailbox` (integers
        // only); `read_unaligned` has no alignment requirement.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr() as *const Mailbox) })
    }
}

// The mailbox must fit its page range, and its PVH staging copy must end below the image.
const _: () = assert!(core::mem::size_of::<Mailbox>() as u64 <= layout::MAILBOX_SIZE);
const _: () = assert!(layout::PVH_MAILBOX_GPA + layout::MAILBOX_SIZE <= layout::IMAGE_GPA);
// No hidden padding: `as_bytes` relies on it.
const _: () = assert!(
    core::mem::size_of::<Mailbox>()
        == 4 * 2
            + core::mem::size_of::<Job>()
            + 4 * 2
            + core::mem::size_of::<ExitResults>()
            + core::mem::size_of::<BlockResults>()
            + core::mem::size_of::<net::NetResults>()
);
const _: () = assert!(
    core::mem::size_of::<Job>()
        == 8 * 3
            + core::mem::size_of::<ExitsJob>()
            + core::mem::size_of::<BlockJob>()
            + core::mem::size_of::<net::NetJob>()
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailbox_round_trips_through_bytes() {
        let mut m = Mailbox::new(Job {
            kind: JobKind::Exits as u32,
            tsc_khz: 2_400_000,
            seed: 7,
            exits: ExitsJob {
                iterations: 100,
                repetitions: 5,
                touch_mib: 64,
                _pad: 0,
            },
            ..Job::default()
        });
        m.exits.kinds[3] = TickStats {
            iterations: 100,
            min_ticks: 1000,
            median_ticks: 1500,
        };
        let back = Mailbox::from_bytes(m.as_bytes()).unwrap();
        assert_eq!(back, m);
        assert!(back.is_valid());
        assert_eq!(back.exits.kinds[3].median_per_iter(), Some(15.0));
    }

    #[test]
    fn short_or_foreign_bytes_are_rejected() {
        let m = Mailbox::new(Job::default());
        assert!(Mailbox::from_bytes(&m.as_bytes()[..8]).is_none());
        let mut other = m;
        other.version = VERSION + 1;
        assert!(!Mailbox::from_bytes(other.as_bytes()).unwrap().is_valid());
    }

    #[test]
    fn enums_round_trip_their_raw_values() {
        assert_eq!(JobKind::from_raw(1), Some(JobKind::Exits));
        assert_eq!(JobKind::from_raw(2), Some(JobKind::Block));
        assert_eq!(JobKind::from_raw(3), Some(JobKind::Net));
        for w in 0..5 {
            assert_eq!(Workload::from_raw(w).map(|w| w as u32), Some(w));
        }
        assert_eq!(Workload::from_raw(5), None);
        assert_eq!(BlockDevice::from_raw(2), Some(BlockDevice::VirtioBlk));
        assert_eq!(JobKind::from_raw(99), None);
        for s in [
            Status::Pending,
            Status::Running,
            Status::Done,
            Status::Failed,
        ] {
            assert_eq!(Status::from_raw(s as u32), Some(s));
        }
        for (i, k) in ExitKind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
        }
    }
}
