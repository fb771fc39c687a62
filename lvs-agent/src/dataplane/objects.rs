//! The BPF objects built by build.rs (aya-build), embedded in the binary.

/// The load balancer (`lvs-ebpf/src/main.rs`).
pub static LVS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lvs"));

/// Cost floors for the benchmark and the pass program for veth peers
/// (`lvs-ebpf/src/bin/floor.rs`).
pub static FLOOR: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lvs-floor"));

/// The benchmark's bound on a new flow: the flow-table reads alone
/// (`lvs-ebpf/src/bin/bound.rs`).
pub static BOUND: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lvs-bound"));
