//! The one place that decides how a run ended.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use app::model::job::JobState;
use app::model::retry::Failure;

/// What ended the run, besides the process's own exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// It exited by itself.
    Exited,
    /// A cancel was requested.
    Cancelled,
    /// It ran past the template's timeout.
    TimedOut(String),
    /// The server stopped it (shutdown); the text is the job's error.
    Interrupted(String),
}

/// How a job finishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub state: JobState,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub warnings: bool,
    /// Why it failed, if it did.
    pub failure: Option<Failure>,
    /// The `system` line that says so.
    pub summary: String,
}

/// Exit code 0 → succeeded; a code in `warning_codes` → succeeded with
/// warnings; a cancel → cancelled (whatever the exit); a timeout or any
/// other code or signal → failed.
pub fn classify(status: ExitStatus, ending: &Ending, warning_codes: &[i32]) -> Outcome {
    let (exit_code, how) = match (status.code(), status.signal()) {
        (Some(code), _) => (Some(code), format!("exited with code {code}")),
        (None, Some(sig)) => (
            Some(128 + sig),
            format!("killed by signal {sig} ({})", signal_name(sig)),
        ),
        (None, None) => (None, "ended".to_string()),
    };
    match ending {
        Ending::Cancelled => Outcome {
            state: JobState::Cancelled,
            exit_code,
            error: None,
            warnings: false,
            failure: None,
            summary: format!("cancelled ({how})"),
        },
        Ending::Interrupted(reason) => Outcome {
            state: JobState::Failed,
            exit_code,
            error: Some(reason.clone()),
            warnings: false,
            failure: Some(Failure::Interrupted),
            summary: format!("{reason} ({how})"),
        },
        Ending::TimedOut(limit) => Outcome {
            state: JobState::Failed,
            exit_code,
            error: Some(format!("timed out after {limit}")),
            warnings: false,
            failure: Some(Failure::Timeout),
            summary: format!("timed out after {limit} ({how})"),
        },
        Ending::Exited => match exit_code {
            Some(0) => Outcome {
                state: JobState::Succeeded,
                exit_code,
                error: None,
                warnings: false,
                failure: None,
                summary: how,
            },
            Some(code) if status.code().is_some() && warning_codes.contains(&code) => Outcome {
                state: JobState::Succeeded,
                exit_code,
                error: None,
                warnings: true,
                failure: None,
                summary: format!("{how}: succeeded with warnings"),
            },
            _ => Outcome {
                state: JobState::Failed,
                exit_code,
                error: Some(how.clone()),
                warnings: false,
                failure: Some(Failure::Failed),
                summary: how,
            },
        },
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        6 => "SIGABRT",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => "signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(c: i32) -> ExitStatus {
        ExitStatus::from_raw(c << 8)
    }

    #[test]
    fn exit_codes_classify_as_the_design_says() {
        assert_eq!(
            classify(code(0), &Ending::Exited, &[3]).state,
            JobState::Succeeded
        );
        let warn = classify(code(3), &Ending::Exited, &[3]);
        assert_eq!(
            (warn.state, warn.warnings, warn.exit_code),
            (JobState::Succeeded, true, Some(3))
        );
        let fail = classify(code(2), &Ending::Exited, &[3]);
        assert_eq!((fail.state, fail.exit_code), (JobState::Failed, Some(2)));
        assert_eq!(fail.error.as_deref(), Some("exited with code 2"));
    }

    #[test]
    fn signals_cancels_and_timeouts_say_what_happened() {
        let killed = classify(ExitStatus::from_raw(9), &Ending::Exited, &[]);
        assert_eq!(killed.state, JobState::Failed);
        assert_eq!(killed.exit_code, Some(137));
        assert!(killed.error.unwrap().contains("SIGKILL"));
        let cancelled = classify(ExitStatus::from_raw(15), &Ending::Cancelled, &[]);
        assert_eq!(cancelled.state, JobState::Cancelled);
        let late = classify(code(0), &Ending::TimedOut("5s".into()), &[]);
        assert_eq!(late.state, JobState::Failed);
        assert_eq!(late.error.as_deref(), Some("timed out after 5s"));
    }
}
