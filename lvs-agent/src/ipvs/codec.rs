//! The IPVS generic netlink messages: constants transcribed from `include/uapi/linux/ip_vs.h`,
//! attribute encoding of services and destinations in the order and form ipvsadm 1.31 sends
//! them (compared with its captured bytes in `tests/tests/ipvs_vm.rs`; one difference: where a
//! command only names a service or destination, we send only the naming attributes, the ones
//! the kernel reads, where ipvsadm adds its zeroed defaults), and decoding of the kernel's
//! replies (`ip_vs_genl_fill_service` / `_fill_dest` in `net/netfilter/ipvs/ip_vs_ctl.c`).
//! Pure: bytes in, bytes out.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

// Netlink framing (include/uapi/linux/netlink.h, genetlink.h).
pub const NLMSG_HDRLEN: usize = 16;
pub const GENL_HDRLEN: usize = 4;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTI: u16 = 0x2;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLA_F_NESTED: u16 = 0x8000;
/// The attribute type without the NESTED and NET_BYTEORDER flag bits.
pub const NLA_TYPE_MASK: u16 = 0x3fff;

// nlctrl (include/uapi/linux/genetlink.h).
pub const GENL_ID_CTRL: u16 = 0x10;
pub const CTRL_CMD_GETFAMILY: u8 = 3;
pub const CTRL_ATTR_FAMILY_ID: u16 = 1;
pub const CTRL_ATTR_FAMILY_NAME: u16 = 2;

pub const IPVS_GENL_NAME: &str = "IPVS";
pub const IPVS_GENL_VERSION: u8 = 1;

// enum ipvs_cmd (ip_vs.h).
pub const IPVS_CMD_NEW_SERVICE: u8 = 1;
pub const IPVS_CMD_SET_SERVICE: u8 = 2;
pub const IPVS_CMD_DEL_SERVICE: u8 = 3;
pub const IPVS_CMD_GET_SERVICE: u8 = 4;
pub const IPVS_CMD_NEW_DEST: u8 = 5;
pub const IPVS_CMD_SET_DEST: u8 = 6;
pub const IPVS_CMD_DEL_DEST: u8 = 7;
pub const IPVS_CMD_GET_DEST: u8 = 8;
pub const IPVS_CMD_SET_CONFIG: u8 = 12;
pub const IPVS_CMD_GET_CONFIG: u8 = 13;
pub const IPVS_CMD_SET_INFO: u8 = 14;
pub const IPVS_CMD_GET_INFO: u8 = 15;

// enum IPVS_CMD_ATTR_*.
pub const IPVS_CMD_ATTR_SERVICE: u16 = 1;
pub const IPVS_CMD_ATTR_DEST: u16 = 2;
pub const IPVS_CMD_ATTR_TIMEOUT_TCP: u16 = 4;
pub const IPVS_CMD_ATTR_TIMEOUT_TCP_FIN: u16 = 5;
pub const IPVS_CMD_ATTR_TIMEOUT_UDP: u16 = 6;

// enum IPVS_SVC_ATTR_*.
pub const IPVS_SVC_ATTR_AF: u16 = 1;
pub const IPVS_SVC_ATTR_PROTOCOL: u16 = 2;
pub const IPVS_SVC_ATTR_ADDR: u16 = 3;
pub const IPVS_SVC_ATTR_PORT: u16 = 4;
pub const IPVS_SVC_ATTR_FWMARK: u16 = 5;
pub const IPVS_SVC_ATTR_SCHED_NAME: u16 = 6;
pub const IPVS_SVC_ATTR_FLAGS: u16 = 7;
pub const IPVS_SVC_ATTR_TIMEOUT: u16 = 8;
pub const IPVS_SVC_ATTR_NETMASK: u16 = 9;
pub const IPVS_SVC_ATTR_STATS: u16 = 10;
pub const IPVS_SVC_ATTR_PE_NAME: u16 = 11;
pub const IPVS_SVC_ATTR_STATS64: u16 = 12;

// enum IPVS_DEST_ATTR_*.
pub const IPVS_DEST_ATTR_ADDR: u16 = 1;
pub const IPVS_DEST_ATTR_PORT: u16 = 2;
pub const IPVS_DEST_ATTR_FWD_METHOD: u16 = 3;
pub const IPVS_DEST_ATTR_WEIGHT: u16 = 4;
pub const IPVS_DEST_ATTR_U_THRESH: u16 = 5;
pub const IPVS_DEST_ATTR_L_THRESH: u16 = 6;
pub const IPVS_DEST_ATTR_ACTIVE_CONNS: u16 = 7;
pub const IPVS_DEST_ATTR_INACT_CONNS: u16 = 8;
pub const IPVS_DEST_ATTR_PERSIST_CONNS: u16 = 9;
pub const IPVS_DEST_ATTR_STATS: u16 = 10;
pub const IPVS_DEST_ATTR_ADDR_FAMILY: u16 = 11;
pub const IPVS_DEST_ATTR_STATS64: u16 = 12;
pub const IPVS_DEST_ATTR_TUN_TYPE: u16 = 13;
pub const IPVS_DEST_ATTR_TUN_PORT: u16 = 14;
pub const IPVS_DEST_ATTR_TUN_FLAGS: u16 = 15;

// enum IPVS_STATS_ATTR_* (in STATS64 every counter is a u64).
pub const IPVS_STATS_ATTR_CONNS: u16 = 1;
pub const IPVS_STATS_ATTR_INPKTS: u16 = 2;
pub const IPVS_STATS_ATTR_OUTPKTS: u16 = 3;
pub const IPVS_STATS_ATTR_INBYTES: u16 = 4;
pub const IPVS_STATS_ATTR_OUTBYTES: u16 = 5;
pub const IPVS_STATS_ATTR_CPS: u16 = 6;
pub const IPVS_STATS_ATTR_INPPS: u16 = 7;
pub const IPVS_STATS_ATTR_OUTPPS: u16 = 8;
pub const IPVS_STATS_ATTR_INBPS: u16 = 9;
pub const IPVS_STATS_ATTR_OUTBPS: u16 = 10;

// enum IPVS_INFO_ATTR_*.
pub const IPVS_INFO_ATTR_VERSION: u16 = 1;
pub const IPVS_INFO_ATTR_CONN_TAB_SIZE: u16 = 2;

// Service flags.
pub const IP_VS_SVC_F_PERSISTENT: u32 = 0x1;
/// Set by the kernel on every hashed service (`ip_vs_svc_hash`); never ours to ask for.
pub const IP_VS_SVC_F_HASHED: u32 = 0x2;
pub const IP_VS_SVC_F_ONEPACKET: u32 = 0x4;
pub const IP_VS_SVC_F_SCHED1: u32 = 0x8;
pub const IP_VS_SVC_F_SCHED2: u32 = 0x10;
pub const IP_VS_SVC_F_SCHED3: u32 = 0x20;

// Forwarding methods (IP_VS_CONN_F_FWD_MASK bits).
pub const IP_VS_CONN_F_FWD_MASK: u32 = 0x7;
pub const IP_VS_CONN_F_MASQ: u32 = 0;
pub const IP_VS_CONN_F_LOCALNODE: u32 = 1;
pub const IP_VS_CONN_F_TUNNEL: u32 = 2;
pub const IP_VS_CONN_F_DROUTE: u32 = 3;
pub const IP_VS_CONN_F_BYPASS: u32 = 4;

// Tunnel types and encapsulation flags (Linux 5.2/5.3).
pub const IP_VS_CONN_F_TUNNEL_TYPE_IPIP: u8 = 0;
pub const IP_VS_CONN_F_TUNNEL_TYPE_GUE: u8 = 1;
pub const IP_VS_CONN_F_TUNNEL_TYPE_GRE: u8 = 2;
pub const IP_VS_TUNNEL_ENCAP_FLAG_NOCSUM: u16 = 0;
pub const IP_VS_TUNNEL_ENCAP_FLAG_CSUM: u16 = 1 << 0;
pub const IP_VS_TUNNEL_ENCAP_FLAG_REMCSUM: u16 = 1 << 1;

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// `IP_VS_SCHEDNAME_MAXLEN` / `IP_VS_PENAME_MAXLEN`, the NUL included.
pub const IP_VS_SCHEDNAME_MAXLEN: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("truncated netlink message ({0})")]
    Truncated(&'static str),
    #[error("IPVS reply without {0}")]
    Missing(&'static str),
    #[error("IPVS reply with an unknown address family {0}")]
    Family(u16),
}

/// How a service is named: protocol, address and port, or a firewall mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceId {
    Addr { protocol: u16, addr: IpAddr, port: u16 },
    Fwmark { af: u16, mark: u32 },
}

impl ServiceId {
    #[must_use]
    pub fn af(&self) -> u16 {
        match self {
            Self::Addr { addr: IpAddr::V4(_), .. } => AF_INET,
            Self::Addr { addr: IpAddr::V6(_), .. } => AF_INET6,
            Self::Fwmark { af, .. } => *af,
        }
    }
}

/// `TCP  10.0.0.1:80` / `FWM  7`, as ipvsadm -Ln writes them.
impl std::fmt::Display for ServiceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Addr { protocol, addr, port } => {
                let p = match *protocol {
                    6 => "TCP",
                    17 => "UDP",
                    132 => "SCTP",
                    _ => "???",
                };
                write!(f, "{p}  {}", crate::desired::socket(*addr, *port))
            }
            Self::Fwmark { mark, .. } => write!(f, "FWM  {mark}"),
        }
    }
}

/// Counters of `IPVS_*_ATTR_STATS64` (rates as the kernel's 2 s estimator has them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    pub conns: u64,
    pub inpkts: u64,
    pub outpkts: u64,
    pub inbytes: u64,
    pub outbytes: u64,
    pub cps: u64,
    pub inpps: u64,
    pub outpps: u64,
    pub inbps: u64,
    pub outbps: u64,
}

/// A virtual service: what NEW/SET_SERVICE carry, and what a dump reports (with `stats`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub id: ServiceId,
    pub scheduler: String,
    /// `IP_VS_SVC_F_*`, without HASHED.
    pub flags: u32,
    /// Persistence timeout in seconds (0 when not persistent).
    pub timeout: u32,
    /// IPv4: the client mask as its octets in a native u32 (`__be32` in the kernel); IPv6: the
    /// prefix length.
    pub netmask: u32,
    pub pe_name: Option<String>,
    pub stats: Stats,
}

/// Tunnel encapsulation of a TUNNEL destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TunnelParams {
    pub kind: u8,
    /// The GUE destination port.
    pub port: u16,
    pub flags: u16,
}

/// A destination (real server) of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dest {
    pub addr: IpAddr,
    pub port: u16,
    /// `IP_VS_CONN_F_MASQ`, `_TUNNEL` or `_DROUTE`.
    pub fwd: u32,
    pub weight: u32,
    pub u_thresh: u32,
    pub l_thresh: u32,
    pub tunnel: TunnelParams,
    // Only in replies.
    pub active_conns: u32,
    pub inact_conns: u32,
    pub persist_conns: u32,
    pub stats: Stats,
}

impl Dest {
    /// A destination as configured (counters zero).
    #[must_use]
    pub fn new(addr: IpAddr, port: u16, fwd: u32, weight: u32) -> Self {
        Self {
            addr,
            port,
            fwd,
            weight,
            u_thresh: 0,
            l_thresh: 0,
            tunnel: TunnelParams::default(),
            active_conns: 0,
            inact_conns: 0,
            persist_conns: 0,
            stats: Stats::default(),
        }
    }
}

/// `Masq`, `Tunnel`, `Route`, as ipvsadm's Forward column.
#[must_use]
pub fn fwd_name(fwd: u32) -> &'static str {
    match fwd & IP_VS_CONN_F_FWD_MASK {
        IP_VS_CONN_F_MASQ => "Masq",
        IP_VS_CONN_F_LOCALNODE => "Local",
        IP_VS_CONN_F_TUNNEL => "Tunnel",
        IP_VS_CONN_F_DROUTE => "Route",
        _ => "Bypass",
    }
}

/// Netlink attributes being written; nests are closed by [`Attrs::end`].
#[derive(Debug, Default)]
pub struct Attrs {
    buf: Vec<u8>,
}

impl Attrs {
    fn put(&mut self, kind: u16, payload: &[u8]) -> &mut Self {
        let len = 4 + payload.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(self.buf.len().next_multiple_of(4), 0);
        self
    }

    pub fn u8(&mut self, kind: u16, v: u8) -> &mut Self {
        self.put(kind, &[v])
    }

    pub fn u16(&mut self, kind: u16, v: u16) -> &mut Self {
        self.put(kind, &v.to_ne_bytes())
    }

    /// A `__be16` (ports).
    pub fn be16(&mut self, kind: u16, v: u16) -> &mut Self {
        self.put(kind, &v.to_be_bytes())
    }

    pub fn u32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.put(kind, &v.to_ne_bytes())
    }

    /// A NUL-terminated string (NLA_NUL_STRING).
    pub fn string(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.put(kind, &v)
    }

    /// `union nf_inet_addr`: 16 bytes, IPv4 in the first four (as libipvs sends it).
    pub fn addr(&mut self, kind: u16, a: IpAddr) -> &mut Self {
        let mut v = [0u8; 16];
        match a {
            IpAddr::V4(a) => v[..4].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => v = a.octets(),
        }
        self.put(kind, &v)
    }

    /// Opens a nested attribute; returns the offset [`Attrs::end`] takes.
    pub fn begin(&mut self, kind: u16) -> usize {
        let at = self.buf.len();
        self.put(kind | NLA_F_NESTED, &[]);
        at
    }

    pub fn end(&mut self, at: usize) -> &mut Self {
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    #[must_use]
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// A whole request: nlmsghdr, genlmsghdr, attributes.
#[must_use]
pub fn message(family: u16, flags: u16, seq: u32, cmd: u8, version: u8, attrs: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + GENL_HDRLEN + attrs.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&family.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: the kernel
    m.extend_from_slice(&[cmd, version, 0, 0]);
    m.extend_from_slice(attrs);
    m
}

/// nlctrl's CTRL_CMD_GETFAMILY for `name`.
#[must_use]
pub fn get_family(seq: u32, name: &str) -> Vec<u8> {
    let mut a = Attrs::default();
    a.string(CTRL_ATTR_FAMILY_NAME, name);
    message(GENL_ID_CTRL, NLM_F_REQUEST | NLM_F_ACK, seq, CTRL_CMD_GETFAMILY, 1, &a.into_bytes())
}

/// The identifying attributes of a service (all that DEL_SERVICE and GET_DEST need).
fn service_id(a: &mut Attrs, id: &ServiceId) {
    a.u16(IPVS_SVC_ATTR_AF, id.af());
    match *id {
        ServiceId::Addr { protocol, addr, port } => {
            a.u16(IPVS_SVC_ATTR_PROTOCOL, protocol).addr(IPVS_SVC_ATTR_ADDR, addr).be16(IPVS_SVC_ATTR_PORT, port);
        }
        ServiceId::Fwmark { mark, .. } => {
            a.u32(IPVS_SVC_ATTR_FWMARK, mark);
        }
    }
}

/// The IPVS_CMD_ATTR_SERVICE nest: in full for NEW/SET_SERVICE (the kernel requires every
/// field there, `ip_vs_genl_parse_service(full_entry)`), else the identity only. Attribute order
/// as libipvs's `ipvs_nl_fill_service_attr`.
pub fn service_nest(a: &mut Attrs, s: &Service, full: bool) {
    let at = a.begin(IPVS_CMD_ATTR_SERVICE);
    service_id(a, &s.id);
    if full {
        a.string(IPVS_SVC_ATTR_SCHED_NAME, &s.scheduler);
        if let Some(pe) = &s.pe_name {
            a.string(IPVS_SVC_ATTR_PE_NAME, pe);
        }
        // struct ip_vs_flags { flags; mask }: mask ~0 sets every bit to ours.
        let mut f = [0u8; 8];
        f[..4].copy_from_slice(&s.flags.to_ne_bytes());
        f[4..].copy_from_slice(&u32::MAX.to_ne_bytes());
        a.put(IPVS_SVC_ATTR_FLAGS, &f);
        a.u32(IPVS_SVC_ATTR_TIMEOUT, s.timeout).u32(IPVS_SVC_ATTR_NETMASK, s.netmask);
    }
    a.end(at);
}

/// The IPVS_CMD_ATTR_DEST nest (`ipvs_nl_fill_dest_attr`'s order); `full` for NEW/SET_DEST.
pub fn dest_nest(a: &mut Attrs, d: &Dest, full: bool) {
    let at = a.begin(IPVS_CMD_ATTR_DEST);
    a.u16(IPVS_DEST_ATTR_ADDR_FAMILY, if d.addr.is_ipv4() { AF_INET } else { AF_INET6 });
    a.addr(IPVS_DEST_ATTR_ADDR, d.addr).be16(IPVS_DEST_ATTR_PORT, d.port);
    if full {
        a.u32(IPVS_DEST_ATTR_FWD_METHOD, d.fwd & IP_VS_CONN_F_FWD_MASK).u32(IPVS_DEST_ATTR_WEIGHT, d.weight);
        // The tunnel attributes for every destination (zero unless tunnelled), as ipvsadm 1.31
        // sends them (checked against its captured bytes in tests/tests/ipvs_vm.rs); kernels
        // before 5.2 ignore them.
        a.u8(IPVS_DEST_ATTR_TUN_TYPE, d.tunnel.kind)
            .be16(IPVS_DEST_ATTR_TUN_PORT, d.tunnel.port)
            .u16(IPVS_DEST_ATTR_TUN_FLAGS, d.tunnel.flags);
        a.u32(IPVS_DEST_ATTR_U_THRESH, d.u_thresh).u32(IPVS_DEST_ATTR_L_THRESH, d.l_thresh);
    }
    a.end(at);
}

/// One IPVS request, ready to send (the family id comes from [`get_family`]'s answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    NewService(Service),
    SetService(Service),
    DelService(ServiceId),
    NewDest(ServiceId, Dest),
    SetDest(ServiceId, Dest),
    DelDest(ServiceId, Dest),
    /// Dump every service.
    GetServices,
    /// Dump the destinations of one service.
    GetDests(ServiceId),
    GetInfo,
    /// `ipvsadm --set tcp tcpfin udp` (0 leaves one as it is, `ip_vs_set_timeout`).
    SetTimeouts {
        tcp: u32,
        tcp_fin: u32,
        udp: u32,
    },
}

impl Request {
    /// Whether the kernel answers with a dump (NLM_F_DUMP) rather than an ack.
    #[must_use]
    pub fn is_dump(&self) -> bool {
        matches!(self, Self::GetServices | Self::GetDests(_))
    }

    #[must_use]
    pub fn encode(&self, family: u16, seq: u32) -> Vec<u8> {
        let mut a = Attrs::default();
        let id_only = |id: &ServiceId| Service {
            id: *id,
            scheduler: String::new(),
            flags: 0,
            timeout: 0,
            netmask: 0,
            pe_name: None,
            stats: Stats::default(),
        };
        let cmd = match self {
            Self::NewService(s) => {
                service_nest(&mut a, s, true);
                IPVS_CMD_NEW_SERVICE
            }
            Self::SetService(s) => {
                service_nest(&mut a, s, true);
                IPVS_CMD_SET_SERVICE
            }
            Self::DelService(id) => {
                service_nest(&mut a, &id_only(id), false);
                IPVS_CMD_DEL_SERVICE
            }
            Self::NewDest(id, d) | Self::SetDest(id, d) | Self::DelDest(id, d) => {
                service_nest(&mut a, &id_only(id), false);
                dest_nest(&mut a, d, !matches!(self, Self::DelDest(..)));
                match self {
                    Self::NewDest(..) => IPVS_CMD_NEW_DEST,
                    Self::SetDest(..) => IPVS_CMD_SET_DEST,
                    _ => IPVS_CMD_DEL_DEST,
                }
            }
            Self::GetServices => IPVS_CMD_GET_SERVICE,
            Self::GetDests(id) => {
                service_nest(&mut a, &id_only(id), false);
                IPVS_CMD_GET_DEST
            }
            Self::GetInfo => IPVS_CMD_GET_INFO,
            Self::SetTimeouts { tcp, tcp_fin, udp } => {
                a.u32(IPVS_CMD_ATTR_TIMEOUT_TCP, *tcp)
                    .u32(IPVS_CMD_ATTR_TIMEOUT_TCP_FIN, *tcp_fin)
                    .u32(IPVS_CMD_ATTR_TIMEOUT_UDP, *udp);
                IPVS_CMD_SET_CONFIG
            }
        };
        let flags = if self.is_dump() { NLM_F_REQUEST | NLM_F_DUMP } else { NLM_F_REQUEST | NLM_F_ACK };
        message(family, flags, seq, cmd, IPVS_GENL_VERSION, &a.into_bytes())
    }
}

/// Attributes of one level: (type without flags, payload).
pub fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([b[0], b[1]]));
        let kind = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        b = &b[len.next_multiple_of(4).min(b.len())..];
        Some((kind, payload))
    })
}

fn get_u16(p: &[u8]) -> Option<u16> {
    Some(u16::from_ne_bytes(p.get(..2)?.try_into().ok()?))
}

fn get_be16(p: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(p.get(..2)?.try_into().ok()?))
}

fn get_u32(p: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(p.get(..4)?.try_into().ok()?))
}

fn get_u64(p: &[u8]) -> Option<u64> {
    Some(u64::from_ne_bytes(p.get(..8)?.try_into().ok()?))
}

fn get_string(p: &[u8]) -> String {
    let end = p.iter().position(|&c| c == 0).unwrap_or(p.len());
    String::from_utf8_lossy(&p[..end]).into_owned()
}

fn get_addr(af: u16, p: &[u8]) -> Result<IpAddr, CodecError> {
    match af {
        AF_INET => {
            let o: [u8; 4] = p.get(..4).ok_or(CodecError::Truncated("address"))?.try_into().unwrap_or_default();
            Ok(IpAddr::V4(Ipv4Addr::from(o)))
        }
        AF_INET6 => {
            let o: [u8; 16] = p.get(..16).ok_or(CodecError::Truncated("address"))?.try_into().unwrap_or_default();
            Ok(IpAddr::V6(Ipv6Addr::from(o)))
        }
        other => Err(CodecError::Family(other)),
    }
}

/// `IPVS_*_ATTR_STATS64` (every counter u64).
fn stats64(p: &[u8]) -> Stats {
    let mut s = Stats::default();
    for (k, v) in attrs(p) {
        let v = get_u64(v).unwrap_or(0);
        match k {
            IPVS_STATS_ATTR_CONNS => s.conns = v,
            IPVS_STATS_ATTR_INPKTS => s.inpkts = v,
            IPVS_STATS_ATTR_OUTPKTS => s.outpkts = v,
            IPVS_STATS_ATTR_INBYTES => s.inbytes = v,
            IPVS_STATS_ATTR_OUTBYTES => s.outbytes = v,
            IPVS_STATS_ATTR_CPS => s.cps = v,
            IPVS_STATS_ATTR_INPPS => s.inpps = v,
            IPVS_STATS_ATTR_OUTPPS => s.outpps = v,
            IPVS_STATS_ATTR_INBPS => s.inbps = v,
            IPVS_STATS_ATTR_OUTBPS => s.outbps = v,
            _ => {}
        }
    }
    s
}

/// The generic netlink payload of one reply message: (cmd, attributes).
pub fn genl_payload(msg: &[u8]) -> Result<(u8, &[u8]), CodecError> {
    let body = msg.get(NLMSG_HDRLEN..).ok_or(CodecError::Truncated("nlmsghdr"))?;
    let cmd = *body.first().ok_or(CodecError::Truncated("genlmsghdr"))?;
    Ok((cmd, body.get(GENL_HDRLEN..).ok_or(CodecError::Truncated("genlmsghdr"))?))
}

/// The family id in nlctrl's answer.
pub fn decode_family_id(attrs_bytes: &[u8]) -> Result<u16, CodecError> {
    attrs(attrs_bytes)
        .find(|(k, _)| *k == CTRL_ATTR_FAMILY_ID)
        .and_then(|(_, v)| get_u16(v))
        .ok_or(CodecError::Missing("CTRL_ATTR_FAMILY_ID"))
}

/// A service from a GET_SERVICE dump message's attributes.
pub fn decode_service(attrs_bytes: &[u8]) -> Result<Service, CodecError> {
    let nest = attrs(attrs_bytes)
        .find(|(k, _)| *k == IPVS_CMD_ATTR_SERVICE)
        .ok_or(CodecError::Missing("IPVS_CMD_ATTR_SERVICE"))?
        .1;
    let (mut af, mut protocol, mut addr, mut port, mut fwmark) = (None, 0, None, 0, None);
    let mut s = Service {
        id: ServiceId::Fwmark { af: 0, mark: 0 },
        scheduler: String::new(),
        flags: 0,
        timeout: 0,
        netmask: 0,
        pe_name: None,
        stats: Stats::default(),
    };
    let mut stats32 = None;
    for (k, v) in attrs(nest) {
        match k {
            IPVS_SVC_ATTR_AF => af = get_u16(v),
            IPVS_SVC_ATTR_PROTOCOL => protocol = get_u16(v).unwrap_or(0),
            IPVS_SVC_ATTR_ADDR => addr = Some(v),
            IPVS_SVC_ATTR_PORT => port = get_be16(v).unwrap_or(0),
            IPVS_SVC_ATTR_FWMARK => fwmark = get_u32(v).filter(|&m| m != 0),
            IPVS_SVC_ATTR_SCHED_NAME => s.scheduler = get_string(v),
            IPVS_SVC_ATTR_PE_NAME => s.pe_name = Some(get_string(v)).filter(|n| !n.is_empty()),
            IPVS_SVC_ATTR_FLAGS => s.flags = get_u32(v).unwrap_or(0) & !IP_VS_SVC_F_HASHED,
            IPVS_SVC_ATTR_TIMEOUT => s.timeout = get_u32(v).unwrap_or(0),
            IPVS_SVC_ATTR_NETMASK => s.netmask = get_u32(v).unwrap_or(0),
            IPVS_SVC_ATTR_STATS64 => s.stats = stats64(v),
            IPVS_SVC_ATTR_STATS => stats32 = Some(v),
            _ => {}
        }
    }
    // Kernels before 4.1 send only the 32-bit counters.
    if s.stats == Stats::default()
        && let Some(v) = stats32
    {
        s.stats = stats32_of(v);
    }
    let af = af.ok_or(CodecError::Missing("IPVS_SVC_ATTR_AF"))?;
    s.id = match fwmark {
        Some(mark) => ServiceId::Fwmark { af, mark },
        None => ServiceId::Addr {
            protocol,
            addr: get_addr(af, addr.ok_or(CodecError::Missing("IPVS_SVC_ATTR_ADDR"))?)?,
            port,
        },
    };
    Ok(s)
}

/// The 32-bit `IPVS_*_ATTR_STATS` (bytes are u64 there too).
fn stats32_of(p: &[u8]) -> Stats {
    let mut s = Stats::default();
    for (k, v) in attrs(p) {
        let v32 = || u64::from(get_u32(v).unwrap_or(0));
        match k {
            IPVS_STATS_ATTR_CONNS => s.conns = v32(),
            IPVS_STATS_ATTR_INPKTS => s.inpkts = v32(),
            IPVS_STATS_ATTR_OUTPKTS => s.outpkts = v32(),
            IPVS_STATS_ATTR_INBYTES => s.inbytes = get_u64(v).unwrap_or(0),
            IPVS_STATS_ATTR_OUTBYTES => s.outbytes = get_u64(v).unwrap_or(0),
            IPVS_STATS_ATTR_CPS => s.cps = v32(),
            IPVS_STATS_ATTR_INPPS => s.inpps = v32(),
            IPVS_STATS_ATTR_OUTPPS => s.outpps = v32(),
            IPVS_STATS_ATTR_INBPS => s.inbps = v32(),
            IPVS_STATS_ATTR_OUTBPS => s.outbps = v32(),
            _ => {}
        }
    }
    s
}

/// A destination from a GET_DEST dump message's attributes; `svc_af` is the family of the
/// service, the default when the kernel predates IPVS_DEST_ATTR_ADDR_FAMILY.
pub fn decode_dest(attrs_bytes: &[u8], svc_af: u16) -> Result<Dest, CodecError> {
    let nest =
        attrs(attrs_bytes).find(|(k, _)| *k == IPVS_CMD_ATTR_DEST).ok_or(CodecError::Missing("IPVS_CMD_ATTR_DEST"))?.1;
    let (mut af, mut addr) = (svc_af, None);
    let mut d = Dest::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0, 0, 0);
    let mut stats32 = None;
    for (k, v) in attrs(nest) {
        match k {
            IPVS_DEST_ATTR_ADDR => addr = Some(v),
            IPVS_DEST_ATTR_ADDR_FAMILY => af = get_u16(v).unwrap_or(svc_af),
            IPVS_DEST_ATTR_PORT => d.port = get_be16(v).unwrap_or(0),
            IPVS_DEST_ATTR_FWD_METHOD => d.fwd = get_u32(v).unwrap_or(0) & IP_VS_CONN_F_FWD_MASK,
            IPVS_DEST_ATTR_WEIGHT => d.weight = get_u32(v).unwrap_or(0),
            IPVS_DEST_ATTR_U_THRESH => d.u_thresh = get_u32(v).unwrap_or(0),
            IPVS_DEST_ATTR_L_THRESH => d.l_thresh = get_u32(v).unwrap_or(0),
            IPVS_DEST_ATTR_ACTIVE_CONNS => d.active_conns = get_u32(v).unwrap_or(0),
            IPVS_DEST_ATTR_INACT_CONNS => d.inact_conns = get_u32(v).unwrap_or(0),
            IPVS_DEST_ATTR_PERSIST_CONNS => d.persist_conns = get_u32(v).unwrap_or(0),
            IPVS_DEST_ATTR_STATS64 => d.stats = stats64(v),
            IPVS_DEST_ATTR_STATS => stats32 = Some(v),
            IPVS_DEST_ATTR_TUN_TYPE => d.tunnel.kind = v.first().copied().unwrap_or(0),
            IPVS_DEST_ATTR_TUN_PORT => d.tunnel.port = get_be16(v).unwrap_or(0),
            IPVS_DEST_ATTR_TUN_FLAGS => d.tunnel.flags = get_u16(v).unwrap_or(0),
            _ => {}
        }
    }
    if d.stats == Stats::default()
        && let Some(v) = stats32
    {
        d.stats = stats32_of(v);
    }
    d.addr = get_addr(af, addr.ok_or(CodecError::Missing("IPVS_DEST_ATTR_ADDR"))?)?;
    Ok(d)
}

/// IPVS_CMD_GET_INFO's answer: the version as `major.minor.patch`.
pub fn decode_version(attrs_bytes: &[u8]) -> Result<String, CodecError> {
    let v = attrs(attrs_bytes)
        .find(|(k, _)| *k == IPVS_INFO_ATTR_VERSION)
        .and_then(|(_, v)| get_u32(v))
        .ok_or(CodecError::Missing("IPVS_INFO_ATTR_VERSION"))?;
    Ok(format!("{}.{}.{}", (v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff))
}

#[cfg(all(test, target_endian = "little"))]
mod tests {
    use super::*;

    /// The enums of include/uapi/linux/ip_vs.h, as numbered there (each enum starts at its
    /// UNSPEC = 0, so the first member is 1).
    #[test]
    fn constants_are_the_uapi_values() {
        let cmds = [
            IPVS_CMD_NEW_SERVICE,
            IPVS_CMD_SET_SERVICE,
            IPVS_CMD_DEL_SERVICE,
            IPVS_CMD_GET_SERVICE,
            IPVS_CMD_NEW_DEST,
            IPVS_CMD_SET_DEST,
            IPVS_CMD_DEL_DEST,
            IPVS_CMD_GET_DEST,
        ];
        assert_eq!(cmds, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!([IPVS_CMD_SET_CONFIG, IPVS_CMD_GET_CONFIG, IPVS_CMD_SET_INFO, IPVS_CMD_GET_INFO], [12, 13, 14, 15]);
        assert_eq!(
            [IPVS_CMD_ATTR_SERVICE, IPVS_CMD_ATTR_DEST, IPVS_CMD_ATTR_TIMEOUT_TCP, IPVS_CMD_ATTR_TIMEOUT_TCP_FIN],
            [1, 2, 4, 5]
        );
        assert_eq!(IPVS_CMD_ATTR_TIMEOUT_UDP, 6);
        let svc = [
            IPVS_SVC_ATTR_AF,
            IPVS_SVC_ATTR_PROTOCOL,
            IPVS_SVC_ATTR_ADDR,
            IPVS_SVC_ATTR_PORT,
            IPVS_SVC_ATTR_FWMARK,
            IPVS_SVC_ATTR_SCHED_NAME,
            IPVS_SVC_ATTR_FLAGS,
            IPVS_SVC_ATTR_TIMEOUT,
            IPVS_SVC_ATTR_NETMASK,
            IPVS_SVC_ATTR_STATS,
            IPVS_SVC_ATTR_PE_NAME,
            IPVS_SVC_ATTR_STATS64,
        ];
        assert_eq!(svc, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        let dest = [
            IPVS_DEST_ATTR_ADDR,
            IPVS_DEST_ATTR_PORT,
            IPVS_DEST_ATTR_FWD_METHOD,
            IPVS_DEST_ATTR_WEIGHT,
            IPVS_DEST_ATTR_U_THRESH,
            IPVS_DEST_ATTR_L_THRESH,
            IPVS_DEST_ATTR_ACTIVE_CONNS,
            IPVS_DEST_ATTR_INACT_CONNS,
            IPVS_DEST_ATTR_PERSIST_CONNS,
            IPVS_DEST_ATTR_STATS,
            IPVS_DEST_ATTR_ADDR_FAMILY,
            IPVS_DEST_ATTR_STATS64,
            IPVS_DEST_ATTR_TUN_TYPE,
            IPVS_DEST_ATTR_TUN_PORT,
            IPVS_DEST_ATTR_TUN_FLAGS,
        ];
        assert_eq!(dest, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
        assert_eq!([IP_VS_CONN_F_MASQ, IP_VS_CONN_F_LOCALNODE, IP_VS_CONN_F_TUNNEL, IP_VS_CONN_F_DROUTE], [0, 1, 2, 3]);
        assert_eq!(IP_VS_CONN_F_BYPASS, 4);
        assert_eq!(
            [IP_VS_CONN_F_TUNNEL_TYPE_IPIP, IP_VS_CONN_F_TUNNEL_TYPE_GUE, IP_VS_CONN_F_TUNNEL_TYPE_GRE],
            [0, 1, 2]
        );
        assert_eq!(
            [IP_VS_TUNNEL_ENCAP_FLAG_NOCSUM, IP_VS_TUNNEL_ENCAP_FLAG_CSUM, IP_VS_TUNNEL_ENCAP_FLAG_REMCSUM],
            [0, 1, 2]
        );
        assert_eq!(
            [IP_VS_SVC_F_PERSISTENT, IP_VS_SVC_F_HASHED, IP_VS_SVC_F_ONEPACKET, IP_VS_SVC_F_SCHED1],
            [1, 2, 4, 8]
        );
        assert_eq!([IP_VS_SVC_F_SCHED2, IP_VS_SVC_F_SCHED3], [0x10, 0x20]);
        assert_eq!(IPVS_STATS_ATTR_OUTBPS, 10);
        assert_eq!((IPVS_INFO_ATTR_VERSION, IPVS_INFO_ATTR_CONN_TAB_SIZE), (1, 2));
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn tcp80() -> ServiceId {
        ServiceId::Addr { protocol: 6, addr: [10, 0, 0, 100].into(), port: 80 }
    }

    /// `ipvsadm -A -t 10.0.0.100:80 -s rr` (family id 0x20, seq 1), written out byte by byte
    /// from the uapi layout; the QEMU test finds ipvsadm's own bytes equal to ours.
    #[test]
    fn new_service_golden_bytes() {
        let s = Service {
            id: tcp80(),
            scheduler: "rr".into(),
            flags: 0,
            timeout: 0,
            netmask: u32::MAX,
            pe_name: None,
            stats: Stats::default(),
        };
        let want = hex("68000000 2000 0500 01000000 00000000
             01010000
             54000180
             06000100 02000000
             06000200 06000000
             14000300 0a000064 00000000 00000000 00000000
             06000400 00500000
             07000600 72720000
             0c000700 00000000 ffffffff
             08000800 00000000
             08000900 ffffffff");
        assert_eq!(Request::NewService(s).encode(0x20, 1), want);
    }

    /// `ipvsadm -a -t 10.0.0.100:80 -r 10.0.1.2:80 -i -w 3` (IPIP tunnel): TUN_TYPE, TUN_PORT
    /// and TUN_FLAGS, as ipvsadm 1.31 sends them.
    #[test]
    fn new_tunnel_dest_golden_bytes() {
        let d = Dest::new([10, 0, 1, 2].into(), 80, IP_VS_CONN_F_TUNNEL, 3);
        let want = hex("a4000000 2000 0500 02000000 00000000
             05010000
             30000180
             06000100 02000000
             06000200 06000000
             14000300 0a000064 00000000 00000000 00000000
             06000400 00500000
             60000280
             06000b00 02000000
             14000100 0a000102 00000000 00000000 00000000
             06000200 00500000
             08000300 02000000
             08000400 03000000
             05000d00 00000000
             06000e00 00000000
             06000f00 00000000
             08000500 00000000
             08000600 00000000");
        assert_eq!(Request::NewDest(tcp80(), d).encode(0x20, 2), want);
    }

    #[test]
    fn gue_dest_carries_port_and_flags_and_del_dest_only_the_identity() {
        let mut d = Dest::new([10, 0, 1, 2].into(), 80, IP_VS_CONN_F_TUNNEL, 1);
        d.tunnel = TunnelParams { kind: IP_VS_CONN_F_TUNNEL_TYPE_GUE, port: 6080, flags: IP_VS_TUNNEL_ENCAP_FLAG_CSUM };
        let m = Request::SetDest(tcp80(), d.clone()).encode(0x20, 3);
        let (cmd, body) = genl_payload(&m).unwrap();
        assert_eq!(cmd, IPVS_CMD_SET_DEST);
        let nest = attrs(body).find(|(k, _)| *k == IPVS_CMD_ATTR_DEST).unwrap().1;
        let got: Vec<(u16, Vec<u8>)> = attrs(nest).map(|(k, v)| (k, v.to_vec())).collect();
        assert!(got.contains(&(IPVS_DEST_ATTR_TUN_PORT, 6080u16.to_be_bytes().to_vec())));
        assert!(got.contains(&(IPVS_DEST_ATTR_TUN_FLAGS, vec![1, 0])));
        let del = Request::DelDest(tcp80(), d).encode(0x20, 4);
        let nest = attrs(genl_payload(&del).unwrap().1).find(|(k, _)| *k == IPVS_CMD_ATTR_DEST).unwrap().1;
        let kinds: Vec<u16> = attrs(nest).map(|(k, _)| k).collect();
        assert_eq!(kinds, [IPVS_DEST_ATTR_ADDR_FAMILY, IPVS_DEST_ATTR_ADDR, IPVS_DEST_ATTR_PORT]);
    }

    #[test]
    fn dumps_and_config_requests() {
        let m = Request::GetServices.encode(0x20, 5);
        assert_eq!(m, hex("14000000 2000 0103 05000000 00000000 04010000"));
        let m = Request::SetTimeouts { tcp: 900, tcp_fin: 120, udp: 300 }.encode(0x20, 6);
        assert_eq!(&m[16..], hex("0c010000 08000400 84030000 08000500 78000000 08000600 2c010000").as_slice());
        let m = get_family(7, "IPVS");
        assert_eq!(m, hex("20000000 1000 0500 07000000 00000000 03010000 09000200 49505653 00000000"));
    }

    /// What `ip_vs_genl_fill_service` sends for a persistent IPv6 service, HASHED set.
    #[test]
    fn decodes_a_kernel_service_and_dest() {
        let mut a = Attrs::default();
        let at = a.begin(IPVS_CMD_ATTR_SERVICE);
        a.u16(IPVS_SVC_ATTR_AF, AF_INET6)
            .u16(IPVS_SVC_ATTR_PROTOCOL, 17)
            .addr(IPVS_SVC_ATTR_ADDR, "fd00::1".parse().unwrap())
            .be16(IPVS_SVC_ATTR_PORT, 53)
            .string(IPVS_SVC_ATTR_SCHED_NAME, "wlc");
        a.put(IPVS_SVC_ATTR_FLAGS, &hex("03000000 ffffffff"));
        a.u32(IPVS_SVC_ATTR_TIMEOUT, 300).u32(IPVS_SVC_ATTR_NETMASK, 64);
        let st = a.begin(IPVS_SVC_ATTR_STATS64);
        a.put(IPVS_STATS_ATTR_CONNS, &7u64.to_ne_bytes()).put(IPVS_STATS_ATTR_INBYTES, &900u64.to_ne_bytes());
        a.end(st);
        a.end(at);
        let s = decode_service(&a.into_bytes()).unwrap();
        assert_eq!(s.id, ServiceId::Addr { protocol: 17, addr: "fd00::1".parse().unwrap(), port: 53 });
        assert_eq!(s.id.to_string(), "UDP  [fd00::1]:53");
        assert_eq!((s.scheduler.as_str(), s.flags, s.timeout, s.netmask), ("wlc", IP_VS_SVC_F_PERSISTENT, 300, 64));
        assert_eq!((s.stats.conns, s.stats.inbytes), (7, 900));

        let mut a = Attrs::default();
        let at = a.begin(IPVS_CMD_ATTR_DEST);
        a.addr(IPVS_DEST_ATTR_ADDR, [10, 0, 1, 2].into())
            .u16(IPVS_DEST_ATTR_ADDR_FAMILY, AF_INET)
            .be16(IPVS_DEST_ATTR_PORT, 8080)
            .u32(IPVS_DEST_ATTR_FWD_METHOD, IP_VS_CONN_F_MASQ)
            .u32(IPVS_DEST_ATTR_WEIGHT, 5)
            .u8(IPVS_DEST_ATTR_TUN_TYPE, 0)
            .be16(IPVS_DEST_ATTR_TUN_PORT, 0)
            .u16(IPVS_DEST_ATTR_TUN_FLAGS, 0)
            .u32(IPVS_DEST_ATTR_U_THRESH, 100)
            .u32(IPVS_DEST_ATTR_L_THRESH, 10)
            .u32(IPVS_DEST_ATTR_ACTIVE_CONNS, 4)
            .u32(IPVS_DEST_ATTR_INACT_CONNS, 2)
            .u32(IPVS_DEST_ATTR_PERSIST_CONNS, 1);
        a.end(at);
        // A mixed-family (IPv4 in an IPv6 service) destination: ADDR_FAMILY wins.
        let d = decode_dest(&a.into_bytes(), AF_INET6).unwrap();
        let mut want = Dest::new([10, 0, 1, 2].into(), 8080, IP_VS_CONN_F_MASQ, 5);
        (want.u_thresh, want.l_thresh, want.active_conns, want.inact_conns, want.persist_conns) = (100, 10, 4, 2, 1);
        assert_eq!(d, want);
        assert_eq!(fwd_name(d.fwd), "Masq");
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        assert_eq!(decode_service(&[]), Err(CodecError::Missing("IPVS_CMD_ATTR_SERVICE")));
        assert!(genl_payload(&[0; 10]).is_err());
        // A length past the end stops the walk.
        assert_eq!(attrs(&hex("ff000100 00")).count(), 0);
    }
}
