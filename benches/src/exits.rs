//! `iopath-bench exits`: what one VM exit of each kind costs on this host.

use std::time::Duration;

use iopath_mailbox::{ExitKind, ExitsJob, Job, JobKind};
use serde::{Deserialize, Serialize};
use vmm::bench_vm::{self, BenchVmConfig};
use vmm::guest_image::BENCH_GUEST;
use vmm::memory::RamConfig;
use vmm::vcpu::ExitCounts;

use crate::host::HostInfo;
use crate::table::Table;

#[derive(Clone, Debug)]
pub struct ExitsOptions {
    pub iterations: u32,
    pub repetitions: u32,
    pub touch_mib: u32,
    pub memory: u64,
    pub hugepages: bool,
    pub timeout: Duration,
}

impl Default for ExitsOptions {
    fn default() -> Self {
        ExitsOptions {
            iterations: 2000,
            repetitions: 7,
            touch_mib: 64,
            memory: 256 << 20,
            hugepages: false,
            timeout: Duration::from_secs(300),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExitRow {
    pub kind: String,
    pub iterations: u64,
    pub min_ns: f64,
    pub median_ns: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExitsReport {
    pub host: HostInfo,
    pub tsc_khz: u64,
    pub hugepages: bool,
    pub rows: Vec<ExitRow>,
    /// From VM creation to the first instruction of the guest.
    pub startup_ms: f64,
    /// The process's resident memory beyond guest RAM, while the VM ran.
    pub rss_beyond_ram_kib: Option<u64>,
    pub vm_exits: ExitCounts,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the bench guest run failed")]
    Run(#[source] bench_vm::Error),
    #[error("KVM did not report the TSC frequency; cannot convert ticks to time")]
    NoTsc,
}

pub fn run(opts: &ExitsOptions) -> Result<ExitsReport, Error> {
    let job = Job {
        kind: JobKind::Exits as u32,
        seed: SEED,
        exits: ExitsJob {
            iterations: opts.iterations,
            repetitions: opts.repetitions,
            touch_mib: opts.touch_mib,
            _pad: 0,
        },
        ..Job::default()
    };
    let run = bench_vm::run(BenchVmConfig {
        ram: RamConfig {
            size: opts.memory,
            hugepages: opts.hugepages,
        },
        image: BENCH_GUEST.to_vec(),
        job,
        timeout: opts.timeout,
        console: None,
        disks: Vec::new(),
        devices: Vec::new(),
        nets: Vec::new(),
    })
    .map_err(Error::Run)?;
    let tsc_khz = run.mailbox.job.tsc_khz;
    if tsc_khz == 0 {
        return Err(Error::NoTsc);
    }
    let ns = |ticks: f64| ticks * 1e6 / tsc_khz as f64;
    let rows = ExitKind::ALL
        .iter()
        .filter_map(|k| {
            let s = run.mailbox.exits.kinds[*k as usize];
            Some(ExitRow {
                kind: k.name().to_string(),
                iterations: s.iterations,
                min_ns: ns(s.min_per_iter()?),
                median_ns: ns(s.median_per_iter()?),
            })
        })
        .collect();
    Ok(ExitsReport {
        host: HostInfo::probe(),
        tsc_khz,
        hugepages: opts.hugepages,
        rows,
        startup_ms: run.startup.as_secs_f64() * 1e3,
        rss_beyond_ram_kib: run.rss_beyond_ram_kib,
        vm_exits: run.exits,
    })
}

/// A fixed seed: the page-touch order is the same on every run.
const SEED: u64 = 0x10_9a7e;

impl ExitsReport {
    pub fn table(&self) -> String {
        let mut t = Table::new(["exit kind", "median ns", "min ns", "iterations"]);
        for r in &self.rows {
            t.row([
                r.kind.clone(),
                format!("{:.0}", r.median_ns),
                format!("{:.0}", r.min_ns),
                r.iterations.to_string(),
            ]);
        }
        format!(
            "exit costs on {} ({}), TSC {} kHz{}\n{}",
            self.host.kind,
            self.host.cpu_model,
            self.tsc_khz,
            if self.hugepages { ", hugepages" } else { "" },
            t.render()
        )
    }

    pub fn verbose(&self) -> String {
        let rss = self.rss_beyond_ram_kib.map_or("unknown".to_string(), |k| {
            format!("{:.1} MiB", k as f64 / 1024.0)
        });
        format!(
            "VMM start to guest entry: {:.2} ms (goal < 10 ms)\nVMM RSS beyond guest RAM: {rss} (goal < 8 MiB)\nexits to userspace: {} PIO out, {} PIO in, {} MMIO read, {} MMIO write\n",
            self.startup_ms,
            self.vm_exits.pio_out,
            self.vm_exits.pio_in,
            self.vm_exits.mmio_read,
            self.vm_exits.mmio_write
        )
    }
}
