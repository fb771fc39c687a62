//! DNS_CHECK: one query over UDP for `name`/`type`; up when a response with the query's id and
//! RCODE NOERROR arrives (keepalived's `check_dns.c`). The codec is ours: a query is 12 header
//! bytes and one question.

use super::target::{Failed, Failure, Target};
use crate::config::DnsType;

/// The RFC 1035 / 3596 type code.
#[must_use]
pub const fn type_code(t: DnsType) -> u16 {
    match t {
        DnsType::A => 1,
        DnsType::Ns => 2,
        DnsType::Cname => 5,
        DnsType::Soa => 6,
        DnsType::Mx => 15,
        DnsType::Txt => 16,
        DnsType::Aaaa => 28,
    }
}

/// A standard query with recursion desired, class IN.
///
/// ```text
///  id(2) flags(2)=0x0100 qdcount(2)=1 ancount nscount arcount (0) | qname qtype(2) qclass(2)=1
/// ```
#[must_use]
pub fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
        // Labels are at most 63 bytes; a longer one is cut (the config parser accepts any name).
        let l = &label.as_bytes()[..label.len().min(63)];
        q.push(l.len() as u8);
        q.extend_from_slice(l);
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

/// Whether `reply` answers query `id`: Err(None) when it is for another query (ignored), the
/// RCODE otherwise.
fn rcode(reply: &[u8], id: u16) -> Option<u8> {
    if reply.len() < 12 || u16::from_be_bytes([reply[0], reply[1]]) != id || reply[2] & 0x80 == 0 {
        return None;
    }
    Some(reply[3] & 0x0f)
}

pub async fn check(t: &Target, name: &str, qtype: DnsType, id: u16) -> Result<(), Failed> {
    t.within("DNS_CHECK", async {
        let socket = t.connect_udp().await?;
        socket.send(&query(id, name, type_code(qtype))).await.map_err(|e| Failed::io("sending the query", &e))?;
        let mut buf = [0u8; 4096];
        // Bounded: stray datagrams are skipped, but not forever.
        for _ in 0..16 {
            let n = socket.recv(&mut buf).await.map_err(|e| Failed::io("waiting for the answer", &e))?;
            match rcode(&buf[..n], id) {
                Some(0) => return Ok(()),
                Some(code) => return Err(Failed::new(Failure::Status, format!("answer with RCODE {code}"))),
                None => {}
            }
        }
        Err(Failed::new(Failure::Protocol, "no answer to our query among 16 datagrams"))
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::{net::UdpSocket, time::Instant};

    use super::*;

    #[test]
    fn the_query_is_rfc_1035_wire_format() {
        assert_eq!(
            query(0x1234, "a.bc.", 1),
            [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 2, b'b', b'c', 0, 0, 1, 0, 1]
        );
        assert_eq!(query(7, ".", 6)[12..], [0, 0, 6, 0, 1], "the root, SOA");
    }

    async fn responder(rcode: u8, wrong_id_first: bool) -> std::net::SocketAddr {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let (n, from) = s.recv_from(&mut buf).await.unwrap();
            let mut r = buf[..n].to_vec();
            r[2] |= 0x80;
            r[3] = rcode;
            if wrong_id_first {
                let mut other = r.clone();
                other[0] ^= 0xff;
                s.send_to(&other, from).await.unwrap();
            }
            s.send_to(&r, from).await.unwrap();
        });
        addr
    }

    fn target(addr: std::net::SocketAddr) -> Target {
        Target {
            addr,
            bind: None,
            device: None,
            connect_timeout: Duration::from_secs(1),
            deadline: Instant::now() + Duration::from_secs(1),
        }
    }

    #[tokio::test]
    async fn noerror_with_our_id_is_up_other_rcodes_are_down() {
        check(&target(responder(0, true).await), "example.", DnsType::A, 99).await.unwrap();
        let e = check(&target(responder(3, false).await), "example.", DnsType::A, 99).await.unwrap_err();
        assert_eq!(e.reason, Failure::Status);
    }

    #[tokio::test]
    async fn a_closed_port_is_refused() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = s.local_addr().unwrap();
        drop(s);
        assert_eq!(check(&target(addr), ".", DnsType::Soa, 1).await.unwrap_err().reason, Failure::Refused);
    }
}
