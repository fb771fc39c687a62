//! Privileged tests run in CI (as root) and must never pass by skipping there.

use std::io::Write as _;

/// True when the caller may run a test that needs root (BPF, namespaces). Outside CI a test
/// that cannot run says so loudly and is skipped; under `CI=true` it fails instead.
#[must_use]
pub fn can_run(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: needs root (BPF, network namespaces) and CI must run every tier"
    );
    // Straight to the stderr handle: libtest captures the print macros of passing tests,
    // and a skip must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED {test}: needs root (BPF, network namespaces); run `cargo xtask test` as root ***\n"
    );
    false
}

/// A test that cannot run here for `why` (a missing tool): skipped loudly outside CI, failed
/// under `CI=true`.
pub fn skip_or_fail(test: &str, why: &str) {
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{test}: cannot run: {why}; CI must run every tier");
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED {test}: {why} ***\n");
}
