//! Tiny TCP servers for health-check tests: an SMTP responder and an HTTP server that trickles
//! its answer byte by byte. Each listens inside a namespace, serves one connection at a time
//! from a thread, and stops when dropped (or after a lifetime no test reaches).

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use crate::netns::Netns;

const POLL: Duration = Duration::from_millis(20);
const MAX_LIFETIME: Duration = Duration::from_secs(900);

/// A listening socket served by `handle` per connection, until dropped.
pub struct TcpServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpServer {
    /// Binds `addr` inside `ns` (ready when this returns) and serves each connection with
    /// `handle`.
    pub fn start(ns: &Netns, addr: SocketAddr, handle: impl Fn(TcpStream) + Send + 'static) -> Result<Self> {
        let listener =
            ns.within(move || TcpListener::bind(addr))?.with_context(|| format!("binding {addr} in {}", ns.name))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::Builder::new().name(format!("tcp@{addr}")).spawn(move || {
            let start = Instant::now();
            while !flag.load(Ordering::Relaxed) && start.elapsed() < MAX_LIFETIME {
                match listener.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                        let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
                        handle(s);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(POLL),
                    Err(_) => thread::sleep(POLL),
                }
            }
        })?;
        Ok(Self { addr, stop, thread: Some(thread) })
    }

    /// An SMTP server as far as SMTP_CHECK goes: banner 220, 250 to HELO, 221 to QUIT.
    pub fn smtp(ns: &Netns, addr: SocketAddr) -> Result<Self> {
        Self::start(ns, addr, |mut s| {
            let _ = s.write_all(b"220-lvs-test ESMTP\r\n220 ready\r\n");
            let mut buf = [0u8; 512];
            // Bounded: a client gets at most a few answers.
            for _ in 0..4 {
                let Ok(n) = s.read(&mut buf) else { break };
                if n == 0 {
                    break;
                }
                let line = String::from_utf8_lossy(&buf[..n]).to_ascii_uppercase();
                let reply: &[u8] = if line.starts_with("HELO") { b"250 hello\r\n" } else { b"221 bye\r\n" };
                if s.write_all(reply).is_err() || line.starts_with("QUIT") {
                    break;
                }
            }
        })
    }

    /// An HTTP server answering `200 OK` with a body. While `trickle` is set it sends the answer
    /// one byte every `pause` (a server that accepts, then is too slow to answer in time).
    pub fn http(ns: &Netns, addr: SocketAddr, trickle: Arc<AtomicBool>, pause: Duration) -> Result<Self> {
        Self::start(ns, addr, move |mut s| {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let answer = b"HTTP/1.0 200 OK\r\nContent-Length: 8\r\n\r\nhealthy\n";
            if trickle.load(Ordering::Relaxed) {
                for b in answer {
                    if s.write_all(&[*b]).is_err() {
                        return;
                    }
                    thread::sleep(pause);
                }
            } else {
                let _ = s.write_all(answer);
            }
        })
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
