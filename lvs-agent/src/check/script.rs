//! Scripts of the checker side (MISC_CHECK's misc_path, notify_up/notify_down, quorum_up/
//! quorum_down): split into words as keepalived does and run without a shell, with a timeout,
//! their output captured into the log.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tokio::io::AsyncReadExt as _;
use tracing::info;

#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("empty command")]
    Empty,
    #[error("unmatched quote in `{0}`")]
    Quote(String),
    #[error("{0} not found (nor in PATH)")]
    NotFound(String),
    #[error("{0} is not an executable file")]
    NotExecutable(PathBuf),
    #[error("starting {0}: {1}")]
    Spawn(PathBuf, #[source] std::io::Error),
    #[error("{0} did not finish within {1:?}; killed")]
    Timeout(PathBuf, Duration),
}

/// Splits a command line into words as keepalived does (no shell): blanks separate words,
/// `'…'` is literal, `"…"` keeps blanks and honours backslash escapes, a backslash outside
/// quotes escapes the next character.
pub fn split(line: &str) -> Result<Vec<String>, ScriptError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(ScriptError::Quote(line.to_string())),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => word.push(c),
                            None => return Err(ScriptError::Quote(line.to_string())),
                        },
                        Some(c) => word.push(c),
                        None => return Err(ScriptError::Quote(line.to_string())),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    word.push(c);
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    if words.is_empty() { Err(ScriptError::Empty) } else { Ok(words) }
}

/// The program a command line runs: its first word, looked up in PATH when it has no `/`;
/// it must be an executable regular file.
pub fn resolve(line: &str) -> Result<(PathBuf, Vec<String>), ScriptError> {
    let mut words = split(line)?;
    let program = words.remove(0);
    let candidates: Vec<PathBuf> = if program.contains('/') {
        vec![PathBuf::from(&program)]
    } else {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|d| d.join(&program)).collect())
            .unwrap_or_default()
    };
    let Some(path) = candidates.into_iter().find(|p| p.exists()) else {
        return Err(ScriptError::NotFound(program));
    };
    if !is_executable(&path) {
        return Err(ScriptError::NotExecutable(path));
    }
    Ok((path, words))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// How a script ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    /// Killed by a signal (not by us).
    Signal,
}

/// Runs `line` (no shell) for at most `timeout`, logging its output under `what`; a script still
/// running at the deadline is killed (SIGKILL) and reaped.
pub async fn run(line: &str, timeout: Duration, what: &str) -> Result<Exit, ScriptError> {
    let (path, args) = resolve(line)?;
    let mut child = tokio::process::Command::new(&path)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ScriptError::Spawn(path.clone(), e))?;
    let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
    let collect = async {
        // Bounded: a chatty script must not grow the agent.
        const LIMIT: u64 = 64 * 1024;
        let (mut o, mut e) = (Vec::new(), Vec::new());
        if let Some(s) = out.as_mut() {
            let _ = s.take(LIMIT).read_to_end(&mut o).await;
        }
        if let Some(s) = err.as_mut() {
            let _ = s.take(LIMIT).read_to_end(&mut e).await;
        }
        let status = child.wait().await;
        (o, e, status)
    };
    let Ok((o, e, status)) = tokio::time::timeout(timeout, collect).await else {
        // Dropping `collect` dropped the child: kill_on_drop kills it and tokio reaps it.
        return Err(ScriptError::Timeout(path, timeout));
    };
    for (stream, bytes) in [("stdout", &o), ("stderr", &e)] {
        for l in String::from_utf8_lossy(bytes).lines().filter(|l| !l.trim().is_empty()) {
            info!(script = %path.display(), stream, "{what}: {l}");
        }
    }
    let status = status.map_err(|e| ScriptError::Spawn(path.clone(), e))?;
    Ok(status.code().map_or(Exit::Signal, Exit::Code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_as_keepalived_does() {
        assert_eq!(
            split("/bin/check  a 'b c' \"d \\\" e\" f\\ g").unwrap(),
            ["/bin/check", "a", "b c", "d \" e", "f g"]
        );
        assert_eq!(split("x ''").unwrap(), ["x", ""]);
        assert!(matches!(split("x 'y"), Err(ScriptError::Quote(_))));
        assert!(matches!(split("   "), Err(ScriptError::Empty)));
    }

    #[test]
    fn missing_and_non_executable_programs_are_refused() {
        assert!(matches!(resolve("/nonexistent/script"), Err(ScriptError::NotFound(_))));
        let plain = std::env::temp_dir().join(format!("lvs-script-test-{}", std::process::id()));
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        let r = resolve(plain.to_str().unwrap());
        let _ = std::fs::remove_file(&plain);
        assert!(matches!(r, Err(ScriptError::NotExecutable(_))), "{r:?}");
        assert_eq!(resolve("true").unwrap().0.file_name().unwrap(), "true", "found in PATH");
    }

    #[tokio::test]
    async fn exit_codes_arrive_and_a_slow_script_is_killed_on_time() {
        assert_eq!(run("sh -c 'exit 3'", Duration::from_secs(5), "t").await.unwrap(), Exit::Code(3));
        // No shell: `;` is an argument of echo, not a command separator.
        assert_eq!(run("echo a ; false", Duration::from_secs(5), "t").await.unwrap(), Exit::Code(0));
        let start = std::time::Instant::now();
        let r = run("sleep 10", Duration::from_millis(200), "t").await;
        assert!(matches!(r, Err(ScriptError::Timeout(..))), "{r:?}");
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
