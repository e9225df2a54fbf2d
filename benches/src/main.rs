//! iopath-bench: the side-by-side report of I/O virtualization paths.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use iopath_bench::exits::{self, ExitsOptions};
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
    /// Cost of one VM exit of each kind (PIO, MMIO, ioeventfd, CPUID, page touch) in a fresh VM.
    Exits(ExitsArgs),
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
            if let Error::Exits(exits::Error::Run(inner)) = &e {
                if let Some(tail) = inner.console_tail().filter(|t| !t.is_empty()) {
                    eprintln!("iopath-bench: last guest console lines:\n{tail}");
                }
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
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

/// Prints to stdout; a closed pipe is an error, not a panic.
fn out(text: &str) -> Result<(), Error> {
    use std::io::Write;
    writeln!(std::io::stdout().lock(), "{}", text.trim_end()).map_err(Error::Stdout)
}
