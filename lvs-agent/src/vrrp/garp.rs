//! Gratuitous ARP (RFC 5227 §3 "ARP Announcement", as RFC 3768 §6.4.2 asks of a new master)
//! and unsolicited neighbour advertisements (RFC 4861 §7.2.6, RFC 5798 §6.4.2), so that the
//! segment learns the VIPs' new MAC address at once.

use std::{
    io,
    mem::{size_of, zeroed},
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

const ETH_P_ARP: u16 = 0x0806;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// The Ethernet frame of a gratuitous ARP for `vip` from `mac`: a broadcast request whose
/// sender and target protocol addresses are both the VIP, as keepalived sends it.
#[must_use]
pub fn arp_frame(mac: [u8; 6], vip: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    // htype Ethernet, ptype IPv4, hlen 6, plen 4, op request.
    f[14..22].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&vip.octets());
    f[32..38].copy_from_slice(&[0xff; 6]);
    f[38..42].copy_from_slice(&vip.octets());
    f
}

/// The ICMPv6 body of an unsolicited neighbour advertisement for `vip` (checksum left to the
/// kernel, which fills it on ICMPv6 raw sockets): Override set, with our link-layer address.
#[must_use]
pub fn na_message(mac: [u8; 6], vip: Ipv6Addr) -> [u8; 32] {
    let mut m = [0u8; 32];
    m[0] = 136; // Neighbor Advertisement
    m[4] = 0x20; // O (override); not solicited (RFC 4861 §7.2.6)
    m[8..24].copy_from_slice(&vip.octets());
    m[24] = 2; // Target Link-Layer Address option, 1 unit of 8 bytes
    m[25] = 1;
    m[26..32].copy_from_slice(&mac);
    m
}

/// Sends `count` gratuitous ARPs for each of `vips` out of `ifindex`.
pub fn send_arps(ifindex: u32, mac: [u8; 6], vips: &[Ipv4Addr], count: u32) -> io::Result<()> {
    if vips.is_empty() || count == 0 {
        return Ok(());
    }
    // SAFETY: plain socket(2).
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: zeroed sockaddr_ll filled within its size.
    let mut to: libc::sockaddr_ll = unsafe { zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = ETH_P_ARP.to_be();
    to.sll_ifindex = ifindex as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    for _ in 0..count {
        for vip in vips {
            let frame = arp_frame(mac, *vip);
            // SAFETY: frame and to are valid for the call.
            let n = unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&to as *const libc::sockaddr_ll).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Sends `count` unsolicited neighbour advertisements for each of `vips` to all nodes, hop
/// limit 255 (RFC 4861 §7.1.2 has receivers drop anything else).
pub fn send_nas(ifindex: u32, mac: [u8; 6], vips: &[Ipv6Addr], count: u32) -> io::Result<()> {
    if vips.is_empty() || count == 0 {
        return Ok(());
    }
    // SAFETY: plain socket(2).
    let raw = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::IPPROTO_ICMPV6) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let hops: i32 = 255;
    // SAFETY: valid pointers and sizes.
    unsafe {
        let p = (&hops as *const i32).cast();
        libc::setsockopt(fd.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, p, 4);
        let idx = ifindex as i32;
        libc::setsockopt(fd.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_IF, (&idx as *const i32).cast(), 4);
    }
    // SAFETY: zeroed sockaddr_in6 filled within its size.
    let mut to: libc::sockaddr_in6 = unsafe { zeroed() };
    to.sin6_family = libc::AF_INET6 as u16;
    to.sin6_addr = libc::in6_addr { s6_addr: ALL_NODES.octets() };
    to.sin6_scope_id = ifindex;
    for _ in 0..count {
        for vip in vips {
            let m = na_message(mac, *vip);
            // SAFETY: m and to are valid for the call.
            let n = unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    m.as_ptr().cast(),
                    m.len(),
                    0,
                    (&to as *const libc::sockaddr_in6).cast(),
                    size_of::<libc::sockaddr_in6>() as u32,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arp_announcement_layout() {
        let mac = [0x02, 0, 0, 0, 0, 0x01];
        let f = arp_frame(mac, Ipv4Addr::new(10, 0, 0, 100));
        let want: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x06, // Ethernet
            0, 1, 0x08, 0, 6, 4, 0, 1, // ARP request
            0x02, 0, 0, 0, 0, 0x01, 10, 0, 0, 100, // sender
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 10, 0, 0, 100, // target
        ];
        assert_eq!(f, want);
    }

    #[test]
    fn neighbour_advertisement_layout() {
        let m = na_message([0x02, 0, 0, 0, 0, 0x01], "fd00::100".parse().unwrap());
        assert_eq!(&m[..8], &[136, 0, 0, 0, 0x20, 0, 0, 0]);
        assert_eq!(&m[8..24], &"fd00::100".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(&m[24..], &[2, 1, 0x02, 0, 0, 0, 0, 0x01]);
    }
}
