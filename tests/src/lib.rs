//! Test beds for lvs-xdp: network namespaces wired as an LVS-DR segment, real HTTP and UDP servers,
//! the agent as a child process, a bounded HTTP client and packet captures.
//!
//! Used by the integration tests in `tests/tests/` and by `cargo xtask lab`. Everything this
//! creates is named `lvs-…` and removed by a guard's `Drop`, also when a test fails.

pub mod bpffs;
pub mod capture;
pub mod http;
pub mod ipvs_vm;
pub mod netns;
pub mod privilege;
pub mod process;
pub mod promtool;
pub mod table;
pub mod tcp_server;
pub mod topology;
pub mod udp;
pub mod vrrp;
