//! fio on the host as a second native reference (`--peer fio`): same disk, workload, block size
//! and depth, fio's own io_uring (or null) engine. Its numbers come from fio's JSON output.

use std::path::Path;
use std::process::Command;

use backends::engine::BackendSpec;
use iopath_mailbox::Workload;
use serde::Deserialize;

use super::sample::{Counts, Sample};
use super::work::BlockWork;

/// Where fio is looked for.
pub const FIO: &str = "fio";

#[derive(Clone, Debug)]
pub struct FioJob {
    pub backend: BackendSpec,
    /// fio runs for `duration` (its `ops` is not used).
    pub work: BlockWork,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("fio is not installed (apt install fio)")]
    Missing,
    #[error("running fio")]
    Spawn(#[source] std::io::Error),
    #[error("fio failed: {0}")]
    Failed(String),
    #[error("fio's JSON output did not parse")]
    Parse(#[source] serde_json::Error),
    #[error("fio reported job error {0}")]
    Job(i64),
    #[error("the fio peer does not run the {0} workload")]
    Workload(&'static str),
}

#[derive(Deserialize)]
struct Output {
    jobs: Vec<Job>,
}

#[derive(Deserialize)]
struct Job {
    error: i64,
    /// Milliseconds.
    job_runtime: u64,
    usr_cpu: f64,
    sys_cpu: f64,
    read: Direction,
    write: Direction,
}

#[derive(Deserialize)]
struct Direction {
    io_bytes: u64,
    total_ios: u64,
    lat_ns: Latency,
}

#[derive(Deserialize)]
struct Latency {
    max: u64,
    #[serde(default)]
    percentile: std::collections::BTreeMap<String, u64>,
}

/// The fio command line for `job`.
pub fn args(job: &FioJob) -> Result<Vec<String>, Error> {
    let rw = match job.work.workload {
        Workload::RandRead => "randread",
        Workload::RandWrite => "randwrite",
        Workload::Read => "read",
        Workload::Write => "write",
        Workload::Verify => return Err(Error::Workload("verify")),
    };
    let mut a = vec![
        "--name=iopath".to_string(),
        format!("--rw={rw}"),
        format!("--bs={}", job.work.block_size),
        format!("--iodepth={}", job.work.queue_depth),
        format!("--runtime={}ms", job.work.duration.as_millis().max(1)),
        "--time_based".into(),
        "--randrepeat=0".into(),
        format!("--randseed={}", job.work.seed),
        "--lat_percentiles=1".into(),
        // Our runners do not drop the page cache before a run; neither may fio.
        "--invalidate=0".into(),
        "--output-format=json".into(),
    ];
    match &job.backend {
        BackendSpec::Null { size } => {
            a.push("--ioengine=null".into());
            a.push(format!("--size={}", region(job.work.region_bytes, *size)));
        }
        BackendSpec::File {
            path,
            direct,
            read_only,
        } => {
            a.push("--ioengine=io_uring".into());
            a.push(format!("--filename={}", path.display()));
            a.push(format!("--direct={}", u8::from(*direct)));
            if *read_only {
                a.push("--readonly".into());
            }
            let size = std::fs::metadata(path).map_or(0, |m| m.len());
            if job.work.region_bytes != 0 || size != 0 {
                a.push(format!("--size={}", region(job.work.region_bytes, size)));
            }
        }
    }
    Ok(a)
}

fn region(asked: u64, size: u64) -> u64 {
    if asked == 0 {
        size
    } else {
        asked
    }
}

pub fn run(job: &FioJob) -> Result<Sample, Error> {
    let args = args(job)?;
    let out = match Command::new(FIO).args(&args).output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::Missing),
        Err(e) => return Err(Error::Spawn(e)),
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(Error::Failed(err.lines().last().unwrap_or("").to_string()));
    }
    parse(&out.stdout, job.work.workload)
}

/// The sample in fio's JSON output (`--output-format=json --lat_percentiles=1`).
pub fn parse(json: &[u8], workload: Workload) -> Result<Sample, Error> {
    // fio may print notes before the JSON document.
    let start = json.iter().position(|&b| b == b'{').unwrap_or(0);
    let out: Output = serde_json::from_slice(&json[start..]).map_err(Error::Parse)?;
    let Some(job) = out.jobs.into_iter().next() else {
        return Err(Error::Failed("no job in fio's output".into()));
    };
    if job.error != 0 {
        return Err(Error::Job(job.error));
    }
    let dir = match workload {
        Workload::RandWrite | Workload::Write => job.write,
        _ => job.read,
    };
    let elapsed_s = job.job_runtime as f64 / 1000.0;
    let counts = Counts {
        ops: dir.total_ios,
        bytes: dir.io_bytes,
        errors: 0,
        elapsed_s,
    };
    let points: Vec<(f64, f64)> = dir
        .lat_ns
        .percentile
        .iter()
        .filter_map(|(p, ns)| Some((p.parse::<f64>().ok()? / 100.0, *ns as f64 / 1000.0)))
        .chain(std::iter::once((1.0, dir.lat_ns.max as f64 / 1000.0)))
        .collect();
    let cpu_s = (job.usr_cpu + job.sys_cpu) / 100.0 * elapsed_s;
    Ok(Sample::from_cdf(counts, points, None, cpu_s))
}

/// Whether fio can be run here.
pub fn available() -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| Path::new(&d).join(FIO).is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const OUTPUT: &str = r#"note: both iodepth >= 1 and synchronous I/O engine are selected
{"jobs": [{"error": 0, "job_runtime": 2000, "usr_cpu": 30.0, "sys_cpu": 20.0,
  "read": {"io_bytes": 8192000, "total_ios": 2000,
           "lat_ns": {"max": 90000, "percentile": {"50.000000": 10000, "99.000000": 40000,
                                                   "99.900000": 60000, "90.000000": 20000}}},
  "write": {"io_bytes": 0, "total_ios": 0, "lat_ns": {"max": 0}}}]}"#;

    #[test]
    fn parses_counts_quantiles_and_cpu() {
        let s = parse(OUTPUT.as_bytes(), Workload::RandRead).unwrap();
        assert_eq!((s.ops, s.bytes, s.errors), (2000, 8192000, 0));
        assert_eq!(s.iops(), 1000.0);
        assert_eq!(
            (s.p50_us, s.p90_us, s.p99_us, s.p999_us),
            (10.0, 20.0, 40.0, 60.0)
        );
        assert_eq!(s.max_us, 90.0);
        assert_eq!(s.cpu_s, 1.0);
        assert!(s.cdf.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn job_errors_and_garbage_are_errors() {
        let bad = OUTPUT.replace("\"error\": 0", "\"error\": 5");
        assert!(matches!(
            parse(bad.as_bytes(), Workload::Read),
            Err(Error::Job(5))
        ));
        assert!(matches!(
            parse(b"fio: oops", Workload::Read),
            Err(Error::Parse(_))
        ));
    }

    #[test]
    fn command_line_follows_the_job() {
        let job = FioJob {
            backend: BackendSpec::Null { size: 1 << 30 },
            work: BlockWork {
                workload: Workload::RandWrite,
                block_size: 4096,
                queue_depth: 32,
                ops: 0,
                duration: Duration::from_secs(3),
                region_bytes: 0,
                seed: 7,
            },
        };
        let a = args(&job).unwrap();
        for want in [
            "--rw=randwrite",
            "--bs=4096",
            "--iodepth=32",
            "--ioengine=null",
        ] {
            assert!(a.iter().any(|x| x == want), "{want} in {a:?}");
        }
        assert!(a.iter().any(|x| x == "--size=1073741824"));
        let mut ro = job.clone();
        ro.backend = BackendSpec::File {
            path: "/nonexistent".into(),
            direct: true,
            read_only: true,
        };
        let a = args(&ro).unwrap();
        assert!(a.iter().any(|x| x == "--readonly") && a.iter().any(|x| x == "--direct=1"));
        ro.work.workload = Workload::Verify;
        assert!(matches!(args(&ro), Err(Error::Workload(_))));
    }
}
