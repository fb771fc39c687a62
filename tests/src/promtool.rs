//! `promtool check metrics`, Prometheus's own linter for an exposition.

use std::{io::Write as _, process::Stdio};

use crate::netns::Netns;

/// Runs `promtool check metrics` on `text` in `ns`: (success, what it printed).
#[must_use]
pub fn check_metrics(ns: &Netns, text: &str) -> (bool, String) {
    let mut child = ns
        .cmd("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting promtool");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("feeding promtool");
    let out = child.wait_with_output().expect("promtool");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), said)
}
