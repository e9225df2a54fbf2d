//! The terminal table and the plots of a net report.

use std::path::{Path, PathBuf};

use iopath_mailbox::net::NetWorkload;
use plotters::style::RGBColor;

use super::{NetPath, NetReport, Row, Scenario};
use crate::block::sample::Sample;
use crate::block::IoPath;
use crate::plot::{self, Chart, Figure, PlotRow};
use crate::table::Table;

impl NetReport {
    /// One table per scenario, with the host above the first.
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
        let rows = || self.scenarios.iter().flat_map(|s| &s.rows);
        if rows().any(|r| r.path == NetPath::Virtio) {
            out.push_str(&format!(
                "virtio: our vhost-user-net daemon, polling {} us after work\n",
                self.vhost_poll_us
            ));
        }
        for s in &self.scenarios {
            out.push('\n');
            out.push_str(&s.table());
        }
        let rows = || self.scenarios.iter().flat_map(|s| &s.rows);
        if rows().any(|r| r.differs_from_native == Some(false)) {
            out.push_str("~: within the run-to-run spread of native (not significant)\n");
        }
        out.push_str(
            "tx: frames sent per second; rr: round trips per second with depth frames in flight\n",
        );
        out
    }

    /// Draws every scenario's plots next to `stem`: pps (and host CPU) for tx, pps, latency
    /// CDF and host CPU for rr.
    pub fn plots(&self, stem: &Path) -> Result<Vec<PathBuf>, plot::Error> {
        let mut out = Vec::new();
        for s in &self.scenarios {
            let name = format!("{}-{}", s.workload, s.frame_bytes);
            let charts: &[Chart] = if s.workload == NetWorkload::RoundTrip.name() {
                &[Chart::Rate("pps"), Chart::Latency, Chart::Cpu]
            } else {
                &[Chart::Rate("pps"), Chart::Cpu]
            };
            let fig = Figure {
                title: format!("{} {} B", s.workload, s.frame_bytes),
                rate: "pps",
                op: "frame",
                depth: "depth",
                rows: &s.rows,
            };
            out.extend(plot::write_figure(&fig, stem, &name, charts)?);
        }
        Ok(out)
    }
}

impl Scenario {
    pub fn table(&self) -> String {
        let mut t = Table::new([
            "path",
            "far",
            "depth",
            "pps",
            "+-%",
            "Mbit/s",
            "p50 us",
            "p99 us",
            "p99.9 us",
            "exits/frame",
            "CPU us/frame",
            "% native",
            "lost",
            "bad",
        ]);
        let opt =
            |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |v| format!("{v:.prec$}"));
        let rr = self.workload == NetWorkload::RoundTrip.name();
        let us = |v: f64| if rr { format!("{v:.1}") } else { "-".into() };
        for r in &self.rows {
            t.row([
                r.path.to_string(),
                r.far.clone(),
                r.depth.to_string(),
                format!("{:.0}", r.pps),
                format!("{:.1}", r.spread_percent()),
                format!("{:.1}", r.mbit_per_s),
                us(r.p50_us),
                us(r.p99_us),
                us(r.p999_us),
                opt(r.exits_per_frame, 2),
                opt(r.cpu_us_per_frame, 2),
                match (r.percent_of_native, r.differs_from_native) {
                    (None, _) => "-".into(),
                    (Some(p), Some(false)) => format!("~{p:.1}"),
                    (Some(p), _) => format!("{p:.1}"),
                },
                r.lost.to_string(),
                r.bad.to_string(),
            ]);
        }
        format!("{} {} B\n{}", self.workload, self.frame_bytes, t.render())
    }
}

impl PlotRow for Row {
    fn series(&self) -> &'static str {
        self.path.name()
    }
    fn color(&self) -> RGBColor {
        // The block palette: emulated, virtio and native alike; peers in the peers' shades.
        plot::color(match self.path {
            NetPath::Emulated => IoPath::Emulated,
            NetPath::Virtio => IoPath::Virtio,
            NetPath::VirtioTestpmd => IoPath::VirtioQsd,
            NetPath::Native => IoPath::Native,
            NetPath::TestpmdFrontend => IoPath::Fio,
        })
    }
    fn panel(&self) -> String {
        self.far.clone()
    }
    fn depth(&self) -> u16 {
        self.depth
    }
    fn rate(&self) -> f64 {
        self.pps
    }
    fn rate_max(&self) -> f64 {
        self.pps_max
    }
    fn median_sample(&self) -> Option<&Sample> {
        Row::median_sample(self).map(|s| &s.sample)
    }
}

#[cfg(test)]
mod tests {
    use super::super::summary::tests::row;
    use super::*;
    use crate::host::HostInfo;

    fn report() -> NetReport {
        NetReport {
            host: HostInfo::probe(),
            runtime_s: 1.0,
            warmup_s: 0.0,
            repeat: 2,
            vhost_poll_us: 50,
            scenarios: vec![
                Scenario {
                    workload: "rr".into(),
                    frame_bytes: 64,
                    rows: vec![
                        row(NetPath::Virtio, &[900.0, 1000.0]),
                        row(NetPath::Native, &[1000.0, 1010.0]),
                    ],
                },
                Scenario {
                    workload: "tx".into(),
                    frame_bytes: 1514,
                    rows: vec![row(NetPath::Native, &[5000.0])],
                },
            ],
        }
    }

    #[test]
    fn the_table_shows_each_path_against_native() {
        let mut r = report();
        for s in &mut r.scenarios {
            super::super::summary::compare_with_native(&mut s.rows);
        }
        let text = r.table();
        assert!(text.contains("rr 64 B"), "{text}");
        assert!(text.contains("polling 50 us"), "{text}");
        assert!(text.contains("tx 1514 B"), "{text}");
        let virtio = text.lines().find(|l| l.starts_with("virtio ")).unwrap();
        assert!(virtio.contains("~94.5"), "{virtio}");
        let tx_native = text
            .lines()
            .rev()
            .find(|l| l.starts_with("native"))
            .unwrap();
        assert!(tx_native.contains(" - "), "no latency for tx: {tx_native}");
    }

    #[test]
    fn plots_are_drawn_per_scenario() {
        let dir = tempfile::tempdir().unwrap();
        let files = match report().plots(&dir.path().join("net-1")) {
            Err(plot::Error::NoFont(_)) => {
                eprintln!("skipped: no font for the plots (fonts-dejavu-core)");
                return;
            }
            other => other.unwrap(),
        };
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.contains(&"net-1-rr-64-latency.svg".to_string()),
            "{names:?}"
        );
        assert!(
            names.contains(&"net-1-tx-1514-pps.png".to_string()),
            "{names:?}"
        );
        assert!(!names.iter().any(|n| n.starts_with("net-1-tx-1514-latency")));
        assert_eq!(files.len(), 2 * (3 + 2));
        assert!(files.iter().all(|f| f.metadata().unwrap().len() > 0));
    }
}
