//! Builds the BPF programs (lvs-ebpf) for bpfel-unknown-none with aya-build and leaves them in
//! OUT_DIR, where `dataplane::objects` embeds them.
use std::{env, path::PathBuf};

use anyhow::{Context as _, bail};

fn main() {
    // One sentence, not a backtrace: this is what someone who skipped the set-up reads.
    if let Err(e) = build() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn build() -> anyhow::Result<()> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let workspace = manifest.parent().context("lvs-agent has no parent directory")?;
    // `cargo xtask setup` builds bpf-linker here; find it without the user editing PATH.
    let tools = env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace.join("target"), PathBuf::from)
        .join("tools/bpf-linker/bin");
    println!("cargo:rerun-if-changed={}", tools.display());
    println!("cargo:rerun-if-env-changed=PATH");
    let mut path = env::split_paths(&env::var_os("PATH").unwrap_or_default()).collect::<Vec<_>>();
    if !path.iter().any(|p| p.join("bpf-linker").is_file()) {
        if !tools.join("bpf-linker").is_file() {
            bail!(
                "bpf-linker is missing: run `cargo xtask setup` once (it installs rust-src for nightly \
                 and builds bpf-linker under target/tools), then build again"
            );
        }
        path.insert(0, tools);
        // SAFETY: build scripts are single-threaded.
        unsafe { env::set_var("PATH", env::join_paths(path)?) };
    }
    let ebpf = workspace.join("lvs-ebpf");
    let package = aya_build::Package {
        name: "lvs-ebpf",
        root_dir: ebpf.to_str().context("non-UTF-8 path to lvs-ebpf")?,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
        .context("building the BPF programs failed; if rust-src or bpf-linker is missing, run `cargo xtask setup`")
}
