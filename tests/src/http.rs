//! A bounded HTTP client: N sequential connections, each with its own timeouts, inside a
//! namespace. Each real server of the test bed answers with its own name.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    os::fd::{FromRawFd as _, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::netns::Netns;

#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Answers per real server name.
    pub by_server: BTreeMap<String, u64>,
    pub failures: u64,
    /// Each client source port with the server that answered it last. The kernel reuses
    /// ports (some 150 in 3,000 sequential connections), and a reused port is the same
    /// 5-tuple: one flow to the director, listed once, on the server it has now.
    pub flows: BTreeMap<u16, String>,
    /// The first few failures, for the report.
    pub errors: Vec<String>,
    pub elapsed: Duration,
}

impl Tally {
    #[must_use]
    pub fn answered(&self) -> u64 {
        self.by_server.values().sum()
    }

    /// Flows (distinct 5-tuples) whose last answer came from `server`: what the director's
    /// connection table and connection counts hold for it.
    #[must_use]
    pub fn flows_of(&self, server: &str) -> u64 {
        self.flows.values().filter(|s| *s == server).count() as u64
    }

    /// Counts a failure, keeping the first few messages.
    pub fn fail(&mut self, error: String) {
        self.failures += 1;
        if self.errors.len() < 5 {
            self.errors.push(error);
        }
    }
}

/// Opens `count` connections to `target` from `ns` (a new source port each), sends one
/// `GET /` each and tallies who answered. Stops early at `deadline`.
pub fn get_many(ns: &Netns, target: SocketAddr, count: u64, limit: Duration) -> Result<Tally> {
    get_until(ns, target, Arc::new(AtomicBool::new(false)), count, limit)
}

/// `get_many` that also stops (after the request in flight) once `stop` is set: for a client
/// that keeps sending while something else happens.
pub fn get_until(ns: &Netns, target: SocketAddr, stop: Arc<AtomicBool>, count: u64, limit: Duration) -> Result<Tally> {
    ns.within(move || {
        let start = Instant::now();
        let mut tally = Tally::default();
        for _ in 0..count {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if start.elapsed() > limit {
                tally.errors.push(format!("stopped at the {limit:?} limit"));
                break;
            }
            match get_once(target) {
                Ok((name, port)) => {
                    *tally.by_server.entry(name.clone()).or_default() += 1;
                    tally.flows.insert(port, name);
                }
                Err(e) => {
                    tally.failures += 1;
                    if tally.errors.len() < 5 {
                        tally.errors.push(e.to_string());
                    }
                }
            }
        }
        tally.elapsed = start.elapsed();
        tally
    })
}

/// One request; the answering server's name and the client's source port.
fn get_once(target: SocketAddr) -> std::io::Result<(String, u16)> {
    let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
    let port = s.local_addr()?.port();
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(format!("GET / HTTP/1.0\r\nHost: {}\r\n\r\n", target.ip()).as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").trim().to_string();
    if !text.starts_with("HTTP/1.1 200") || body.is_empty() {
        return Err(std::io::Error::other(format!("unexpected answer: {:?}", text.lines().next())));
    }
    Ok((body, port))
}

/// A long-lived HTTP/1.1 keep-alive connection, opened from inside a namespace and then used
/// from any thread (the socket stays in the namespace it was made in).
pub struct Held {
    stream: TcpStream,
    /// The client's end, for messages.
    pub local: SocketAddr,
}

impl Held {
    /// Connects to `target` from `ns` (the kernel picks the source address and port).
    pub fn open(ns: &Netns, target: SocketAddr) -> Result<Self> {
        let stream = ns
            .within(move || TcpStream::connect_timeout(&target, Duration::from_secs(2)))?
            .with_context(|| format!("connecting to {target}"))?;
        Self::new(stream)
    }

    /// Connects to `target` from `ns` with source address `source` (one of the namespace's own
    /// addresses): schedulers that hash the client's address need several clients.
    pub fn open_from(ns: &Netns, source: Ipv4Addr, target: SocketAddrV4) -> Result<Self> {
        let stream = ns
            .within(move || connect_from(source, target))?
            .with_context(|| format!("connecting to {target} from {source}"))?;
        Self::new(stream)
    }

    fn new(stream: TcpStream) -> Result<Self> {
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.set_write_timeout(Some(Duration::from_secs(2)))?;
        stream.set_nodelay(true)?;
        let local = stream.local_addr()?;
        Ok(Self { stream, local })
    }

    /// Sends one `GET /` and reads exactly one response (its length from Content-Length);
    /// returns the body, the answering server's name. Bounded by the 2 s socket timeouts.
    pub fn ask(&mut self) -> Result<String> {
        self.stream.write_all(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n")?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                if !head.starts_with("HTTP/1.1 200") {
                    bail!("unexpected answer: {:?}", head.lines().next());
                }
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
                    })
                    .context("no Content-Length")?;
                let body = end + 4..end + 4 + len;
                if buf.len() >= body.end {
                    if buf.len() > body.end {
                        bail!("{} bytes after the response", buf.len() - body.end);
                    }
                    return Ok(String::from_utf8_lossy(&buf[body]).trim().to_string());
                }
            }
            if buf.len() > 65536 {
                bail!("response too long");
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                bail!("connection closed by the server");
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// std cannot bind a TcpStream before connecting; libc can. Blocking connect, bounded by
/// SO_SNDTIMEO (Linux applies it to connect).
fn connect_from(source: Ipv4Addr, target: SocketAddrV4) -> std::io::Result<TcpStream> {
    fn check(r: libc::c_int) -> std::io::Result<()> {
        if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
    }
    fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
        libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
            sin_zero: [0; 8],
        }
    }
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on an fd we own (OwnedFd closes it on every error path).
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        check(fd)?;
        let fd = OwnedFd::from_raw_fd(fd);
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let timeout = libc::timeval { tv_sec: 2, tv_usec: 0 };
        check(libc::setsockopt(
            raw,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            std::ptr::from_ref(&timeout).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        ))?;
        let src = sockaddr(SocketAddrV4::new(source, 0));
        check(libc::bind(raw, std::ptr::from_ref(&src).cast(), len))?;
        let dst = sockaddr(target);
        check(libc::connect(raw, std::ptr::from_ref(&dst).cast(), len))?;
        Ok(TcpStream::from(fd))
    }
}
