//! `cargo xtask test`: every tier. Host unit tests run in parallel; the BPF_PROG_TEST_RUN and
//! namespace tests (crate `lvs-tests`) run one at a time, as they share kernel state.

use std::process::Command;

use anyhow::{Result, bail};

use crate::setup::{path_with_tools, workspace_root};

#[derive(clap::Args)]
pub struct Args {
    /// Passed to the test binaries (e.g. a test name filter).
    #[arg(trailing_var_arg = true)]
    rest: Vec<String>,
}

pub fn cargo(args: &[&str]) -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace_root()).env("PATH", path_with_tools()).args(args);
    c
}

fn status(mut c: Command) -> Result<()> {
    eprintln!("xtask: {c:?}");
    if !c.status()?.success() {
        bail!("{c:?} failed");
    }
    Ok(())
}

/// Builds the agent binary and returns its path.
pub fn build_agent(release: bool) -> Result<std::path::PathBuf> {
    let mut args = vec!["build", "--quiet", "-p", "lvs-agent", "--bin", "lvs-agent"];
    if release {
        args.push("--release");
    }
    status(cargo(&args))?;
    Ok(workspace_root().join("target").join(if release { "release" } else { "debug" }).join("lvs-agent"))
}

pub fn run(a: &Args) -> Result<()> {
    let agent = build_agent(false)?;
    let rest: Vec<&str> = a.rest.iter().map(String::as_str).collect();

    let mut host = cargo(&["test", "--workspace", "--exclude", "lvs-ebpf", "--exclude", "lvs-tests", "--"]);
    host.args(&rest);
    status(host)?;

    let mut privileged = cargo(&["test", "-p", "lvs-tests", "--", "--test-threads=1"]);
    privileged.args(&rest).env("LVS_AGENT_BIN", &agent);
    status(privileged)
}
