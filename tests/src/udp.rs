//! UDP for the test bed: a responder per real server that answers every datagram with the
//! server's name, and a bounded client that tallies who answered.
//!
//! A socket stays in the namespace it was created in, whichever thread later uses it: the
//! sockets are made by `Netns::within` and then served from ordinary threads.

use std::{
    io::ErrorKind,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{http::Tally, netns::Netns};

/// How often a responder looks at its stop flag.
const POLL: Duration = Duration::from_millis(50);
/// A responder outliving any test by far is a leak: it stops on its own after this.
const MAX_LIFETIME: Duration = Duration::from_secs(900);
/// `udp_many`'s source ports: below the ephemeral range (32768–60999), so never one the kernel
/// hands out for port 0, and handed out once per test process (see `udp_many`).
const FIRST_PORT: u32 = 20_000;
const END_PORT: u32 = 32_768;
static NEXT_PORT: AtomicU32 = AtomicU32::new(FIRST_PORT);

/// A thread answering each datagram on `addr` with `name`. Stops when dropped.
pub struct UdpResponder {
    pub name: String,
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl UdpResponder {
    /// Binds `addr` inside `ns` (so the socket is ready when this returns) and starts answering.
    pub fn start(ns: &Netns, addr: SocketAddr, name: &str) -> Result<Self> {
        let socket =
            ns.within(move || UdpSocket::bind(addr))?.with_context(|| format!("binding {addr} in {}", ns.name))?;
        socket.set_read_timeout(Some(POLL))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let reply = name.as_bytes().to_vec();
        let thread = thread::Builder::new().name(format!("udp@{name}")).spawn(move || {
            let start = Instant::now();
            let mut answered = 0u64;
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) && start.elapsed() < MAX_LIFETIME {
                match socket.recv_from(&mut buf) {
                    Ok((_, peer)) => {
                        if socket.send_to(&reply, peer).is_ok() {
                            answered += 1;
                        }
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    // An ICMP error from an earlier reply can surface here; keep serving.
                    Err(_) => {}
                }
            }
            answered
        })?;
        Ok(Self { name: name.to_string(), addr, stop, thread: Some(thread) })
    }

    /// Stops the thread and returns how many datagrams it answered.
    pub fn stop(mut self) -> u64 {
        self.halt()
    }

    fn halt(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or(0)
    }
}

impl Drop for UdpResponder {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Sends `count` datagrams to `target` from `ns`, each from a new socket on a source port not
/// used before by this process (so each is a new flow), waits up to a second for each reply and
/// tallies the replies by their text. Stops early once `limit` has passed.
///
/// Ports are handed out explicitly because port 0 is not enough: the kernel picks ephemeral
/// ports at random, and among 3,000 sockets some 150 reuse a port, whose datagram then belongs
/// to the flow the director already holds for it. At most 12,768 ports per test process.
///
/// The socket is connected, so the kernel accepts a reply only from `target` itself: a reply
/// from a real server's own address (not the VIP) would count as a failure.
pub fn udp_many(ns: &Netns, target: SocketAddr, count: u64, limit: Duration) -> Result<Tally> {
    let n = u32::try_from(count).ok().filter(|&n| n < END_PORT - FIRST_PORT).context("too many datagrams")?;
    let first = NEXT_PORT.fetch_add(n, Ordering::Relaxed);
    if first + n > END_PORT {
        bail!("udp_many: out of fresh source ports ({FIRST_PORT}..{END_PORT}) in this process");
    }
    ns.within(move || {
        let start = Instant::now();
        let mut tally = Tally::default();
        for port in first..first + n {
            if start.elapsed() > limit {
                tally.errors.push(format!("stopped at the {limit:?} limit after {} datagrams", port - first));
                break;
            }
            let port = u16::try_from(port).expect("below END_PORT");
            match ask_from_port(port, target) {
                Ok(name) => *tally.by_server.entry(name).or_default() += 1,
                Err(e) => tally.fail(format!("from port {port}: {e}")),
            }
        }
        tally.elapsed = start.elapsed();
        tally
    })
}

fn ask_from_port(port: u16, target: SocketAddr) -> std::io::Result<String> {
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))?;
    s.connect(target)?;
    ask(&s)
}

/// One datagram out, one reply back, on a connected socket.
fn ask(s: &UdpSocket) -> std::io::Result<String> {
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    s.send(b"who?")?;
    let mut buf = [0u8; 256];
    let n = s.recv(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string())
}

/// Opens `ports` sockets in `ns` and sends `rounds` datagrams from each (the same source port
/// every round). Returns, per socket, the server names that answered, in round order; a lost
/// answer is recorded as `!error`. Bounded: at most `ports * rounds` datagrams, one second each.
pub fn udp_same_port(ns: &Netns, target: SocketAddr, ports: usize, rounds: usize) -> Result<Vec<Vec<String>>> {
    ns.within(move || -> std::io::Result<Vec<Vec<String>>> {
        let sockets = (0..ports)
            .map(|_| {
                let s = UdpSocket::bind("0.0.0.0:0")?;
                s.connect(target)?;
                Ok(s)
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let mut seen = vec![Vec::with_capacity(rounds); ports];
        // Round by round, so that other flows are scheduled between two datagrams of one port:
        // without pinning, rr would send the second datagram elsewhere.
        for _ in 0..rounds {
            for (s, names) in sockets.iter().zip(&mut seen) {
                names.push(ask(s).unwrap_or_else(|e| format!("!{e}")));
            }
        }
        Ok(seen)
    })?
    .context("udp sockets")
}
