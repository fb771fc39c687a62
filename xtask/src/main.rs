//! `cargo xtask`: set-up, lab, tests and benchmarks for lvs-xdp.
//!
//! Every command first runs `setup`, which makes a fresh Debian machine ready by itself and
//! does nothing when it already is.

mod bench;
mod lab;
mod setup;
mod test;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Make this machine ready: rust-src, bpf-linker, Debian packages, bpffs.
    Setup,
    /// Build a DR lab in network namespaces, push HTTP through the VIP and show the split.
    Lab(lab::Args),
    /// Run every test: host unit tests, BPF_PROG_TEST_RUN tests, namespace end-to-end tests.
    Test(test::Args),
    /// Measure ns/packet against in-tree floor programs.
    Bench(bench::Args),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    setup::run()?;
    match cli.command {
        Cmd::Setup => Ok(()),
        Cmd::Lab(a) => lab::run(&a),
        Cmd::Test(a) => test::run(&a),
        Cmd::Bench(a) => bench::run(&a),
    }
}
