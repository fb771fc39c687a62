//! Makes a fresh machine ready, idempotently, saying what it does. What cannot be had stops
//! the run with one sentence naming the fix.

use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// The toolchain that builds the BPF crate (aya-build's default).
const BPF_TOOLCHAIN: &str = "nightly";
/// bpf-linker 0.13 links against the LLVM that Rust toolchains ship as a shared library.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages the tests and the lab use: (command to probe, package).
const PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ethtool", "ethtool"),
    ("nginx", "nginx"),
    ("tcpdump", "tcpdump"),
    ("curl", "curl"),
    ("sysctl", "procps"),
    // promtool checks /metrics; the Prometheus server scrapes it (tests/tests/e2e_metrics.rs).
    ("promtool", "prometheus"),
    ("systemd-analyze", "systemd"),
    // The VRRP peer of the interop tests (tests/tests/e2e_vrrp.rs); its doc/samples are the
    // config parser's corpus (lvs-agent/tests/keepalived_samples.rs).
    ("keepalived", "keepalived"),
    // The kernel IPVS tier (tests/tests/ipvs_vm.rs): Debian's kernel under QEMU, with busybox,
    // the real ipvsadm, and xz to unpack the kernel image; the kernel .deb itself is fetched by
    // the test with `apt-get download` and cached under target/ipvs-vm.
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("busybox", "busybox-static"),
    ("ipvsadm", "ipvsadm"),
    ("xz", "xz-utils"),
    // Captures what ipvsadm sends, the IPVS codec's golden bytes.
    ("strace", "strace"),
    // Health-check peers (tests/tests/e2e_health.rs): DNS_CHECK's server, SSL_GET's certificate.
    ("dnsmasq", "dnsmasq"),
    ("openssl", "openssl"),
];

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

pub fn tools_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace_root().join("target"), PathBuf::from).join("tools")
}

pub fn run() -> Result<()> {
    rust_src()?;
    bpf_linker()?;
    cargo_fuzz()?;
    debian_packages()?;
    bpffs()?;
    Ok(())
}

fn say(what: &str) {
    eprintln!("setup: {what}");
}

fn rust_src() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", BPF_TOOLCHAIN])
        .output()
        .context("running rustup: the BPF build needs rustup (https://rustup.rs)")?;
    if !installed.status.success() {
        bail!(
            "the `{BPF_TOOLCHAIN}` toolchain is missing; install it with `rustup toolchain install {BPF_TOOLCHAIN} --component rust-src`"
        );
    }
    if String::from_utf8_lossy(&installed.stdout).lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    say(&format!("installing rust-src for {BPF_TOOLCHAIN} (the BPF crate builds core from source)"));
    let ok =
        Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", BPF_TOOLCHAIN]).status()?.success();
    if !ok {
        bail!(
            "could not install rust-src; run `rustup component add rust-src --toolchain {BPF_TOOLCHAIN}` where the rustup server is reachable"
        );
    }
    Ok(())
}

fn bpf_linker() -> Result<()> {
    let root = tools_dir().join("bpf-linker");
    let bin = root.join("bin/bpf-linker");
    if bin.is_file() {
        return Ok(());
    }
    let sysroot = Command::new("rustc").args([&format!("+{BPF_TOOLCHAIN}"), "--print", "sysroot"]).output()?;
    let lib = PathBuf::from(String::from_utf8(sysroot.stdout)?.trim()).join("lib");
    let libllvm = std::fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libLLVM.so.")))
        .with_context(|| {
            format!("no libLLVM.so.* in {}: the {BPF_TOOLCHAIN} toolchain should ship one", lib.display())
        })?;
    let major = libllvm
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("libLLVM.so."))
        .and_then(|v| v.split('.').next())
        .context("cannot read the LLVM version from the library name")?
        .to_string();
    // bpf-linker's build looks for $LLVM_PREFIX/lib/libLLVM.so; point it at the toolchain's.
    let llvm = tools_dir().join("llvm/lib");
    std::fs::create_dir_all(&llvm)?;
    for name in ["libLLVM.so".to_string(), libllvm.file_name().unwrap().to_string_lossy().into_owned()] {
        let link = llvm.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&libllvm, &link)?;
    }
    say(&format!(
        "building bpf-linker {BPF_LINKER_VERSION} against {} (LLVM {major}) into {} (about a minute)",
        libllvm.display(),
        root.display()
    ));
    let ok = Command::new("cargo")
        .args([&format!("+{BPF_TOOLCHAIN}"), "install", "bpf-linker", "--version", BPF_LINKER_VERSION, "--locked"])
        .args(["--no-default-features", "--features", &format!("llvm-{major}"), "--root"])
        .arg(&root)
        .env("LLVM_PREFIX", tools_dir().join("llvm"))
        .status()?
        .success();
    if !ok || !bin.is_file() {
        bail!(
            "building bpf-linker failed (see above); it needs crates.io and the {BPF_TOOLCHAIN} toolchain's libLLVM; \
             or put a bpf-linker built for LLVM {major} at {}",
            bin.display()
        );
    }
    Ok(())
}

/// cargo-fuzz, for the parser's fuzz target (run for a bounded time by `cargo xtask test`).
const CARGO_FUZZ_VERSION: &str = "0.13.2";

pub fn cargo_fuzz_bin() -> PathBuf {
    tools_dir().join("cargo-fuzz/bin/cargo-fuzz")
}

fn cargo_fuzz() -> Result<()> {
    if cargo_fuzz_bin().is_file() {
        return Ok(());
    }
    let root = tools_dir().join("cargo-fuzz");
    say(&format!("building cargo-fuzz {CARGO_FUZZ_VERSION} into {}", root.display()));
    let ok = Command::new("cargo")
        .args([
            &format!("+{BPF_TOOLCHAIN}"),
            "install",
            "cargo-fuzz",
            "--version",
            CARGO_FUZZ_VERSION,
            "--locked",
            "--root",
        ])
        .arg(&root)
        .status()?
        .success();
    if !ok {
        bail!("building cargo-fuzz failed (see above); it needs crates.io and the {BPF_TOOLCHAIN} toolchain");
    }
    Ok(())
}

fn debian_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(cmd, _)| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {cmd}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages: {}; install them with `apt-get install {}` as root",
            missing.join(", "),
            missing.join(" ")
        );
    }
    say(&format!("installing Debian packages: {}", missing.join(" ")));
    let update = Command::new("apt-get").args(["update", "-qq"]).status().context("running apt-get")?;
    let install = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?;
    if !update.success() || !install.success() {
        bail!("apt-get could not install {}; install them by hand and run again", missing.join(" "));
    }
    Ok(())
}

fn bpffs() -> Result<()> {
    let mounted =
        std::fs::read_to_string("/proc/mounts")?.lines().any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf"));
    if mounted {
        return Ok(());
    }
    if !is_root() {
        say("bpffs is not mounted at /sys/fs/bpf and we are not root; privileged tests will be skipped");
        return Ok(());
    }
    say("mounting bpffs at /sys/fs/bpf");
    std::fs::create_dir_all("/sys/fs/bpf")?;
    if !Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]).status()?.success() {
        bail!("could not mount bpffs: run `mount -t bpf bpf /sys/fs/bpf` as root");
    }
    Ok(())
}

pub fn is_root() -> bool {
    // The effective uid is the third field of the Uid: line.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

/// PATH with our bpf-linker first, for cargo commands run by xtask.
pub fn path_with_tools() -> std::ffi::OsString {
    let mut paths = vec![tools_dir().join("bpf-linker/bin"), tools_dir().join("cargo-fuzz/bin")];
    paths.extend(env::split_paths(&env::var_os("PATH").unwrap_or_default()));
    env::join_paths(paths).expect("valid PATH")
}
