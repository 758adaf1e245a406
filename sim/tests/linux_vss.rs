//! Linux VSS worlds stay in the random runs and keep meeting what they are for: a
//! freeze that outlives its freezer, thawed by each guardian (the reaper, ExecStopPost,
//! the restarted daemon), and device resets. A handful of seeds known to reach each.

use hvguest_sim::fs::SimFs;
use hvguest_sim::world::{LinuxVssStats, SimOptions, World};

#[test]
fn linux_vss_worlds_reach_every_guardian() {
    let mut total = LinuxVssStats::default();
    for seed in [7u64, 56, 62, 87, 98] {
        let opts = SimOptions {
            seed,
            requests: 1000,
            faults: true,
            keep_trace: false,
        };
        match World::new(opts, SimFs::new()).run_random() {
            Ok(st) => total.add(&st.linux_vss),
            Err(f) => panic!("seed {seed}: {} at {}", f.violation, f.at),
        }
    }
    assert_eq!(
        total.worlds, 5,
        "every one of these seeds is a Linux VSS world"
    );
    assert!(total.freezes_ok > 0, "{total:?}");
    assert!(
        total.freezer_deaths > 0 && total.reaper_thaws > 0,
        "{total:?}"
    );
    assert!(total.daemon_deaths > 0, "{total:?}");
    assert!(
        total.stop_post_thaws > 0 && total.startup_thaws > 0,
        "{total:?}"
    );
    assert!(total.device_resets > 0, "{total:?}");
}
