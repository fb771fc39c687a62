//! VRRP advertisements on the wire: VRRPv2 (RFC 3768 §5) and VRRPv3 (RFC 5798 §5, RFC 9568 §5),
//! encode, decode, checksum and the receive checks of RFC 3768 §7.1 / RFC 5798 §7.1.
//!
//! Pure: no sockets here. The caller passes what the IP layer knew (source, destination,
//! TTL / hop limit) alongside the VRRP message (the IP payload).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP protocol number of VRRP (and of CARP, which shares it).
pub const PROTO_VRRP: u8 = 112;
/// RFC 3768 §5.2.2 / RFC 5798 §5.1.1.2.
pub const MCAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// RFC 5798 §5.1.2.2.
pub const MCAST_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// RFC 3768 §5.2.3, RFC 5798 §5.1.1.3 / §5.1.2.3.
pub const TTL: u8 = 255;
/// RFC 3768 §5.3.2: the only packet type.
const TYPE_ADVERTISEMENT: u8 = 1;
const HEADER_LEN: usize = 8;
/// RFC 3768 §5.3.10: two 32-bit words of authentication data follow the addresses in v2.
const V2_AUTH_LEN: usize = 8;
/// The CARP header (OpenBSD `ip_carp.h`, `struct carp_header`): 36 bytes, its third byte
/// (`carp_authlen`) 7, where a VRRPv2 packet keeps its address count.
const CARP_LEN: usize = 36;
const CARP_AUTHLEN: u8 = 7;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    V2,
    V3,
}

impl Version {
    #[must_use]
    pub fn number(self) -> u8 {
        match self {
            Self::V2 => 2,
            Self::V3 => 3,
        }
    }
}

/// RFC 3768 §5.3.6 (auth types 1 and 2 are "reserved" there; keepalived still speaks simple
/// text, RFC 2338 §5.3.6.1, as `auth_type PASS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    None,
    /// The password, NUL-padded to 8 bytes as keepalived sends it.
    Pass([u8; 8]),
}

impl Auth {
    /// `auth_pass` as configured: keepalived uses the first 8 bytes.
    #[must_use]
    pub fn pass(text: &str) -> Self {
        let mut b = [0u8; 8];
        for (d, s) in b.iter_mut().zip(text.as_bytes()) {
            *d = *s;
        }
        Self::Pass(b)
    }

    fn type_byte(self) -> u8 {
        match self {
            Self::None => 0,
            Self::Pass(_) => 1,
        }
    }
}

/// One advertisement. `interval` is in the version's unit: whole seconds in v2 (RFC 3768
/// §5.3.7, 8 bits), centiseconds in v3 (RFC 5798 §5.2.7, 12 bits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    pub version: Version,
    pub vrid: u8,
    pub priority: u8,
    pub interval: u16,
    pub addrs: Vec<IpAddr>,
    /// v2 only; v3 has no authentication (RFC 5798 §9).
    pub auth: Auth,
}

/// How the checksum of a v3 advert over IPv4 is made (RFC 5798 §5.2.8 is read two ways).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V4Checksum {
    /// With the IPv4 pseudo-header, as keepalived and FRR do by default.
    PseudoHeader,
    /// Over the VRRP message only (RFC 9568 §5.2.8; keepalived's `v3_checksum_as_v2`).
    MessageOnly,
}

/// Why a received packet was dropped. `as_str` is the metric label (a small fixed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Reject {
    #[error("TTL/hop limit {0} is not 255")]
    Ttl(u8),
    #[error("truncated or wrong length ({0} bytes)")]
    Length(usize),
    #[error("version {0} is not the instance's")]
    Version(u8),
    #[error("type {0} is not ADVERTISEMENT")]
    Type(u8),
    #[error("a CARP packet (same IP protocol 112), ignored")]
    Carp,
    #[error("bad checksum")]
    Checksum,
    #[error("VRID {0} is not configured on this interface")]
    Vrid(u8),
    #[error("authentication does not match")]
    Auth,
    #[error("advertisement interval {got} differs from ours, {ours} (RFC 3768 §7.1)")]
    Interval { got: u16, ours: u16 },
    #[error("advertisement interval is zero, or no address listed")]
    Malformed,
    #[error("address family does not match the instance")]
    Family,
    /// Unicast: the sender is not a configured `unicast_peer` (`check_unicast_src`).
    #[error("sender is not a unicast_peer")]
    Source,
}

impl Reject {
    /// Every label value `as_str` can return, for metrics.
    pub const LABELS: [&'static str; 12] = [
        "ttl",
        "length",
        "version",
        "type",
        "carp",
        "checksum",
        "vrid",
        "auth",
        "interval",
        "malformed",
        "family",
        "source",
    ];

    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Ttl(_) => "ttl",
            Self::Length(_) => "length",
            Self::Version(_) => "version",
            Self::Type(_) => "type",
            Self::Carp => "carp",
            Self::Checksum => "checksum",
            Self::Vrid(_) => "vrid",
            Self::Auth => "auth",
            Self::Interval { .. } => "interval",
            Self::Malformed => "malformed",
            Self::Family => "family",
            Self::Source => "source",
        }
    }
}

/*
    RFC 3768 §5.1 (v2)                      RFC 5798 §5.1 (v3)
    0                   1                   2                   3
    |Version| Type  | Virtual Rtr ID|   Priority    | Count IP Addrs|
    |   Auth Type   |   Adver Int   |          Checksum             |     (v2)
    |(rsvd) |     Max Adver Int     |          Checksum             |     (v3)
    |                         IP Address(es)                        |
    |                     Authentication Data (1), (2)              |     (v2 only)
*/

impl Advert {
    /// The message, checksummed. `src`/`dst` are the IP addresses it is sent with (used by the
    /// v3 pseudo-header).
    #[must_use]
    pub fn encode(&self, src: IpAddr, dst: IpAddr, v4: V4Checksum) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER_LEN + self.addrs.len() * 16 + V2_AUTH_LEN);
        b.push((self.version.number() << 4) | TYPE_ADVERTISEMENT);
        b.push(self.vrid);
        b.push(self.priority);
        // keepalived limits an instance to 255 addresses per packet as the field does.
        b.push(self.addrs.len().min(255) as u8);
        match self.version {
            Version::V2 => {
                b.push(self.auth.type_byte());
                b.push(self.interval.min(255) as u8);
            }
            Version::V3 => b.extend_from_slice(&(self.interval & 0x0fff).to_be_bytes()),
        }
        b.extend_from_slice(&[0, 0]);
        for a in self.addrs.iter().take(255) {
            match a {
                IpAddr::V4(a) => b.extend_from_slice(&a.octets()),
                IpAddr::V6(a) => b.extend_from_slice(&a.octets()),
            }
        }
        if self.version == Version::V2 {
            match self.auth {
                Auth::None => b.extend_from_slice(&[0; 8]),
                Auth::Pass(p) => b.extend_from_slice(&p),
            }
        }
        let sum = checksum(&b, self.version, src, dst, v4);
        b[6..8].copy_from_slice(&sum.to_be_bytes());
        b
    }

    /// Decodes the structure of a message from an `ipv6` or IPv4 packet: length, version,
    /// type, counts. Checksum and the instance's checks are `verify`'s.
    pub fn decode(msg: &[u8], ipv6: bool) -> Result<Self, Reject> {
        if msg.len() < HEADER_LEN {
            return Err(Reject::Length(msg.len()));
        }
        let version = msg[0] >> 4;
        let kind = msg[0] & 0x0f;
        let count = usize::from(msg[3]);
        let version = match version {
            2 if !ipv6 => Version::V2,
            3 => Version::V3,
            // RFC 3768 is IPv4 only.
            2 => return Err(Reject::Version(2)),
            v => return Err(Reject::Version(v)),
        };
        // CARP writes version 2, type 1 too; its fixed 36 bytes with authlen 7 would be a
        // VRRPv2 packet of 44 bytes (7 addresses), so the two cannot be confused.
        if version == Version::V2 && msg.len() == CARP_LEN && msg[3] == CARP_AUTHLEN {
            return Err(Reject::Carp);
        }
        if kind != TYPE_ADVERTISEMENT {
            return Err(Reject::Type(kind));
        }
        let alen = if ipv6 { 16 } else { 4 };
        let need = HEADER_LEN + count * alen + if version == Version::V2 { V2_AUTH_LEN } else { 0 };
        // Longer is accepted: Ethernet padding of short frames (keepalived does the same).
        if msg.len() < need {
            return Err(Reject::Length(msg.len()));
        }
        let interval = match version {
            Version::V2 => u16::from(msg[5]),
            Version::V3 => u16::from_be_bytes([msg[4], msg[5]]) & 0x0fff,
        };
        // RFC 9568 §5.2.5 (count at least 1) and erratum 8301 (interval non-zero); a v2
        // interval of 0 would make a zero Master_Down_Interval.
        if interval == 0 || (version == Version::V3 && count == 0) {
            return Err(Reject::Malformed);
        }
        let addrs = msg[HEADER_LEN..HEADER_LEN + count * alen]
            .chunks_exact(alen)
            .map(|c| match <[u8; 16]>::try_from(c) {
                Ok(a16) => IpAddr::V6(Ipv6Addr::from(a16)),
                Err(_) => IpAddr::V4(Ipv4Addr::new(c[0], c[1], c[2], c[3])),
            })
            .collect();
        let auth = match version {
            Version::V3 => Auth::None,
            Version::V2 => {
                let at = HEADER_LEN + count * 4;
                let mut data = [0u8; 8];
                data.copy_from_slice(&msg[at..at + 8]);
                match msg[4] {
                    0 => Auth::None,
                    1 => Auth::Pass(data),
                    // AH (2) is not spoken here: it can never match our configuration.
                    _ => return Err(Reject::Auth),
                }
            }
        };
        Ok(Self { version, vrid: msg[1], priority: msg[2], interval, addrs, auth })
    }

    /// Length of the message this advert was decoded from, for checksum verification.
    #[must_use]
    pub fn wire_len(&self, ipv6: bool) -> usize {
        let alen = if ipv6 { 16 } else { 4 };
        HEADER_LEN + self.addrs.len() * alen + if self.version == Version::V2 { V2_AUTH_LEN } else { 0 }
    }
}

/// What a virtual router expects of the adverts it receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    pub version: Version,
    pub vrid: u8,
    pub auth: Auth,
    /// Our advert interval in the version's unit (compared in v2 only).
    pub interval: u16,
    pub v4_checksum: V4Checksum,
    /// Multicast: the TTL/hop limit must be 255. keepalived does not check unicast.
    pub check_ttl: bool,
}

/// RFC 3768 §7.1 / RFC 5798 §7.1, in the RFC's order: TTL, version, type, length (in
/// `Advert::decode`), checksum, VRID, authentication, interval. The address list is not
/// checked (RFC: "MAY"; keepalived logs and accepts a mismatch).
pub fn verify(msg: &[u8], rx: &Received, expect: &Expect) -> Result<Advert, Reject> {
    if expect.check_ttl && rx.ttl != TTL {
        return Err(Reject::Ttl(rx.ttl));
    }
    if rx.src.is_ipv6() != rx.dst.is_ipv6() {
        return Err(Reject::Family);
    }
    let ipv6 = rx.src.is_ipv6();
    let advert = Advert::decode(msg, ipv6)?;
    if advert.version != expect.version {
        return Err(Reject::Version(advert.version.number()));
    }
    let body = &msg[..advert.wire_len(ipv6)];
    if checksum(body, advert.version, rx.src, rx.dst, expect.v4_checksum) != 0 {
        return Err(Reject::Checksum);
    }
    if advert.vrid != expect.vrid {
        return Err(Reject::Vrid(advert.vrid));
    }
    if advert.version == Version::V2 && advert.auth != expect.auth {
        return Err(Reject::Auth);
    }
    if advert.version == Version::V2 && advert.interval != expect.interval {
        return Err(Reject::Interval { got: advert.interval, ours: expect.interval });
    }
    Ok(advert)
}

/// What the IP layer told us about a received VRRP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
}

/// The checksum over `msg` (its checksum field included: 0 when verifying a correct message,
/// the value to write when the field is zero). v2: RFC 3768 §5.3.8, the message only. v3:
/// RFC 5798 §5.2.8, with the pseudo-header of RFC 8200 §8.1 for IPv6, and for IPv4 as
/// `v4` says (the IPv4 pseudo-header of RFC 768: src, dst, zero, protocol, length).
#[must_use]
pub fn checksum(msg: &[u8], version: Version, src: IpAddr, dst: IpAddr, v4: V4Checksum) -> u16 {
    let mut sum = Sum::default();
    match (version, src, dst) {
        (Version::V3, IpAddr::V4(s), IpAddr::V4(d)) if v4 == V4Checksum::PseudoHeader => {
            sum.add(&s.octets());
            sum.add(&d.octets());
            sum.add(&[0, PROTO_VRRP]);
            sum.add(&(msg.len() as u16).to_be_bytes());
        }
        (Version::V3, IpAddr::V6(s), IpAddr::V6(d)) => {
            sum.add(&s.octets());
            sum.add(&d.octets());
            sum.add(&(msg.len() as u32).to_be_bytes());
            sum.add(&[0, 0, 0, PROTO_VRRP]);
        }
        _ => {}
    }
    sum.add(msg);
    sum.finish()
}

/// RFC 1071 one's complement sum; every chunk added starts on an even offset.
#[derive(Default)]
struct Sum(u32);

impl Sum {
    fn add(&mut self, data: &[u8]) {
        let mut chunks = data.chunks_exact(2);
        for c in &mut chunks {
            self.0 += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            self.0 += u32::from(*last) << 8;
        }
    }

    fn finish(mut self) -> u16 {
        while self.0 > 0xffff {
            self.0 = (self.0 & 0xffff) + (self.0 >> 16);
        }
        !(self.0 as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// RFC 3768 §5.1 layout by hand: 10.0.0.1 advertising VRID 51, priority 100, one address
    /// 192.168.200.11, advert_int 1, no authentication.
    #[test]
    fn v2_golden_bytes_no_auth() {
        let a = Advert {
            version: Version::V2,
            vrid: 51,
            priority: 100,
            interval: 1,
            addrs: vec![v4("192.168.200.11")],
            auth: Auth::None,
        };
        let bytes = a.encode(v4("10.0.0.1"), IpAddr::V4(MCAST_V4), V4Checksum::PseudoHeader);
        // Words 2133 6401 0001 c0a8 c80b sum to 0x20de8, folded 0x0dea, complemented 0xf215.
        assert_eq!(
            bytes,
            [0x21, 0x33, 0x64, 0x01, 0x00, 0x01, 0xf2, 0x15, 0xc0, 0xa8, 0xc8, 0x0b, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(Advert::decode(&bytes, false), Ok(a));
    }

    #[test]
    fn v2_golden_bytes_auth_pass() {
        let a = Advert {
            version: Version::V2,
            vrid: 1,
            priority: 150,
            interval: 1,
            addrs: vec![v4("10.0.0.100")],
            auth: Auth::pass("secret"),
        };
        let bytes = a.encode(v4("10.0.0.1"), IpAddr::V4(MCAST_V4), V4Checksum::PseudoHeader);
        let mut want = vec![0x21, 0x01, 0x96, 0x01, 0x01, 0x01, 0, 0, 10, 0, 0, 100];
        want.extend_from_slice(b"secret\0\0");
        let sum = checksum(&want, Version::V2, v4("0.0.0.0"), v4("0.0.0.0"), V4Checksum::MessageOnly);
        want[6..8].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(bytes, want);
        // The auth data is in the sum (RFC 3768 §5.3.8); value from an independent RFC 1071 sum.
        assert_eq!(sum, 0x014c);
    }

    /// v3 over IPv4: the two checksum modes give different bytes for the same message.
    #[test]
    fn v3_ipv4_golden_bytes_both_checksum_modes() {
        let a = Advert {
            version: Version::V3,
            vrid: 51,
            priority: 100,
            interval: 100,
            addrs: vec![v4("192.168.200.11")],
            auth: Auth::None,
        };
        let (src, dst) = (v4("10.0.0.1"), IpAddr::V4(MCAST_V4));
        let message_only = a.encode(src, dst, V4Checksum::MessageOnly);
        // Words 3133 6401 0064 c0a8 c80b: folded sum 0x1e4d, checksum 0xe1b2.
        assert_eq!(message_only, [0x31, 0x33, 0x64, 0x01, 0x00, 0x64, 0xe1, 0xb2, 0xc0, 0xa8, 0xc8, 0x0b]);
        let pseudo = a.encode(src, dst, V4Checksum::PseudoHeader);
        // Plus 0a00 0001 e000 0012 0070 000c (10.0.0.1, 224.0.0.18, 0, 112, length 12):
        // folded sum 0x08dd, checksum 0xf722.
        assert_eq!(pseudo, [0x31, 0x33, 0x64, 0x01, 0x00, 0x64, 0xf7, 0x22, 0xc0, 0xa8, 0xc8, 0x0b]);
        let rx = Received { src, dst, ttl: 255 };
        let mut expect = Expect {
            version: Version::V3,
            vrid: 51,
            auth: Auth::None,
            interval: 100,
            v4_checksum: V4Checksum::PseudoHeader,
            check_ttl: true,
        };
        assert_eq!(verify(&pseudo, &rx, &expect), Ok(a.clone()));
        assert_eq!(verify(&message_only, &rx, &expect), Err(Reject::Checksum));
        expect.v4_checksum = V4Checksum::MessageOnly;
        assert_eq!(verify(&message_only, &rx, &expect), Ok(a));
        assert_eq!(verify(&pseudo, &rx, &expect), Err(Reject::Checksum));
    }

    #[test]
    fn v3_ipv6_golden_bytes() {
        let a = Advert {
            version: Version::V3,
            vrid: 7,
            priority: 200,
            interval: 10,
            addrs: vec!["fe80::7".parse().unwrap(), "fd00::100".parse().unwrap()],
            auth: Auth::None,
        };
        let src: IpAddr = "fe80::1".parse().unwrap();
        let dst = IpAddr::V6(MCAST_V6);
        let bytes = a.encode(src, dst, V4Checksum::PseudoHeader);
        let mut want = vec![0x31, 7, 200, 2, 0x00, 0x0a, 0, 0];
        want.extend_from_slice(&"fe80::7".parse::<Ipv6Addr>().unwrap().octets());
        want.extend_from_slice(&"fd00::100".parse::<Ipv6Addr>().unwrap().octets());
        // Pseudo-header (RFC 8200 §8.1): fe80::1, ff02::12, length 40, next header 112. Folded
        // sum 0xf3cb (from an independent RFC 1071 sum), checksum 0x0c34.
        want[6..8].copy_from_slice(&[0x0c, 0x34]);
        assert_eq!(bytes, want);
        let rx = Received { src, dst, ttl: 255 };
        let expect = Expect {
            version: Version::V3,
            vrid: 7,
            auth: Auth::None,
            interval: 100,
            v4_checksum: V4Checksum::PseudoHeader,
            check_ttl: true,
        };
        // v3 does not compare intervals (the backup learns the master's, RFC 5798 §6.4.2).
        assert_eq!(verify(&bytes, &rx, &expect), Ok(a));
    }

    /// Real keepalived 2.2.7 adverts, captured here with `tcpdump -xx` on a veth in a
    /// namespace (keepalived from 10.89.0.1 / fe80::c822:deff:fe8e:871e, priority 150):
    /// v2 VRID 51 with PASS "secret12"; v3 over IPv4 VRID 52, advert_int 0.1 (checksum with
    /// the pseudo-header, keepalived's default); v3 over IPv6 VRID 53.
    #[test]
    fn keepalived_captures_decode_verify_and_reencode() {
        let v2 = [
            0x21, 0x33, 0x96, 0x01, 0x01, 0x01, 0xcf, 0x8e, 0x0a, 0x59, 0x00, 0x64, 0x73, 0x65, 0x63, 0x72, 0x65, 0x74,
            0x31, 0x32,
        ];
        let rx = Received { src: v4("10.89.0.1"), dst: IpAddr::V4(MCAST_V4), ttl: 255 };
        let expect = Expect {
            version: Version::V2,
            vrid: 51,
            auth: Auth::pass("secret12"),
            interval: 1,
            v4_checksum: V4Checksum::PseudoHeader,
            check_ttl: true,
        };
        let a = verify(&v2, &rx, &expect).expect("keepalived's v2 advert verifies");
        assert_eq!((a.priority, a.addrs.clone()), (150, vec![v4("10.89.0.100")]));
        assert_eq!(a.encode(rx.src, rx.dst, V4Checksum::PseudoHeader), v2);

        let v3 = [0x31, 0x34, 0x96, 0x01, 0x00, 0x0a, 0x43, 0x19, 0x0a, 0x59, 0x00, 0x65];
        let expect = Expect { version: Version::V3, vrid: 52, auth: Auth::None, interval: 10, ..expect };
        let a = verify(&v3, &rx, &expect).expect("keepalived's v3 advert verifies with the pseudo-header");
        assert_eq!((a.priority, a.interval, a.addrs.clone()), (150, 10, vec![v4("10.89.0.101")]));
        assert_eq!(a.encode(rx.src, rx.dst, V4Checksum::PseudoHeader), v3);
        let as_v2 = Expect { v4_checksum: V4Checksum::MessageOnly, ..expect.clone() };
        assert_eq!(verify(&v3, &rx, &as_v2), Err(Reject::Checksum));

        let mut v6 = vec![0x31, 0x35, 0x96, 0x01, 0x00, 0x0a, 0x0e, 0xfd];
        v6.extend_from_slice(&"fe80::53".parse::<Ipv6Addr>().unwrap().octets());
        let rx6 = Received { src: "fe80::c822:deff:fe8e:871e".parse().unwrap(), dst: IpAddr::V6(MCAST_V6), ttl: 255 };
        let a = verify(&v6, &rx6, &Expect { vrid: 53, ..expect }).expect("keepalived's v3 IPv6 advert verifies");
        assert_eq!(a.addrs, vec!["fe80::53".parse::<IpAddr>().unwrap()]);
        assert_eq!(a.encode(rx6.src, rx6.dst, V4Checksum::PseudoHeader), v6);
    }

    fn v2_expect() -> Expect {
        Expect {
            version: Version::V2,
            vrid: 1,
            auth: Auth::pass("secret"),
            interval: 1,
            v4_checksum: V4Checksum::PseudoHeader,
            check_ttl: true,
        }
    }

    fn v2_packet(f: impl FnOnce(&mut Advert)) -> Vec<u8> {
        let mut a = Advert {
            version: Version::V2,
            vrid: 1,
            priority: 150,
            interval: 1,
            addrs: vec![v4("10.0.0.100")],
            auth: Auth::pass("secret"),
        };
        f(&mut a);
        a.encode(v4("10.0.0.1"), IpAddr::V4(MCAST_V4), V4Checksum::PseudoHeader)
    }

    #[test]
    fn spoofed_and_malformed_adverts_are_rejected_with_their_reason() {
        let rx = Received { src: v4("10.0.0.1"), dst: IpAddr::V4(MCAST_V4), ttl: 255 };
        let e = v2_expect();
        assert!(verify(&v2_packet(|_| {}), &rx, &e).is_ok());
        // TTL 254: sent from off-link (RFC 5798 §5.1.1.3).
        assert_eq!(verify(&v2_packet(|_| {}), &Received { ttl: 254, ..rx }, &e), Err(Reject::Ttl(254)));
        // ... not checked for unicast, as keepalived.
        assert!(verify(&v2_packet(|_| {}), &Received { ttl: 64, ..rx }, &Expect { check_ttl: false, ..e }).is_ok());
        let mut bad = v2_packet(|_| {});
        bad[6] ^= 1;
        assert_eq!(verify(&bad, &rx, &e), Err(Reject::Checksum));
        assert_eq!(verify(&v2_packet(|a| a.vrid = 2), &rx, &e), Err(Reject::Vrid(2)));
        assert_eq!(verify(&v2_packet(|a| a.auth = Auth::pass("guess")), &rx, &e), Err(Reject::Auth));
        assert_eq!(verify(&v2_packet(|a| a.auth = Auth::None), &rx, &e), Err(Reject::Auth));
        assert_eq!(verify(&v2_packet(|a| a.interval = 2), &rx, &e), Err(Reject::Interval { got: 2, ours: 1 }));
        // A v3 packet to a v2 instance.
        let v3 = v2_packet(|a| {
            a.version = Version::V3;
            a.interval = 100;
        });
        assert_eq!(verify(&v3, &rx, &e), Err(Reject::Version(3)));
        // Version 1, type 2.
        let mut odd = v2_packet(|_| {});
        odd[0] = 0x11;
        assert_eq!(verify(&odd, &rx, &e), Err(Reject::Version(1)));
        odd[0] = 0x22;
        assert_eq!(verify(&odd, &rx, &e), Err(Reject::Type(2)));
        // Truncated anywhere.
        let good = v2_packet(|_| {});
        for n in 0..good.len() {
            assert_eq!(verify(&good[..n], &rx, &e), Err(Reject::Length(n)), "{n} bytes");
        }
        // Ethernet padding after the message is accepted.
        let mut padded = good.clone();
        padded.extend_from_slice(&[0; 6]);
        assert!(verify(&padded, &rx, &e).is_ok());
        // Interval 0.
        assert_eq!(verify(&v2_packet(|a| a.interval = 0), &rx, &e), Err(Reject::Malformed));
    }

    /// OpenBSD's `struct carp_header`: version 2, type 1, vhid, advskew, authlen 7, pad,
    /// advbase, checksum, 8-byte counter, 20-byte SHA1 HMAC.
    #[test]
    fn carp_is_recognised_and_ignored() {
        let mut carp = vec![0x21, 1, 0, CARP_AUTHLEN, 0, 1, 0, 0];
        carp.extend_from_slice(&[0x5a; 28]);
        let sum = checksum(&carp, Version::V2, v4("0.0.0.0"), v4("0.0.0.0"), V4Checksum::MessageOnly);
        carp[6..8].copy_from_slice(&sum.to_be_bytes());
        let rx = Received { src: v4("10.0.0.9"), dst: IpAddr::V4(MCAST_V4), ttl: 255 };
        assert_eq!(verify(&carp, &rx, &v2_expect()), Err(Reject::Carp));
    }

    #[test]
    fn v3_max_adver_int_is_twelve_bits_of_centiseconds() {
        let a = Advert {
            version: Version::V3,
            vrid: 9,
            priority: 1,
            interval: 4095,
            addrs: vec![v4("10.0.0.1")],
            auth: Auth::None,
        };
        let b = a.encode(v4("10.0.0.2"), IpAddr::V4(MCAST_V4), V4Checksum::PseudoHeader);
        assert_eq!(&b[4..6], &[0x0f, 0xff]);
        // The reserved nibble is ignored on reception (RFC 5798 §5.2.6).
        let mut r = b.clone();
        r[4] |= 0xf0;
        assert_eq!(Advert::decode(&r, false).map(|a| a.interval), Ok(4095));
        // Zero addresses in v3 (RFC 9568 §5.2.5).
        let none = Advert { addrs: vec![], ..a };
        let b = none.encode(v4("10.0.0.2"), IpAddr::V4(MCAST_V4), V4Checksum::PseudoHeader);
        assert_eq!(Advert::decode(&b, false), Err(Reject::Malformed));
    }

    /// Network input never panics the decoder: every truncation and single-byte mutation of
    /// valid v2/v3/IPv6 adverts, and random buffers, for both checksum modes and TTLs.
    #[test]
    fn no_panic_on_mutated_or_random_input() {
        let v6 = Advert {
            version: Version::V3,
            vrid: 7,
            priority: 200,
            interval: 10,
            addrs: vec!["fe80::7".parse().unwrap()],
            auth: Auth::None,
        };
        let (s6, d6): (IpAddr, IpAddr) = ("fe80::1".parse().unwrap(), IpAddr::V6(MCAST_V6));
        let seeds = [
            (v2_packet(|_| {}), v4("10.0.0.1"), IpAddr::V4(MCAST_V4)),
            (
                v2_packet(|a| {
                    a.version = Version::V3;
                    a.interval = 100;
                    a.auth = Auth::None;
                }),
                v4("10.0.0.1"),
                IpAddr::V4(MCAST_V4),
            ),
            (v6.encode(s6, d6, V4Checksum::PseudoHeader), s6, d6),
        ];
        let expects = [
            v2_expect(),
            Expect { version: Version::V3, auth: Auth::None, interval: 100, ..v2_expect() },
            Expect { v4_checksum: V4Checksum::MessageOnly, check_ttl: false, ..v2_expect() },
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut inputs: Vec<(Vec<u8>, IpAddr, IpAddr)> = Vec::new();
        for (msg, src, dst) in &seeds {
            for n in 0..=msg.len() {
                inputs.push((msg[..n].to_vec(), *src, *dst));
            }
            for at in 0..msg.len() {
                for v in [0u8, 1, 2, 3, 0x7f, 0x80, 0xff] {
                    let mut m = msg.clone();
                    m[at] = v;
                    inputs.push((m, *src, *dst));
                }
            }
        }
        for _ in 0..20_000 {
            let len = (next() % 80) as usize;
            let buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let (src, dst) = if next() % 2 == 0 { (v4("10.0.0.1"), IpAddr::V4(MCAST_V4)) } else { (s6, d6) };
            inputs.push((buf, src, dst));
        }
        for (msg, src, dst) in &inputs {
            for e in &expects {
                for ttl in [255, 1] {
                    let _ = verify(msg, &Received { src: *src, dst: *dst, ttl }, e);
                }
            }
            let _ = Advert::decode(msg, src.is_ipv6());
        }
    }

    #[test]
    fn labels_cover_every_reason() {
        let all = [
            Reject::Ttl(1),
            Reject::Length(1),
            Reject::Version(1),
            Reject::Type(1),
            Reject::Carp,
            Reject::Checksum,
            Reject::Vrid(1),
            Reject::Auth,
            Reject::Interval { got: 1, ours: 2 },
            Reject::Malformed,
            Reject::Family,
            Reject::Source,
        ];
        let labels: Vec<_> = all.iter().map(Reject::as_str).collect();
        assert_eq!(labels, Reject::LABELS);
    }
}
