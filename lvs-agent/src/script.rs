//! The scripts keepalived.conf names (MISC_CHECK's misc_path, notify_up/notify_down,
//! quorum_up/quorum_down, vrrp_script, the VRRP notify scripts): split into words as keepalived
//! does and run without a shell, with a timeout, their output captured into the log.

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
    #[error("no user {0} on this system")]
    NoUser(String),
    #[error("no group {0} on this system")]
    NoGroup(String),
    #[error("{0} is writable by users other than root (enable_script_security)")]
    Insecure(PathBuf),
}

/// The user (and group) a script runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

/// keepalived's user that scripts run as when the config names none.
pub const DEFAULT_SCRIPT_USER: &str = "keepalived_script";

impl RunAs {
    /// `USER [GROUP]` (`user` of MISC_CHECK, global_defs `script_user`): the group defaults
    /// to the user's own.
    pub fn lookup(user: &str, group: Option<&str>) -> Result<Self, ScriptError> {
        let name = std::ffi::CString::new(user).map_err(|_| ScriptError::NoUser(user.to_string()))?;
        // SAFETY: a valid C string; the entry is copied out at once (single-threaded use of
        // the static buffer is not guaranteed, but the fields read are plain integers).
        let pw = unsafe { libc::getpwnam(name.as_ptr()) };
        if pw.is_null() {
            return Err(ScriptError::NoUser(user.to_string()));
        }
        // SAFETY: non-null pointer returned by getpwnam.
        let (uid, mut gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
        if let Some(group) = group {
            let gname = std::ffi::CString::new(group).map_err(|_| ScriptError::NoGroup(group.to_string()))?;
            // SAFETY: as above, for getgrnam.
            let gr = unsafe { libc::getgrnam(gname.as_ptr()) };
            if gr.is_null() {
                return Err(ScriptError::NoGroup(group.to_string()));
            }
            // SAFETY: non-null pointer returned by getgrnam.
            gid = unsafe { (*gr).gr_gid };
        }
        Ok(Self { uid, gid })
    }

    /// Who runs scripts by default, as keepalived decides: global_defs `script_user`, else
    /// the `keepalived_script` user when it exists, else the agent's own user (None).
    pub fn default_for(script_user: Option<&(String, Option<String>)>) -> Result<Option<Self>, ScriptError> {
        match script_user {
            Some((u, g)) => Self::lookup(u, g.as_deref()).map(Some),
            None => Ok(Self::lookup(DEFAULT_SCRIPT_USER, None).ok()),
        }
    }
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

/// `enable_script_security`: the script and every directory above it must be writable by root
/// only (owned by root, no group or other write bit; a sticky directory such as /tmp does not
/// count as safe), as keepalived requires before it runs a script as root.
pub fn secure(path: &Path) -> Result<(), ScriptError> {
    use std::os::unix::fs::MetadataExt as _;
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    for p in path.ancestors() {
        let Ok(m) = std::fs::metadata(p) else { continue };
        if m.uid() != 0 || m.mode() & 0o022 != 0 {
            return Err(ScriptError::Insecure(p.to_path_buf()));
        }
    }
    Ok(())
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

/// Runs `line` (no shell) for at most `timeout`, as `user` when given, logging its output under
/// `what`; a script still running at the deadline is killed (SIGKILL) and reaped.
pub async fn run(line: &str, timeout: Duration, what: &str, user: Option<RunAs>) -> Result<Exit, ScriptError> {
    let (path, args) = resolve(line)?;
    let mut cmd = tokio::process::Command::new(&path);
    if let Some(RunAs { uid, gid }) = user {
        // std also drops the agent's supplementary groups (root's) when it changes the uid.
        cmd.uid(uid).gid(gid);
    }
    let mut child = cmd
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

    #[test]
    fn script_security_wants_root_only_writable_paths() {
        assert!(secure(Path::new("/bin/true")).is_ok());
        let dir = std::env::temp_dir().join(format!("lvs-secure-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("check.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        // /tmp is writable by everyone: not safe, whatever the file's own mode.
        let r = secure(&script);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(matches!(r, Err(ScriptError::Insecure(_))), "{r:?}");
    }

    #[test]
    fn users_and_groups_are_looked_up() {
        assert_eq!(RunAs::lookup("root", None).unwrap(), RunAs { uid: 0, gid: 0 });
        assert!(matches!(RunAs::lookup("lvs-no-such-user", None), Err(ScriptError::NoUser(_))));
        assert!(matches!(RunAs::lookup("root", Some("lvs-no-such-group")), Err(ScriptError::NoGroup(_))));
    }

    #[tokio::test]
    async fn a_script_runs_as_its_user() {
        if !lvs_tests::privilege::can_run("a_script_runs_as_its_user") {
            return;
        }
        let nobody = RunAs::lookup("nobody", None).unwrap();
        let code = "sh -c 'test \"$(id -u)\" = \"$0\" && test \"$(id -G)\" = \"$1\"'";
        let line = format!("{code} {} {}", nobody.uid, nobody.gid);
        assert_eq!(run(&line, Duration::from_secs(5), "t", Some(nobody)).await.unwrap(), Exit::Code(0));
    }

    #[tokio::test]
    async fn exit_codes_arrive_and_a_slow_script_is_killed_on_time() {
        assert_eq!(run("sh -c 'exit 3'", Duration::from_secs(5), "t", None).await.unwrap(), Exit::Code(3));
        // No shell: `;` is an argument of echo, not a command separator.
        assert_eq!(run("echo a ; false", Duration::from_secs(5), "t", None).await.unwrap(), Exit::Code(0));
        let start = std::time::Instant::now();
        let r = run("sleep 10", Duration::from_millis(200), "t", None).await;
        assert!(matches!(r, Err(ScriptError::Timeout(..))), "{r:?}");
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
