//! What every checker shares: where it connects (connect_ip/connect_port, bindto/bind_port),
//! its time limits, and why a check failed (a small fixed set, used as a metric label).

use std::{
    io,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use tokio::{
    net::{TcpSocket, TcpStream, UdpSocket},
    time::Instant,
};

/// Why a check failed. `as_str` is the `reason` label of the metrics: keep the set small.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// No answer in time (connect timeout or the whole-check deadline).
    Timeout,
    /// Refused or reset (TCP RST, ICMP port unreachable).
    Refused,
    /// No route, host or network unreachable.
    Unreachable,
    /// HTTP status not accepted, SMTP/DNS reply code not the expected one.
    Status,
    /// HTTP body digest differs.
    Digest,
    /// A reply that does not parse, or does not match what was required.
    Protocol,
    /// MISC_CHECK exited with a failure code (or was killed).
    Exit,
    /// Anything else local (socket, bind, script start).
    Error,
}

impl Failure {
    pub const ALL: [Failure; 8] = [
        Self::Timeout,
        Self::Refused,
        Self::Unreachable,
        Self::Status,
        Self::Digest,
        Self::Protocol,
        Self::Exit,
        Self::Error,
    ];

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Refused => "refused",
            Self::Unreachable => "unreachable",
            Self::Status => "status",
            Self::Digest => "digest",
            Self::Protocol => "protocol",
            Self::Exit => "exit",
            Self::Error => "error",
        }
    }

    /// The failure an I/O error stands for.
    #[must_use]
    pub fn of(e: &io::Error) -> Self {
        use io::ErrorKind as K;
        match e.kind() {
            K::TimedOut => Self::Timeout,
            K::ConnectionRefused | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => Self::Refused,
            K::HostUnreachable | K::NetworkUnreachable | K::AddrNotAvailable => Self::Unreachable,
            K::UnexpectedEof | K::InvalidData => Self::Protocol,
            _ => match e.raw_os_error() {
                Some(libc::EHOSTUNREACH | libc::ENETUNREACH) => Self::Unreachable,
                _ => Self::Error,
            },
        }
    }
}

/// A failed check: the reason (the metric label) and a sentence for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    pub reason: Failure,
    pub detail: String,
}

impl Failed {
    pub fn new(reason: Failure, detail: impl Into<String>) -> Self {
        Self { reason, detail: detail.into() }
    }

    pub fn io(what: &str, e: &io::Error) -> Self {
        Self::new(Failure::of(e), format!("{what}: {e}"))
    }
}

/// Where a check goes and from where, and how long it may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    /// `bindto` / `bind_port` (port 0: any).
    pub bind: Option<SocketAddr>,
    /// `bind_if`: the interface the check's packets leave by (SO_BINDTODEVICE).
    pub device: Option<std::sync::Arc<str>>,
    pub connect_timeout: Duration,
    /// The whole check ends here, whatever the server does (a trickled answer included).
    pub deadline: Instant,
}

impl Target {
    /// Bounds `fut` by the whole-check deadline.
    pub async fn within<T>(&self, what: &str, fut: impl Future<Output = Result<T, Failed>>) -> Result<T, Failed> {
        match tokio::time::timeout_at(self.deadline, fut).await {
            Ok(r) => r,
            Err(_) => Err(Failed::new(Failure::Timeout, format!("{what}: no complete answer in time"))),
        }
    }

    /// A TCP connection, bounded by connect_timeout (and the deadline).
    pub async fn connect_tcp(&self) -> Result<TcpStream, Failed> {
        let socket = match self.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(|e| Failed::io("socket", &e))?;
        self.bind_device(&socket)?;
        if let Some(bind) = self.bind {
            if bind.port() != 0 {
                // A fixed source port: every check uses the same 4-tuple, so the last one must
                // leave no TIME_WAIT behind (closed with a reset), and the port must rebind.
                let _ = socket.set_reuseaddr(true);
                let _ = socket.set_zero_linger();
            }
            socket.bind(bind).map_err(|e| Failed::io(&format!("binding {bind}"), &e))?;
        }
        let limit = (Instant::now() + self.connect_timeout).min(self.deadline);
        match tokio::time::timeout_at(limit, socket.connect(self.addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                Ok(s)
            }
            Ok(Err(e)) => Err(Failed::io(&format!("connecting to {}", self.addr), &e)),
            Err(_) => Err(Failed::new(Failure::Timeout, format!("connecting to {}: timed out", self.addr))),
        }
    }

    /// `bind_if`: ties `socket` to the interface.
    pub fn bind_device<S: std::os::fd::AsFd>(&self, socket: &S) -> Result<(), Failed> {
        if let Some(dev) = &self.device {
            socket2::SockRef::from(socket)
                .bind_device(Some(dev.as_bytes()))
                .map_err(|e| Failed::io(&format!("binding to interface {dev}"), &e))?;
        }
        Ok(())
    }

    /// A UDP socket connected to the target (so ICMP errors come back as errors on it).
    pub async fn connect_udp(&self) -> Result<UdpSocket, Failed> {
        let any: SocketAddr = match self.addr {
            SocketAddr::V4(_) => (IpAddr::from([0, 0, 0, 0]), 0).into(),
            SocketAddr::V6(_) => (IpAddr::from([0u16; 8]), 0).into(),
        };
        let local = self.bind.unwrap_or(any);
        let socket = UdpSocket::bind(local).await.map_err(|e| Failed::io(&format!("binding {local}"), &e))?;
        self.bind_device(&socket)?;
        socket.connect(self.addr).await.map_err(|e| Failed::io(&format!("connecting to {}", self.addr), &e))?;
        Ok(socket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_is_refused_and_a_silent_one_times_out() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let t = |addr| Target {
            addr,
            bind: None,
            device: None,
            connect_timeout: Duration::from_millis(200),
            deadline: Instant::now() + Duration::from_secs(1),
        };
        assert_eq!(t(addr).connect_tcp().await.unwrap_err().reason, Failure::Refused);
        // A listener whose backlog is full does not answer SYNs: a timeout.
        let full = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        full.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
        full.listen(0).unwrap();
        let addr = full.local_addr().unwrap().as_socket().unwrap();
        let mut held = Vec::new();
        let started = std::time::Instant::now();
        let mut last = None;
        for _ in 0..8 {
            match t(addr).connect_tcp().await {
                Ok(s) => held.push(s),
                Err(e) => {
                    last = Some(e);
                    break;
                }
            }
        }
        assert_eq!(last.expect("the backlog fills").reason, Failure::Timeout);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn bind_if_ties_the_socket_to_an_interface() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let on = |dev: &str| Target {
            addr: l.local_addr().unwrap(),
            bind: None,
            device: Some(dev.into()),
            connect_timeout: Duration::from_millis(500),
            deadline: Instant::now() + Duration::from_secs(1),
        };
        if !lvs_tests::privilege::can_run("bind_if_ties_the_socket_to_an_interface") {
            return;
        }
        on("lo").connect_tcp().await.unwrap();
        let e = on("lvs-nonexistent0").connect_tcp().await.unwrap_err();
        assert!(e.detail.contains("binding to interface lvs-nonexistent0"), "{e:?}");
    }
}
