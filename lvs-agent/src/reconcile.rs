//! Diffs the plan (plus the real servers' MACs) against what is installed in the maps and
//! applies only the difference, in an order that never exposes a half-written service:
//! destinations first, then the new ring, then the service entry that points at it, and only
//! then are removed destinations deactivated and old ring space freed.
//!
//! Map writes go through [`MapWriter`], so this logic runs in host tests against a model.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use lvs_common::{
    filter,
    maps::{
        DEST_F_ACTIVE, DEST_ROLE_MEMBER, DEST_ROLE_SORRY, Dest, MAX_DESTS, MAX_SERVICES, NO_SLOT, RING_SLOTS, Service,
        sched_kind,
    },
    sched, sched_ext,
};

use crate::desired::{Persistence, Plan, PlannedDest, PlannedService, RingKind, ServiceKey};

/// The map operations the reconciler needs (implemented by `dataplane::Maps`).
pub trait MapWriter {
    type Error: std::error::Error + Send + Sync + 'static;
    fn set_filter_word(&mut self, word: u32, bits: u64) -> Result<(), Self::Error>;
    fn set_service(&mut self, key: ServiceKey, service: Service) -> Result<(), Self::Error>;
    fn remove_service(&mut self, key: ServiceKey) -> Result<(), Self::Error>;
    fn set_dest(&mut self, slot: u32, dest: Dest) -> Result<(), Self::Error>;
    fn write_ring(&mut self, offset: u32, slots: &[u32]) -> Result<(), Self::Error>;
    /// Zeroes a destination slot's counters before the slot gets a new owner.
    fn reset_dest_stats(&mut self, slot: u32) -> Result<(), Self::Error>;
    /// Zeroes a service index's cursor and counters before the index gets a new owner.
    fn reset_service_index(&mut self, index: u32) -> Result<(), Self::Error>;
}

/// What a restarted agent reads back from the maps it finds pinned (implemented by
/// `dataplane::Maps`), to adopt them: see [`Reconciler::adopt`].
pub trait MapReader {
    type Error: std::error::Error + Send + Sync + 'static;
    /// Every installed service, both families.
    fn installed_services(&self) -> Result<Vec<(ServiceKey, Service)>, Self::Error>;
    /// Every destination slot, `0..MAX_DESTS`, in slot order.
    fn installed_dests(&self) -> Result<Vec<Dest>, Self::Error>;
    /// `RING[off..off + len]`.
    fn installed_ring(&self, off: u32, len: u32) -> Result<Vec<u32>, Self::Error>;
}

/// What [`Reconciler::adopt`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Adopted {
    pub services: usize,
    pub dests: usize,
    /// Destination slots that no service owned (left by an agent stopped in the middle of an
    /// update): retired.
    pub orphans: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("too many virtual services: the data plane holds {MAX_SERVICES}")]
    TooManyServices,
    #[error("too many real servers: the data plane holds {MAX_DESTS} across all services")]
    TooManyDests,
    #[error("the scheduling rings need more than the data plane's {RING_SLOTS} slots")]
    RingFull,
    #[error("writing the BPF maps: {0}")]
    Map(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the pinned maps hold {0}, which this agent cannot adopt")]
    Foreign(String),
}

fn map_err<E: std::error::Error + Send + Sync + 'static>(e: E) -> ReconcileError {
    ReconcileError::Map(Box::new(e))
}

/// What is installed for one real server of one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstalledDest {
    pub addr: IpAddr,
    pub port: u16,
    pub slot: u32,
    pub weight: u32,
    /// None until the neighbour table resolved it; such a server takes no new flows.
    pub mac: Option<[u8; 6]>,
}

/// What is installed for one virtual service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledService {
    pub key: ServiceKey,
    pub kind: RingKind,
    pub index: u32,
    pub ring_off: u32,
    pub ring: Vec<u32>,
    pub dests: Vec<InstalledDest>,
    pub sorry: Option<InstalledDest>,
    /// The service entry as written to the map.
    pub value: Service,
}

/// Installed state and the allocators for map slots.
#[derive(Debug)]
pub struct Reconciler {
    src_mac: [u8; 6],
    services: BTreeMap<ServiceKey, InstalledService>,
    dest_slots: Slots,
    service_indexes: Slots,
    /// Per destination slot: bumped each time the slot is given out, so flows pinned to a
    /// previous owner are rescheduled by the data plane.
    generations: Vec<u32>,
    ring: RingSpace,
    /// Per filter bit: how many VIPs use it (different VIPs may share a bit).
    filter_refs: HashMap<u32, u32>,
}

impl Reconciler {
    /// `src_mac`: the MAC of the interface the program is attached to (the new source MAC).
    #[must_use]
    pub fn new(src_mac: [u8; 6]) -> Self {
        Self {
            src_mac,
            services: BTreeMap::new(),
            dest_slots: Slots::new(MAX_DESTS),
            service_indexes: Slots::new(MAX_SERVICES),
            generations: vec![0; MAX_DESTS as usize],
            ring: RingSpace::new(RING_SLOTS),
            filter_refs: HashMap::new(),
        }
    }

    /// Takes over maps written by an earlier agent (a restart, or a crash): rebuilds the
    /// installed state from what the maps hold, so the next [`Reconciler::apply`] changes only
    /// what differs and every real server that stays keeps its slot and generation (its
    /// flows keep going). Destination slots no service owns are retired; destinations written
    /// with another source MAC (the interface changed) are rewritten with `src_mac`.
    ///
    /// The VIP pre-filter lives in the program's own data, not in a pinned map: call
    /// [`Reconciler::write_filter`] for the program that is to run.
    pub fn adopt<M: MapReader + MapWriter>(src_mac: [u8; 6], maps: &mut M) -> Result<(Self, Adopted), ReconcileError> {
        let mut rec = Self::new(src_mac);
        let all = maps.installed_dests().map_err(map_err)?;
        let mut owned: HashMap<u32, Vec<u32>> = HashMap::new();
        for (slot, d) in (0u32..).zip(&all) {
            if let Some(g) = rec.generations.get_mut(slot as usize) {
                *g = d.generation;
            }
            if d.family != 0 {
                owned.entry(d.owner).or_default().push(slot);
            }
        }
        let mut found = Adopted::default();
        for (key, value) in maps.installed_services().map_err(map_err)? {
            let kind = RingKind::from_id(value.algo).ok_or_else(|| {
                ReconcileError::Foreign(format!("service {key} with scheduler number {}", value.algo))
            })?;
            if !rec.service_indexes.free.remove(&value.index) {
                return Err(ReconcileError::Foreign(format!("two services with index {}", value.index)));
            }
            if value.ring_len > 0 && !rec.ring.reserve(value.ring_off, value.ring_len) {
                return Err(ReconcileError::Foreign(format!("service {key} with an overlapping ring")));
            }
            let ring = maps.installed_ring(value.ring_off, value.ring_len).map_err(map_err)?;
            let (mut dests, mut sorry) = (Vec::new(), None);
            for slot in owned.remove(&value.index).unwrap_or_default() {
                let d = &all[slot as usize];
                let installed = InstalledDest {
                    addr: addr_of(d.family, d.addr),
                    port: d.port,
                    slot,
                    weight: d.weight,
                    mac: (d.flags & DEST_F_ACTIVE != 0).then_some(d.mac),
                };
                rec.dest_slots.free.remove(&slot);
                if d.src_mac != src_mac {
                    let role = (value.index, d.role);
                    maps.set_dest(slot, rec.dest_value(&installed, role)).map_err(map_err)?;
                }
                match d.role {
                    DEST_ROLE_SORRY => sorry = Some(installed),
                    _ => dests.push(installed),
                }
            }
            found.services += 1;
            found.dests += dests.len() + usize::from(sorry.is_some());
            *rec.filter_refs.entry(filter_bit(key)).or_insert(0) += 1;
            let service =
                InstalledService { key, kind, index: value.index, ring_off: value.ring_off, ring, dests, sorry, value };
            rec.services.insert(key, service);
        }
        for slot in owned.into_values().flatten() {
            rec.dest_slots.free.remove(&slot);
            rec.retire_dest(slot, maps)?;
            found.orphans += 1;
        }
        Ok((rec, found))
    }

    /// Writes the whole VIP pre-filter (a freshly loaded program starts with it empty).
    pub fn write_filter<W: MapWriter>(&self, maps: &mut W) -> Result<(), ReconcileError> {
        let mut words: BTreeMap<u32, u64> = BTreeMap::new();
        for &bit in self.filter_refs.keys() {
            let (word, mask) = filter::word_and_mask(bit);
            *words.entry(word).or_default() |= mask;
        }
        for (word, bits) in words {
            maps.set_filter_word(word, bits).map_err(map_err)?;
        }
        Ok(())
    }

    /// The generation of a destination slot in use (for the flow sweep), None if it is free.
    #[must_use]
    pub fn generation(&self, slot: u32) -> Option<u32> {
        (!self.dest_slots.free.contains(&slot)).then(|| self.generations.get(slot as usize).copied()).flatten()
    }

    /// Installed services, in key order.
    pub fn services(&self) -> impl Iterator<Item = &InstalledService> {
        self.services.values()
    }

    /// Brings the maps to `plan`, with `mac_of` giving each real server's MAC when known.
    pub fn apply<W: MapWriter>(
        &mut self,
        plan: &Plan,
        mac_of: &dyn Fn(IpAddr) -> Option<[u8; 6]>,
        maps: &mut W,
    ) -> Result<(), ReconcileError> {
        let wanted: BTreeMap<ServiceKey, &PlannedService> = plan.services.iter().map(|s| (s.key, s)).collect();
        let gone: Vec<ServiceKey> = self.services.keys().filter(|k| !wanted.contains_key(k)).copied().collect();
        for key in gone {
            self.remove_service(key, maps)?;
        }
        for planned in plan.services.iter() {
            self.apply_service(planned, mac_of, maps)?;
        }
        Ok(())
    }

    /// Brings only `services` to their planned state, leaving every other installed service
    /// as it is: a health decision changes one service, and walking all of them (10,000 on a
    /// large director) would make it wait.
    pub fn apply_some<W: MapWriter>(
        &mut self,
        services: &[PlannedService],
        mac_of: &dyn Fn(IpAddr) -> Option<[u8; 6]>,
        maps: &mut W,
    ) -> Result<(), ReconcileError> {
        for planned in services {
            self.apply_service(planned, mac_of, maps)?;
        }
        Ok(())
    }

    fn apply_service<W: MapWriter>(
        &mut self,
        planned: &PlannedService,
        mac_of: &dyn Fn(IpAddr) -> Option<[u8; 6]>,
        maps: &mut W,
    ) -> Result<(), ReconcileError> {
        let key = planned.key;
        let is_new = !self.services.contains_key(&key);
        let mut current = match self.services.remove(&key) {
            Some(s) => s,
            None => {
                let index = self.service_indexes.take().ok_or(ReconcileError::TooManyServices)?;
                maps.reset_service_index(index).map_err(map_err)?;
                InstalledService {
                    key,
                    kind: planned.kind,
                    index,
                    ring_off: 0,
                    ring: Vec::new(),
                    dests: Vec::new(),
                    sorry: None,
                    value: Service::default(),
                }
            }
        };

        // 1. Destinations: keep the slot of every real server that stays, so its flows stay.
        let mut dests = Vec::with_capacity(planned.dests.len());
        let mut result = Ok(());
        for pd in &planned.dests {
            let existing = current.dests.iter().position(|d| d.addr == pd.addr && d.port == pd.port);
            let existing = existing.map(|i| current.dests.swap_remove(i));
            match self.ensure_dest(existing, pd, mac_of(pd.addr), (current.index, DEST_ROLE_MEMBER), maps) {
                Ok(d) => dests.push(d),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let mut removed = std::mem::replace(&mut current.dests, dests);
        // The sorry server is a destination outside the ring.
        let old_sorry = current.sorry.take();
        if result.is_ok() {
            match (&planned.sorry, old_sorry) {
                (Some(pd), old) => {
                    let keep = old.filter(|d| d.addr == pd.addr && d.port == pd.port);
                    if keep.is_none() {
                        removed.extend(old);
                    }
                    match self.ensure_dest(keep, pd, mac_of(pd.addr), (current.index, DEST_ROLE_SORRY), maps) {
                        Ok(d) => current.sorry = Some(d),
                        Err(e) => result = Err(e),
                    }
                }
                (None, old) => removed.extend(old),
            }
        } else {
            current.sorry = old_sorry;
        }
        if let Err(e) = result {
            // Keep what is installed consistent: the removed ones are still in the maps.
            current.dests.extend(removed);
            return Err(self.abandon(current, is_new, e, maps));
        }

        // 2. The ring over the usable destinations; 3. the service entry that points at it.
        current.kind = planned.kind;
        let ring = build_ring(planned.kind, &current.dests);
        let new_ring = is_new || ring != current.ring;
        let ring_off = if !new_ring || ring.is_empty() {
            current.ring_off
        } else {
            match self.ring.take(ring.len() as u32) {
                Some(off) => off,
                None => return Err(self.abandon(current, is_new, ReconcileError::RingFull, maps)),
            }
        };
        let persistence = planned.persistence.unwrap_or(Persistence { timeout: 0, mask: [0; 4] });
        let value = Service {
            index: current.index,
            ring_off,
            ring_len: ring.len() as u32,
            sched: match planned.kind {
                RingKind::Rr | RingKind::Wrr => sched_kind::RING,
                RingKind::Sh => sched_kind::SH,
                RingKind::Dh => sched_kind::DH,
                RingKind::Mh => sched_kind::MH,
                RingKind::Lc => sched_kind::LC,
                RingKind::Wlc => sched_kind::WLC,
                RingKind::Sed => sched_kind::SED,
                RingKind::Nq => sched_kind::NQ,
            },
            flags: 0,
            algo: planned.kind.id(),
            _pad: 0,
            persist_timeout: persistence.timeout,
            sorry: current.sorry.map_or(NO_SLOT, |d| d.slot),
            persist_mask: persistence.mask,
        };
        if new_ring || value != current.value {
            let ring_written = if new_ring { maps.write_ring(ring_off, &ring) } else { Ok(()) };
            if let Err(e) = ring_written.and_then(|()| maps.set_service(key, value)) {
                if new_ring {
                    self.ring.give_back(ring_off, ring.len() as u32);
                }
                return Err(self.abandon(current, is_new, map_err(e), maps));
            }
            if new_ring {
                self.ring.give_back(current.ring_off, current.ring.len() as u32);
                current.ring_off = ring_off;
                current.ring = ring;
            }
            current.value = value;
        }
        if is_new {
            self.filter_ref(filter_bit(key), maps)?;
        }
        // 4. Real servers that left: their flows get rescheduled by the data plane.
        for d in removed {
            self.retire_dest(d.slot, maps)?;
        }
        self.services.insert(key, current);
        Ok(())
    }

    /// Keeps `existing` (updating its MAC or weight in the map if they changed) or installs
    /// a new destination in a fresh slot with a new generation.
    /// `owner`: the service's index and the destination's `DEST_ROLE_*` in it.
    fn ensure_dest<W: MapWriter>(
        &mut self,
        existing: Option<InstalledDest>,
        pd: &PlannedDest,
        mac: Option<[u8; 6]>,
        owner: (u32, u8),
        maps: &mut W,
    ) -> Result<InstalledDest, ReconcileError> {
        if let Some(mut d) = existing {
            if (d.mac != mac && mac.is_some()) || d.weight != pd.weight {
                d.mac = mac.or(d.mac);
                d.weight = pd.weight;
                maps.set_dest(d.slot, self.dest_value(&d, owner)).map_err(map_err)?;
            }
            return Ok(d);
        }
        let slot = self.dest_slots.take().ok_or(ReconcileError::TooManyDests)?;
        self.generations[slot as usize] = self.generations[slot as usize].wrapping_add(1);
        let d = InstalledDest { addr: pd.addr, port: pd.port, slot, weight: pd.weight, mac };
        let written = maps.reset_dest_stats(slot).and_then(|()| maps.set_dest(slot, self.dest_value(&d, owner)));
        if let Err(e) = written {
            self.dest_slots.give_back(slot);
            return Err(map_err(e));
        }
        Ok(d)
    }

    /// After a failed update: an existing service stays recorded as it is in the maps; a new
    /// one, never published, gives back what it took so the next apply starts it afresh.
    fn abandon<W: MapWriter>(
        &mut self,
        current: InstalledService,
        is_new: bool,
        error: ReconcileError,
        maps: &mut W,
    ) -> ReconcileError {
        if !is_new {
            self.services.insert(current.key, current);
            return error;
        }
        for d in current.dests.iter().chain(&current.sorry) {
            // Best effort: the slot was never reachable (no ring pointed at it).
            let _ = self.retire_dest(d.slot, maps);
        }
        self.service_indexes.give_back(current.index);
        error
    }

    /// Updates a real server's MAC in every service that uses it (a neighbour table change).
    pub fn set_mac<W: MapWriter>(
        &mut self,
        addr: IpAddr,
        mac: Option<[u8; 6]>,
        plan: &Plan,
        maps: &mut W,
    ) -> Result<(), ReconcileError> {
        let Some(mac) = mac else {
            // A failed resolution keeps the last MAC: health checks, not ARP, decide whether a
            // real server is usable; the kernel's own forwarding would keep the entry too.
            return Ok(());
        };
        let affected: Vec<ServiceKey> = self
            .services
            .values()
            .filter(|s| s.dests.iter().chain(&s.sorry).any(|d| d.addr == addr && d.mac != Some(mac)))
            .map(|s| s.key)
            .collect();
        let lookup = move |a: IpAddr| if a == addr { Some(mac) } else { None };
        for key in affected {
            let Some(planned) = plan.services.iter().find(|s| s.key == key) else { continue };
            let known: HashMap<IpAddr, [u8; 6]> =
                self.services[&key].dests.iter().filter_map(|d| d.mac.map(|m| (d.addr, m))).collect();
            self.apply_service(planned, &|a| lookup(a).or_else(|| known.get(&a).copied()), maps)?;
        }
        Ok(())
    }

    /// Removes everything (clean shutdown leaves no stale service in maps that outlive us).
    pub fn clear<W: MapWriter>(&mut self, maps: &mut W) -> Result<(), ReconcileError> {
        let keys: Vec<ServiceKey> = self.services.keys().copied().collect();
        for key in keys {
            self.remove_service(key, maps)?;
        }
        Ok(())
    }

    fn remove_service<W: MapWriter>(&mut self, key: ServiceKey, maps: &mut W) -> Result<(), ReconcileError> {
        let Some(s) = self.services.remove(&key) else { return Ok(()) };
        maps.remove_service(key).map_err(map_err)?;
        self.filter_unref(filter_bit(key), maps)?;
        for d in s.dests.iter().chain(&s.sorry) {
            self.retire_dest(d.slot, maps)?;
        }
        self.ring.give_back(s.ring_off, s.ring.len() as u32);
        self.service_indexes.give_back(s.index);
        Ok(())
    }

    /// Deactivates a slot (flows pinned to it get rescheduled) and frees it. The generation
    /// stays in the map, so a restarted agent carries on counting from it.
    fn retire_dest<W: MapWriter>(&mut self, slot: u32, maps: &mut W) -> Result<(), ReconcileError> {
        let dead = Dest { src_mac: self.src_mac, generation: self.generations[slot as usize], ..Dest::default() };
        maps.set_dest(slot, dead).map_err(map_err)?;
        self.dest_slots.give_back(slot);
        Ok(())
    }

    fn dest_value(&self, d: &InstalledDest, (owner, role): (u32, u8)) -> Dest {
        Dest {
            mac: d.mac.unwrap_or_default(),
            src_mac: self.src_mac,
            generation: self.generations[d.slot as usize],
            flags: if d.mac.is_some() { DEST_F_ACTIVE } else { 0 },
            weight: d.weight,
            addr: addr_words(d.addr),
            port: d.port,
            family: if d.addr.is_ipv4() { 4 } else { 6 },
            role,
            owner,
        }
    }

    fn filter_ref<W: MapWriter>(&mut self, bit: u32, maps: &mut W) -> Result<(), ReconcileError> {
        let n = self.filter_refs.entry(bit).or_insert(0);
        *n += 1;
        if *n == 1 { self.write_filter_word(bit, maps) } else { Ok(()) }
    }

    fn filter_unref<W: MapWriter>(&mut self, bit: u32, maps: &mut W) -> Result<(), ReconcileError> {
        match self.filter_refs.get_mut(&bit) {
            Some(n) if *n > 1 => {
                *n -= 1;
                Ok(())
            }
            Some(_) => {
                self.filter_refs.remove(&bit);
                self.write_filter_word(bit, maps)
            }
            None => Ok(()),
        }
    }

    fn write_filter_word<W: MapWriter>(&self, bit: u32, maps: &mut W) -> Result<(), ReconcileError> {
        let (word, _) = filter::word_and_mask(bit);
        let bits = self
            .filter_refs
            .keys()
            .map(|&b| filter::word_and_mask(b))
            .filter(|&(w, _)| w == word)
            .fold(0u64, |acc, (_, m)| acc | m);
        maps.set_filter_word(word, bits).map_err(map_err)
    }
}

/// The pre-filter bit of a service's VIP.
fn filter_bit(key: ServiceKey) -> u32 {
    match key {
        ServiceKey::V4(k) => filter::bit_v4(k.addr),
        ServiceKey::V6(k) => filter::bit_v6(k.addr[3]),
    }
}

/// What the data plane walks or indexes for new flows (`RING[ring_off..][..len]`): the rr/wrr
/// ring, or the sh/dh/mh bucket table, as destination slots. A real server whose MAC is
/// unknown cannot be forwarded to and is left out, like a weight of 0.
fn build_ring(kind: RingKind, dests: &[InstalledDest]) -> Vec<u32> {
    let mut weights: Vec<u32> = dests.iter().map(|d| if d.mac.is_some() { d.weight } else { 0 }).collect();
    let positions = match kind {
        // rr's ring, and for the connection-count schedulers the list they compare (IPVS skips
        // weight-0 destinations in both).
        RingKind::Rr | RingKind::Lc | RingKind::Wlc | RingKind::Sed | RingKind::Nq => {
            let mut out = vec![0; weights.len()];
            let n = sched::rr_sequence(&weights, &mut out);
            out.truncate(n);
            out
        }
        RingKind::Wrr => {
            sched::fit_weights(&mut weights, sched::RING_CAP);
            let mut out = vec![0; sched::wrr_len(&weights) as usize];
            let n = sched::wrr_sequence(&weights, &mut out);
            out.truncate(n);
            out
        }
        RingKind::Sh | RingKind::Dh => {
            let mut table = [0u32; sched_ext::SH_TAB_SIZE as usize];
            let filled = if kind == RingKind::Sh {
                sched_ext::sh_table(&weights, &mut table)
            } else {
                sched_ext::dh_table(&weights, &mut table)
            };
            if !filled {
                return Vec::new();
            }
            table.to_vec()
        }
        RingKind::Mh => {
            let mh: Vec<sched_ext::MhDest> = dests
                .iter()
                .zip(&weights)
                .map(|(d, &weight)| sched_ext::MhDest { addr: addr_words(d.addr), port: d.port, weight })
                .collect();
            let mut table = vec![0u32; sched_ext::MH_TAB_SIZE as usize];
            if !sched_ext::mh_table(&mh, &mut table) {
                return Vec::new();
            }
            table
        }
    };
    positions.into_iter().map(|i| dests[i as usize].slot).collect()
}

/// An address as four words (IPv4 in the first), for the Maglev permutation.
/// The inverse of [`addr_words`], for a destination of `family` 4 or 6.
fn addr_of(family: u8, w: [u32; 4]) -> IpAddr {
    match family {
        4 => IpAddr::V4(std::net::Ipv4Addr::from(w[0].to_ne_bytes())),
        _ => IpAddr::V6(lvs_common::maps::v6_from_words(w)),
    }
}

fn addr_words(a: IpAddr) -> [u32; 4] {
    match a {
        IpAddr::V4(a) => [u32::from_ne_bytes(a.octets()), 0, 0, 0],
        IpAddr::V6(a) => lvs_common::maps::v6_words(a),
    }
}

/// A free list of indexes `0..n`, handing out the lowest first (keeps maps dense).
#[derive(Debug)]
struct Slots {
    free: std::collections::BTreeSet<u32>,
}

impl Slots {
    fn new(n: u32) -> Self {
        Self { free: (0..n).collect() }
    }
    fn take(&mut self) -> Option<u32> {
        self.free.pop_first()
    }
    fn give_back(&mut self, i: u32) {
        self.free.insert(i);
    }
}

/// First-fit allocator of ring ranges, merging neighbours on free.
#[derive(Debug)]
struct RingSpace {
    /// Free ranges: offset -> length.
    free: BTreeMap<u32, u32>,
}

impl RingSpace {
    fn new(n: u32) -> Self {
        Self { free: BTreeMap::from([(0, n)]) }
    }

    /// Marks `off..off + len` as used (adoption); false if any of it is not free.
    fn reserve(&mut self, off: u32, len: u32) -> bool {
        let Some((&start, &have)) = self.free.range(..=off).next_back() else { return false };
        let (end, want_end) = (u64::from(start) + u64::from(have), u64::from(off) + u64::from(len));
        if want_end > end {
            return false;
        }
        self.free.remove(&start);
        if off > start {
            self.free.insert(start, off - start);
        }
        if end > want_end {
            self.free.insert(off + len, (end - want_end) as u32);
        }
        true
    }

    fn take(&mut self, len: u32) -> Option<u32> {
        let (&off, &have) = self.free.iter().find(|&(_, &l)| l >= len)?;
        self.free.remove(&off);
        if have > len {
            self.free.insert(off + len, have - len);
        }
        Some(off)
    }

    fn give_back(&mut self, off: u32, len: u32) {
        if len == 0 {
            return;
        }
        let (mut off, mut len) = (off, len);
        if let Some((&prev, &plen)) = self.free.range(..off).next_back()
            && prev + plen == off
        {
            self.free.remove(&prev);
            off = prev;
            len += plen;
        }
        if let Some(&nlen) = self.free.get(&(off + len)) {
            self.free.remove(&(off + len));
            len += nlen;
        }
        self.free.insert(off, len);
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    /// The maps as plain collections.
    #[derive(Default)]
    struct Model {
        filter: HashMap<u32, u64>,
        services: HashMap<ServiceKey, Service>,
        dests: HashMap<u32, Dest>,
        ring: HashMap<u32, u32>,
        writes: usize,
    }

    impl MapWriter for Model {
        type Error = Infallible;
        fn set_filter_word(&mut self, word: u32, bits: u64) -> Result<(), Infallible> {
            self.writes += 1;
            self.filter.insert(word, bits);
            Ok(())
        }
        fn set_service(&mut self, key: ServiceKey, service: Service) -> Result<(), Infallible> {
            self.writes += 1;
            self.services.insert(key, service);
            Ok(())
        }
        fn remove_service(&mut self, key: ServiceKey) -> Result<(), Infallible> {
            self.writes += 1;
            self.services.remove(&key);
            Ok(())
        }
        fn set_dest(&mut self, slot: u32, dest: Dest) -> Result<(), Infallible> {
            self.writes += 1;
            self.dests.insert(slot, dest);
            Ok(())
        }
        fn write_ring(&mut self, offset: u32, slots: &[u32]) -> Result<(), Infallible> {
            self.writes += 1;
            for (i, s) in slots.iter().enumerate() {
                self.ring.insert(offset + i as u32, *s);
            }
            Ok(())
        }
        fn reset_dest_stats(&mut self, _: u32) -> Result<(), Infallible> {
            Ok(())
        }
        fn reset_service_index(&mut self, _: u32) -> Result<(), Infallible> {
            Ok(())
        }
    }

    impl MapReader for Model {
        type Error = Infallible;
        fn installed_services(&self) -> Result<Vec<(ServiceKey, Service)>, Infallible> {
            Ok(self.services.iter().map(|(k, v)| (*k, *v)).collect())
        }
        fn installed_dests(&self) -> Result<Vec<Dest>, Infallible> {
            Ok((0..MAX_DESTS).map(|i| self.dests.get(&i).copied().unwrap_or_default()).collect())
        }
        fn installed_ring(&self, off: u32, len: u32) -> Result<Vec<u32>, Infallible> {
            Ok((off..off + len).map(|i| self.ring.get(&i).copied().unwrap_or_default()).collect())
        }
    }

    impl Model {
        /// The real servers new flows of `key` go to, in ring order (what the data plane walks).
        fn ring_of(&self, key: ServiceKey) -> Vec<[u8; 6]> {
            let s = self.services[&key];
            (s.ring_off..s.ring_off + s.ring_len).map(|i| self.dests[&self.ring[&i]].mac).collect()
        }
        fn is_vip(&self, key: ServiceKey) -> bool {
            let (w, m) = filter::word_and_mask(filter_bit(key));
            self.filter.get(&w).is_some_and(|b| b & m != 0)
        }
    }

    const SRC: [u8; 6] = [2, 0, 0, 0, 0, 0xd];
    const VIP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 100));

    fn rs(n: u8) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, n))
    }
    fn mac(n: u8) -> [u8; 6] {
        [2, 0, 0, 0, 0, n]
    }
    fn plan(kind: RingKind, weights: &[(u8, u32)]) -> Plan {
        Plan {
            services: vec![PlannedService {
                key: ServiceKey::new(VIP, 80, 6),
                kind,
                dests: weights.iter().map(|&(n, weight)| PlannedDest { addr: rs(n), port: 80, weight }).collect(),
                persistence: None,
                sorry: None,
            }],
            ipvs: Vec::new(),
        }
    }
    fn all_macs(a: IpAddr) -> Option<[u8; 6]> {
        match a {
            IpAddr::V4(a) => Some(mac(a.octets()[3])),
            IpAddr::V6(a) => Some(mac(a.octets()[15])),
        }
    }

    #[test]
    fn installs_a_wrr_service() {
        let (mut r, mut m) = (Reconciler::new(SRC), Model::default());
        let p = plan(RingKind::Wrr, &[(11, 1), (12, 2), (13, 3)]);
        r.apply(&p, &all_macs, &mut m).unwrap();
        let key = p.services[0].key;
        assert_eq!(m.ring_of(key), [mac(13), mac(12), mac(13), mac(11), mac(12), mac(13)]);
        assert!(m.is_vip(ServiceKey::new(VIP, 80, 6)));
        assert!(m.dests.values().all(|d| d.src_mac == SRC && d.flags == DEST_F_ACTIVE));
    }

    /// Two services of every kind, one with a sorry server and persistence, v4 and v6.
    fn mixed_plan() -> Plan {
        let v6 = IpAddr::V6("fd00::100".parse().unwrap());
        let mut services = Vec::new();
        for (i, kind) in RingKind::ALL.into_iter().enumerate() {
            for (vip, port) in [(VIP, 80 + i as u16), (v6, 443 + i as u16)] {
                let dest = |n: u8, weight| PlannedDest {
                    addr: if vip.is_ipv4() { rs(n) } else { IpAddr::V6(format!("fd00::{n}").parse().unwrap()) },
                    port: 8080,
                    weight,
                };
                services.push(PlannedService {
                    key: ServiceKey::new(vip, port, 6),
                    kind,
                    dests: vec![dest(11, 1), dest(12, 2), dest(13, 0)],
                    persistence: (i % 2 == 0).then_some(Persistence { timeout: 300, mask: [u32::MAX; 4] }),
                    sorry: (i % 3 == 0).then(|| dest(99, 1)),
                });
            }
        }
        Plan { services, ipvs: Vec::new() }
    }

    #[test]
    fn an_adopting_agent_sees_what_the_first_installed_and_writes_nothing() {
        let (mut first, mut m) = (Reconciler::new(SRC), Model::default());
        let p = mixed_plan();
        first.apply(&p, &all_macs, &mut m).unwrap();
        let (mut second, found) = Reconciler::adopt(SRC, &mut m).unwrap();
        assert_eq!(found, Adopted { services: 18, dests: 18 * 3 + 6, orphans: 0 });
        let (a, b): (Vec<_>, Vec<_>) = (first.services().collect(), second.services().collect());
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            // Same slots, weights, MACs and rings; the member order may differ (slot order).
            let sorted = |s: &InstalledService| {
                let mut d = s.dests.clone();
                d.sort_by_key(|d| d.slot);
                (s.key, s.kind, s.index, s.ring_off, s.ring.clone(), d, s.sorry, s.value)
            };
            assert_eq!(sorted(x), sorted(y));
        }
        for slot in 0..MAX_DESTS {
            assert_eq!(first.generation(slot), second.generation(slot), "slot {slot}");
        }
        let before = m.writes;
        second.apply(&p, &all_macs, &mut m).unwrap();
        assert_eq!(m.writes, before, "the same plan after adoption writes nothing");
    }

    #[test]
    fn after_adoption_a_change_lands_as_it_would_have_without_the_restart() {
        let (mut first, mut m1) = (Reconciler::new(SRC), Model::default());
        let p = mixed_plan();
        first.apply(&p, &all_macs, &mut m1).unwrap();
        let mut m2 = Model {
            filter: m1.filter.clone(),
            services: m1.services.clone(),
            dests: m1.dests.clone(),
            ring: m1.ring.clone(),
            writes: 0,
        };
        let (mut second, _) = Reconciler::adopt(SRC, &mut m2).unwrap();
        // A removed service, a removed real server, a new one, a weight change.
        let mut q = p.clone();
        q.services.remove(3);
        q.services[0].dests.remove(0);
        q.services[1].dests.push(PlannedDest { addr: IpAddr::V6("fd00::14".parse().unwrap()), port: 8080, weight: 3 });
        q.services[2].dests[1].weight = 5;
        first.apply(&q, &all_macs, &mut m1).unwrap();
        second.apply(&q, &all_macs, &mut m2).unwrap();
        assert_eq!(m1.services, m2.services);
        assert_eq!(m1.dests, m2.dests);
        for s in m1.services.values() {
            for i in s.ring_off..s.ring_off + s.ring_len {
                assert_eq!(m1.ring[&i], m2.ring[&i]);
            }
        }
        let vips =
            |m: &Model| m.filter.iter().filter(|(_, b)| **b != 0).map(|(w, b)| (*w, *b)).collect::<BTreeMap<_, _>>();
        assert_eq!(vips(&m1), vips(&m2));
    }

    #[test]
    fn adoption_retires_orphan_slots_and_takes_a_new_source_mac() {
        let (mut first, mut m) = (Reconciler::new(SRC), Model::default());
        first.apply(&plan(RingKind::Rr, &[(11, 1), (12, 1)]), &all_macs, &mut m).unwrap();
        // A destination written for a service that never got its entry (a crash mid-update).
        let orphan = Dest { family: 4, role: DEST_ROLE_MEMBER, owner: 77, flags: DEST_F_ACTIVE, ..Dest::default() };
        m.dests.insert(500, orphan);
        let new_mac = [2, 0, 0, 0, 0, 0xe];
        let (rec, found) = Reconciler::adopt(new_mac, &mut m).unwrap();
        assert_eq!(found.orphans, 1);
        assert_eq!(m.dests[&500].flags & DEST_F_ACTIVE, 0);
        assert_eq!(m.dests[&500].family, 0);
        assert!(rec.generation(500).is_none(), "the orphan's slot is free again");
        let members: Vec<&Dest> = m.dests.values().filter(|d| d.family != 0).collect();
        assert_eq!(members.len(), 2);
        assert!(members.iter().all(|d| d.src_mac == new_mac));
        let mut fresh = Model::default();
        rec.write_filter(&mut fresh).unwrap();
        assert!(fresh.is_vip(ServiceKey::new(VIP, 80, 6)));
    }

    #[test]
    fn maps_from_another_agent_are_refused() {
        let (mut first, mut m) = (Reconciler::new(SRC), Model::default());
        first.apply(&plan(RingKind::Rr, &[(11, 1)]), &all_macs, &mut m).unwrap();
        m.services.values_mut().for_each(|s| s.algo = 0);
        assert!(matches!(Reconciler::adopt(SRC, &mut m), Err(ReconcileError::Foreign(_))));
    }

    #[test]
    fn reapplying_the_same_plan_writes_nothing() {
        let (mut r, mut m) = (Reconciler::new(SRC), Model::default());
        let p = plan(RingKind::Rr, &[(11, 1), (12, 1)]);
        r.apply(&p, &all_macs, &mut m).unwrap();
        let before = m.writes;
        r.apply(&p, &all_macs, &mut m).unwrap();
        assert_eq!(m.writes, before);
    }

    #[test]
    fn unresolved_servers_wait_outside_the_ring() {
        let (mut r, mut m) = (Reconciler::new(SRC), Model::default());
        let p = plan(RingKind::Rr, &[(11, 1), (12, 1)]);
        r.apply(&p, &|a| if a == rs(11) { Some(mac(11)) } else { None }, &mut m).unwrap();
        let key = p.services[0].key;
        assert_eq!(m.ring_of(key), [mac(11)]);
        r.set_mac(rs(12), Some(mac(12)), &p, &mut m).unwrap();
        assert_eq!(m.ring_of(key), [mac(11), mac(12)]);
    }

    #[test]
    fn a_changed_mac_keeps_the_slot_so_flows_follow_it() {
        let (mut r, mut m) = (Reconciler::new(SRC), Model::default());
        let p = plan(RingKind::Rr, &[(11, 1), (12, 1)]);
        r.apply(&p, &all_macs, &mut m).unwrap();
        let before = r.services().next().unwrap().dests[0];
        let gen_before = m.dests[&before.slot].generation;
        let new_mac = [2, 0, 0, 0, 0xee, 0xee];
        r.set_mac(rs(11), Some(new_mac), &p, &mut m).unwrap();
        let after = r.services().next().unwrap().dests[0];
        assert_eq!(after.slot, before.slot);
        assert_eq!(m.dests[&after.slot].mac, new_mac);
        assert_eq!(m.dests[&after.slot].generation, gen_before, "flows pinned to the slot stay valid");
        // A failed resolution keeps the last MAC.
        r.set_mac(rs(11), None, &p, &mut m).unwrap();
        assert_eq!(m.dests[&after.slot].mac, new_mac);
    }

    #[test]
    fn persistence_and_sorry_changes_rewrite_only_the_service_entry() {
        let (mut r, mut m) = (Reconciler::new(SRC), Model::default());
        let mut p = plan(RingKind::Rr, &[(11, 1)]);
        r.apply(&p, &all_macs, &mut m).unwrap();
        let key = p.services[0].key;
        let ring_before = m.ring.clone();

        p.services[0].persistence = Some(Persistence { timeout: 50, mask: [u32::MAX, 0, 0, 0] });
        p.services[0].sorry = Some(PlannedDest { addr: rs(19), port: 80, weight: 1 });
        r.apply(&p, &all_macs, &mut m).unwrap();
        let svc = m.services[&key];
        assert_eq!(svc.persist_timeout, 50);
        assert_ne!(svc.sorry, NO_SLOT);
        assert_eq!(m.dests[&svc.sorry].mac, mac(19));
        assert_eq!(m.ring, ring_before, "the ring did not move");

        p.services[0].sorry = None;
        r.apply(&p, &all_macs, &mut m).unwrap();
        assert_eq!(m.services[&key].sorry, NO_SLOT);
        assert_eq!(m.dests[&svc.sorry].flags, 0, "the sorry server's slot is retired");
    }

    #[test]
    fn weight_zero_quiesces_and_removal_deactivates() {
        let (mut r, mut m) = (Reconciler::new(SRC), Model::default());
        let key = ServiceKey::new(VIP, 80, 6);
        r.apply(&plan(RingKind::Wrr, &[(11, 1), (12, 1)]), &all_macs, &mut m).unwrap();
        let slot12 = r.services().next().unwrap().dests[1].slot;

        r.apply(&plan(RingKind::Wrr, &[(11, 1), (12, 0)]), &all_macs, &mut m).unwrap();
        assert_eq!(m.ring_of(key), [mac(11)]);
        assert_eq!(m.dests[&slot12].flags, DEST_F_ACTIVE, "quiesced: existing flows continue");

        r.apply(&plan(RingKind::Wrr, &[(11, 1)]), &all_macs, &mut m).unwrap();
        assert_eq!(m.dests[&slot12].flags, 0, "removed: flows are rescheduled");

        // The slot is reused with a new generation, so old flows do not follow it.
        let gen_before = m.dests[&slot12].generation;
        r.apply(&plan(RingKind::Wrr, &[(11, 1), (14, 1)]), &all_macs, &mut m).unwrap();
        assert_eq!(m.dests[&slot12].mac, mac(14));
        assert_ne!(m.dests[&slot12].generation, gen_before);
    }

    #[test]
    fn a_service_without_usable_servers_has_an_empty_ring() {
        let (mut r, mut m) = (Reconciler::new(SRC), Model::default());
        let p = plan(RingKind::Rr, &[(11, 0)]);
        r.apply(&p, &all_macs, &mut m).unwrap();
        assert_eq!(m.services[&p.services[0].key].ring_len, 0);
    }

    #[test]
    fn removing_everything_clears_the_filter_and_frees_space() {
        let (mut r, mut m) = (Reconciler::new(SRC), Model::default());
        r.apply(&plan(RingKind::Wrr, &[(11, 5), (12, 7)]), &all_macs, &mut m).unwrap();
        r.apply(&Plan::default(), &all_macs, &mut m).unwrap();
        assert!(m.services.is_empty());
        assert!(!m.is_vip(ServiceKey::new(VIP, 80, 6)));
        assert_eq!(r.ring.free, BTreeMap::from([(0, RING_SLOTS)]));
        assert_eq!(r.dest_slots.free.len(), MAX_DESTS as usize);
    }

    #[test]
    fn ring_space_merges_on_free() {
        let mut s = RingSpace::new(100);
        let a = s.take(10).unwrap();
        let b = s.take(20).unwrap();
        let c = s.take(30).unwrap();
        s.give_back(b, 20);
        assert_eq!(s.take(15), Some(b));
        s.give_back(b, 15);
        s.give_back(a, 10);
        s.give_back(c, 30);
        assert_eq!(s.free, BTreeMap::from([(0, 100)]));
        assert_eq!(s.take(101), None);
    }
}
