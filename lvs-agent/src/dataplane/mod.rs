//! The XDP data plane: the only module that talks to aya.
//!
//! [`Dataplane::load`] loads the embedded program and creates its maps; [`Dataplane::attach`]
//! puts it on an interface; [`Maps`] writes and reads the maps with the `lvs_common` types.

pub mod flows;
pub mod objects;
pub mod pin;

use std::{
    io,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, PerCpuValues},
    programs::{
        ProgramError, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
    util::nr_cpus,
};
use lvs_common::{
    filter::FILTER_WORDS,
    flowtab::{self, BucketV4, BucketV6},
    maps::{
        ConnCounts, Dest, DestStats, Flow, FlowEntry, GlobalStats, Persist, PersistKeyV4, Service, ServiceKeyV4,
        ServiceKeyV6, ServiceStats, names,
    },
    sched_ext::tcp_state::{self, Timeouts},
};
use tracing::{info, warn};

use crate::{
    desired::ServiceKey,
    reconcile::{MapReader, MapWriter},
};

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("loading the XDP program needs root (CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON): {0}")]
    Permission(#[source] io::Error),
    #[error("this kernel refused the XDP program (is BPF/XDP enabled in the kernel?): {0}")]
    Load(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("interface `{0}` not found")]
    NoInterface(String),
    #[error("attaching XDP to `{iface}` in {mode} mode failed: {source}")]
    Attach { iface: String, mode: &'static str, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("BPF map `{name}`: {source}")]
    Map { name: &'static str, source: MapError },
    #[error(transparent)]
    Pin(#[from] pin::PinError),
    #[error("pinning the XDP link of `{iface}` at {}: {reason}", path.display())]
    PinLink { iface: String, path: PathBuf, reason: String },
}

/// How to attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// Native (driver) XDP; if the driver lacks it, generic XDP with a warning.
    Auto,
    /// Native XDP only.
    Native,
    /// Generic (skb) XDP: works everywhere, at a fraction of the speed.
    Generic,
}

/// Options fixed at load time.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Flow-table size (IPv4 5-tuples).
    pub flows: u32,
    /// The directory to pin maps and link in (see [`pin`]); None: nothing outlives the agent.
    pub pin: Option<PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { flows: lvs_common::maps::DEFAULT_FLOWS, pin: None }
    }
}

pub struct Dataplane {
    ebpf: Ebpf,
    maps: Maps,
    link: Option<(String, XdpLinkId)>,
    pinned: Option<Pinned>,
}

/// The pinned state of a data plane that outlives the agent.
struct Pinned {
    dir: PathBuf,
    found: pin::Found,
    /// The directories this start created (removed again if it never goes live).
    created: Vec<PathBuf>,
    /// Our hold on a link we pinned ourselves (one we adopted belongs to the program).
    link: Option<PinnedLink>,
    /// The interface, once the pinned data plane forwards there.
    live_on: Option<String>,
}

impl Pinned {
    /// Whether the pinned maps were made by this start (not an earlier agent's).
    fn fresh(&self) -> bool {
        !matches!(self.found, pin::Found::Adoptable { .. })
    }
}

/// How [`Dataplane::attach`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attached {
    /// Attached anew, in this mode ("native" or "generic").
    Fresh(&'static str),
    /// Our program replaced the previous agent's in its pinned link, atomically.
    Replaced,
}

impl Attached {
    /// For logs and `status`.
    #[must_use]
    pub fn mode(self) -> &'static str {
        match self {
            Self::Fresh(m) => m,
            Self::Replaced => "adopted",
        }
    }
}

const PROGRAM: &str = "lvs";

impl Dataplane {
    /// Loads and verifies the program and creates its maps; nothing is attached yet.
    ///
    /// With a pin directory, maps pinned there by an earlier agent are reused (see
    /// [`Dataplane::adopting`]), and maps created now are pinned there.
    pub fn load(opts: LoadOptions) -> Result<Self, DataplaneError> {
        raise_memlock_limit();
        let pinned = match opts.pin {
            Some(dir) => {
                let created = pin::prepare(&dir)?;
                let found = pin::inspect(&dir);
                Some(Pinned { dir, found, created, link: None, live_on: None })
            }
            None => None,
        };
        match Self::load_into(opts.flows, pinned.as_ref()) {
            Ok((ebpf, maps)) => Ok(Self { ebpf, maps, link: None, pinned }),
            Err(e) => {
                if let Some(p) = pinned.as_ref().filter(|p| p.fresh()) {
                    pin::abandon(&p.dir, &p.created);
                }
                Err(e)
            }
        }
    }

    fn load_into(flows: u32, pinned: Option<&Pinned>) -> Result<(Ebpf, Maps), DataplaneError> {
        if let Some(Pinned { dir, found: pin::Found::Incompatible { map, .. }, .. }) = pinned {
            warn!(
                dir = %dir.display(),
                "the pinned map {map} has another layout than this version's: starting with fresh maps (established flows are scheduled anew)"
            );
            pin::unpin_maps(dir)?;
        }
        let mut buckets = flowtab::buckets_for(flows);
        if let Some(Pinned { dir, found: pin::Found::Adoptable { .. }, .. }) = pinned
            && let Ok(info) = aya::maps::MapInfo::from_pin(dir.join(names::FLOWS_V4))
            && info.max_entries() != buckets
        {
            warn!(
                "the pinned flow table is sized for {} flows, not --flows {flows}: it is kept with its flows (a new size takes effect after `lvs-agent teardown`)",
                u64::from(info.max_entries()) * flowtab::WAYS as u64 / 2
            );
            buckets = info.max_entries();
        }
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(names::FLOWS_V4, buckets);
        loader.map_max_entries(names::FLOWS_V6, buckets);
        let mask = buckets - 1;
        loader.override_global(names::FLOW_MASK, &mask, true);
        if let Some(p) = pinned {
            for &(name, ..) in pin::PINNED {
                loader.map_pin_path(name, p.dir.join(name));
            }
        }
        let mut ebpf = loader.load(objects::LVS).map_err(load_error)?;
        let prog: &mut Xdp = program(&mut ebpf)?;
        prog.load().map_err(|e| load_error(EbpfError::ProgramError(e)))?;
        let maps = Maps::take(&mut ebpf)?;
        Ok((ebpf, maps))
    }

    /// Whether the maps are an earlier agent's, to be adopted (`Reconciler::adopt`) rather
    /// than filled from nothing.
    #[must_use]
    pub fn adopting(&self) -> bool {
        self.pinned.as_ref().is_some_and(|p| matches!(p.found, pin::Found::Adoptable { .. }))
    }

    /// The pin directory, if the data plane outlives the agent.
    #[must_use]
    pub fn pin_dir(&self) -> Option<&std::path::Path> {
        self.pinned.as_ref().map(|p| p.dir.as_path())
    }

    /// The loaded program, for BPF_PROG_TEST_RUN.
    pub fn program(&mut self) -> &mut Xdp {
        program(&mut self.ebpf).expect("checked in load")
    }

    pub fn maps(&mut self) -> &mut Maps {
        &mut self.maps
    }

    pub fn maps_ref(&self) -> &Maps {
        &self.maps
    }

    /// Puts the program on `iface`. With pins: an earlier agent's pinned link gets our
    /// program in its place, atomically (no packet meets an interface without a program);
    /// otherwise the program is attached and its link pinned.
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<Attached, DataplaneError> {
        let Some(dir) = self.pinned.as_ref().map(|p| p.dir.clone()) else {
            return self.attach_fresh(iface, mode).map(Attached::Fresh);
        };
        let path = dir.join(pin::LINK);
        if path.exists() {
            match self.replace_in_link(&path) {
                Ok(id) => {
                    self.link = Some((iface.to_string(), id));
                    if let Some(p) = self.pinned.as_mut() {
                        p.live_on = Some(iface.to_string());
                    }
                    info!(iface, link = %path.display(), "XDP program replaced in the pinned link");
                    return Ok(Attached::Replaced);
                }
                // The interface was deleted since (the link is defunct), or the pin is not a
                // link: start over.
                Err(reason) => {
                    warn!(iface, link = %path.display(), %reason, "cannot reuse the pinned XDP link; attaching anew");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let used = self.attach_fresh(iface, mode)?;
        let (_, id) = self.link.take().expect("attach_fresh sets it");
        let pin_err = |reason: String| DataplaneError::PinLink { iface: iface.to_string(), path: path.clone(), reason };
        let link: XdpLink = program(&mut self.ebpf)?.take_link(id).map_err(|e| pin_err(e.to_string()))?;
        // A netlink-attached program (kernels before 5.9 have no XDP bpf_link) cannot be pinned.
        let fd_link = FdLink::try_from(link).map_err(|e| pin_err(format!("{e} (XDP bpf_link needs Linux 5.9)")))?;
        let pinned = fd_link.pin(&path).map_err(|e| pin_err(e.to_string()))?;
        if let Some(p) = self.pinned.as_mut() {
            p.link = Some(pinned);
            p.live_on = Some(iface.to_string());
        }
        Ok(Attached::Fresh(used))
    }

    fn replace_in_link(&mut self, path: &std::path::Path) -> Result<XdpLinkId, String> {
        let fd_link: FdLink = PinnedLink::from_pin(path).map_err(|e| e.to_string())?.into();
        let link = XdpLink::try_from(fd_link).map_err(|e| e.to_string())?;
        program(&mut self.ebpf).map_err(|e| e.to_string())?.attach_to_link(link).map_err(|e| e.to_string())
    }

    fn attach_fresh(&mut self, iface: &str, mode: AttachMode) -> Result<&'static str, DataplaneError> {
        let prog = program(&mut self.ebpf)?;
        let try_mode = |prog: &mut Xdp, m: XdpMode, name: &'static str| {
            prog.attach(iface, m).map_err(|e| match e {
                ProgramError::UnknownInterface { .. } => DataplaneError::NoInterface(iface.to_string()),
                e => DataplaneError::Attach { iface: iface.to_string(), mode: name, source: Box::new(e) },
            })
        };
        let (id, used) = match mode {
            AttachMode::Native => (try_mode(prog, XdpMode::Driver, "native")?, "native"),
            AttachMode::Generic => (try_mode(prog, XdpMode::Skb, "generic")?, "generic"),
            AttachMode::Auto => match try_mode(prog, XdpMode::Driver, "native") {
                Ok(id) => (id, "native"),
                Err(DataplaneError::NoInterface(i)) => return Err(DataplaneError::NoInterface(i)),
                Err(e) => {
                    warn!(%e, "native XDP unavailable on {iface}; falling back to generic XDP, which is much slower");
                    (try_mode(prog, XdpMode::Skb, "generic")?, "generic")
                }
            },
        };
        self.link = Some((iface.to_string(), id));
        info!(iface, mode = used, "XDP program attached");
        Ok(used)
    }

    /// Stops: a pinned data plane stays attached and forwarding (the next agent adopts it;
    /// `lvs-agent teardown` removes it); an unpinned one is detached.
    pub fn stop(&mut self) {
        match &self.pinned {
            Some(p) => {
                if let Some(iface) = &p.live_on {
                    info!(
                        iface,
                        pins = %p.dir.display(),
                        "XDP program left forwarding (pinned): a new agent adopts it; `lvs-agent teardown -i {iface}` removes it"
                    );
                }
            }
            None => self.detach(),
        }
    }

    /// Detaches from the interface (also done on drop, unless pinned).
    pub fn detach(&mut self) {
        if let Some((iface, id)) = self.link.take() {
            match program(&mut self.ebpf).and_then(|p| p.detach(id).map_err(|e| load_error(EbpfError::ProgramError(e))))
            {
                Ok(()) => info!(iface, "XDP program detached"),
                Err(e) => warn!(iface, %e, "detaching the XDP program"),
            }
        }
    }
}

impl Drop for Dataplane {
    /// A pinned start that never went live (the attach or anything before it failed) takes
    /// its pins back: a failed start leaves nothing under bpffs.
    fn drop(&mut self) {
        if let Some(p) = self.pinned.as_ref().filter(|p| p.fresh() && p.live_on.is_none()) {
            pin::abandon(&p.dir, &p.created);
        }
    }
}

fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp, DataplaneError> {
    ebpf.program_mut(PROGRAM)
        .ok_or_else(|| DataplaneError::Load(format!("program `{PROGRAM}` missing from the object").into()))?
        .try_into()
        .map_err(|e: ProgramError| DataplaneError::Load(Box::new(e)))
}

fn load_error(e: EbpfError) -> DataplaneError {
    let io = match &e {
        EbpfError::MapError(MapError::CreateError { io_error, .. }) => Some(io_error),
        EbpfError::ProgramError(ProgramError::LoadError { io_error, .. }) => Some(io_error),
        EbpfError::ProgramError(ProgramError::SyscallError(s)) => Some(&s.io_error),
        _ => None,
    };
    // EPERM is a missing capability. EACCES from BPF_PROG_LOAD is the verifier refusing the
    // program: that is a bug report, with the verifier's log, not a privilege problem.
    match io.and_then(io::Error::raw_os_error) {
        Some(libc::EPERM) => DataplaneError::Permission(io::Error::from_raw_os_error(libc::EPERM)),
        _ => DataplaneError::Load(Box::new(e)),
    }
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; newer ones use the memory
/// cgroup, so a refusal only matters (and is only worth a warning) on an old kernel.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: plain syscall with a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 && kernel_before(5, 11) {
        warn!("could not raise RLIMIT_MEMLOCK; this kernel (before 5.11) may refuse to create the maps");
    }
}

fn kernel_before(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    let (ma, mi) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (ma, mi) < (major, minor)
}

/// Typed handles on the program's maps.
pub struct Maps {
    filter: Array<MapData, [u64; FILTER_WORDS as usize]>,
    /// What `filter` holds: it is written whole, one changed bit at a time, so a reader sees
    /// every word either before or after the change (only one byte of one word differs).
    filter_bits: Box<[u64; FILTER_WORDS as usize]>,
    services: HashMap<MapData, ServiceKeyV4, Service>,
    services_v6: HashMap<MapData, ServiceKeyV6, Service>,
    dests: Array<MapData, Dest>,
    ring: Array<MapData, u32>,
    cursors: PerCpuArray<MapData, u32>,
    flows: flows::FlowTable<BucketV4>,
    flows_v6: flows::FlowTable<BucketV6>,
    dest_conns: Array<MapData, ConnCounts>,
    dest_expired: Array<MapData, ConnCounts>,
    timeouts: Array<MapData, Timeouts>,
    clock: Array<MapData, u64>,
    global_stats: PerCpuArray<MapData, GlobalStats>,
    persist_v4: HashMap<MapData, PersistKeyV4, Persist>,
    dest_stats: PerCpuArray<MapData, DestStats>,
    service_stats: PerCpuArray<MapData, ServiceStats>,
    ncpus: usize,
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DataplaneError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    T::try_from(take_map(ebpf, name)?).map_err(|source| DataplaneError::Map { name, source })
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, DataplaneError> {
    ebpf.take_map(name).ok_or(DataplaneError::Map { name, source: MapError::InvalidName { name: name.into() } })
}

impl Maps {
    fn take(ebpf: &mut Ebpf) -> Result<Self, DataplaneError> {
        let ncpus = nr_cpus().map_err(|(_, e)| DataplaneError::Load(Box::new(e)))?;
        Ok(Self {
            filter: take(ebpf, names::VIP_FILTER)?,
            filter_bits: Box::new([0; FILTER_WORDS as usize]),
            services: take(ebpf, names::SERVICES_V4)?,
            services_v6: take(ebpf, names::SERVICES_V6)?,
            dests: take(ebpf, names::DESTS)?,
            ring: take(ebpf, names::RING)?,
            cursors: take(ebpf, names::CURSORS)?,
            flows: flows::FlowTable::new(take_map(ebpf, names::FLOWS_V4)?, names::FLOWS_V4)?,
            flows_v6: flows::FlowTable::new(take_map(ebpf, names::FLOWS_V6)?, names::FLOWS_V6)?,
            dest_conns: take(ebpf, names::DEST_CONNS)?,
            dest_expired: take(ebpf, names::DEST_EXPIRED)?,
            timeouts: take(ebpf, names::TIMEOUTS)?,
            clock: take(ebpf, names::CLOCK)?,
            global_stats: take(ebpf, names::GLOBAL_STATS)?,
            persist_v4: take(ebpf, names::PERSIST_V4)?,
            dest_stats: take(ebpf, names::DEST_STATS)?,
            service_stats: take(ebpf, names::SERVICE_STATS)?,
            ncpus,
        })
    }

    /// A destination slot's counters, summed over CPUs.
    pub fn dest_stats(&self, slot: u32) -> Result<DestStats, DataplaneError> {
        let per_cpu =
            self.dest_stats.get(&slot, 0).map_err(|source| DataplaneError::Map { name: names::DEST_STATS, source })?;
        Ok(per_cpu.iter().fold(DestStats::default(), |a, s| DestStats {
            packets: a.packets + s.packets,
            bytes: a.bytes + s.bytes,
            conns: a.conns + s.conns,
        }))
    }

    /// A service's drop counters, summed over CPUs.
    pub fn service_stats(&self, index: u32) -> Result<ServiceStats, DataplaneError> {
        let per_cpu = self
            .service_stats
            .get(&index, 0)
            .map_err(|source| DataplaneError::Map { name: names::SERVICE_STATS, source })?;
        Ok(per_cpu.iter().fold(ServiceStats::default(), |a, s| ServiceStats {
            dropped_packets: a.dropped_packets + s.dropped_packets,
            dropped_bytes: a.dropped_bytes + s.dropped_bytes,
        }))
    }

    /// The IPv4 persistence templates (for `list -c` and tests).
    pub fn persistence_templates_v4(&mut self) -> &mut HashMap<MapData, PersistKeyV4, Persist> {
        &mut self.persist_v4
    }

    /// The IPv4 flow table (the benchmark fills it through this).
    #[must_use]
    pub fn flow_table_v4(&self) -> &flows::FlowTable<BucketV4> {
        &self.flows
    }

    /// Flows held, both families.
    #[must_use]
    pub fn flow_count(&self) -> usize {
        self.flows.occupied() + self.flows_v6.occupied()
    }

    /// Every flow of both tables as (client, virtual service address, protocol, entry), at
    /// `now` (the program's clock). A slot keeps the VIP, port and protocol only as a tag: they
    /// are the service's that owns the flow's real server. Flows whose real server's slot has
    /// since gone to another (their next packet reschedules them) are left out.
    pub fn connections(&self, now: u32) -> Vec<(SocketAddr, SocketAddr, u8, FlowEntry)> {
        let mut services: std::collections::HashMap<u32, (IpAddr, u16, u8)> = std::collections::HashMap::new();
        for (k, v) in self.services.iter().filter_map(Result::ok) {
            services.insert(v.index, (IpAddr::V4(k.ip()), u16::from_be(k.port), k.proto));
        }
        for (k, v) in self.services_v6.iter().filter_map(Result::ok) {
            services.insert(v.index, (IpAddr::V6(k.ip()), k.port(), k.proto));
        }
        let dests: Vec<Dest> = self.dests.iter().filter_map(Result::ok).collect();
        let decode = |(addr, port): (IpAddr, u16), slot: &dyn flowtab::Way| {
            let f = slot.flow();
            let dest = dests.get(flowtab::dest_of(f) as usize)?;
            if !flowtab::same_generation(dest.generation, flowtab::generation_of(f)) || dest.family == 0 {
                return None;
            }
            let &(vip, vport, proto) = services.get(&dest.owner)?;
            let entry = FlowEntry {
                flow: Flow { dest: flowtab::dest_of(f), generation: dest.generation },
                state: flowtab::state_of(f),
                _pad0: 0,
                _pad1: 0,
                last: now.wrapping_sub(flowtab::age(slot.last(), now as u16)),
            };
            Some((SocketAddr::new(addr, port), SocketAddr::new(vip, vport), proto, entry))
        };
        let v4 = self.flows.entries().filter_map(|e| decode(<BucketV4 as flows::Layout>::client(&e.slot), &e.slot));
        let v6 = self.flows_v6.entries().filter_map(|e| decode(<BucketV6 as flows::Layout>::client(&e.slot), &e.slot));
        v4.chain(v6).collect()
    }

    /// The counters of what belongs to no service, summed over CPUs.
    pub fn global_stats(&self) -> Result<GlobalStats, DataplaneError> {
        let per_cpu = self.global_stats.get(&0, 0).map_err(werr(names::GLOBAL_STATS))?;
        Ok(per_cpu.iter().fold(GlobalStats::default(), |a, g| GlobalStats {
            orphan_fragments: a.orphan_fragments + g.orphan_fragments,
            icmp_forwarded: a.icmp_forwarded + g.icmp_forwarded,
        }))
    }

    /// The idle timeouts in force.
    pub fn timeouts(&self) -> Result<Timeouts, DataplaneError> {
        self.timeouts.get(&0, 0).map_err(werr(names::TIMEOUTS))
    }

    /// A destination's connections, as ipvsadm's ActiveConn / InActConn: what the program
    /// counted, less what the agent's sweep expired.
    pub fn dest_conns(&self, slot: u32) -> Result<ConnCounts, DataplaneError> {
        let c = self.dest_conns.get(&slot, 0).map_err(werr(names::DEST_CONNS))?;
        let x = self.dest_expired.get(&slot, 0).map_err(werr(names::DEST_EXPIRED))?;
        Ok(ConnCounts { active: c.active.saturating_sub(x.active), inactive: c.inactive.saturating_sub(x.inactive) })
    }

    /// Publishes the time (seconds of CLOCK_MONOTONIC_COARSE) to the program; the agent does it
    /// every second, and the flow sweep compares with the same seconds.
    pub fn set_clock(&mut self, secs: u32) -> Result<(), DataplaneError> {
        self.clock.set(0, u64::from(secs), 0).map_err(werr(names::CLOCK))
    }

    /// Sets the idle timeouts (`ipvsadm --set tcp tcpfin udp`).
    pub fn set_timeouts(&mut self, t: Timeouts) -> Result<(), DataplaneError> {
        self.timeouts.set(0, t, 0).map_err(werr(names::TIMEOUTS))
    }

    /// Deletes the flows idle past their state's timeout at `now` (seconds of the coarse
    /// monotonic clock, the program's clock) and adds them to `DEST_EXPIRED` for the slots
    /// whose generation is still the flow's (`generation_of`). Returns how many it expired.
    ///
    /// A flow that resumes at the very moment it is deleted is scheduled anew on its next
    /// packet (the program finds no entry); with hashing schedulers it lands where it was.
    pub fn expire_flows(
        &mut self,
        now: u32,
        generation_of: &dyn Fn(u32) -> Option<u32>,
    ) -> Result<u64, DataplaneError> {
        self.expire_flows_part(now, 0, 1, generation_of)
    }

    /// `expire_flows` over part `part` of `parts` equal parts of each table: the daemon sweeps
    /// a part at a time, so that no sweep holds its single-threaded loop (VRRP's timers and
    /// adverts share it) for longer than a few milliseconds.
    pub fn expire_flows_part(
        &mut self,
        now: u32,
        part: u32,
        parts: u32,
        generation_of: &dyn Fn(u32) -> Option<u32>,
    ) -> Result<u64, DataplaneError> {
        let t = self.timeouts.get(&0, 0).map_err(werr(names::TIMEOUTS))?;
        let mut expired: std::collections::HashMap<u32, ConnCounts> = std::collections::HashMap::new();
        let mut note = |f: u32| {
            let slot = flowtab::dest_of(f);
            if generation_of(slot).is_some_and(|g| flowtab::same_generation(g, flowtab::generation_of(f))) {
                let c = expired.entry(slot).or_default();
                if tcp_state::is_active(flowtab::state_of(f)) { c.active += 1 } else { c.inactive += 1 }
            }
        };
        let v4 = self.flows.expire(self.flows.part(part, parts), now, &t);
        v4.iter().for_each(|s| note(s.flow));
        let v6 = self.flows_v6.expire(self.flows_v6.part(part, parts), now, &t);
        v6.iter().for_each(|s| note(s.flow));
        for (slot, add) in expired {
            let mut x = self.dest_expired.get(&slot, 0).map_err(werr(names::DEST_EXPIRED))?;
            x.active += add.active;
            x.inactive += add.inactive;
            self.dest_expired.set(slot, x, 0).map_err(werr(names::DEST_EXPIRED))?;
        }
        Ok((v4.len() + v6.len()) as u64)
    }

    fn zeros<T: aya::Pod + Default>(&self) -> Result<PerCpuValues<T>, MapError> {
        PerCpuValues::try_from(vec![T::default(); self.ncpus]).map_err(MapError::IoError)
    }
}

fn werr(name: &'static str) -> impl FnOnce(MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}

impl MapReader for Maps {
    type Error = DataplaneError;

    fn installed_services(&self) -> Result<Vec<(ServiceKey, Service)>, DataplaneError> {
        let mut out = Vec::new();
        for entry in self.services.iter() {
            let (k, v) = entry.map_err(werr(names::SERVICES_V4))?;
            out.push((ServiceKey::V4(k), v));
        }
        for entry in self.services_v6.iter() {
            let (k, v) = entry.map_err(werr(names::SERVICES_V6))?;
            out.push((ServiceKey::V6(k), v));
        }
        Ok(out)
    }

    fn installed_dests(&self) -> Result<Vec<Dest>, DataplaneError> {
        self.dests.iter().map(|d| d.map_err(werr(names::DESTS))).collect()
    }

    fn installed_ring(&self, off: u32, len: u32) -> Result<Vec<u32>, DataplaneError> {
        (off..off.saturating_add(len)).map(|i| self.ring.get(&i, 0).map_err(werr(names::RING))).collect()
    }
}

impl MapWriter for Maps {
    type Error = DataplaneError;

    fn set_filter_word(&mut self, word: u32, bits: u64) -> Result<(), DataplaneError> {
        let Some(w) = self.filter_bits.get_mut(word as usize) else {
            return Err(werr(names::VIP_FILTER)(MapError::OutOfBounds { index: word, max_entries: FILTER_WORDS }));
        };
        *w = bits;
        self.filter.set(0, *self.filter_bits, 0).map_err(werr(names::VIP_FILTER))
    }

    fn set_service(&mut self, key: ServiceKey, service: Service) -> Result<(), DataplaneError> {
        match key {
            ServiceKey::V4(k) => self.services.insert(k, service, 0).map_err(werr(names::SERVICES_V4)),
            ServiceKey::V6(k) => self.services_v6.insert(k, service, 0).map_err(werr(names::SERVICES_V6)),
        }
    }

    fn remove_service(&mut self, key: ServiceKey) -> Result<(), DataplaneError> {
        let (result, name) = match key {
            ServiceKey::V4(k) => (self.services.remove(&k), names::SERVICES_V4),
            ServiceKey::V6(k) => (self.services_v6.remove(&k), names::SERVICES_V6),
        };
        match result {
            Err(MapError::KeyNotFound) | Ok(()) => Ok(()),
            Err(e) => Err(werr(name)(e)),
        }
    }

    fn set_dest(&mut self, slot: u32, dest: Dest) -> Result<(), DataplaneError> {
        self.dests.set(slot, dest, 0).map_err(werr(names::DESTS))
    }

    fn write_ring(&mut self, offset: u32, slots: &[u32]) -> Result<(), DataplaneError> {
        for (i, &slot) in slots.iter().enumerate() {
            self.ring.set(offset + i as u32, slot, 0).map_err(werr(names::RING))?;
        }
        Ok(())
    }

    fn reset_dest_stats(&mut self, slot: u32) -> Result<(), DataplaneError> {
        let z = self.zeros().map_err(werr(names::DEST_STATS))?;
        self.dest_stats.set(slot, z, 0).map_err(werr(names::DEST_STATS))?;
        self.dest_conns.set(slot, ConnCounts::default(), 0).map_err(werr(names::DEST_CONNS))?;
        self.dest_expired.set(slot, ConnCounts::default(), 0).map_err(werr(names::DEST_EXPIRED))
    }

    fn reset_service_index(&mut self, index: u32) -> Result<(), DataplaneError> {
        let z = self.zeros().map_err(werr(names::SERVICE_STATS))?;
        self.service_stats.set(index, z, 0).map_err(werr(names::SERVICE_STATS))?;
        let c = self.zeros().map_err(werr(names::CURSORS))?;
        self.cursors.set(index, c, 0).map_err(werr(names::CURSORS))
    }
}
