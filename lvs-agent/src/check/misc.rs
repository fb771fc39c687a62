//! MISC_CHECK: runs `misc_path` (no shell) for at most `misc_timeout`. Exit 0 is up, 1 down;
//! with `misc_dynamic`, 2-255 is up with weight `code - 2` (keepalived's `check_misc.c`).

use std::time::Duration;

use super::target::{Failed, Failure};
use crate::script::{self, Exit, RunAs, ScriptError};

/// A success, with the weight misc_dynamic asks for (None: the configured weight).
pub async fn check(line: &str, timeout: Duration, dynamic: bool, user: Option<RunAs>) -> Result<Option<u32>, Failed> {
    match script::run(line, timeout, "MISC_CHECK", user).await {
        Ok(Exit::Code(0)) => Ok(None),
        Ok(Exit::Code(code @ 2..=255)) if dynamic => Ok(Some(code as u32 - 2)),
        Ok(Exit::Code(code)) => Err(Failed::new(Failure::Exit, format!("{line}: exit code {code}"))),
        Ok(Exit::Signal) => Err(Failed::new(Failure::Exit, format!("{line}: killed by a signal"))),
        Err(e @ ScriptError::Timeout(..)) => Err(Failed::new(Failure::Timeout, e.to_string())),
        Err(e) => Err(Failed::new(Failure::Error, e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exit_codes_decide_and_set_the_weight_with_misc_dynamic() {
        let t = Duration::from_secs(5);
        assert_eq!(check("true", t, false, None).await, Ok(None));
        assert_eq!(check("false", t, true, None).await.unwrap_err().reason, Failure::Exit);
        assert_eq!(check("sh -c 'exit 12'", t, true, None).await, Ok(Some(10)));
        assert_eq!(check("sh -c 'exit 12'", t, false, None).await.unwrap_err().reason, Failure::Exit);
        assert_eq!(
            check("sleep 5", Duration::from_millis(100), false, None).await.unwrap_err().reason,
            Failure::Timeout
        );
        assert_eq!(check("/nonexistent", t, false, None).await.unwrap_err().reason, Failure::Error);
    }
}
