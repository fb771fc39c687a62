//! Real servers' MACs from the kernel's neighbour table.
//!
//! XDP forwarding never goes through the kernel's neighbour code, so nothing
//! would ever make the kernel resolve a real server, or keep re-verifying its
//! entry, on the agent's behalf. For every tracked address that the kernel has
//! no managed or static entry for, we therefore create a *managed* neighbour
//! entry (NTF_EXT_MANAGED, Linux >= 5.16, `ip neigh replace ADDR dev IF
//! managed`): the kernel resolves it by itself, re-probes it periodically
//! and never garbage-collects it. Every change of the entry is published on
//! RTNLGRP_NEIGH, which we follow on a socket of our own.
//!
//! On older kernels the NDA_FLAGS_EXT attribute is silently ignored
//! (neigh_add() parses with nlmsg_parse_deprecated()), which we detect by
//! reading the entry back; then resolution is provoked by sending an empty UDP
//! datagram to the discard port from a socket bound to the interface: the
//! output path queues it and starts ARP/NDP, and the reply creates the entry.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::channel::mpsc::UnboundedReceiver;
use futures::{StreamExt, TryStreamExt};
use rtnetlink::MulticastGroup;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::link::{LinkFlags, LinkMessage};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourExtFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::{Netlink, NetlinkError};

/// A tracked address gained, changed or lost its MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighbourUpdate {
    pub addr: IpAddr,
    /// `None`: the entry failed or was deleted (only sent after a MAC was
    /// reported for the address).
    pub mac: Option<[u8; 6]>,
}

/// Capacity of the update channel. The reader never waits on it: when it is
/// full the update is dropped with a warning and not recorded as reported, so
/// the next event for that address sends it again.
const CHANNEL_CAPACITY: usize = 1024;
/// Fallback pokes: first retry after 1 s, doubling up to 30 s.
const POKE_MIN_INTERVAL: Duration = Duration::from_secs(1);
const POKE_MAX_INTERVAL: Duration = Duration::from_secs(30);
/// The discard service (RFC 863): a datagram to it is harmless if it arrives.
const DISCARD_PORT: u16 = 9;

// NUD_* bits (include/uapi/linux/neighbour.h).
const NUD_INCOMPLETE: u16 = 0x01;
const NUD_REACHABLE: u16 = 0x02;
const NUD_STALE: u16 = 0x04;
const NUD_DELAY: u16 = 0x08;
const NUD_PROBE: u16 = 0x10;
const NUD_FAILED: u16 = 0x20;
const NUD_NOARP: u16 = 0x40;
const NUD_PERMANENT: u16 = 0x80;
/// States in which the kernel itself would transmit to the entry's lladdr
/// (NUD_VALID in include/net/neighbour.h).
const NUD_VALID: u16 = NUD_PERMANENT | NUD_NOARP | NUD_REACHABLE | NUD_PROBE | NUD_STALE | NUD_DELAY;

/// One entry of the kernel's neighbour table, as far as we care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    state: u16,
    lladdr: Option<[u8; 6]>,
    managed: bool,
}

impl Entry {
    /// The MAC if the kernel considers it usable.
    fn valid_mac(&self) -> Option<[u8; 6]> {
        if self.state & NUD_VALID != 0 { self.lladdr } else { None }
    }

    /// Configured by someone (`ip neigh add ... permanent`, or a NOARP device):
    /// never ours to replace.
    fn is_static(&self) -> bool {
        self.state & (NUD_PERMANENT | NUD_NOARP) != 0
    }
}

/// Decodes a neighbour message into (ifindex, address, entry).
fn parse_neighbour(msg: &NeighbourMessage) -> Option<(u32, IpAddr, Entry)> {
    let mut addr = None;
    let mut lladdr = None;
    let mut managed = false;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                addr = Some(IpAddr::V4(*a));
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                addr = Some(IpAddr::V6(*a));
            }
            NeighbourAttribute::LinkLayerAddress(l) => {
                lladdr = <[u8; 6]>::try_from(l.as_slice()).ok();
            }
            NeighbourAttribute::ExtFlags(f) => managed = f.contains(NeighbourExtFlags::Managed),
            _ => {}
        }
    }
    let entry = Entry { state: u16::from(msg.header.state), lladdr, managed };
    Some((msg.header.ifindex, addr?, entry))
}

fn family(addr: IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// Per tracked address.
#[derive(Default)]
struct Tracked {
    /// What the consumer was last told (via the channel or track()'s result).
    reported: Option<[u8; 6]>,
    /// Count of kernel events seen for the address, so that track() can tell
    /// whether its table read is older than what the reader has seen.
    events: u64,
    /// We created (or turned into) a managed entry: shutdown removes it.
    created: bool,
    /// Fallback resolution task (kernels without managed entries).
    poker: Option<JoinHandle<()>>,
}

struct State {
    tracked: HashMap<IpAddr, Tracked>,
    /// Set once the kernel showed it cannot do managed entries.
    managed_unsupported: bool,
    /// Set once the kernel showed it keeps the managed flag: later entries need no read-back.
    managed_confirmed: bool,
    /// IFF_UP and IFF_LOWER_UP: the kernel flushes non-permanent neighbours
    /// (managed ones included) on carrier loss, so entries are re-created
    /// when it comes back.
    link_usable: bool,
}

struct Shared {
    ifindex: u32,
    ifname: String,
    /// Requests go through the agent's own socket; events arrive on ours.
    nl: Netlink,
    tx: mpsc::Sender<NeighbourUpdate>,
    state: Mutex<State>,
}

/// Follows the neighbour table of one interface for a set of addresses.
pub struct Neighbours {
    shared: Arc<Shared>,
    /// The monitor socket's connection task and the event reader.
    tasks: Vec<JoinHandle<()>>,
}

impl Neighbours {
    /// Watches the neighbour table of `ifindex` (subscribes to RTNLGRP_NEIGH
    /// and RTNLGRP_LINK on its own netlink socket) and sends an update on the
    /// channel whenever a tracked address gains, changes or loses its MAC.
    pub async fn start(
        nl: &Netlink,
        ifindex: u32,
    ) -> Result<(Neighbours, mpsc::Receiver<NeighbourUpdate>), NetlinkError> {
        let link = nl.link_message_by_index(ifindex).await?;
        let info = super::LinkInfo::from_message(&link);
        let (connection, _handle, events) =
            rtnetlink::new_multicast_connection(&[MulticastGroup::Neigh, MulticastGroup::Link])
                .map_err(|e| NetlinkError::from_io(format!("subscribing to neighbour events of {}", info.name), e))?;
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let shared = Arc::new(Shared {
            ifindex,
            ifname: info.name,
            nl: nl.clone(),
            tx,
            state: Mutex::new(State {
                tracked: HashMap::new(),
                managed_unsupported: false,
                managed_confirmed: false,
                link_usable: link_usable(&link),
            }),
        });
        // The subscription is in place once the socket is bound (above), so a
        // table read made after this point cannot miss a later change.
        let tasks = vec![tokio::spawn(connection), tokio::spawn(read_events(shared.clone(), events))];
        Ok((Neighbours { shared, tasks }, rx))
    }

    /// Starts tracking `addr`. Returns the MAC if the kernel already knows it
    /// (states REACHABLE, STALE, DELAY, PROBE, PERMANENT, NOARP with a
    /// lladdr). Otherwise provokes resolution and returns None; the MAC
    /// arrives later as an update. An update may repeat the MAC returned
    /// here when the entry changed during the call. Tracking an address twice
    /// is a no-op returning what was last reported.
    pub async fn track(&mut self, addr: IpAddr) -> Result<Option<[u8; 6]>, NetlinkError> {
        Ok(self.track_many(&[addr]).await?.pop().flatten())
    }

    /// `track` for many addresses at once, with one read of the neighbour table for all of
    /// them (a dump per address would make start-up quadratic in the number of real
    /// servers). Returns each address's MAC if already known, in order.
    pub async fn track_many(&mut self, addrs: &[IpAddr]) -> Result<Vec<Option<[u8; 6]>>, NetlinkError> {
        let mut fresh = Vec::new();
        let mut out = vec![None; addrs.len()];
        {
            let mut state = self.shared.lock();
            for (i, addr) in addrs.iter().enumerate() {
                match state.tracked.get(addr) {
                    Some(t) => out[i] = t.reported,
                    None => {
                        state.tracked.insert(*addr, Tracked::default());
                        fresh.push(i);
                    }
                }
            }
        }
        if fresh.is_empty() {
            return Ok(out);
        }
        let table = self.shared.lookup_all().await?;
        for i in fresh {
            let addr = addrs[i];
            out[i] = self.finish_track(addr, self.shared.ensure_with(addr, table.get(&addr).copied()).await)?;
        }
        Ok(out)
    }

    /// The end of tracking one address, once `ensure` ran.
    fn finish_track(
        &self,
        addr: IpAddr,
        ensured: Result<Option<[u8; 6]>, NetlinkError>,
    ) -> Result<Option<[u8; 6]>, NetlinkError> {
        let known = match ensured {
            Ok(known) => known,
            Err(e) => {
                if let Some(t) = self.shared.lock().tracked.remove(&addr)
                    && let Some(poker) = t.poker
                {
                    poker.abort();
                }
                return Err(e);
            }
        };
        if known.is_none() {
            // Whatever resolution achieved meanwhile was, or will be, sent on
            // the channel by the reader.
            return Ok(None);
        }
        let mut state = self.shared.lock();
        let Some(t) = state.tracked.get_mut(&addr) else {
            return Ok(None);
        };
        if t.events == 0 {
            // No event since our read: it is the current state.
            t.reported = known;
            return Ok(known);
        }
        // Events came after our read: the reader's view is the newer one
        // (what it reported was also sent on the channel).
        Ok(t.reported)
    }

    /// Stops tracking `addr` and removes the managed entry track() created.
    pub async fn untrack(&mut self, addr: IpAddr) -> Result<(), NetlinkError> {
        let removed = self.shared.lock().tracked.remove(&addr);
        let Some(t) = removed else { return Ok(()) };
        if let Some(poker) = t.poker {
            poker.abort();
        }
        if t.created {
            self.shared.delete(addr).await?;
        }
        Ok(())
    }

    /// Removes what track() added to the kernel's table (entries it created),
    /// for a clean shutdown. Tries every entry, returns the first error.
    pub async fn shutdown(mut self) -> Result<(), NetlinkError> {
        // Stop the reader first so that our own deletions do not trigger
        // re-resolution.
        for task in self.tasks.drain(..) {
            task.abort();
        }
        let tracked: Vec<(IpAddr, Tracked)> = self.shared.lock().tracked.drain().collect();
        let mut first_error = None;
        for (addr, t) in tracked {
            if let Some(poker) = t.poker {
                poker.abort();
            }
            if t.created
                && let Err(e) = self.shared.delete(addr).await
            {
                warn!(error = %e, "clean-up of neighbour entry failed");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Makes track() use the UDP fallback, as on a kernel older than 5.16.
    #[cfg(test)]
    pub(crate) fn force_fallback(&mut self) {
        self.shared.lock().managed_unsupported = true;
    }
}

impl Drop for Neighbours {
    fn drop(&mut self) {
        // JoinHandle::drop detaches; these tasks must not outlive us.
        for task in &self.tasks {
            task.abort();
        }
        for t in self.shared.lock().tracked.values_mut() {
            if let Some(poker) = t.poker.take() {
                poker.abort();
            }
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (plain
        // assignments only), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the kernel's entry for `addr` on our interface.
    async fn lookup(&self, addr: IpAddr) -> Result<Option<Entry>, NetlinkError> {
        let mut dump = self.nl.handle.neighbours().get().set_address_family(family(addr)).execute();
        loop {
            match dump.try_next().await {
                Ok(Some(msg)) => {
                    if let Some((ifindex, a, entry)) = parse_neighbour(&msg)
                        && ifindex == self.ifindex
                        && a == addr
                    {
                        // Drain the rest so the dump completes cleanly.
                        while let Ok(Some(_)) = dump.try_next().await {}
                        return Ok(Some(entry));
                    }
                }
                Ok(None) => return Ok(None),
                Err(e) => {
                    return Err(NetlinkError::from_rtnl(format!("reading the neighbour table of {}", self.ifname), e));
                }
            }
        }
    }

    /// Every neighbour entry of our interface, both families, in one dump.
    async fn lookup_all(&self) -> Result<HashMap<IpAddr, Entry>, NetlinkError> {
        let mut table = HashMap::new();
        let mut dump = self.nl.handle.neighbours().get().execute();
        loop {
            match dump.try_next().await {
                Ok(Some(msg)) => {
                    if let Some((ifindex, a, entry)) = parse_neighbour(&msg)
                        && ifindex == self.ifindex
                    {
                        table.insert(a, entry);
                    }
                }
                Ok(None) => return Ok(table),
                Err(e) => {
                    return Err(NetlinkError::from_rtnl(format!("reading the neighbour table of {}", self.ifname), e));
                }
            }
        }
    }

    /// Makes sure the kernel is resolving `addr` and keeps it fresh; returns
    /// the MAC the table holds now, if valid.
    async fn ensure(self: &Arc<Self>, addr: IpAddr) -> Result<Option<[u8; 6]>, NetlinkError> {
        let current = self.lookup(addr).await?;
        self.ensure_with(addr, current).await
    }

    /// `ensure`, given the table's current entry for `addr`.
    async fn ensure_with(
        self: &Arc<Self>,
        addr: IpAddr,
        current: Option<Entry>,
    ) -> Result<Option<[u8; 6]>, NetlinkError> {
        if let Some(entry) = current
            && (entry.is_static() || entry.managed)
        {
            // The kernel keeps it up to date already (and it is not ours).
            return Ok(entry.valid_mac());
        }
        let known = current.and_then(|e| e.valid_mac());
        let unsupported = self.lock().managed_unsupported;
        if !unsupported {
            match self.create_managed(addr).await {
                Ok(true) => {
                    let still_tracked = match self.lock().tracked.get_mut(&addr) {
                        Some(t) => {
                            t.created = true;
                            true
                        }
                        None => false,
                    };
                    if !still_tracked {
                        // untrack() ran meanwhile and did not know about it.
                        self.delete(addr).await?;
                    }
                    return Ok(known);
                }
                Ok(false) => {
                    warn!(
                        interface = %self.ifname,
                        "kernel ignored NTF_EXT_MANAGED (needs Linux 5.16); \
                         resolving neighbours by sending UDP datagrams instead"
                    );
                    self.lock().managed_unsupported = true;
                    // What we wrote is an inert NUD_NONE entry: remove it.
                    self.delete(addr).await?;
                }
                Err(e) => {
                    if matches!(e.errno(), Some(libc::EINVAL | libc::EOPNOTSUPP)) {
                        self.lock().managed_unsupported = true;
                    }
                    warn!(error = %e, "resolving by sending UDP datagrams instead");
                }
            }
        }
        self.start_poker(addr);
        Ok(known)
    }

    /// `ip neigh replace ADDR dev IF managed`: the same message iproute2 sends
    /// (NUD_NONE, NDA_FLAGS_EXT = NTF_EXT_MANAGED, NLM_F_CREATE|NLM_F_REPLACE).
    /// Replacing an existing dynamic entry keeps its lladdr and only adds the
    /// flag. Returns whether the kernel kept the flag (it is dropped silently
    /// before 5.16).
    async fn create_managed(&self, addr: IpAddr) -> Result<bool, NetlinkError> {
        let mut request = self.nl.handle.neighbours().add(self.ifindex, addr).replace().state(NeighbourState::None);
        request.message_mut().attributes.push(NeighbourAttribute::ExtFlags(NeighbourExtFlags::Managed));
        request.execute().await.map_err(|e| {
            NetlinkError::from_rtnl(format!("creating a managed neighbour entry for {addr} on {}", self.ifname), e)
        })?;
        // Whether the kernel keeps the flag is a property of the kernel: read it back until it
        // has been seen once, then trust it (a read-back dumps the whole table).
        if self.lock().managed_confirmed {
            return Ok(true);
        }
        let kept = self.lookup(addr).await?.is_some_and(|e| e.managed);
        if kept {
            self.lock().managed_confirmed = true;
        }
        Ok(kept)
    }

    /// `ip neigh del ADDR dev IF`; absent is success.
    async fn delete(&self, addr: IpAddr) -> Result<(), NetlinkError> {
        let mut message = NeighbourMessage::default();
        message.header.family = family(addr);
        message.header.ifindex = self.ifindex;
        message.attributes.push(NeighbourAttribute::Destination(match addr {
            IpAddr::V4(a) => NeighbourAddress::Inet(a),
            IpAddr::V6(a) => NeighbourAddress::Inet6(a),
        }));
        match self.nl.handle.neighbours().del(message).execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                match NetlinkError::from_rtnl(format!("removing the neighbour entry for {addr} on {}", self.ifname), e)
                {
                    NetlinkError::Os { errno, .. } if errno == libc::ENOENT => Ok(()),
                    other => Err(other),
                }
            }
        }
    }

    fn start_poker(self: &Arc<Self>, addr: IpAddr) {
        let mut state = self.lock();
        if let Some(t) = state.tracked.get_mut(&addr)
            && t.poker.is_none()
        {
            t.poker = Some(tokio::spawn(poke_loop(self.clone(), addr)));
        }
    }

    /// Sends one empty UDP datagram to `addr`'s discard port out of our
    /// interface, which makes the kernel resolve `addr`.
    fn poke(&self, addr: IpAddr) -> std::io::Result<()> {
        let bind: SocketAddr = match addr {
            IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(bind)?;
        socket.set_nonblocking(true)?;
        // SO_BINDTODEVICE: route it out of this interface even if the routing
        // table would pick another one (the real servers are on this L2).
        let name = self.ifname.as_bytes();
        // SAFETY: valid fd; optval points to `name.len()` readable bytes.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                name.as_ptr().cast(),
                libc::socklen_t::try_from(name.len()).unwrap_or(libc::socklen_t::MAX),
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let target: SocketAddr = match addr {
            IpAddr::V4(a) => (a, DISCARD_PORT).into(),
            // A link-local target needs its scope.
            IpAddr::V6(a) => {
                let scope = if a.is_unicast_link_local() { self.ifindex } else { 0 };
                SocketAddrV6::new(a, DISCARD_PORT, 0, scope).into()
            }
        };
        socket.send_to(&[], target)?;
        Ok(())
    }

    /// Records a kernel event for a tracked address and reports a change of
    /// MAC. Returns the address when its entry is gone and must be re-created.
    fn on_neighbour(&self, msg: &NeighbourMessage, deleted: bool) -> Option<IpAddr> {
        let (ifindex, addr, entry) = parse_neighbour(msg)?;
        if ifindex != self.ifindex {
            return None;
        }
        let mut state = self.lock();
        let link_usable = state.link_usable;
        let t = state.tracked.get_mut(&addr)?;
        t.events += 1;
        let mac = if deleted {
            // Flushed (carrier loss, `ip neigh flush`) or garbage-collected.
            t.created = false;
            None
        } else if let Some(mac) = entry.valid_mac() {
            Some(mac)
        } else if entry.state & (NUD_FAILED | NUD_INCOMPLETE) != 0 {
            None
        } else {
            // NUD_NONE (e.g. a managed entry just created): says nothing.
            return None;
        };
        if mac != t.reported {
            match self.tx.try_send(NeighbourUpdate { addr, mac }) {
                Ok(()) => t.reported = mac,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // Not recorded: the next event for `addr` sends it again.
                    warn!(%addr, "neighbour update channel full, update dropped");
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        (deleted && link_usable).then_some(addr)
    }

    /// Returns the addresses to re-resolve when the link became usable again.
    fn on_link(&self, msg: &LinkMessage) -> Vec<IpAddr> {
        if msg.header.index != self.ifindex {
            return Vec::new();
        }
        let usable = link_usable(msg);
        let mut state = self.lock();
        let was = std::mem::replace(&mut state.link_usable, usable);
        if usable && !was {
            info!(interface = %self.ifname, "link up, re-resolving real servers");
            state.tracked.keys().copied().collect()
        } else {
            Vec::new()
        }
    }
}

fn link_usable(msg: &LinkMessage) -> bool {
    msg.header.flags.contains(LinkFlags::Up) && msg.header.flags.contains(LinkFlags::LowerUp)
}

async fn read_events(
    shared: Arc<Shared>,
    mut events: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, rtnetlink::sys::SocketAddr)>,
) {
    while let Some((msg, _)) = events.next().await {
        let redo = match msg.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(n)) => {
                shared.on_neighbour(&n, false).into_iter().collect()
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelNeighbour(n)) => {
                shared.on_neighbour(&n, true).into_iter().collect()
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => shared.on_link(&l),
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l)) if l.header.index == shared.ifindex => {
                warn!(interface = %shared.ifname, "interface removed; its real servers cannot be resolved");
                Vec::new()
            }
            _ => Vec::new(),
        };
        for addr in redo {
            // Requests go out on the agent's socket, whose answers do not pass
            // through this reader, so awaiting here cannot deadlock; events
            // queue meanwhile in the unbounded channel.
            if let Err(e) = shared.ensure(addr).await {
                warn!(error = %e, "re-resolving a real server failed");
            }
        }
    }
    debug!(interface = %shared.ifname, "neighbour event stream ended");
}

/// Fallback resolution: pokes `addr` while it is tracked and has no MAC,
/// backing off from 1 s to 30 s.
async fn poke_loop(shared: Arc<Shared>, addr: IpAddr) {
    let mut interval = POKE_MIN_INTERVAL;
    loop {
        let unresolved = match shared.lock().tracked.get(&addr) {
            None => return,
            Some(t) => t.reported.is_none(),
        };
        if unresolved {
            if let Err(e) = shared.poke(addr) {
                debug!(%addr, error = %e, "poking a real server failed");
            }
            tokio::time::sleep(interval).await;
            interval = (interval * 2).min(POKE_MAX_INTERVAL);
        } else {
            interval = POKE_MIN_INTERVAL;
            tokio::time::sleep(POKE_MIN_INTERVAL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use tokio::sync::mpsc;

    use super::super::Netlink;
    use super::super::testns::{NamedNetns, WAIT, ip};
    use super::{NeighbourUpdate, Neighbours};

    const MAC_B: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x53, 0x02];
    const MAC_B2: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x53, 0x03];
    const MAC_B2_TEXT: &str = "02:00:5e:00:53:03";

    /// Two namespaces joined by a veth pair: lvs-a0 (192.0.2.1, 2001:db8::1)
    /// in `a`, where the agent runs, and lvs-b0 (192.0.2.2, 2001:db8::2,
    /// MAC_B) in `b`, the "real server".
    fn veth_pair(tag: &str) -> (NamedNetns, NamedNetns) {
        let a = NamedNetns::new(&format!("{tag}a"));
        let b = NamedNetns::new(&format!("{tag}b"));
        ip(&["link", "add", "lvs-a0", "netns", &a.name, "type", "veth", "peer", "name", "lvs-b0", "netns", &b.name]);
        b.ip(&["link", "set", "lvs-b0", "address", "02:00:5e:00:53:02"]);
        // nodad: usable at once instead of after duplicate address detection.
        a.ip(&["addr", "add", "192.0.2.1/24", "dev", "lvs-a0"]);
        a.ip(&["addr", "add", "2001:db8::1/64", "dev", "lvs-a0", "nodad"]);
        b.ip(&["addr", "add", "192.0.2.2/24", "dev", "lvs-b0"]);
        b.ip(&["addr", "add", "2001:db8::2/64", "dev", "lvs-b0", "nodad"]);
        // arp_notify: a MAC change sends a gratuitous ARP (devinet.c,
        // NETDEV_CHANGEADDR), which overrides an existing entry at once.
        b.sh("echo 1 > /proc/sys/net/ipv4/conf/lvs-b0/arp_notify");
        a.ip(&["link", "set", "lvs-a0", "up"]);
        b.ip(&["link", "set", "lvs-b0", "up"]);
        (a, b)
    }

    /// The next update for `addr`, within WAIT.
    async fn next_for(rx: &mut mpsc::Receiver<NeighbourUpdate>, addr: IpAddr) -> Option<[u8; 6]> {
        let wait = async {
            loop {
                match rx.recv().await {
                    Some(u) if u.addr == addr => return u.mac,
                    Some(_) => {}
                    None => panic!("update channel closed"),
                }
            }
        };
        tokio::time::timeout(super::super::testns::WAIT, wait)
            .await
            .unwrap_or_else(|_| panic!("no update for {addr} within {WAIT:?}"))
    }

    #[test]
    fn managed_entries_follow_the_peer() {
        if !lvs_tests::privilege::can_run("managed_entries_follow_the_peer") {
            return;
        }
        let (a, b) = veth_pair("m");
        let a_name = a.name.clone();
        let b_name = b.name.clone();
        a.enter(move || async move {
            let a = |args: &[&str]| {
                let mut all = vec!["-n", a_name.as_str()];
                all.extend_from_slice(args);
                ip(&all)
            };
            let nl = Netlink::connect().await.expect("netlink");
            let ifindex = nl.link_by_name("lvs-a0").await.expect("lvs-a0").index;
            let (mut neigh, mut rx) = Neighbours::start(&nl, ifindex).await.expect("start");
            let peer4: IpAddr = "192.0.2.2".parse().expect("literal");
            let peer6: IpAddr = "2001:db8::2".parse().expect("literal");

            // Unknown at first: track() creates a managed entry, the kernel
            // resolves it and the MAC arrives as an update.
            assert_eq!(a(&["neigh", "show", "192.0.2.2", "dev", "lvs-a0"]).trim(), "");
            assert_eq!(neigh.track(peer4).await.expect("track"), None);
            assert_eq!(next_for(&mut rx, peer4).await, Some(MAC_B));
            let shown = a(&["-d", "neigh", "show", "192.0.2.2", "dev", "lvs-a0"]);
            assert!(shown.contains("managed"), "{shown}");
            // Tracking again is a no-op that returns what was reported.
            assert_eq!(neigh.track(peer4).await.expect("track"), Some(MAC_B));

            // The same over NDP.
            let early = neigh.track(peer6).await.expect("track v6");
            if early.is_none() {
                assert_eq!(next_for(&mut rx, peer6).await, Some(MAC_B));
            } else {
                assert_eq!(early, Some(MAC_B));
            }

            // The real server's MAC changes: its gratuitous ARP updates the entry.
            ip(&["-n", &b_name, "link", "set", "dev", "lvs-b0", "address", MAC_B2_TEXT]);
            assert_eq!(next_for(&mut rx, peer4).await, Some(MAC_B2));

            // Someone flushes the entry: reported lost, then re-created and
            // resolved again.
            a(&["neigh", "del", "192.0.2.2", "dev", "lvs-a0"]);
            assert_eq!(next_for(&mut rx, peer4).await, None);
            assert_eq!(next_for(&mut rx, peer4).await, Some(MAC_B2));

            // A second watcher finds the MAC already known, and does not own
            // the entry: its shutdown leaves it alone.
            let (mut other, _other_rx) = Neighbours::start(&nl, ifindex).await.expect("start");
            assert_eq!(other.track(peer4).await.expect("track"), Some(MAC_B2));
            other.shutdown().await.expect("shutdown");
            let shown = a(&["-d", "neigh", "show", "192.0.2.2", "dev", "lvs-a0"]);
            assert!(shown.contains("managed"), "{shown}");

            // Ours removes both managed entries it created.
            neigh.shutdown().await.expect("shutdown");
            let shown = a(&["-d", "neigh", "show", "dev", "lvs-a0"]);
            assert!(!shown.contains("managed"), "{shown}");
        });
        drop(b);
    }

    #[test]
    fn untrack_removes_the_managed_entry() {
        if !lvs_tests::privilege::can_run("untrack_removes_the_managed_entry") {
            return;
        }
        let (a, _b) = veth_pair("u");
        let a_name = a.name.clone();
        a.enter(move || async move {
            let nl = Netlink::connect().await.expect("netlink");
            let ifindex = nl.link_by_name("lvs-a0").await.expect("lvs-a0").index;
            let (mut neigh, mut rx) = Neighbours::start(&nl, ifindex).await.expect("start");
            let peer4: IpAddr = "192.0.2.2".parse().expect("literal");
            assert_eq!(neigh.track(peer4).await.expect("track"), None);
            assert_eq!(next_for(&mut rx, peer4).await, Some(MAC_B));
            neigh.untrack(peer4).await.expect("untrack");
            neigh.untrack(peer4).await.expect("untrack again");
            let shown = ip(&["-n", &a_name, "-d", "neigh", "show", "dev", "lvs-a0"]);
            assert!(!shown.contains("managed"), "{shown}");
            neigh.shutdown().await.expect("shutdown");
        });
    }

    #[test]
    fn fallback_pokes_resolve_without_managed_entries() {
        if !lvs_tests::privilege::can_run("fallback_pokes_resolve_without_managed_entries") {
            return;
        }
        let (a, _b) = veth_pair("f");
        let a_name = a.name.clone();
        a.enter(move || async move {
            let nl = Netlink::connect().await.expect("netlink");
            let ifindex = nl.link_by_name("lvs-a0").await.expect("lvs-a0").index;
            let (mut neigh, mut rx) = Neighbours::start(&nl, ifindex).await.expect("start");
            neigh.force_fallback();
            for peer in ["192.0.2.2", "2001:db8::2"] {
                let peer: IpAddr = peer.parse().expect("literal");
                assert_eq!(neigh.track(peer).await.expect("track"), None);
                assert_eq!(next_for(&mut rx, peer).await, Some(MAC_B));
            }
            let shown = ip(&["-n", &a_name, "-d", "neigh", "show", "dev", "lvs-a0"]);
            assert!(!shown.contains("managed"), "{shown}");
            neigh.shutdown().await.expect("shutdown");
        });
    }
}
