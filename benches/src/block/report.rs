//! The terminal table of a block report.

use super::{BlockReport, IoPath, Row, Scenario};
use crate::table::Table;

impl BlockReport {
    /// One table per scenario, with the host under the first.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{} s runs x {}{} (medians) on {} ({})\n",
            self.runtime_s,
            self.repeat,
            if self.warmup_s > 0.0 {
                format!(", {} s warm-up each", self.warmup_s)
            } else {
                String::new()
            },
            self.host.kind,
            self.host.cpu_model
        );
        if self
            .scenarios
            .iter()
            .flat_map(|s| &s.rows)
            .any(|r| r.path == IoPath::Virtio)
        {
            out.push_str(&format!(
                "virtio: our vhost-user-blk daemon, polling {} us after work\n",
                self.vhost_poll_us
            ));
        }
        for s in &self.scenarios {
            out.push('\n');
            out.push_str(&s.table());
        }
        if self
            .scenarios
            .iter()
            .flat_map(|s| &s.rows)
            .any(|r| r.differs_from_native == Some(false))
        {
            out.push_str("~: within the run-to-run spread of native (not significant)\n");
        }
        out
    }
}

impl Scenario {
    pub fn table(&self) -> String {
        let mut t = Table::new([
            "path",
            "backend",
            "qd",
            "IOPS",
            "+-%",
            "MB/s",
            "p50 us",
            "p99 us",
            "p99.9 us",
            "exits/IO",
            "CPU us/IO",
            "% native",
            "errors",
        ]);
        let opt =
            |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |v| format!("{v:.prec$}"));
        for r in &self.rows {
            t.row([
                r.path.to_string(),
                r.backend.clone(),
                r.queue_depth.to_string(),
                format!("{:.0}", r.iops),
                format!("{:.1}", r.spread_percent()),
                format!("{:.1}", r.mb_per_s),
                format!("{:.1}", r.p50_us),
                format!("{:.1}", r.p99_us),
                format!("{:.1}", r.p999_us),
                opt(r.exits_per_io, 2),
                opt(r.cpu_us_per_io, 1),
                percent_cell(r),
                r.errors.to_string(),
            ]);
        }
        format!("{} {} B\n{}", self.workload, self.block_size, t.render())
    }
}

fn percent_cell(r: &Row) -> String {
    match (r.percent_of_native, r.differs_from_native) {
        (None, _) => "-".into(),
        (Some(p), Some(false)) => format!("~{p:.1}"),
        (Some(p), _) => format!("{p:.1}"),
    }
}
