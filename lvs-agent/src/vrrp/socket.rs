//! VRRP's raw IP sockets (protocol 112), one per interface and address family: thin I/O, no
//! protocol logic.
//!
//! IPv4: the kernel hands raw sockets the whole IP header, so TTL, source and destination are
//! read from it. IPv6: the header is not delivered; hop limit and destination come as ancillary
//! data (IPV6_RECVHOPLIMIT, IPV6_RECVPKTINFO). Both send with the source address and interface
//! given per packet (IP_PKTINFO / IPV6_PKTINFO), and with TTL / hop limit 255 (RFC 5798
//! §5.1.1.3, §5.1.2.3).

use std::{
    io,
    mem::{size_of, zeroed},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use tokio::io::unix::AsyncFd;

use super::packet::{PROTO_VRRP, Received, TTL};

#[derive(Debug, thiserror::Error)]
#[error("{what} on {interface}: {source}")]
pub struct SocketError {
    pub what: &'static str,
    pub interface: String,
    #[source]
    pub source: io::Error,
}

/// A raw VRRP socket bound to one interface.
pub struct VrrpSocket {
    fd: AsyncFd<OwnedFd>,
    ifindex: u32,
    ipv6: bool,
}

impl VrrpSocket {
    /// Opens the socket on `interface` (index `ifindex`) and joins `group` (224.0.0.18 or
    /// ff02::12 unless configured otherwise); its family is the socket's.
    pub fn open(interface: &str, ifindex: u32, group: IpAddr) -> Result<Self, SocketError> {
        let ipv6 = group.is_ipv6();
        let err = |what| move |source| SocketError { what, interface: interface.to_string(), source };
        let domain = if ipv6 { libc::AF_INET6 } else { libc::AF_INET };
        // SAFETY: plain socket(2) call.
        let raw = unsafe {
            libc::socket(domain, libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, i32::from(PROTO_VRRP))
        };
        if raw < 0 {
            return Err(err("opening a raw VRRP socket")(io::Error::last_os_error()));
        }
        // SAFETY: raw is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let s = fd.as_raw_fd();
        setsockopt_bytes(s, libc::SOL_SOCKET, libc::SO_BINDTODEVICE, interface.as_bytes())
            .map_err(err("binding the VRRP socket to the interface"))?;
        match group {
            IpAddr::V6(g) => {
                let mreq = libc::ipv6_mreq { ipv6mr_multiaddr: in6(g), ipv6mr_interface: ifindex };
                setsockopt(s, libc::IPPROTO_IPV6, libc::IPV6_ADD_MEMBERSHIP, &mreq)
                    .map_err(err("joining the VRRP group"))?;
                setsockopt(s, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, &i32::from(TTL))
                    .map_err(err("setting the hop limit"))?;
                setsockopt(s, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, &i32::from(TTL))
                    .map_err(err("setting the hop limit"))?;
                setsockopt(s, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP, &0i32).map_err(err("multicast loop"))?;
                setsockopt(s, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_IF, &(ifindex as i32))
                    .map_err(err("multicast interface"))?;
                setsockopt(s, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, &1i32).map_err(err("IPV6_RECVHOPLIMIT"))?;
                setsockopt(s, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, &1i32).map_err(err("IPV6_RECVPKTINFO"))?;
            }
            IpAddr::V4(g) => {
                let mreq = libc::ip_mreqn {
                    imr_multiaddr: libc::in_addr { s_addr: u32::from(g).to_be() },
                    imr_address: libc::in_addr { s_addr: 0 },
                    imr_ifindex: ifindex as i32,
                };
                setsockopt(s, libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, &mreq)
                    .map_err(err("joining the VRRP group"))?;
                setsockopt(s, libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &mreq).map_err(err("multicast interface"))?;
                setsockopt(s, libc::IPPROTO_IP, libc::IP_MULTICAST_TTL, &i32::from(TTL))
                    .map_err(err("setting the TTL"))?;
                setsockopt(s, libc::IPPROTO_IP, libc::IP_TTL, &i32::from(TTL)).map_err(err("setting the TTL"))?;
                setsockopt(s, libc::IPPROTO_IP, libc::IP_MULTICAST_LOOP, &0i32).map_err(err("multicast loop"))?;
                // As keepalived: IPTOS_PREC_INTERNETCONTROL.
                setsockopt(s, libc::IPPROTO_IP, libc::IP_TOS, &0xc0i32).map_err(err("setting the TOS"))?;
            }
        }
        // SAFETY: the OwnedFd moves into the AsyncFd and stays open as long as it.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| err("registering the VRRP socket")(e.into()))?;
        Ok(Self { fd, ifindex, ipv6 })
    }

    /// Sends `msg` (a VRRP message) from `src` to `dst` with `ttl` (255 unless unicast_ttl).
    pub async fn send(&self, msg: &[u8], src: IpAddr, dst: IpAddr, ttl: u8) -> io::Result<()> {
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| send_with_source(fd.as_raw_fd(), msg, src, dst, self.ifindex, ttl)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Receives one packet into `buf`: what the IP layer said, and the VRRP message's range
    /// in `buf`. Packets too short to carry an IP header are skipped.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<(Received, std::ops::Range<usize>)> {
        loop {
            let mut guard = self.fd.readable().await?;
            let got = guard.try_io(|fd| recv_one(fd.as_raw_fd(), buf, self.ipv6));
            match got {
                Ok(Ok(Some(r))) => return Ok(r),
                Ok(Ok(None)) => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

fn in6(a: Ipv6Addr) -> libc::in6_addr {
    libc::in6_addr { s6_addr: a.octets() }
}

fn setsockopt<T>(fd: i32, level: i32, name: i32, value: &T) -> io::Result<()> {
    // SAFETY: value points at a T of size_of::<T>() bytes.
    let r = unsafe { libc::setsockopt(fd, level, name, (value as *const T).cast(), size_of::<T>() as u32) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

fn setsockopt_bytes(fd: i32, level: i32, name: i32, value: &[u8]) -> io::Result<()> {
    // SAFETY: value is a valid slice.
    let r = unsafe { libc::setsockopt(fd, level, name, value.as_ptr().cast(), value.len() as u32) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Control message space for one in6_pktinfo / in_pktinfo plus one int, aligned as
/// `struct cmsghdr` must be (the CMSG_* macros dereference it).
const CMSG_SPACE: usize = 128;
#[repr(C, align(8))]
struct Control([u8; CMSG_SPACE]);

fn send_with_source(fd: i32, msg: &[u8], src: IpAddr, dst: IpAddr, ifindex: u32, ttl: u8) -> io::Result<()> {
    // SAFETY: all structures are zeroed PODs, filled within their sizes; CMSG_* macros are used
    // on a buffer of CMSG_SPACE bytes, enough for the one header written.
    unsafe {
        let mut iov = libc::iovec { iov_base: msg.as_ptr() as *mut _, iov_len: msg.len() };
        let mut control = Control([0u8; CMSG_SPACE]);
        let mut hdr: libc::msghdr = zeroed();
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = control.0.as_mut_ptr().cast();
        let mut sin: libc::sockaddr_in = zeroed();
        let mut sin6: libc::sockaddr_in6 = zeroed();
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                sin.sin_family = libc::AF_INET as u16;
                sin.sin_addr.s_addr = u32::from(d).to_be();
                hdr.msg_name = (&mut sin as *mut libc::sockaddr_in).cast();
                hdr.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
                hdr.msg_controllen = libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) as usize;
                let c = libc::CMSG_FIRSTHDR(&hdr);
                (*c).cmsg_level = libc::IPPROTO_IP;
                (*c).cmsg_type = libc::IP_PKTINFO;
                (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as usize;
                let info = libc::in_pktinfo {
                    ipi_ifindex: ifindex as i32,
                    ipi_spec_dst: libc::in_addr { s_addr: u32::from(s).to_be() },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast(), info);
                if !d.is_multicast() {
                    setsockopt(fd, libc::IPPROTO_IP, libc::IP_TTL, &i32::from(ttl))?;
                }
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                sin6.sin6_family = libc::AF_INET6 as u16;
                sin6.sin6_addr = in6(d);
                if d.is_unicast_link_local() || d.is_multicast() {
                    sin6.sin6_scope_id = ifindex;
                }
                hdr.msg_name = (&mut sin6 as *mut libc::sockaddr_in6).cast();
                hdr.msg_namelen = size_of::<libc::sockaddr_in6>() as u32;
                hdr.msg_controllen = libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as u32) as usize;
                let c = libc::CMSG_FIRSTHDR(&hdr);
                (*c).cmsg_level = libc::IPPROTO_IPV6;
                (*c).cmsg_type = libc::IPV6_PKTINFO;
                (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as u32) as usize;
                let info = libc::in6_pktinfo { ipi6_addr: in6(s), ipi6_ifindex: ifindex };
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast(), info);
                if !d.is_multicast() {
                    setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, &i32::from(ttl))?;
                }
            }
            _ => return Err(io::Error::new(io::ErrorKind::InvalidInput, "source and destination families differ")),
        }
        let n = libc::sendmsg(fd, &hdr, 0);
        if n < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }
}

fn recv_one(fd: i32, buf: &mut [u8], ipv6: bool) -> io::Result<Option<(Received, std::ops::Range<usize>)>> {
    // SAFETY: msghdr points at buf, a sockaddr_in6 (large enough for both families) and a
    // control buffer, all alive for the call; cmsgs are read within msg_controllen.
    unsafe {
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        let mut control = Control([0u8; CMSG_SPACE]);
        let mut from: libc::sockaddr_in6 = zeroed();
        let mut hdr: libc::msghdr = zeroed();
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        hdr.msg_name = (&mut from as *mut libc::sockaddr_in6).cast();
        hdr.msg_namelen = size_of::<libc::sockaddr_in6>() as u32;
        hdr.msg_control = control.0.as_mut_ptr().cast();
        hdr.msg_controllen = CMSG_SPACE;
        let n = libc::recvmsg(fd, &mut hdr, 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if !ipv6 {
            // The IPv4 header: IHL, total length, TTL, source, destination.
            if n < 20 {
                return Ok(None);
            }
            let ihl = usize::from(buf[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([buf[2], buf[3]])).min(n);
            if ihl < 20 || total < ihl {
                return Ok(None);
            }
            let src = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
            let dst = Ipv4Addr::new(buf[16], buf[17], buf[18], buf[19]);
            return Ok(Some((Received { src: src.into(), dst: dst.into(), ttl: buf[8] }, ihl..total)));
        }
        let src = Ipv6Addr::from(from.sin6_addr.s6_addr);
        let mut dst = None;
        let mut hops = None;
        let mut c = libc::CMSG_FIRSTHDR(&hdr);
        while !c.is_null() {
            if (*c).cmsg_level == libc::IPPROTO_IPV6 {
                if (*c).cmsg_type == libc::IPV6_PKTINFO {
                    let info: libc::in6_pktinfo = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    dst = Some(Ipv6Addr::from(info.ipi6_addr.s6_addr));
                } else if (*c).cmsg_type == libc::IPV6_HOPLIMIT {
                    let h: i32 = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    hops = Some(h.clamp(0, 255) as u8);
                }
            }
            c = libc::CMSG_NXTHDR(&hdr, c);
        }
        match (dst, hops) {
            (Some(dst), Some(ttl)) => Ok(Some((Received { src: src.into(), dst: dst.into(), ttl }, 0..n))),
            _ => Ok(None),
        }
    }
}
