//! Shared by the BPF_PROG_TEST_RUN test files.

use std::net::IpAddr;

use aya::{TestRun as _, programs::TestRunOptions};
use lvs_agent::{
    dataplane::{Dataplane, LoadOptions},
    desired::Plan,
    reconcile::Reconciler,
};

/// Loads the program with `plan` installed through the agent's reconciler, on CPU 0 (the
/// program's per-CPU state must be the same from run to run). None, loudly, when the test
/// cannot run here (see `lvs_tests::privilege::can_run`).
///
/// 65,536 flows: far above what any test creates, so no flow is evicted during a run (an
/// eviction would legitimately reschedule a flow).
pub fn load(
    test: &str,
    director_mac: [u8; 6],
    plan: &Plan,
    mac_of: &dyn Fn(IpAddr) -> Option<[u8; 6]>,
) -> Option<(Dataplane, Reconciler)> {
    if !lvs_tests::privilege::can_run(test) {
        return None;
    }
    lvs_tests::process::pin_to_cpu(0);
    let mut dp = Dataplane::load(LoadOptions { flows: 65536, pin: None }).expect("loading the XDP program");
    let mut rec = Reconciler::new(director_mac);
    rec.apply(plan, mac_of, dp.maps()).expect("installing services");
    Some((dp, rec))
}

/// Runs the program once on `frame`: the action and the output frame.
pub fn run_once(dp: &mut Dataplane, frame: &[u8]) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; frame.len() + 256];
    let r = dp
        .program()
        .test_run(TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ..TestRunOptions::default() })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(r.data_size_out as usize);
    (r.return_value, out)
}
