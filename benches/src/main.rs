//! iopath-bench: the side-by-side report of I/O virtualization paths.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use iopath_bench::block::args::BlockArgs;
use iopath_bench::block::{self, BlockOptions};
use iopath_bench::daemon_cmd::{DaemonArgs, VfioUserNvmeArgs, VhostUserNetArgs};
use iopath_bench::exits::{self, ExitsOptions};
use iopath_bench::net::args::NetArgs;
use iopath_bench::net::{self, NetOptions};
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
    Block(Box<BlockArgs>),
    /// Frames on each network path (emulated e1000, virtio-net over vhost-user, native io_uring
    /// on the host), side by side with native: tx rate and round trips.
    Net(Box<NetArgs>),
    /// Cost of one VM exit of each kind (PIO, MMIO, ioeventfd, CPUID, page touch) in a fresh VM.
    Exits(ExitsArgs),
    /// Redraws tables and plots from stored results: a result file, or the newest of each kind
    /// in a directory.
    Report(ReportArgs),
    /// Our vhost-user-blk daemon, as the virtio path starts it.
    #[command(hide = true)]
    VhostUserBlkDaemon(DaemonArgs),
    /// Our vhost-user-net daemon, as the net bench's virtio path starts it.
    #[command(hide = true)]
    VhostUserNetDaemon(VhostUserNetArgs),
    /// Our vfio-user NVMe server, as the passthrough path starts it.
    #[command(hide = true)]
    VfioUserNvmeDaemon(VfioUserNvmeArgs),
}

#[derive(Args)]
struct ReportArgs {
    #[arg(default_value = "results")]
    path: PathBuf,
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
    Net(#[from] net::Error),
    #[error(transparent)]
    Report(#[from] report::Error),
    #[error("vhost-user-blk daemon")]
    Daemon(#[from] backends::vhost_user_blk::daemon::Error),
    #[error("vhost-user-net daemon")]
    NetDaemon(#[from] backends::vhost_user_net::daemon::Error),
    #[error("vfio-user NVMe server")]
    VfioDaemon(#[from] backends::vfio_user_nvme::Error),
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
                Error::Net(inner) => inner.console_tail(),
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
            let resolved = a.resolve().map_err(block::Error::from)?;
            for why in &resolved.skipped_peers {
                eprintln!("iopath-bench: skipped peer {why}");
            }
            let report = run_block(&resolved.options, a.run.quiet())?;
            let file = ResultFile::new("block", report);
            if a.run.json {
                return out(&file.to_json()?);
            }
            let path = file.write_to(&a.run.results)?;
            out(&file.payload.table())?;
            out(&format!("results: {}", path.display()))?;
            show_plots(iopath_bench::plot::write_all(
                &file.payload,
                &path.with_extension(""),
            ))
        }
        Command::Net(a) => {
            let resolved = a.resolve().map_err(net::Error::from)?;
            for why in &resolved.skipped_peers {
                eprintln!("iopath-bench: skipped peer {why}");
            }
            let report = run_net(&resolved.options, a.run.quiet())?;
            let file = ResultFile::new("net", report);
            if a.run.json {
                return out(&file.to_json()?);
            }
            let path = file.write_to(&a.run.results)?;
            out(&file.payload.table())?;
            out(&format!("results: {}", path.display()))?;
            show_plots(file.payload.plots(&path.with_extension("")))
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
        Command::VhostUserBlkDaemon(a) => Ok(a.run()?),
        Command::VhostUserNetDaemon(a) => Ok(a.run()?),
        Command::VfioUserNvmeDaemon(a) => Ok(a.run()?),
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

/// Runs the matrix with a progress bar on a terminal, or a line per run otherwise.
fn run_block(opts: &BlockOptions, quiet: bool) -> Result<block::BlockReport, Error> {
    Ok(with_progress(quiet, |p| block::run(opts, p))?)
}

fn run_net(opts: &NetOptions, quiet: bool) -> Result<net::NetReport, Error> {
    Ok(with_progress(quiet, |p| net::run(opts, p))?)
}

/// Runs a matrix, showing its progress: a bar on a terminal, a line per run otherwise.
fn with_progress<T>(quiet: bool, run: impl FnOnce(&mut dyn FnMut(block::Progress)) -> T) -> T {
    let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} runs, eta {eta} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let result = run(&mut |p: block::Progress| match &bar {
        Some(bar) => {
            bar.set_length(p.total as u64);
            bar.set_position(p.done as u64);
            bar.set_message(p.line.to_string());
        }
        None if !quiet => eprintln!("[{}/{}] {}", p.done, p.total, p.line),
        None => {}
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result
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
