//! rtnetlink plumbing for the agent: interfaces, addresses and the neighbour
//! table.
//!
//! The XDP program rewrites a packet's destination MAC to a real server's, so
//! the agent has to know real servers' MACs; the kernel already resolves them
//! (ARP/NDP) and publishes the result in its neighbour table, which this
//! module reads and follows over netlink (see [`Neighbours`]).
//!
//! Everything here acts on the network namespace of the thread that created
//! the socket: a netlink socket is bound to the netns current at `socket(2)`
//! time, which is what lets the tests run on a private namespace per thread.

mod addr;
mod link;
mod neigh;

use std::io;
use std::net::IpAddr;

pub use link::LinkInfo;
pub use neigh::{NeighbourUpdate, Neighbours};

/// Errors of this module. Each message names the interface or address at
/// fault so that it can be shown to an operator as it is.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("opening a netlink socket: {}", os_text(.0))]
    Connect(#[source] io::Error),
    #[error("interface `{0}` not found")]
    NoSuchLink(String),
    #[error("interface with index {0} not found")]
    NoSuchIfindex(u32),
    /// The kernel (or a system call) refused with `errno`.
    #[error("{context}: {}", errno_text(*.errno))]
    Os { context: String, errno: i32 },
    /// An I/O error that is not an errno.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// Anything else rtnetlink reports (malformed or unexpected messages,
    /// the connection task having gone away).
    #[error("{context}: {source}")]
    Protocol {
        context: String,
        #[source]
        source: rtnetlink::Error,
    },
}

impl NetlinkError {
    /// The errno the kernel answered with, if that is what this error is.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Os { errno, .. } => Some(*errno),
            NetlinkError::Connect(e) => e.raw_os_error(),
            _ => None,
        }
    }

    /// Wraps an rtnetlink error, keeping the errno of a netlink NACK so that
    /// callers can tell EEXIST/ENOENT/EPERM apart and the message is plain.
    pub(crate) fn from_rtnl(context: impl Into<String>, source: rtnetlink::Error) -> Self {
        let context = context.into();
        match &source {
            // NLMSG_ERROR carries the negated errno (netlink(7)).
            rtnetlink::Error::NetlinkError(msg) => match msg.code {
                Some(code) => NetlinkError::Os { context, errno: code.get().saturating_neg() },
                None => NetlinkError::Protocol { context, source },
            },
            _ => NetlinkError::Protocol { context, source },
        }
    }

    pub(crate) fn from_io(context: impl Into<String>, source: io::Error) -> Self {
        match source.raw_os_error() {
            Some(errno) => NetlinkError::Os { context: context.into(), errno },
            None => NetlinkError::Io { context: context.into(), source },
        }
    }
}

/// "Operation not permitted (are you root?)" rather than std's
/// "Operation not permitted (os error 1)".
fn errno_text(errno: i32) -> String {
    let text = io::Error::from_raw_os_error(errno).to_string();
    let text = match text.rfind(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    };
    if errno == libc::EPERM || errno == libc::EACCES { format!("{text} (are you root?)") } else { text }
}

fn os_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(errno) => errno_text(errno),
        None => e.to_string(),
    }
}

/// `10.0.0.100/32`, `2001:db8::1/128`.
pub(crate) fn cidr(addr: IpAddr, prefix_len: u8) -> String {
    format!("{addr}/{prefix_len}")
}

/// A handle on the kernel's routing netlink (NETLINK_ROUTE) for requests.
///
/// Cheap to clone; all clones share one socket whose connection task runs
/// on the tokio runtime that was current in [`Netlink::connect`].
#[derive(Clone)]
pub struct Netlink {
    pub(crate) handle: rtnetlink::Handle,
}

impl Netlink {
    /// Opens a NETLINK_ROUTE socket in the calling thread's network namespace
    /// and spawns its connection task on the current tokio runtime.
    pub async fn connect() -> Result<Netlink, NetlinkError> {
        let (connection, handle, _unsolicited) = rtnetlink::new_connection().map_err(NetlinkError::Connect)?;
        // The task ends when every Handle clone is dropped.
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }
}

/// Test scaffolding: private network namespaces, so that tests never touch
/// the host's interfaces. Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN).
#[cfg(test)]
pub(crate) mod testns {
    use std::fs::File;
    use std::future::Future;
    use std::os::fd::AsRawFd;
    use std::process::Command;
    use std::time::Duration;

    /// Upper bound for any wait on the kernel in tests.
    pub(crate) const WAIT: Duration = Duration::from_secs(10);

    /// Runs `f` on a current-thread runtime in a dedicated thread that first
    /// calls `enter` (which moves the thread to another netns). Namespace
    /// membership is per thread, and a current-thread runtime keeps every
    /// task, hence every socket it opens, on that thread.
    fn run_in_thread<E, F, Fut>(enter: E, f: F)
    where
        E: FnOnce() + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let thread = std::thread::spawn(move || {
            enter();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
            runtime.block_on(f());
        });
        if let Err(panic) = thread.join() {
            std::panic::resume_unwind(panic);
        }
    }

    /// Runs `f` in a fresh, anonymous netns (unshare(CLONE_NEWNET) on its own
    /// thread): it disappears with the thread, even on failure.
    pub(crate) fn in_private_netns<F, Fut>(f: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        run_in_thread(
            || {
                // SAFETY: plain syscall; affects only the calling thread.
                let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
            },
            f,
        );
    }

    /// Runs a command, panics unless it succeeds, returns its stdout.
    /// Child processes inherit the spawning thread's netns.
    pub(crate) fn run(program: &str, args: &[&str]) -> String {
        let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
        assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub(crate) fn ip(args: &[&str]) -> String {
        run("ip", args)
    }

    /// A named netns `lvs-nltest-<pid>-<tag>`, deleted on drop (also when a
    /// test panics).
    pub(crate) struct NamedNetns {
        pub(crate) name: String,
    }

    impl NamedNetns {
        pub(crate) fn new(tag: &str) -> NamedNetns {
            let name = format!("lvs-nltest-{}-{tag}", std::process::id());
            // A leftover of a killed run with the same pid would make add fail.
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
            ip(&["netns", "add", &name]);
            NamedNetns { name }
        }

        /// `ip -n NAME ...`
        pub(crate) fn ip(&self, args: &[&str]) -> String {
            let mut all = vec!["-n", self.name.as_str()];
            all.extend_from_slice(args);
            ip(&all)
        }

        /// `ip netns exec NAME sh -c SCRIPT`
        pub(crate) fn sh(&self, script: &str) -> String {
            ip(&["netns", "exec", &self.name, "sh", "-c", script])
        }

        /// Runs `f` on a thread that joined this netns (setns).
        pub(crate) fn enter<F, Fut>(&self, f: F)
        where
            F: FnOnce() -> Fut + Send + 'static,
            Fut: Future<Output = ()>,
        {
            let path = format!("/run/netns/{}", self.name);
            run_in_thread(
                move || {
                    let ns = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                    // SAFETY: valid fd; affects only the calling thread.
                    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
                },
                f,
            );
        }
    }

    impl Drop for NamedNetns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
        }
    }
}
