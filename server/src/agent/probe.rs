//! A target's status probe on the agent's host (`command.probe`): run by
//! the server's own probe runner (`status::probe::run_argv`: its own
//! process group, exactly the probe's variables and this host's base
//! ones, its group killed past the timeout), answered with `probe.result`.
//! With `--allow-template`, the agent runs probes only if also started
//! with `--allow-probes`: a probe is an argv from the server's
//! configuration like a template's.

use std::sync::Arc;
use std::time::Duration;

use app::model::agent::{AgentMsg, ProbeCommand};
use tokio_util::sync::CancellationToken;

use super::Agent;
use crate::proc::Environment;
use crate::status::probe::{self, How, Probed};

/// Runs `cmd` and says what it found.
pub async fn run(agent: Arc<Agent>, cmd: ProbeCommand) {
    let found = if agent.allow.is_empty() || agent.allow_probes {
        let how = How {
            program: cmd.argv.first().map(String::as_str).unwrap_or(""),
            env: Environment::for_job(&agent.base_env, &cmd.env),
            cwd: None,
            user: None,
            timeout: Duration::from_millis(cmd.timeout_ms),
            transport: None,
        };
        if cmd.argv.is_empty() {
            Probed::unknown("the server sent a probe without an argv".into())
        } else {
            // N.B.: the agent has no shutdown of its own: a probe ends at
            // its timeout at the latest.
            probe::run_argv(&cmd.argv, how, &CancellationToken::new())
                .await
                .unwrap_or_else(|| Probed::unknown("the probe was stopped".into()))
        }
    } else {
        Probed::unknown(format!(
            "refused by the agent on {}: it runs only the templates of its --allow-template; start it with --allow-probes to run status probes",
            agent.hostname
        ))
    };
    tracing::debug!(target_id = %cmd.target, state = found.state.as_str(), message = %found.message, "probed");
    agent.say(AgentMsg::ProbeResult {
        id: cmd.id,
        state: found.state,
        message: found.message,
    });
}
