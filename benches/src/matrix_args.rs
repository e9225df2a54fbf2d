//! The flags every matrix subcommand (`block`, `net`) shares: how long and how often each run
//! goes, the VMs' RAM, and where the result goes.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use vmm::units::{parse_duration, parse_size};

#[derive(Args, Debug, Default)]
pub struct MatrixArgs {
    /// Run time of each run [default: 3s].
    #[arg(long, value_parser = parse_duration)]
    pub runtime: Option<Duration>,
    /// An unmeasured run before each measured one [default: none].
    #[arg(long, value_parser = parse_duration)]
    pub warmup: Option<Duration>,
    /// Runs of each path in each cell; the table shows medians [default: 3].
    #[arg(long)]
    pub repeat: Option<u32>,
    /// Guest RAM of each VM [default: 256M].
    #[arg(long, value_parser = parse_size)]
    pub memory: Option<u64>,
    /// Print the result file's JSON to stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// No progress on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    /// Where result files go.
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
}

/// The options [`MatrixArgs`] set, wherever a subcommand keeps them.
pub struct Timing<'a> {
    pub runtime: &'a mut Duration,
    pub warmup: &'a mut Duration,
    pub repeat: &'a mut u32,
    pub memory: &'a mut u64,
}

impl MatrixArgs {
    /// Overrides what the flags given set.
    pub fn apply(&self, t: Timing) {
        if let Some(v) = self.runtime {
            *t.runtime = v;
        }
        if let Some(v) = self.warmup {
            *t.warmup = v;
        }
        if let Some(v) = self.repeat {
            *t.repeat = v;
        }
        if let Some(v) = self.memory {
            *t.memory = v;
        }
    }

    /// Whether progress lines would get in the way.
    pub fn quiet(&self) -> bool {
        self.quiet || self.json
    }
}
