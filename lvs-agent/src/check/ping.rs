//! PING_CHECK: one ICMP (v4) or ICMPv6 echo; up when the matching echo reply arrives in time.
//! An unprivileged ping socket (`SOCK_DGRAM`, allowed by `net.ipv4.ping_group_range`) is used
//! when possible, else a raw socket (CAP_NET_RAW).

use std::net::{IpAddr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

use super::target::{Failed, Failure, Target};

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;

/// An echo request: type, code 0, checksum, identifier, sequence, payload.
#[must_use]
pub fn echo_request(v6: bool, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![if v6 { ECHO_REQUEST_V6 } else { ECHO_REQUEST_V4 }, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(payload);
    if !v6 {
        // ICMPv6's checksum covers a pseudo-header; the kernel computes it for us.
        let c = checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
    }
    p
}

/// The Internet checksum (RFC 1071).
#[must_use]
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Whether `packet` (ICMP message, after any IP header) is the echo reply to `seq` (and `id`
/// when the kernel does not own the identifier).
fn is_reply(packet: &[u8], v6: bool, id: Option<u16>, seq: u16) -> Option<Result<(), Failure>> {
    let (&kind, rest) = packet.split_first()?;
    if kind == if v6 { ECHO_REPLY_V6 } else { ECHO_REPLY_V4 } && rest.len() >= 7 {
        let got_id = u16::from_be_bytes([packet[4], packet[5]]);
        let got_seq = u16::from_be_bytes([packet[6], packet[7]]);
        return (got_seq == seq && id.is_none_or(|i| i == got_id)).then_some(Ok(()));
    }
    // Destination unreachable (3 / 1) about our datagram: it will not answer.
    if kind == if v6 { 1 } else { 3 } {
        return Some(Err(Failure::Unreachable));
    }
    None
}

fn open(addr: IpAddr) -> std::io::Result<(Socket, bool)> {
    let (domain, proto) = match addr {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6),
    };
    match Socket::new(domain, Type::DGRAM, Some(proto)) {
        Ok(s) => Ok((s, false)),
        Err(_) => Socket::new(domain, Type::RAW, Some(proto)).map(|s| (s, true)),
    }
}

pub async fn check(t: &Target, seq: u16) -> Result<(), Failed> {
    t.within("PING_CHECK", async {
        let ip = t.addr.ip();
        let v6 = ip.is_ipv6();
        let (socket, raw) = open(ip).map_err(|e| Failed::io("opening an ICMP socket", &e))?;
        if let Some(bind) = t.bind {
            socket
                .bind(&SocketAddr::new(bind.ip(), 0).into())
                .map_err(|e| Failed::io(&format!("binding {bind}"), &e))?;
        }
        t.bind_device(&socket)?;
        let target = SocketAddr::new(ip, 0);
        socket.connect(&target.into()).map_err(|e| Failed::io(&format!("connecting to {ip}"), &e))?;
        socket.set_nonblocking(true).map_err(|e| Failed::io("socket", &e))?;
        // tokio's UdpSocket only needs a datagram file descriptor; ICMP sockets are one.
        let socket = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(socket))
            .map_err(|e| Failed::io("registering the ICMP socket", &e))?;
        // With a ping socket the kernel sets the identifier (the socket's "port").
        let id = raw.then(|| (std::process::id() as u16) ^ seq.rotate_left(8));
        let request = echo_request(v6, id.unwrap_or(0), seq, b"lvs-agent PING_CHECK");
        socket.send(&request).await.map_err(|e| Failed::io(&format!("sending an echo to {ip}"), &e))?;
        let mut buf = [0u8; 1500];
        // Bounded: replies to other checks' echoes on a raw socket are skipped, not forever.
        for _ in 0..64 {
            let n = socket.recv(&mut buf).await.map_err(|e| Failed::io(&format!("waiting for {ip}'s reply"), &e))?;
            let mut packet = &buf[..n];
            if raw && !v6 {
                // Raw IPv4 sockets hand over the IP header too.
                let ihl = usize::from(packet.first().map_or(0, |b| b & 0x0f)) * 4;
                packet = packet.get(ihl..).unwrap_or_default();
            }
            match is_reply(packet, v6, id, seq) {
                Some(Ok(())) => return Ok(()),
                Some(Err(reason)) => return Err(Failed::new(reason, format!("{ip} is unreachable"))),
                None => {}
            }
        }
        Err(Failed::new(Failure::Protocol, "no echo reply among 64 ICMP messages"))
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;

    #[test]
    fn echo_requests_carry_a_valid_checksum() {
        let p = echo_request(false, 0x1234, 7, b"abc");
        assert_eq!(p[..2], [8, 0]);
        assert_eq!(checksum(&p), 0, "a packet with its checksum sums to zero");
        assert_eq!(echo_request(true, 1, 2, b"")[..4], [128, 0, 0, 0]);
    }

    #[test]
    fn replies_match_on_sequence_and_unreachables_fail() {
        let mut reply = echo_request(false, 5, 9, b"x");
        reply[0] = 0;
        assert_eq!(is_reply(&reply, false, None, 9), Some(Ok(())));
        assert_eq!(is_reply(&reply, false, Some(6), 9), None, "another raw socket's echo");
        assert_eq!(is_reply(&reply, false, None, 8), None);
        assert_eq!(is_reply(&[3, 1, 0, 0, 0, 0, 0, 0], false, None, 9), Some(Err(Failure::Unreachable)));
    }

    #[tokio::test]
    async fn loopback_answers_when_we_may_ping() {
        if open("127.0.0.1".parse().unwrap()).is_err() {
            lvs_tests::privilege::skip_or_fail(
                "loopback_answers_when_we_may_ping",
                "no ping socket and no CAP_NET_RAW",
            );
            return;
        }
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            let t = Target {
                addr: addr.parse().unwrap(),
                bind: None,
                device: None,
                connect_timeout: Duration::from_secs(1),
                deadline: Instant::now() + Duration::from_secs(1),
            };
            check(&t, 1).await.unwrap();
        }
    }
}
