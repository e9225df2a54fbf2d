//! From what a run counted (the guest's [`NetResults`], or the native runner's, in the same
//! layout) to a [`NetSample`].

use iopath_mailbox::net::{NetResults, NetWorkload};

use super::NetSample;
use crate::block::sample::{Counts, Sample};

impl NetSample {
    /// `ticks_per_us` is the unit of the result's ticks (the guest's TSC, or 1000 for
    /// nanoseconds). The rate counts frames sent for tx and round trips for rr.
    pub fn from_results(
        res: &NetResults,
        workload: NetWorkload,
        ticks_per_us: f64,
        device_exits: Option<u64>,
        cpu_by_process: Vec<(String, f64)>,
    ) -> NetSample {
        let counts = Counts {
            ops: match workload {
                NetWorkload::Tx => res.sent,
                NetWorkload::RoundTrip => res.received,
            },
            bytes: res.bytes,
            errors: res.bad + res.lost,
            elapsed_s: res.elapsed_ticks as f64 / (ticks_per_us.max(1e-9) * 1e6),
        };
        let cpu_s = cpu_by_process.iter().map(|p| p.1).sum();
        let mut sample = Sample::new(counts, &res.latency, ticks_per_us, device_exits, cpu_s);
        sample.cpu_by_process = cpu_by_process;
        NetSample {
            sample,
            sent: res.sent,
            received: res.received,
            bad: res.bad,
            lost: res.lost,
            foreign: res.foreign,
            far_received: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use iopath_mailbox::histogram::Histogram;

    use super::*;

    #[test]
    fn rates_count_sends_for_tx_and_round_trips_for_rr() {
        let mut latency = Histogram::new();
        latency.record(20_000);
        let res = NetResults {
            sent: 1000,
            received: 900,
            bad: 2,
            lost: 98,
            bytes: 64_000,
            elapsed_ticks: 500_000_000, // 0.5 s at 1000 ticks per us
            latency,
            ..NetResults::default()
        };
        let tx = NetSample::from_results(&res, NetWorkload::Tx, 1000.0, Some(10), vec![]);
        assert_eq!(tx.pps(), 2000.0);
        assert_eq!(tx.sample.errors, 100);
        let rr = NetSample::from_results(
            &res,
            NetWorkload::RoundTrip,
            1000.0,
            None,
            vec![("vmm".into(), 0.25)],
        );
        assert_eq!(rr.pps(), 1800.0);
        assert_eq!(rr.sample.cpu_s, 0.25);
        assert!(rr.sample.p50_us > 18.0 && rr.sample.p50_us <= 20.0);
        assert_eq!((rr.sent, rr.received, rr.lost), (1000, 900, 98));
    }
}
