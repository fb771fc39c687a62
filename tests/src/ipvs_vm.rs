//! Real kernel IPVS for tests: Debian's `linux-image-amd64` booted under QEMU (software
//! emulation), with an initramfs holding busybox, the real `ipvsadm` and iproute2 `ip`, the
//! kernel modules, `lvs-agent` and a test script. The machines that run the tests have no
//! IPVS in their own kernel; Debian's kernel has it as modules.
//!
//! The guest reports on its second serial port: `ok …`/`FAIL …` lines, sections between
//! `=== NAME` and `=== end` for the host to assert on, and `done, N failures` last. A guest
//! that panics or hangs never writes that marker, so its absence is a failure.

use std::{
    collections::{BTreeMap, HashSet},
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail, ensure};

/// Why QEMU cannot run here, if it cannot.
#[must_use]
pub fn unavailable() -> Option<String> {
    for (tool, package) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("busybox", "busybox-static"),
        ("ipvsadm", "ipvsadm"),
        ("strace", "strace"),
        ("ethtool", "ethtool"),
    ] {
        if which(tool).is_none() {
            return Some(format!("`{tool}` not found (Debian package {package}; `cargo xtask setup` installs it)"));
        }
    }
    None
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// An unpacked Debian kernel: the uncompressed vmlinux (QEMU boots it through its PVH entry,
/// skipping decompression) and its modules.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub version: String,
    pub vmlinux: PathBuf,
    /// `lib/modules/VERSION`.
    pub modules: PathBuf,
}

/// The kernel package `linux-image-amd64` points at today (e.g. `linux-image-6.1.0-56-amd64`).
fn kernel_package() -> Result<String> {
    let out = Command::new("apt-cache").args(["depends", "linux-image-amd64"]).output().context("running apt-cache")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .map(str::to_string)
        .context("apt-cache depends linux-image-amd64 names no linux-image-VERSION package (apt-get update?)")
}

/// Downloads (once; cached under `cache`) and unpacks Debian's kernel.
pub fn kernel(cache: &Path) -> Result<Kernel> {
    fs::create_dir_all(cache)?;
    let cached = || {
        fs::read_dir(cache)
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with("linux-image-") && cache.join(n).join("ready").is_file())
    };
    let package = match kernel_package() {
        Ok(p) => p,
        // Offline: any kernel unpacked earlier will do.
        Err(_) if cached().is_some() => cached().unwrap_or_default(),
        // No package lists yet (a fresh image): fetch them once and ask again.
        Err(_) => {
            run(Command::new("apt-get").args(["update", "-qq"]))?;
            kernel_package()?
        }
    };
    let dir = cache.join(&package);
    let version = package.trim_start_matches("linux-image-").to_string();
    let kernel = Kernel {
        vmlinux: dir.join("vmlinux"),
        modules: dir.join("root/lib/modules").join(&version),
        version: version.clone(),
    };
    if dir.join("ready").is_file() {
        return Ok(kernel);
    }
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    run(Command::new("apt-get").args(["download", "-q", &package]).current_dir(&dir))?;
    let deb = fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download left no .deb")?;
    // Only the image and the module trees the tests load from (net, crypto, lib, drivers/net):
    // 126 MiB of the package's 470.
    let root = dir.join("root");
    fs::create_dir_all(&root)?;
    let mut unpack = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(&deb)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running dpkg-deb")?;
    let tar = unpack.stdout.take().context("dpkg-deb stdout")?;
    run(Command::new("tar").arg("-x").arg("-C").arg(&root).arg("--wildcards").stdin(tar).args([
        "./boot/vmlinuz-*",
        "./lib/modules/*/kernel/net",
        "./lib/modules/*/kernel/crypto",
        "./lib/modules/*/kernel/lib",
        "./lib/modules/*/kernel/drivers/net",
    ]))?;
    ensure!(unpack.wait()?.success(), "dpkg-deb --fsys-tarfile {} failed", deb.display());
    fs::remove_file(&deb)?;
    let vmlinuz = root.join("boot").join(format!("vmlinuz-{version}"));
    extract_vmlinux(&vmlinuz, &kernel.vmlinux)?;
    fs::remove_file(&vmlinuz)?;
    ensure!(kernel.modules.is_dir(), "{} missing from the package", kernel.modules.display());
    fs::write(dir.join("ready"), "")?;
    Ok(kernel)
}

/// The vmlinux ELF inside a bzImage: an XZ stream starting at `fd 37 7a 58 5a 00`.
fn extract_vmlinux(vmlinuz: &Path, out: &Path) -> Result<()> {
    let image = fs::read(vmlinuz).with_context(|| format!("reading {}", vmlinuz.display()))?;
    const XZ: [u8; 6] = [0xfd, b'7', b'z', b'X', b'Z', 0];
    let at = image.windows(6).position(|w| w == XZ).context("no XZ stream in the kernel image")?;
    let mut child = Command::new("xz")
        .args(["-dc", "--single-stream"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running xz (Debian package xz-utils)")?;
    let mut stdin = child.stdin.take().context("xz stdin")?;
    let data = image[at..].to_vec();
    let feeder = std::thread::spawn(move || {
        // xz stops reading after the stream; the rest of the image is padding.
        let _ = stdin.write_all(&data);
    });
    let output = child.wait_with_output()?;
    let _ = feeder.join();
    ensure!(output.stdout.starts_with(b"\x7fELF"), "the XZ stream of {} is not an ELF kernel", vmlinuz.display());
    fs::write(out, &output.stdout)?;
    Ok(())
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    Ok(())
}

/// The `depends=` of a module's `.modinfo`.
fn module_depends(ko: &[u8]) -> Vec<String> {
    let key = b"depends=";
    ko.windows(key.len())
        .position(|w| w == key)
        .map(|at| {
            let rest = &ko[at + key.len()..];
            let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
            String::from_utf8_lossy(&rest[..end]).split(',').filter(|s| !s.is_empty()).map(str::to_string).collect()
        })
        .unwrap_or_default()
}

/// The module files for `wanted`, each after the modules it depends on (read from the
/// modules' `.modinfo`: the package ships no modules.dep, which depmod writes on install).
pub fn modules_in_order(kernel: &Kernel, wanted: &[&str]) -> Result<Vec<PathBuf>> {
    let mut by_name = BTreeMap::new();
    let mut stack = vec![kernel.modules.join("kernel")];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(stem) = p.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".ko")) {
                by_name.insert(stem.replace('-', "_"), p);
            }
        }
    }
    fn visit(
        name: &str,
        by_name: &BTreeMap<String, PathBuf>,
        seen: &mut HashSet<String>,
        out: &mut Vec<PathBuf>,
    ) -> Result<()> {
        let name = name.replace('-', "_");
        if !seen.insert(name.clone()) {
            return Ok(());
        }
        let path = by_name.get(&name).with_context(|| format!("module {name} not in the kernel package"))?;
        for dep in module_depends(&fs::read(path)?) {
            visit(&dep, by_name, seen, out)?;
        }
        out.push(path.clone());
        Ok(())
    }
    let (mut seen, mut out) = (HashSet::new(), Vec::new());
    for w in wanted {
        visit(w, &by_name, &mut seen, &mut out)?;
    }
    Ok(out)
}

/// A newc cpio archive (what the kernel unpacks as initramfs; uncompressed is fine).
#[derive(Default)]
pub struct Initramfs {
    buf: Vec<u8>,
    ino: u32,
    dirs: HashSet<String>,
}

impl Initramfs {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        self.ino += 1;
        let name = name.trim_start_matches('/');
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.buf.extend_from_slice(header.as_bytes());
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.buf.resize(self.buf.len().next_multiple_of(4), 0);
        self.buf.extend_from_slice(data);
        self.buf.resize(self.buf.len().next_multiple_of(4), 0);
    }

    /// `path` and its parents.
    pub fn dir(&mut self, path: &str) {
        let path = path.trim_matches('/');
        if path.is_empty() || self.dirs.contains(path) {
            return;
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.dirs.insert(path.to_string());
        self.entry(path, 0o040_755, &[], (0, 0));
    }

    fn parent(&mut self, path: &str) {
        if let Some((parent, _)) = path.trim_start_matches('/').rsplit_once('/') {
            self.dir(parent);
        }
    }

    pub fn file(&mut self, path: &str, data: &[u8], mode: u32) {
        self.parent(path);
        self.entry(path, 0o100_000 | mode, data, (0, 0));
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.parent(path);
        self.entry(path, 0o120_777, target.as_bytes(), (0, 0));
    }

    pub fn char_device(&mut self, path: &str, major: u32, minor: u32) {
        self.parent(path);
        self.entry(path, 0o020_600, &[], (major, minor));
    }

    /// A host file at the same path in the guest (symlinks followed).
    pub fn host_file(&mut self, host: &Path, guest: &str) -> Result<()> {
        let data = fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        self.file(guest, &data, 0o755);
        Ok(())
    }

    /// A dynamically linked host binary with the libraries `ldd` lists and the loader.
    pub fn binary(&mut self, host: &Path, guest: &str) -> Result<()> {
        self.host_file(host, guest)?;
        let out = Command::new("ldd").arg(host).output().context("running ldd")?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or `/lib64/ld-linux-x86-64.so.2 (0x…)`.
            let path = line.split("=>").last().unwrap_or_default().split_whitespace().next().unwrap_or_default();
            if path.starts_with('/') && !self.dirs.contains(path) {
                let data = fs::read(path).with_context(|| format!("reading {path}"))?;
                self.dirs.insert(path.to_string()); // once each
                self.file(path, &data, 0o755);
            }
        }
        Ok(())
    }

    #[must_use]
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[], (0, 0));
        self.buf.resize(self.buf.len().next_multiple_of(512), 0);
        self.buf
    }
}

/// A guest image: busybox (its applets installed at boot), the real `ip`, `ipvsadm`,
/// `lvs-agent` (stripped), the modules in load order (`/modules/order`), and `/init`
/// running `script` with the results port open on fd 3.
pub fn initramfs(
    kernel: &Kernel,
    modules: &[&str],
    agent: &Path,
    script: &str,
    files: &[(&str, &[u8])],
) -> Result<Vec<u8>> {
    let mut img = Initramfs::default();
    for d in ["dev", "proc", "sys", "run", "tmp", "etc", "root", "var/run", "sbin", "usr/sbin", "bin"] {
        img.dir(d);
    }
    img.char_device("dev/console", 5, 1);
    img.binary(&which("busybox").context("busybox")?, "bin/busybox")?;
    img.binary(&which("ip").context("ip")?, "sbin/ip")?;
    img.binary(&which("ipvsadm").context("ipvsadm")?, "usr/sbin/ipvsadm")?;
    // To capture what ipvsadm sends (the codec's golden bytes).
    img.binary(&which("strace").context("strace")?, "usr/bin/strace")?;
    // Checksum offload off on the client's veth of the XDP (DR) path.
    img.binary(&which("ethtool").context("ethtool")?, "usr/sbin/ethtool")?;
    // The agent without its debug info (100 MiB less to unpack under emulation).
    let stripped = std::env::temp_dir().join(format!("lvs-agent-vm-{}", std::process::id()));
    let strip = Command::new("strip").arg("-o").arg(&stripped).arg(agent).status();
    let agent_path = if strip.is_ok_and(|s| s.success()) { stripped.as_path() } else { agent };
    img.binary(agent_path, "usr/sbin/lvs-agent")?;
    let _ = fs::remove_file(&stripped);
    let mut order = String::new();
    for (i, m) in modules_in_order(kernel, modules)?.iter().enumerate() {
        let name = format!("modules/{i:02}-{}", m.file_name().unwrap_or_default().to_string_lossy());
        img.host_file(m, &name)?;
        order.push_str(&format!("/{name}\n"));
    }
    img.file("modules/order", order.as_bytes(), 0o644);
    for (path, data) in files {
        img.file(path, data, 0o755);
    }
    img.file("test.sh", script.as_bytes(), 0o755);
    img.file("init", INIT.as_bytes(), 0o755);
    Ok(img.finish())
}

/// Mounts, modules, the results port, then the test; powers off whatever happens.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs run /run
mount -t tmpfs tmp /tmp
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
mkdir -p /run/netns
for m in $(cat /modules/order); do insmod $m || echo "insmod $m failed"; done
exec 3>/dev/ttyS1
sh /test.sh
echo "done, $(cat /tmp/failures 2>/dev/null || echo 1) failures" >&3
poweroff -f
"#;

/// What the guest reported.
#[derive(Debug)]
pub struct Outcome {
    pub results: String,
    pub console: String,
    pub failures: usize,
}

impl Outcome {
    /// The lines between `=== name` and `=== end`.
    #[must_use]
    pub fn section(&self, name: &str) -> Option<String> {
        let start = format!("=== {name}");
        let mut lines = self.results.lines().skip_while(|l| l.trim_end() != start);
        lines.next()?;
        Some(lines.take_while(|l| l.trim_end() != "=== end").map(|l| format!("{l}\n")).collect())
    }

    /// `ok`/`FAIL` lines.
    pub fn verdicts(&self) -> impl Iterator<Item = &str> {
        self.results.lines().filter(|l| l.starts_with("ok ") || l.starts_with("FAIL "))
    }

    /// A `key value` line's value (`traffic-nat 10.7.1.2=5 …` → `10.7.1.2=5 …`).
    #[must_use]
    pub fn value(&self, key: &str) -> Option<&str> {
        self.results.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
    }
}

/// The netlink messages of `strace -e write=all` hex dumps (` | 00000  20 00 …  ascii |`),
/// one per `* N bytes in buffer` header.
#[must_use]
pub fn strace_messages(text: &str) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("* ") && line.contains("bytes in buffer") {
            out.push(Vec::new());
        } else if let (Some(hex), Some(msg)) = (line.strip_prefix(" | ").and_then(|l| l.get(7..56)), out.last_mut()) {
            // Offset (5 digits, 2 spaces), then 16 bytes as `xx ` with one more space in the middle.
            msg.extend(hex.split_whitespace().filter_map(|b| u8::from_str_radix(b, 16).ok()));
        }
    }
    out
}

/// Boots `kernel` with `initrd` in `dir` (console.log, results.log) and waits at most `limit`.
pub fn boot(kernel: &Kernel, initrd: &[u8], dir: &Path, limit: Duration) -> Result<Outcome> {
    fs::create_dir_all(dir)?;
    let initrd_path = dir.join("initrd.cpio");
    fs::write(&initrd_path, initrd)?;
    let (console, results) = (dir.join("console.log"), dir.join("results.log"));
    let _ = fs::remove_file(&results);
    // Software emulation: this machine's /dev/kvm is a nested paravirtual one under which
    // a stock kernel crawls and dies; use KVM only with a real kvm_intel/kvm_amd.
    let accel = if Path::new("/sys/module/kvm_intel").exists() || Path::new("/sys/module/kvm_amd").exists() {
        "kvm"
    } else {
        "tcg"
    };
    let status = Command::new("timeout")
        .arg(limit.as_secs().to_string())
        .args(["qemu-system-x86_64", "-accel", accel, "-m", "1024", "-smp", "1", "-display", "none", "-no-reboot"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-monitor", "none"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-serial")
        .arg(format!("file:{}", results.display()))
        .arg("-kernel")
        .arg(&kernel.vmlinux)
        .arg("-initrd")
        .arg(&initrd_path)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .status()
        .context("running qemu-system-x86_64")?;
    // The image is rebuilt for every run; only the logs are worth keeping.
    let _ = fs::remove_file(&initrd_path);
    let console = fs::read_to_string(&console).unwrap_or_default();
    let results = fs::read_to_string(&results).unwrap_or_default();
    let tail: String =
        console.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    let Some(marker) = results.lines().rev().find_map(|l| l.strip_prefix("done, ")) else {
        bail!(
            "the guest wrote no `done, N failures` marker (QEMU {status}; {} s limit); results:\n{results}\nconsole tail:\n{tail}",
            limit.as_secs()
        );
    };
    let failures = marker.split_whitespace().next().and_then(|n| n.parse().ok()).context("unreadable done marker")?;
    Ok(Outcome { results, console, failures })
}
