//! Disk and backend specifications as users type them (`iopath-vmm --disk`, the daemons'
//! `--backend`): any string must parse or be refused, never panic. A parsed `BackendSpec`
//! prints back to a string that parses to the same spec (its `Display` is the inverse of
//! `from_str`).
#![no_main]

use backends::engine::BackendSpec;
use libfuzzer_sys::fuzz_target;
use vmm::disk::{DiskBackend, DiskConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = s.parse::<BackendSpec>() {
        let printed = spec.to_string();
        assert_eq!(
            printed.parse::<BackendSpec>().as_ref(),
            Ok(&spec),
            "{printed:?}"
        );
    }
    match s.parse::<DiskConfig>() {
        Ok(disk) => {
            let _ = (disk.backend.to_string(), disk.iface.to_string());
            if let DiskBackend::VhostUser(c) = &disk.backend {
                assert!(c.queues > 0 && c.queue_size > 0);
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
