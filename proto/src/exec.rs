//! Exec's limits and the check of an [`ExecRequest`], one definition for both sides of
//! `pods/exec`: the API server answers a bad request itself before reaching any agent,
//! and the agent checks again because anyone holding the proxy token can call it
//! directly.

use std::time::Duration;

use crate::api::ExecRequest;

/// How long a command may run when the request does not say.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest a request may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// The most output (stdout and stderr together) one answer carries.
pub const MAX_OUTPUT: usize = 16 * 1024 * 1024;

/// Why an exec request cannot be run as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidExecRequest {
    /// The request names no program.
    #[error("you must specify at least one command for the container")]
    NoCommand,
    /// The timeout is negative or above [`MAX_TIMEOUT`].
    #[error(
        "timeoutSeconds {0} is out of range: 1 to {max} (0 for {default})",
        max = MAX_TIMEOUT.as_secs(),
        default = DEFAULT_TIMEOUT.as_secs()
    )]
    TimeoutOutOfRange(i64),
}

/// The request's command and timeout, checked; returns the timeout (0 asks for
/// [`DEFAULT_TIMEOUT`]).
pub fn check(req: &ExecRequest) -> Result<Duration, InvalidExecRequest> {
    if req.command.first().is_none_or(String::is_empty) {
        return Err(InvalidExecRequest::NoCommand);
    }
    match u64::try_from(req.timeout_seconds) {
        Ok(0) => Ok(DEFAULT_TIMEOUT),
        Ok(s) if s <= MAX_TIMEOUT.as_secs() => Ok(Duration::from_secs(s)),
        _ => Err(InvalidExecRequest::TimeoutOutOfRange(req.timeout_seconds)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(command: &[&str], timeout_seconds: i64) -> ExecRequest {
        ExecRequest {
            command: command.iter().map(|s| s.to_string()).collect(),
            timeout_seconds,
            ..Default::default()
        }
    }

    #[test]
    fn a_command_is_required() {
        assert_eq!(check(&request(&[], 0)), Err(InvalidExecRequest::NoCommand));
        assert_eq!(
            check(&request(&[""], 0)),
            Err(InvalidExecRequest::NoCommand)
        );
        let e = check(&request(&[], 0)).expect_err("empty");
        assert!(e.to_string().contains("at least one command"), "{e}");
    }

    #[test]
    fn the_timeout_defaults_to_a_minute_and_is_bounded() {
        assert_eq!(check(&request(&["ls"], 0)), Ok(DEFAULT_TIMEOUT));
        assert_eq!(check(&request(&["ls"], 5)), Ok(Duration::from_secs(5)));
        assert_eq!(check(&request(&["ls"], 600)), Ok(MAX_TIMEOUT));
        for bad in [-1, 601, i64::MAX, i64::MIN] {
            let e = check(&request(&["ls"], bad)).expect_err("out of range");
            assert_eq!(e, InvalidExecRequest::TimeoutOutOfRange(bad));
            assert!(e.to_string().contains("timeoutSeconds"), "{e}");
            assert!(e.to_string().contains("1 to 600 (0 for 60)"), "{e}");
        }
    }
}
