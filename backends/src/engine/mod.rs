//! The block engine every path uses: one instance per queue thread, no shared lock.
//!
//! A request names host memory that was checked by an `iommu` address space (or that the
//! caller owns); the engine keeps it in flight until the completion is reaped. Completions come
//! back out of order, tagged with the caller's `tag`.

use std::fmt;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::str::FromStr;

mod mem;
mod null;
#[cfg(test)]
mod testutil;
pub mod uring;

pub use mem::{MemEngine, MemHandle, MemOp};
pub use null::{NullConfig, NullEngine};
pub use uring::{UringConfig, UringEngine};

/// What a request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockOp {
    Read,
    Write,
    /// Makes every completed write durable (fdatasync).
    Flush,
    /// Zeroes `len` bytes at `offset` without a data buffer.
    WriteZeroes,
    /// Deallocates `len` bytes at `offset`; reads of them afterwards return zeroes.
    Discard,
}

/// One request. For `Read`/`Write`, `segments` is the scatter list and its total length is the
/// transfer length; for `WriteZeroes`/`Discard`, `len` is the length and `segments` is empty;
/// `Flush` uses neither.
#[derive(Debug)]
pub struct BlockRequest {
    pub op: BlockOp,
    /// Byte offset in the device.
    pub offset: u64,
    pub len: u64,
    pub segments: Vec<iommu::DmaSlice>,
    /// Returned unchanged in the completion.
    pub tag: u64,
}

impl BlockRequest {
    /// Bytes the request covers on the device.
    pub fn byte_len(&self) -> u64 {
        match self.op {
            BlockOp::Read | BlockOp::Write => self.segments.iter().map(|s| s.len() as u64).sum(),
            BlockOp::WriteZeroes | BlockOp::Discard => self.len,
            BlockOp::Flush => 0,
        }
    }
}

/// The outcome of one request.
#[derive(Debug, PartialEq, Eq)]
pub struct Completion {
    pub tag: u64,
    /// `Ok(bytes the request covered)`: the transfer length, `len` for write-zeroes and
    /// discard, 0 for flush.
    pub result: Result<u64, CompletionError>,
}

/// Why a request failed; the device model maps each to its own status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CompletionError {
    #[error("access beyond the end of the device")]
    OutOfRange,
    #[error("device is read-only")]
    ReadOnly,
    #[error("operation not supported by this backend")]
    Unsupported,
    #[error("request not aligned to the device's {0}-byte blocks")]
    Unaligned(u32),
    #[error("short transfer: {done} of {want} bytes")]
    Short { done: u64, want: u64 },
    #[error("I/O error (errno {0})")]
    Io(i32),
}

/// Why a request was not accepted; the request comes back so nothing is lost.
#[derive(Debug)]
pub struct SubmitError {
    pub request: BlockRequest,
    pub reason: SubmitErrorKind,
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request {} not accepted", self.request.tag)
    }
}

impl std::error::Error for SubmitError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.reason)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitErrorKind {
    #[error("submission queue full")]
    Full,
    #[error("submit failed (errno {0})")]
    Io(i32),
}

/// The engine boundary. Implementations: io_uring over a file or block device, `null`, and test
/// doubles.
pub trait BlockEngine: Send {
    /// Device size in bytes.
    fn capacity(&self) -> u64;
    /// Logical block size in bytes (512 or 4096).
    fn block_size(&self) -> u32;
    fn read_only(&self) -> bool;
    /// Requests that may be in flight at once.
    fn queue_depth(&self) -> usize;

    /// Queues a request. It is not guaranteed to reach the kernel until [`BlockEngine::submit`].
    ///
    /// # Safety
    /// Every segment must stay valid (mapped, and not freed) until this request's completion
    /// has been returned by [`BlockEngine::reap`] or the engine has been dropped.
    unsafe fn push(&mut self, request: BlockRequest) -> Result<(), SubmitError>;

    /// Hands queued requests to the kernel; returns how many.
    fn submit(&mut self) -> Result<usize, SubmitErrorKind>;

    /// Moves finished requests into `out` without blocking; returns how many.
    fn reap(&mut self, out: &mut Vec<Completion>) -> usize;

    /// Blocks until at least `min` requests are finished (or none are in flight).
    fn wait(&mut self, min: usize) -> Result<(), SubmitErrorKind>;

    /// An eventfd that becomes readable when completions are ready, for threads that sleep in
    /// epoll. `None` if completions are always ready right after `submit` (null).
    fn completion_fd(&self) -> Option<RawFd>;

    /// Requests pushed and not yet reaped.
    fn in_flight(&self) -> usize;
}

/// Size of a `null` backend given without one: 1 GiB.
pub const DEFAULT_NULL_SIZE: u64 = 1 << 30;

/// A backend as named on a command line:
///
/// - `null` or `null:SIZE` (`SIZE` in bytes or with a binary suffix `K`, `M`, `G`, `T`; a
///   multiple of 512): the [`NullEngine`], 512-byte blocks.
/// - `file:PATH`, with options between the kind and the colon: `file,direct:PATH` (O_DIRECT),
///   `file,ro:PATH`, `file,direct,ro:PATH`: the [`UringEngine`] over a file or block device.
///   Everything after the first colon is the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendSpec {
    Null {
        size: u64,
    },
    File {
        path: PathBuf,
        direct: bool,
        read_only: bool,
    },
}

impl BackendSpec {
    /// Opens the engine for one queue.
    pub fn open(&self, queue_depth: u32) -> Result<Box<dyn BlockEngine>, uring::Error> {
        Ok(match self {
            BackendSpec::Null { size } => Box::new(NullEngine::new(NullConfig {
                capacity: *size,
                block_size: 512,
                read_only: false,
                queue_depth: queue_depth as usize,
            })),
            BackendSpec::File {
                path,
                direct,
                read_only,
            } => Box::new(UringEngine::new(&UringConfig {
                path: path.clone(),
                read_only: *read_only,
                direct: *direct,
                queue_depth,
            })?),
        })
    }
}

/// Why a backend spec did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseSpecError {
    #[error("unknown backend {0:?} (expected null, null:SIZE or file[,direct][,ro]:PATH)")]
    UnknownKind(String),
    #[error("bad size {0:?} (expected a multiple of 512 such as 4096, 64M or 1G)")]
    BadSize(String),
    #[error("unknown option {0:?} (expected direct or ro)")]
    UnknownOption(String),
    #[error("backend {0:?} takes no options")]
    NoOptions(String),
    #[error("file backend needs a path (file:PATH)")]
    MissingPath,
}

impl FromStr for BackendSpec {
    type Err = ParseSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (head, arg) = match s.split_once(':') {
            Some((head, arg)) => (head, Some(arg)),
            None => (s, None),
        };
        let mut words = head.split(',');
        let kind = words.next().unwrap_or_default();
        match kind {
            "null" => {
                if let Some(option) = words.next() {
                    return Err(ParseSpecError::NoOptions(format!("null,{option}")));
                }
                let size = match arg {
                    None => DEFAULT_NULL_SIZE,
                    Some(arg) => parse_size(arg)?,
                };
                Ok(BackendSpec::Null { size })
            }
            "file" => {
                let (mut direct, mut read_only) = (false, false);
                for option in words {
                    match option {
                        "direct" => direct = true,
                        "ro" => read_only = true,
                        _ => return Err(ParseSpecError::UnknownOption(option.to_string())),
                    }
                }
                match arg {
                    Some(path) if !path.is_empty() => Ok(BackendSpec::File {
                        path: path.into(),
                        direct,
                        read_only,
                    }),
                    _ => Err(ParseSpecError::MissingPath),
                }
            }
            _ => Err(ParseSpecError::UnknownKind(s.to_string())),
        }
    }
}

/// The inverse of `from_str`.
impl fmt::Display for BackendSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendSpec::Null { size } => write!(f, "null:{size}"),
            BackendSpec::File {
                path,
                direct,
                read_only,
            } => {
                f.write_str("file")?;
                if *direct {
                    f.write_str(",direct")?;
                }
                if *read_only {
                    f.write_str(",ro")?;
                }
                write!(f, ":{}", path.display())
            }
        }
    }
}

fn parse_size(s: &str) -> Result<u64, ParseSpecError> {
    let bad = || ParseSpecError::BadSize(s.to_string());
    let (digits, shift) = match s.as_bytes().last().map(u8::to_ascii_uppercase) {
        Some(b'K') => (&s[..s.len() - 1], 10),
        Some(b'M') => (&s[..s.len() - 1], 20),
        Some(b'G') => (&s[..s.len() - 1], 30),
        Some(b'T') => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let size = n.checked_mul(1 << shift).ok_or_else(bad)?;
    if size == 0 || size % 512 != 0 {
        return Err(bad());
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let null = |size| BackendSpec::Null { size };
        let file = |path: &str, direct, read_only| BackendSpec::File {
            path: path.into(),
            direct,
            read_only,
        };
        let cases = [
            ("null", null(DEFAULT_NULL_SIZE)),
            ("null:1G", null(1 << 30)),
            ("null:64m", null(64 << 20)),
            ("null:4096", null(4096)),
            ("null:2T", null(2 << 40)),
            ("file:/tmp/disk.img", file("/tmp/disk.img", false, false)),
            (
                "file,direct:/dev/nvme0n1",
                file("/dev/nvme0n1", true, false),
            ),
            ("file,ro,direct:a:b,c", file("a:b,c", true, true)),
            ("file,ro:rel/path", file("rel/path", false, true)),
        ];
        for (s, want) in cases {
            assert_eq!(s.parse::<BackendSpec>(), Ok(want), "{s}");
        }
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let cases = [
            ("", ParseSpecError::UnknownKind(String::new())),
            ("nul", ParseSpecError::UnknownKind("nul".into())),
            ("disk:/x", ParseSpecError::UnknownKind("disk:/x".into())),
            ("null:", ParseSpecError::BadSize(String::new())),
            ("null:1X", ParseSpecError::BadSize("1X".into())),
            ("null:G", ParseSpecError::BadSize("G".into())),
            ("null:100", ParseSpecError::BadSize("100".into())),
            ("null:0", ParseSpecError::BadSize("0".into())),
            ("null:-1G", ParseSpecError::BadSize("-1G".into())),
            (
                "null:99999999999T",
                ParseSpecError::BadSize("99999999999T".into()),
            ),
            ("null,ro:1G", ParseSpecError::NoOptions("null,ro".into())),
            ("file", ParseSpecError::MissingPath),
            ("file:", ParseSpecError::MissingPath),
            ("file,sync:/x", ParseSpecError::UnknownOption("sync".into())),
        ];
        for (s, want) in cases {
            assert_eq!(s.parse::<BackendSpec>(), Err(want), "{s:?}");
        }
        let msg = "null:1X".parse::<BackendSpec>().unwrap_err().to_string();
        assert!(msg.contains("\"1X\"") && msg.contains("1G"), "{msg}");
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "null:1073741824",
            "file:/a",
            "file,direct,ro:/dev/sdb",
            "file,ro:x",
        ] {
            assert_eq!(s.parse::<BackendSpec>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn open_builds_the_named_engine() {
        let e = BackendSpec::Null { size: 1 << 20 }.open(16).unwrap();
        assert_eq!(
            (e.capacity(), e.block_size(), e.queue_depth()),
            (1 << 20, 512, 16)
        );
        assert!(!e.read_only());

        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(8192).unwrap();
        let spec: BackendSpec = format!("file,ro:{}", f.path().display()).parse().unwrap();
        let e = spec.open(8).unwrap();
        assert_eq!((e.capacity(), e.queue_depth()), (8192, 8));
        assert!(e.read_only());
        assert!(e.completion_fd().is_some());

        let missing = BackendSpec::File {
            path: "/nonexistent/iopath-disk".into(),
            direct: false,
            read_only: false,
        };
        let err = missing.open(8).err().unwrap();
        assert!(matches!(err, uring::Error::Open { .. }), "{err:?}");
        assert_eq!(err.to_string(), "cannot open /nonexistent/iopath-disk");
    }
}
