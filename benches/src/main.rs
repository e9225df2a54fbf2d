//! iopath-bench: the side-by-side report of I/O virtualization paths.

use std::path::PathBuf;
use std::process::ExitCode;

use backends::engine::BackendSpec;
use clap::{Args, Parser, Subcommand};
use iopath_bench::block::{self, BlockOptions, IoPath};
use iopath_bench::exits::{self, ExitsOptions};
use iopath_bench::report;
use iopath_bench::results::{self, ResultFile};
use vmm::units::{parse_duration, parse_size};

#[derive(Parser)]
#[command(
    name = "iopath-bench",
    version,
    about = "Benchmarks the emulated, virtio, passthrough and native I/O paths"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One block workload on each I/O path, side by side with native. Without --backend it
    /// runs on `null` and on a temporary file.
    Block(BlockArgs),
    /// Cost of one VM exit of each kind (PIO, MMIO, ioeventfd, CPUID, page touch) in a fresh VM.
    Exits(ExitsArgs),
    /// Redraws tables and plots from stored results: a result file, or the newest of each kind
    /// in a directory.
    Report(ReportArgs),
}

#[derive(Args)]
struct ReportArgs {
    #[arg(default_value = "results")]
    path: PathBuf,
}

#[derive(Args)]
struct BlockArgs {
    /// Paths to compare, comma separated: emulated, native.
    #[arg(long, value_delimiter = ',', default_value = "emulated,native")]
    paths: Vec<IoPath>,
    /// Peers to run beside our paths: fio (host, a second native reference). A peer whose
    /// binary is missing is reported and skipped.
    #[arg(long, value_delimiter = ',', value_parser = ["fio"])]
    peer: Vec<String>,
    /// randread, randwrite, read or write.
    #[arg(long, default_value = "randread", value_parser = block::parse_workload)]
    workload: iopath_mailbox::Workload,
    /// Bytes per I/O.
    #[arg(long, default_value = "4k", value_parser = parse_size)]
    bs: u64,
    /// Queue depths, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    qd: Vec<u16>,
    /// `null`, `null:SIZE` or `file[,direct][,ro]:PATH`; repeat for several. Default: null and
    /// a temporary file.
    #[arg(long)]
    backend: Vec<BackendSpec>,
    /// Run time of each run.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    runtime: std::time::Duration,
    /// Runs of each path; the table shows medians.
    #[arg(long, default_value_t = BlockOptions::default().repeat)]
    repeat: u32,
    /// Bytes of each disk to cover (default: all of it).
    #[arg(long, value_parser = parse_size)]
    region: Option<u64>,
    /// Guest RAM of each VM.
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    memory: u64,
    /// Size of the temporary file used without --backend.
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    temp_file_size: u64,
    /// Print the result file's JSON to stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// No progress lines on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Where result files go.
    #[arg(long, default_value = "results")]
    results: PathBuf,
}

#[derive(Args)]
struct ExitsArgs {
    #[arg(long, default_value_t = ExitsOptions::default().iterations)]
    iterations: u32,
    #[arg(long, default_value_t = ExitsOptions::default().repetitions)]
    repetitions: u32,
    /// MiB of random page touches (a power of two; 0 skips the page-touch rows).
    #[arg(long, default_value_t = ExitsOptions::default().touch_mib)]
    touch_mib: u32,
    /// Guest RAM.
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    memory: u64,
    /// Back guest RAM with 2 MiB hugetlbfs pages.
    #[arg(long)]
    hugepages: bool,
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    timeout: std::time::Duration,
    /// Print the result file's JSON to stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Also print VMM start-up time, RSS beyond guest RAM and exit counts.
    #[arg(long, short)]
    verbose: bool,
    /// Where result files go.
    #[arg(long, default_value = "results")]
    results: PathBuf,
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Exits(#[from] exits::Error),
    #[error(transparent)]
    Block(#[from] block::Error),
    #[error(transparent)]
    Report(#[from] report::Error),
    #[error("--bs {0} does not fit in 32 bits")]
    BlockSize(u64),
    #[error(transparent)]
    Results(#[from] results::Error),
    #[error("writing to stdout failed")]
    Stdout(#[source] std::io::Error),
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iopath-bench: error: {}", vmm::error_chain(&e));
            let tail = match &e {
                Error::Exits(exits::Error::Run(inner)) => inner.console_tail(),
                Error::Block(inner) => inner.console_tail(),
                _ => None,
            };
            if let Some(tail) = tail.filter(|t| !t.is_empty()) {
                eprintln!("iopath-bench: last guest console lines:\n{tail}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Block(a) => {
            let mut paths = a.paths;
            for peer in &a.peer {
                match peer.as_str() {
                    "fio" if !block::fio::available() => {
                        eprintln!("iopath-bench: skipped peer fio: not installed (apt install fio)")
                    }
                    "fio" if !paths.contains(&IoPath::Fio) => paths.push(IoPath::Fio),
                    _ => {}
                }
            }
            let opts = BlockOptions {
                paths,
                workload: a.workload,
                block_size: u32::try_from(a.bs).map_err(|_| Error::BlockSize(a.bs))?,
                queue_depths: a.qd,
                backends: a.backend,
                runtime: a.runtime,
                repeat: a.repeat,
                region_bytes: a.region.unwrap_or(0),
                memory: a.memory,
                temp_file_size: a.temp_file_size,
                ..BlockOptions::default()
            };
            let quiet = a.quiet || a.json;
            let report = block::run(&opts, |line| {
                if !quiet {
                    eprintln!("{line}");
                }
            })?;
            let file = ResultFile::new("block", report);
            if a.json {
                return out(&file.to_json()?);
            }
            let path = file.write_to(&a.results)?;
            out(&file.payload.table())?;
            out(&format!("results: {}", path.display()))?;
            show_plots(iopath_bench::plot::write_all(
                &file.payload,
                &path.with_extension(""),
            ))
        }
        Command::Report(a) => {
            let files = report::files(&a.path)?;
            let single = files.len() == 1;
            for path in files {
                match report::render(&path) {
                    Ok(r) => {
                        out(&format!("{}:\n{}", path.display(), r.text))?;
                        show_plots(r.plots)?;
                    }
                    // A directory may hold files of older versions: show the rest.
                    Err(e) if !single => {
                        eprintln!("iopath-bench: warning: skipped: {}", vmm::error_chain(&e));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(())
        }
        Command::Exits(a) => {
            let report = exits::run(&ExitsOptions {
                iterations: a.iterations,
                repetitions: a.repetitions,
                touch_mib: a.touch_mib,
                memory: a.memory,
                hugepages: a.hugepages,
                timeout: a.timeout,
            })?;
            let file = ResultFile::new("exits", report);
            if a.json {
                return out(&file.to_json()?);
            }
            let path = file.write_to(&a.results)?;
            out(&file.payload.table())?;
            if a.verbose {
                out(&file.payload.verbose())?;
            }
            out(&format!("results: {}", path.display()))
        }
    }
}

/// Lists the plots written; a plot that could not be drawn is a warning, not a failure: the
/// numbers are already out.
fn show_plots(plots: Result<Vec<PathBuf>, iopath_bench::plot::Error>) -> Result<(), Error> {
    match plots {
        Ok(files) if files.is_empty() => Ok(()),
        Ok(files) => {
            let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            out(&format!("plots: {}", names.join(" ")))
        }
        Err(e) => {
            eprintln!("iopath-bench: warning: no plots: {}", vmm::error_chain(&e));
            Ok(())
        }
    }
}

/// Prints to stdout; a closed pipe is an error, not a panic.
fn out(text: &str) -> Result<(), Error> {
    use std::io::Write;
    writeln!(std::io::stdout().lock(), "{}", text.trim_end()).map_err(Error::Stdout)
}
