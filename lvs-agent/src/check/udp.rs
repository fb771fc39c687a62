//! UDP_CHECK: sends `payload` (empty by default) to the server. With `require_reply` a reply
//! must arrive, match the pattern (hex, `X` digits are wildcards; the reply may be longer) and
//! fit min/max_reply_length. Without it, the server is down only when an ICMP port
//! unreachable comes back within connect_timeout (keepalived's `check_udp.c`).

use tokio::time::Instant;

use super::target::{Failed, Failure, Target};
use crate::config::UdpCheck;

/// `reply_pattern`, parsed: each byte is `Some(value)` or `None` for "any" (`XX`); a single `X`
/// masks one nibble.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(Vec<(u8, u8)>);

impl Pattern {
    /// `hex` with `X`/`x` wildcards; None when it is not hex.
    #[must_use]
    pub fn parse(hex: &str) -> Option<Self> {
        let digits: Vec<char> = hex.chars().filter(|c| !c.is_whitespace()).collect();
        if !digits.len().is_multiple_of(2) {
            return None;
        }
        let nibble = |c: char| -> Option<(u8, u8)> {
            match c {
                'X' | 'x' => Some((0, 0)),
                c => c.to_digit(16).map(|v| (v as u8, 0xf)),
            }
        };
        digits
            .chunks(2)
            .map(|p| {
                let (hv, hm) = nibble(p[0])?;
                let (lv, lm) = nibble(p[1])?;
                Some(((hv << 4) | lv, (hm << 4) | lm))
            })
            .collect::<Option<Vec<_>>>()
            .map(Self)
    }

    #[must_use]
    pub fn matches(&self, reply: &[u8]) -> bool {
        reply.len() >= self.0.len() && self.0.iter().zip(reply).all(|(&(v, m), &b)| b & m == v)
    }
}

pub async fn check(t: &Target, c: &UdpCheck) -> Result<(), Failed> {
    let pattern = c.reply_pattern.as_deref().map(|p| Pattern::parse(p).unwrap_or(Pattern(Vec::new())));
    t.within("UDP_CHECK", async {
        let socket = t.connect_udp().await?;
        socket
            .send(c.payload.as_deref().unwrap_or_default())
            .await
            .map_err(|e| Failed::io("sending the payload", &e))?;
        let mut buf = vec![0u8; 65536];
        // Without require_reply, silence until connect_timeout is success.
        let limit = (Instant::now() + t.connect_timeout).min(t.deadline);
        let n = match tokio::time::timeout_at(limit, socket.recv(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(Failed::io("waiting for a reply", &e)),
            Err(_) if !c.require_reply => return Ok(()),
            Err(_) => return Err(Failed::new(Failure::Timeout, "no reply in time")),
        };
        if !c.require_reply {
            return Ok(());
        }
        let reply = &buf[..n];
        let min = c.min_reply_length.unwrap_or(0) as usize;
        let max = c.max_reply_length.map_or(usize::MAX, |m| m as usize);
        if !(min..=max).contains(&reply.len()) {
            return Err(Failed::new(
                Failure::Protocol,
                format!("reply of {} bytes, wanted {min} to {max}", reply.len()),
            ));
        }
        if let Some(p) = &pattern
            && !p.matches(reply)
        {
            return Err(Failed::new(Failure::Protocol, "reply does not match reply_pattern"));
        }
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::UdpSocket;

    use super::*;

    #[test]
    fn patterns_have_byte_and_nibble_wildcards() {
        let p = Pattern::parse("4fXX6X").unwrap();
        assert!(p.matches(b"\x4f\x00\x61"));
        assert!(p.matches(b"\x4f\xff\x6f\x99"), "a longer reply matches on its prefix");
        assert!(!p.matches(b"\x4f\x00\x71"));
        assert!(!p.matches(b"\x4f\x00"));
        assert!(Pattern::parse("4g").is_none());
    }

    fn target(addr: std::net::SocketAddr) -> Target {
        Target {
            addr,
            bind: None,
            device: None,
            connect_timeout: Duration::from_millis(300),
            deadline: Instant::now() + Duration::from_secs(1),
        }
    }

    #[tokio::test]
    async fn replies_port_unreachable_and_silence() {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok((_, from)) = s.recv_from(&mut buf).await {
                let _ = s.send_to(b"PONG!", from).await;
            }
        });
        let want = |pattern: &str| UdpCheck {
            payload: Some(b"PING".to_vec()),
            require_reply: true,
            reply_pattern: Some(pattern.into()),
            min_reply_length: Some(5),
            max_reply_length: Some(5),
        };
        check(&target(addr), &want("504fXX")).await.unwrap();
        assert_eq!(check(&target(addr), &want("41")).await.unwrap_err().reason, Failure::Protocol);
        // A port nobody listens on: ICMP port unreachable.
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        assert_eq!(check(&target(closed_addr), &UdpCheck::default()).await.unwrap_err().reason, Failure::Refused);
        // A silent server: up without require_reply, down with it.
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let quiet = silent.local_addr().unwrap();
        check(&target(quiet), &UdpCheck::default()).await.unwrap();
        let need = UdpCheck { require_reply: true, ..UdpCheck::default() };
        assert_eq!(check(&target(quiet), &need).await.unwrap_err().reason, Failure::Timeout);
    }
}
