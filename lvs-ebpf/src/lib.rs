//! Empty library target: it lets `lvs-agent` depend on this crate for rebuild tracking
//! (see aya-build), while the programs themselves are the binaries.
#![no_std]
