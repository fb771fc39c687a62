//! The keepalived.conf parser never panics, whatever the input (`cargo xtask test` runs this
//! for a bounded time; `cargo +nightly fuzz run config_parser` for longer).
#![no_main]

// The parser's source itself: it needs only std and thiserror, so the fuzzer builds it without
// the agent (and without the BPF program the agent embeds).
#[path = "../../lvs-agent/src/config/mod.rs"]
#[allow(dead_code, unreachable_pub)]
mod config;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = config::parse_str(&text, std::path::Path::new("fuzz.conf"));
});
