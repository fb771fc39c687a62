//! A generic netlink socket speaking to the kernel's IPVS family: resolves the family id with
//! nlctrl, sends one request at a time and reads its ack or dump. Blocking, with a receive
//! timeout: the kernel answers IPVS requests synchronously (`ip_vs_ctl.c` holds its mutex for
//! the duration), so a call takes microseconds and never waits on the network.

use std::{io, os::fd::AsRawFd as _, os::fd::FromRawFd as _, os::fd::OwnedFd, time::Duration};

use super::codec::{self, CodecError, NLMSG_DONE, NLMSG_ERROR, Request};

#[derive(Debug, thiserror::Error)]
pub enum GenlError {
    /// nlctrl does not know the family (and could not autoload the module for it).
    #[error("generic netlink family {0:?} not found")]
    NoFamily(&'static str),
    /// The kernel refused a request, with its errno.
    #[error("{0}")]
    Kernel(#[source] io::Error),
    #[error("netlink socket: {0}")]
    Io(#[source] io::Error),
    #[error("no answer from the kernel within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

impl GenlError {
    /// The kernel's errno, when the kernel refused.
    #[must_use]
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel(e) => e.raw_os_error(),
            _ => None,
        }
    }
}

const RECV_TIMEOUT: Duration = Duration::from_secs(5);

pub struct GenlSocket {
    fd: OwnedFd,
    family: u16,
    seq: u32,
}

impl std::fmt::Debug for GenlSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenlSocket").field("family", &self.family).finish_non_exhaustive()
    }
}

impl GenlSocket {
    /// Opens a NETLINK_GENERIC socket in the caller's network namespace and resolves the IPVS
    /// family (nlctrl asks for module `ip_vs` through `net-pf-16-proto-16-family-IPVS` when it
    /// is not loaded, so a missing family means no module to load).
    pub fn open_ipvs() -> Result<Self, GenlError> {
        // SAFETY: plain socket(2) call; the fd is owned below.
        let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_GENERIC) };
        if raw < 0 {
            return Err(GenlError::Io(io::Error::last_os_error()));
        }
        // SAFETY: raw is a fresh, valid fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let tv = libc::timeval { tv_sec: RECV_TIMEOUT.as_secs() as _, tv_usec: 0 };
        // SAFETY: valid fd, pointer to a timeval of the stated size.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                size_of::<libc::timeval>() as u32,
            )
        };
        if r < 0 {
            return Err(GenlError::Io(io::Error::last_os_error()));
        }
        // 1 MiB of receive buffer: dumps of thousands of destinations arrive in bursts.
        let size: libc::c_int = 1 << 20;
        // SAFETY: as above; failure only leaves the default size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&raw const size).cast(),
                size_of::<libc::c_int>() as u32,
            )
        };
        let mut sock = Self { fd, family: 0, seq: 0 };
        let seq = sock.next_seq();
        sock.send(&codec::get_family(seq, codec::IPVS_GENL_NAME))?;
        let mut family = None;
        let r = sock.receive(seq, &mut |msg| {
            let (_, a) = codec::genl_payload(msg)?;
            family = Some(codec::decode_family_id(a)?);
            Ok(())
        });
        match r {
            Err(GenlError::Kernel(e)) if e.raw_os_error() == Some(libc::ENOENT) => {
                return Err(GenlError::NoFamily(codec::IPVS_GENL_NAME));
            }
            r => r?,
        }
        sock.family = family.ok_or(GenlError::NoFamily(codec::IPVS_GENL_NAME))?;
        Ok(sock)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&self, msg: &[u8]) -> Result<(), GenlError> {
        // SAFETY: a zeroed sockaddr_nl is valid; nl_pid 0 is the kernel.
        let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: valid fd, buffer and address of the stated sizes.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&raw const to).cast(),
                size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if n < 0 { Err(GenlError::Io(io::Error::last_os_error())) } else { Ok(()) }
    }

    /// Reads answers to `seq` until its ack (error 0), error or NLMSG_DONE, handing every data
    /// message to `each`.
    fn receive(&mut self, seq: u32, each: &mut dyn FnMut(&[u8]) -> Result<(), CodecError>) -> Result<(), GenlError> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: valid fd and buffer.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                return Err(match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => GenlError::Timeout(RECV_TIMEOUT),
                    _ => GenlError::Io(e),
                });
            }
            let mut rest = &buf[..n as usize];
            while rest.len() >= codec::NLMSG_HDRLEN {
                let len = u32::from_ne_bytes(rest[..4].try_into().unwrap_or_default()) as usize;
                if len < codec::NLMSG_HDRLEN || len > rest.len() {
                    return Err(CodecError::Truncated("nlmsghdr").into());
                }
                let msg = &rest[..len];
                rest = &rest[len.next_multiple_of(4).min(rest.len())..];
                let kind = u16::from_ne_bytes([msg[4], msg[5]]);
                let mseq = u32::from_ne_bytes(msg[8..12].try_into().unwrap_or_default());
                if mseq != seq {
                    continue; // a late answer to an earlier, timed-out request
                }
                match kind {
                    NLMSG_ERROR | NLMSG_DONE => {
                        let code = msg.get(16..20).map_or(0, |b| i32::from_ne_bytes(b.try_into().unwrap_or_default()));
                        return if code < 0 {
                            Err(GenlError::Kernel(io::Error::from_raw_os_error(-code)))
                        } else {
                            Ok(())
                        };
                    }
                    _ => each(msg)?,
                }
            }
        }
    }

    /// Sends `req` and waits for its ack; dumps hand each message's attributes to `each`.
    pub fn call(
        &mut self,
        req: &Request,
        each: &mut dyn FnMut(&[u8]) -> Result<(), CodecError>,
    ) -> Result<(), GenlError> {
        let seq = self.next_seq();
        self.send(&req.encode(self.family, seq))?;
        self.receive(seq, &mut |msg| each(codec::genl_payload(msg)?.1))
    }

    /// Sends a request answered by an ack only.
    pub fn execute(&mut self, req: &Request) -> Result<(), GenlError> {
        self.call(req, &mut |_| Ok(()))
    }

    /// Every service, without destinations.
    pub fn services(&mut self) -> Result<Vec<codec::Service>, GenlError> {
        let mut out = Vec::new();
        self.call(&Request::GetServices, &mut |a| {
            out.push(codec::decode_service(a)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// The destinations of one service.
    pub fn dests(&mut self, id: &codec::ServiceId) -> Result<Vec<codec::Dest>, GenlError> {
        let mut out = Vec::new();
        let af = id.af();
        self.call(&Request::GetDests(*id), &mut |a| {
            out.push(codec::decode_dest(a, af)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// IPVS_CMD_GET_INFO: the kernel's IPVS version.
    pub fn version(&mut self) -> Result<String, GenlError> {
        let mut v = None;
        self.call(&Request::GetInfo, &mut |a| {
            v = Some(codec::decode_version(a)?);
            Ok(())
        })?;
        v.ok_or(GenlError::Codec(CodecError::Missing("IPVS_INFO_ATTR_VERSION")))
    }
}
