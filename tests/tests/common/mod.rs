//! Shared by the BPF_PROG_TEST_RUN test files.

use aya::{TestRun as _, programs::TestRunOptions};
use lvs_agent::dataplane::Dataplane;

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
