//! The scripts VRRP runs: `vrrp_script` checks (interval, timeout, rise, fall) and the notify
//! scripts. Both run without a shell, the command line split into words as keepalived splits
//! it (spaces separate, double or single quotes group, backslash escapes).

use std::{process::Stdio, time::Duration};

use tokio::{process::Command, sync::mpsc};
use tracing::{debug, warn};

use crate::config::VrrpScript;

/// keepalived's word splitting of a `script` / `notify` line (`crate::script::split`). A line
/// that does not split (an unmatched quote) gives no words: the script then counts as failed.
#[must_use]
pub fn split_words(line: &str) -> Vec<String> {
    match crate::script::split(line) {
        Ok(words) => words,
        Err(crate::script::ScriptError::Empty) => Vec::new(),
        Err(e) => {
            warn!("{e}");
            Vec::new()
        }
    }
}

/// Runs `argv` and waits at most `timeout`; true when it exited 0. A script that does not end
/// in time is killed and counts as failed (keepalived).
pub async fn run(argv: &[String], timeout: Option<Duration>) -> bool {
    let Some((prog, args)) = argv.split_first() else { return false };
    let mut cmd = Command::new(prog);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            warn!(script = %prog, %e, "cannot run script");
            return false;
        }
    };
    let status = match timeout {
        Some(t) => match tokio::time::timeout(t, child.wait()).await {
            Ok(s) => s,
            Err(_) => {
                warn!(script = %prog, timeout = ?t, "script timed out; killed");
                let _ = child.kill().await;
                return false;
            }
        },
        None => child.wait().await,
    };
    matches!(status, Ok(s) if s.success())
}

/// Starts a notify script in the background (keepalived does not wait for them).
pub fn notify(line: &str, extra: &[&str]) {
    let mut argv = split_words(line);
    argv.extend(extra.iter().map(|s| (*s).to_string()));
    debug!(?argv, "notify");
    tokio::spawn(async move {
        if !run(&argv, Some(Duration::from_secs(60))).await {
            debug!(?argv, "notify script failed");
        }
    });
}

/// A `vrrp_script`'s result changed: (index of the script, now OK).
pub type ScriptResult = (usize, bool);

/// Runs `script` every `interval` and reports each change of its state from `ok`, counted
/// with `rise` consecutive successes / `fall` failures as keepalived does. At start-up `ok` is
/// `!init_fail`; a reload passes the state a same script had. Aborting the handle stops it.
pub fn spawn_tracker(
    index: usize,
    script: &VrrpScript,
    mut ok: bool,
    tx: mpsc::Sender<ScriptResult>,
) -> tokio::task::AbortHandle {
    let argv = split_words(script.script.as_deref().unwrap_or_default());
    let (interval, timeout) = (script.interval.max(Duration::from_millis(10)), script.timeout);
    let (rise, fall) = (script.rise.max(1), script.fall.max(1));
    let name = script.name.clone();
    tokio::spawn(async move {
        let mut streak = 0u32;
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            let now_ok = run(&argv, timeout).await;
            if now_ok == ok {
                streak = 0;
                continue;
            }
            streak += 1;
            if streak >= if now_ok { rise } else { fall } {
                ok = now_ok;
                streak = 0;
                debug!(script = %name, ok, "vrrp_script state");
                if tx.send((index, ok)).await.is_err() {
                    return;
                }
            }
        }
    })
    .abort_handle()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_like_keepalived() {
        assert_eq!(split_words("/bin/check  a 'b c' \"d e\" f\\ g"), ["/bin/check", "a", "b c", "d e", "f g"]);
        assert_eq!(split_words("  "), Vec::<String>::new());
        assert_eq!(split_words("x ''"), ["x", ""]);
    }

    #[tokio::test]
    async fn run_reports_exit_status_and_timeout() {
        assert!(run(&split_words("/bin/true"), None).await);
        assert!(!run(&split_words("/bin/false"), None).await);
        assert!(!run(&split_words("/nonexistent/script"), None).await);
        assert!(!run(&split_words("/bin/sleep 5"), Some(Duration::from_millis(50))).await);
    }
}
