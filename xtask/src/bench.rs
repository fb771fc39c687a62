//! `cargo xtask bench`: runs the benchmark harness in `tests/benches/` (it needs the BPF
//! objects, which only exist after set-up, so it lives beside the tests, not in xtask): the
//! program under BPF_PROG_TEST_RUN beside the floors, per scheduler with a full flow table,
//! frames per second end to end on a veth pair, and the control plane applying 10,000 services;
//! then VRRP failover times next to keepalived's (`tests/benches/vrrp.rs`), then the health
//! checkers with 10,000 real servers (`tests/benches/health.rs`).

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
    /// New flows per run, one BPF_PROG_TEST_RUN call each.
    #[arg(long, default_value_t = 20_000)]
    new_flows: u16,
    /// Flow-table entries before the per-scheduler figures.
    #[arg(long, default_value_t = 1_000_000)]
    fill: u32,
    /// The flow table's size, as `lvs-agent run --flows`.
    #[arg(long, default_value_t = 1 << 20)]
    flows: u32,
    /// Frames per end-to-end run on the veth pair (0 skips the end-to-end figures).
    #[arg(long, default_value_t = 5_000_000)]
    e2e_frames: u32,
    /// Skip the control-plane figures (10,000 services x 10 real servers applied).
    #[arg(long, conflicts_with = "control_only")]
    no_control: bool,
    /// Only the control-plane figures.
    #[arg(long)]
    control_only: bool,
    /// Skip the VRRP failover figures.
    #[arg(long, conflicts_with = "vrrp_only")]
    no_vrrp: bool,
    /// Only the VRRP failover figures (lvs-agent and keepalived, `--runs` failovers each).
    #[arg(long)]
    vrrp_only: bool,
    /// Real servers in the health-check figures (0 skips them).
    #[arg(long, default_value_t = 10_000)]
    health_servers: u32,
    /// Seconds the health-check figures measure.
    #[arg(long, default_value_t = 20)]
    health_seconds: u32,
    /// Only the health-check figures.
    #[arg(long)]
    health_only: bool,
}

pub fn run(a: &Args) -> Result<()> {
    // The agent as shipped (optimised): the control-plane and failover figures time it.
    let built = crate::test::build_agent(true)?;
    let only = a.control_only || a.vrrp_only || a.health_only;
    if !only || a.control_only {
        xdp(a, &built)?;
    }
    if (!only && !a.no_vrrp) || a.vrrp_only {
        vrrp(a, &built)?;
    }
    if (!only && a.health_servers > 0) || a.health_only {
        health(a)?;
    }
    Ok(())
}

fn health(a: &Args) -> Result<()> {
    let mut c = cargo(&["bench", "-p", "lvs-tests", "--bench", "health", "--"]);
    c.args(["--servers", &a.health_servers.to_string(), "--seconds", &a.health_seconds.to_string()]);
    eprintln!("xtask: {c:?}");
    if !c.status()?.success() {
        bail!("the health-check benchmark failed");
    }
    Ok(())
}

fn vrrp(a: &Args, built: &crate::test::Built) -> Result<()> {
    let mut c = cargo(&["bench", "-p", "lvs-tests", "--bench", "vrrp", "--"]);
    c.args(["--runs", &a.runs.to_string()]).env("LVS_AGENT_BIN", &built.agent);
    eprintln!("xtask: {c:?}");
    if !c.status()?.success() {
        bail!("the VRRP failover benchmark failed (or missed a target)");
    }
    Ok(())
}

fn xdp(a: &Args, built: &crate::test::Built) -> Result<()> {
    let mut c = cargo(&["bench", "-p", "lvs-tests", "--bench", "xdp", "--"]);
    c.env("LVS_AGENT_BIN", &built.agent);
    c.args(["--repeat", &a.repeat.to_string(), "--runs", &a.runs.to_string()]);
    c.args(["--new-flows", &a.new_flows.to_string(), "--fill", &a.fill.to_string()]);
    c.args(["--flows", &a.flows.to_string()]);
    c.args(["--e2e-frames", &a.e2e_frames.to_string()]);
    if a.no_control {
        c.arg("--no-control");
    }
    if a.control_only {
        c.arg("--control-only");
    }
    eprintln!("xtask: {c:?}");
    if !c.status()?.success() {
        bail!("the benchmark failed");
    }
    Ok(())
}
