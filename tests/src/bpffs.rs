//! A BPF filesystem of the test's own, mounted in the host's mount namespace.
//!
//! `ip netns exec` remounts /sys, hiding /sys/fs/bpf from the agent it starts; a bpffs mounted
//! elsewhere (under /run, which it leaves alone) is seen by every namespace's processes. Each
//! mount of bpffs is a filesystem of its own, so the test's pins never meet a real director's.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

/// Unmounted (and its pins with it) on drop.
pub struct Bpffs {
    pub path: PathBuf,
}

impl Bpffs {
    /// Mounts a bpffs at `/run/lvs-tests/bpffs-TAG`.
    pub fn mount(tag: &str) -> Result<Self> {
        let path = PathBuf::from(format!("/run/lvs-tests/bpffs-{tag}"));
        let _ = Command::new("umount").arg("-l").arg(&path).output();
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        let out = Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&path).output().context("running mount")?;
        if !out.status.success() {
            bail!("mount -t bpf at {}: {}", path.display(), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(Self { path })
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).output();
        let _ = std::fs::remove_dir(&self.path);
    }
}
