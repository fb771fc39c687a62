//! Where the data plane outlives the agent: its maps and its XDP link pinned under bpffs.
//!
//! An agent that starts and finds the pins of a previous one (a restart, an upgrade, a crash)
//! loads its program onto the same maps, adopts what they hold, and swaps its program into the
//! existing link with one `BPF_LINK_UPDATE`: the interface never goes without a program and
//! established flows keep their real servers. `lvs-agent teardown` removes it all.
//!
//! Layout: `BASE/[netns/NAME/]IFACE/{MAP...,link}`, BASE `/sys/fs/bpf/lvs-xdp` by default;
//! the `netns/NAME` part as for the control socket (`socket::namespace_name`).

use std::{
    io,
    mem::size_of,
    path::{Path, PathBuf},
};

use aya::maps::MapInfo;
use lvs_common::{
    flowtab::{BucketV4, BucketV6},
    maps::{
        ConnCounts, Dest, DestStats, Flow, FlowCacheEntry, FlowCacheEntryV6, FragKeyV4, FragKeyV6, GlobalStats,
        Persist, PersistKeyV4, PersistKeyV6, Service, ServiceKeyV4, ServiceKeyV6, ServiceStats, names,
    },
    sched_ext::tcp_state::Timeouts,
};

/// The default base directory (bpffs is mounted at /sys/fs/bpf by systemd).
pub const DEFAULT_BASE: &str = "/sys/fs/bpf/lvs-xdp";
/// The pinned XDP link, beside the maps.
pub const LINK: &str = "link";
/// statfs(2) f_type of a BPF filesystem (include/uapi/linux/magic.h).
const BPF_FS_MAGIC: libc::__fsword_t = 0xcafe_4a11;

/// Every map that is pinned, with the key and value sizes this build expects: pins of another
/// layout (an upgrade that changed a map) are not reused. The VIP pre-filter is the program's
/// own `.bss`, written whole by the adopting agent before its program goes live.
pub const PINNED: &[(&str, usize, usize)] = &[
    (names::SERVICES_V4, size_of::<ServiceKeyV4>(), size_of::<Service>()),
    (names::SERVICES_V6, size_of::<ServiceKeyV6>(), size_of::<Service>()),
    (names::DESTS, 4, size_of::<Dest>()),
    (names::RING, 4, 4),
    (names::CURSORS, 4, 4),
    (names::FLOWS_V4, 4, size_of::<BucketV4>()),
    (names::FLOWS_V6, 4, size_of::<BucketV6>()),
    (names::FLOW_CACHE_V4, 4, size_of::<FlowCacheEntry>()),
    (names::FLOW_CACHE_V6, 4, size_of::<FlowCacheEntryV6>()),
    (names::PERSIST_V4, size_of::<PersistKeyV4>(), size_of::<Persist>()),
    (names::PERSIST_V6, size_of::<PersistKeyV6>(), size_of::<Persist>()),
    (names::FRAGS_V4, size_of::<FragKeyV4>(), size_of::<Flow>()),
    (names::FRAGS_V6, size_of::<FragKeyV6>(), size_of::<Flow>()),
    (names::DEST_CONNS, 4, size_of::<ConnCounts>()),
    (names::DEST_EXPIRED, 4, size_of::<ConnCounts>()),
    (names::TIMEOUTS, 4, size_of::<Timeouts>()),
    (names::CLOCK, 4, 8),
    (names::GLOBAL_STATS, 4, size_of::<GlobalStats>()),
    (names::DEST_STATS, 4, size_of::<DestStats>()),
    (names::SERVICE_STATS, 4, size_of::<ServiceStats>()),
];

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(
        "{} is not on a BPF filesystem, so the data plane cannot be pinned there (mount one: `mount -t bpf bpf /sys/fs/bpf`; `ip netns exec` hides /sys/fs/bpf, pass --pin-dir on a bpffs mounted elsewhere, or --no-pin)",
        .0.display()
    )]
    NotBpffs(PathBuf),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// Where this interface's pins go under `base` (see the module doc).
#[must_use]
pub fn dir_for(base: &Path, interface: &str) -> PathBuf {
    match crate::socket::namespace_name() {
        Some(ns) => base.join("netns").join(ns).join(interface),
        None => base.join(interface),
    }
}

/// Whether `path` is on a BPF filesystem.
#[must_use]
pub fn on_bpffs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return false };
    // SAFETY: statfs(2) with a valid C string and a zeroed out-struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0) && st.f_type == BPF_FS_MAGIC
}

/// Creates `dir` (and its parents) on a bpffs: the parents that exist must be on one. Returns
/// the directories it created, deepest first (see [`abandon`]).
pub fn prepare(dir: &Path) -> Result<Vec<PathBuf>, PinError> {
    let existing = dir.ancestors().find(|a| a.exists()).unwrap_or(Path::new("/"));
    if !on_bpffs(existing) {
        return Err(PinError::NotBpffs(existing.to_path_buf()));
    }
    let created: Vec<PathBuf> = dir.ancestors().take_while(|a| *a != existing).map(Path::to_path_buf).collect();
    std::fs::create_dir_all(dir).map_err(|source| PinError::Io { path: dir.to_path_buf(), source })?;
    Ok(created)
}

/// Undoes a start that never went live: the map pins it made in `dir` and the directories
/// [`prepare`] created (those still empty), so that a failed start leaves nothing pinned.
pub fn abandon(dir: &Path, created: &[PathBuf]) {
    let _ = unpin_maps(dir);
    for d in created {
        let _ = std::fs::remove_dir(d);
    }
}

/// What an agent finds in its pin directory before loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Nothing: a first start.
    Nothing,
    /// Maps this build can adopt (and maybe a link).
    Adoptable { link: bool },
    /// Maps of another layout (named): they are unpinned and fresh ones made; the link, if
    /// any, is still updated in place, so forwarding goes on but flows are scheduled anew.
    Incompatible { map: String, link: bool },
}

/// Looks at `dir`'s pins.
pub fn inspect(dir: &Path) -> Found {
    let link = dir.join(LINK).exists();
    let mut any = false;
    for &(name, key, value) in PINNED {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        any = true;
        let fits =
            MapInfo::from_pin(&path).is_ok_and(|i| i.key_size() as usize == key && i.value_size() as usize == value);
        if !fits {
            return Found::Incompatible { map: name.to_string(), link };
        }
    }
    if any { Found::Adoptable { link } } else { Found::Nothing }
}

/// Removes the map pins in `dir` (the maps live on while a program uses them).
pub fn unpin_maps(dir: &Path) -> Result<(), PinError> {
    for &(name, ..) in PINNED {
        remove(&dir.join(name))?;
    }
    Ok(())
}

/// `lvs-agent teardown`: removes the link pin (which detaches the program once no agent holds
/// it), the map pins and the directory. Returns what it removed.
pub fn teardown(base: &Path, dir: &Path) -> Result<Vec<PathBuf>, PinError> {
    let mut removed = Vec::new();
    for name in std::iter::once(LINK).chain(PINNED.iter().map(|p| p.0)) {
        let path = dir.join(name);
        if remove(&path)? {
            removed.push(path);
        }
    }
    // Empty parents up to the base go too (a namespace's directory, the base itself).
    for d in dir.ancestors().take_while(|d| d.starts_with(base)) {
        if std::fs::remove_dir(d).is_err() {
            break;
        }
    }
    Ok(removed)
}

fn remove(path: &Path) -> Result<bool, PinError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(PinError::Io { path: path.to_path_buf(), source }),
    }
}
