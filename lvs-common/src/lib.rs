//! Types and logic shared by the XDP program (`lvs-ebpf`) and the agent (`lvs-agent`).
//!
//! Everything that crosses the user/kernel boundary lives here, once:
//! - [`maps`]: map names, sizes and the `#[repr(C)]` key and value layouts;
//! - [`sched`]: the scheduling logic. The BPF program only walks what the agent computed
//!   with these functions, and the host tests use the same functions as the reference model.
//! - [`filter`]: the VIP pre-filter hash, which keeps non-VIP traffic off every hash lookup.
//! - [`flowtab`]: the flow table's layout, hashing and placement rules.
#![no_std]

pub mod filter;
pub mod flowtab;
pub mod maps;
pub mod sched;
pub mod sched_ext;
