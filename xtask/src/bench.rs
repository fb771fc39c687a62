//! `cargo xtask bench`: runs the benchmark harness in `tests/benches/` (it needs the BPF
//! objects, which only exist after set-up, so it lives beside the tests, not in xtask).

use anyhow::{Result, bail};

use crate::test::cargo;

#[derive(clap::Args)]
pub struct Args {
    /// Repetitions per BPF_PROG_TEST_RUN call (many, so the call's fixed cost vanishes).
    #[arg(long, default_value_t = 50_000_000)]
    repeat: u32,
    /// Runs per figure (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: u32,
}

pub fn run(a: &Args) -> Result<()> {
    let mut c = cargo(&["bench", "-p", "lvs-tests", "--bench", "xdp", "--"]);
    c.args(["--repeat", &a.repeat.to_string(), "--runs", &a.runs.to_string()]);
    eprintln!("xtask: {c:?}");
    if !c.status()?.success() {
        bail!("the benchmark failed");
    }
    Ok(())
}
