//! Running one status probe: the target's `status` argv, reached as its
//! jobs are (`engine::command::on_target`: itself, `docker exec`, `ssh`),
//! started through `proc::spawn` like a job (its own session and process
//! group, exactly its environment, the target's `user`), with stdout and
//! stderr read for a first line, and its whole group killed when it runs
//! past its timeout.
//!
//! What it found: `up` for exit 0, `down` for any other exit (or a
//! signal), `unknown` when it could not run, ran too long, or the way to
//! the target failed (ssh's own exit 255, docker's 125), with a message:
//! the first non-empty line of its output, or what happened.

use std::path::Path;
use std::time::Duration;

use app::model::status::ProbeState;
use nix::sys::signal::Signal;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{StatusProbe, Target, TargetAccess};
use crate::engine::command;
use crate::proc::{self, group, Environment, Io, RunAs, Spec};

/// The longest message kept (characters): a status line, not a log.
pub const MAX_MESSAGE: usize = 200;
/// Bytes of each stream kept for the first line; the rest is read and
/// dropped, so a chatty probe never blocks on a full pipe.
const KEEP: usize = 4096;
/// How long the output may stay open after the probe's process exited
/// (a child it left behind holding it) before its group is killed.
const LEFTOVER_GRACE: Duration = Duration::from_secs(1);

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probed {
    pub state: ProbeState,
    pub message: String,
}

impl Probed {
    pub fn unknown(message: String) -> Probed {
        Probed {
            state: ProbeState::Unknown,
            message: cap(&message),
        }
    }
}

/// Runs `probe` on `target` with the base variables `base_env`; `None`
/// if the server began shutting down meanwhile (the probe was killed and
/// found nothing). Not for agent targets: their agent runs [`run_argv`].
pub async fn run(
    target: &Target,
    probe: &StatusProbe,
    base_env: &[(String, String)],
    shutdown: &CancellationToken,
) -> Option<Probed> {
    let inv = command::on_target(target, probe.argv.clone(), vars(target, probe), None);
    let transport = match &target.access {
        TargetAccess::Ssh { .. } => Some(255),
        TargetAccess::Docker { .. } => Some(125),
        TargetAccess::Local | TargetAccess::Agent { .. } => None,
    };
    let how = How {
        program: &probe.argv[0],
        env: Environment::for_job(base_env, &inv.env),
        cwd: inv.workdir.as_deref().map(Path::new),
        user: target.run_as.as_ref(),
        timeout: probe.timeout,
        transport,
    };
    run_argv(&inv.argv, how, shutdown).await
}

/// The probe's own variables: its `status_env` and `OPSDECK_TARGET`.
pub fn vars(target: &Target, probe: &StatusProbe) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = probe
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    vars.push(("OPSDECK_TARGET".into(), target.id.clone()));
    vars
}

/// How a probe's argv runs.
pub struct How<'a> {
    /// The probe's own program, for messages (not `ssh` or `docker`).
    pub program: &'a str,
    pub env: Environment,
    pub cwd: Option<&'a Path>,
    pub user: Option<&'a RunAs>,
    pub timeout: Duration,
    /// The exit code by which the way to the target (ssh, docker) says it
    /// failed: `unknown`, not `down`.
    pub transport: Option<i32>,
}

/// Runs `argv` as a probe (here, or on an agent's host for its server);
/// `None` if `shutdown` came first.
pub async fn run_argv(
    argv: &[String],
    how: How<'_>,
    shutdown: &CancellationToken,
) -> Option<Probed> {
    let program = how.program;
    let spawned = proc::spawn(Spec {
        argv,
        env: &how.env,
        cwd: how.cwd,
        io: Io::Pipes,
        user: how.user,
    });
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let what = &argv[0];
            return Some(Probed::unknown(format!("cannot run `{what}`: {e}")));
        }
    };
    let pgid = child.id();
    let out = tokio::spawn(first_bytes(child.stdout.take()));
    let err = tokio::spawn(first_bytes(child.stderr.take()));
    let status = tokio::select! {
        s = child.wait() => s,
        _ = tokio::time::sleep(how.timeout) => {
            // N.B.: the leader is not reaped yet, so the group id is still
            // ours to signal.
            group::signal_group(pgid, Signal::SIGKILL);
            let _ = child.wait().await;
            out.abort();
            err.abort();
            return Some(Probed::unknown(format!(
                "`{program}` timed out after {}s and was killed",
                how.timeout.as_secs()
            )));
        }
        _ = shutdown.cancelled() => {
            group::signal_group(pgid, Signal::SIGKILL);
            let _ = child.wait().await;
            out.abort();
            err.abort();
            return None;
        }
    };
    let status = match status {
        Ok(s) => s,
        Err(e) => return Some(Probed::unknown(format!("cannot wait for `{program}`: {e}"))),
    };
    let (out, err) = output(pgid, out, err).await;
    Some(classify(how.transport, program, status, &out, &err))
}

/// The probe's output once its process exited: what each stream gave
/// until it closed. Output still open after [`LEFTOVER_GRACE`] is held by
/// what the probe left running: its group is killed (alive members keep
/// the group id from being reused), then whatever was read is taken.
async fn output(
    pgid: i32,
    mut out: JoinHandle<Vec<u8>>,
    mut err: JoinHandle<Vec<u8>>,
) -> (Vec<u8>, Vec<u8>) {
    let both = async { ((&mut out).await, (&mut err).await) };
    if let Ok((o, e)) = tokio::time::timeout(LEFTOVER_GRACE, both).await {
        return (o.unwrap_or_default(), e.unwrap_or_default());
    }
    group::signal_group(pgid, Signal::SIGKILL);
    let both = async { ((&mut out).await, (&mut err).await) };
    match tokio::time::timeout(LEFTOVER_GRACE, both).await {
        Ok((o, e)) => (o.unwrap_or_default(), e.unwrap_or_default()),
        Err(_) => {
            // Held open outside its group (it started a session of its
            // own): give up on the output.
            out.abort();
            err.abort();
            (Vec::new(), Vec::new())
        }
    }
}

/// The first [`KEEP`] bytes of a stream, reading it to its end.
async fn first_bytes(pipe: Option<pipe::Receiver>) -> Vec<u8> {
    let Some(mut pipe) = pipe else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = KEEP.saturating_sub(kept.len()).min(n);
                kept.extend_from_slice(&buf[..room]);
            }
        }
    }
}

/// The state and message of a probe that exited with `status`.
fn classify(
    transport: Option<i32>,
    program: &str,
    status: std::process::ExitStatus,
    out: &[u8],
    err: &[u8],
) -> Probed {
    use std::os::unix::process::ExitStatusExt;
    let line = first_line(out).or_else(|| first_line(err));
    let code = status.code();
    let transport_failed = transport.is_some() && code == transport;
    let how = match (code, status.signal()) {
        (Some(c), _) => format!("`{program}` exited with code {c}"),
        (None, Some(s)) => format!("`{program}` was killed by signal {s}"),
        (None, None) => format!("`{program}` ended"),
    };
    let state = match code {
        _ if transport_failed => ProbeState::Unknown,
        Some(0) => ProbeState::Up,
        _ => ProbeState::Down,
    };
    let message = match (line, transport_failed) {
        (Some(l), false) => l,
        (Some(l), true) => format!("cannot reach the target: {l}"),
        (None, true) => "cannot reach the target".to_string(),
        (None, false) if state == ProbeState::Up => String::new(),
        (None, false) => how,
    };
    Probed {
        state,
        message: cap(&message),
    }
}

/// The first non-blank line of `bytes`, trimmed (lossy UTF-8).
fn first_line(bytes: &[u8]) -> Option<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

/// `text` cut to [`MAX_MESSAGE`] characters (with `…` when cut), control
/// characters (an escape sequence's ESC) dropped.
fn cap(text: &str) -> String {
    let clean: String = text.chars().filter(|c| !c.is_control()).collect();
    if clean.chars().count() <= MAX_MESSAGE {
        return clean;
    }
    let mut cut: String = clean.chars().take(MAX_MESSAGE - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, FileSource};

    fn target(extra: &str) -> Target {
        let text = format!("[[targets]]\nid = \"t\"\nkind = \"local\"\n{extra}");
        Config::parse(&text, "t.toml", &FileSource::Embedded)
            .unwrap()
            .targets
            .remove(0)
    }

    async fn probe(extra: &str) -> Probed {
        let t = target(extra);
        let p = t.status.clone().expect("a probe");
        let base = vec![("PATH".to_string(), proc::env::DEFAULT_PATH.to_string())];
        run(&t, &p, &base, &CancellationToken::new()).await.unwrap()
    }

    #[tokio::test]
    async fn exit_zero_is_up_and_another_code_is_down_with_the_first_line() {
        let up = probe("status = [\"sh\", \"-c\", \"echo '  nginx active  '; echo more\"]").await;
        assert_eq!(up.state, ProbeState::Up);
        assert_eq!(up.message, "nginx active");
        let down = probe("status = [\"sh\", \"-c\", \"echo 'no pid file' >&2; exit 3\"]").await;
        assert_eq!(down.state, ProbeState::Down);
        assert_eq!(down.message, "no pid file");
        let quiet = probe("status = [\"false\"]").await;
        assert_eq!(
            (quiet.state, quiet.message.as_str()),
            (ProbeState::Down, "`false` exited with code 1")
        );
    }

    #[tokio::test]
    async fn a_probe_that_cannot_run_or_runs_too_long_is_unknown() {
        let missing = probe("status = [\"/nonexistent/probe\"]").await;
        assert_eq!(missing.state, ProbeState::Unknown);
        assert!(
            missing.message.contains("cannot run"),
            "{}",
            missing.message
        );

        let started = std::time::Instant::now();
        let slow = probe(
            "status = [\"sh\", \"-c\", \"sleep 30 & echo $! > /dev/null; sleep 30\"]\nstatus_timeout = \"1s\"",
        )
        .await;
        assert_eq!(slow.state, ProbeState::Unknown);
        assert!(
            slow.message.contains("timed out after 1s"),
            "{}",
            slow.message
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn what_a_probe_leaves_running_is_killed_and_does_not_hold_its_result() {
        let started = std::time::Instant::now();
        let p = probe("status = [\"sh\", \"-c\", \"echo ok; sleep 30 &\"]").await;
        assert_eq!((p.state, p.message.as_str()), (ProbeState::Up, "ok"));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_message_is_one_capped_line_without_control_characters() {
        assert_eq!(
            first_line(b"\n  \n two words \nthree"),
            Some("two words".into())
        );
        assert_eq!(first_line(b" \n"), None);
        assert_eq!(cap("\u{1b}[31mred\u{1b}[0m"), "[31mred[0m");
        let long = cap(&"x".repeat(500));
        assert_eq!(long.chars().count(), MAX_MESSAGE);
        assert!(long.ends_with('…'));
    }
}
