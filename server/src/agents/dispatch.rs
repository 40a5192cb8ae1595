//! Dispatching a claimed job to its agent: the `command.run` the agent
//! gets (the template's argv for the job, built and validated here, and
//! its limits), and the end of a job that cannot be dispatched.

use std::sync::Arc;

use app::model::agent::RunCommand;
use app::model::job::JobState;

use crate::config::Config;
use crate::db::jobs::JobRow;
use crate::engine::command;
use crate::engine::transition::Transition;
use crate::engine::Sink;

/// The `command.run` for `row` (claimed for its agent), or why there is
/// none (its template or target left the configuration).
pub fn run_command(config: &Config, row: &JobRow) -> Result<RunCommand, String> {
    let template = config.template(&row.template).ok_or_else(|| {
        format!(
            "the template `{}` is no longer in the configuration",
            row.template
        )
    })?;
    let target = config.target(&row.target).ok_or_else(|| {
        format!(
            "the target `{}` is no longer in the configuration",
            row.target
        )
    })?;
    let agent = target.agent().ok_or_else(|| {
        format!(
            "the target `{}` is no longer reached through an agent",
            row.target
        )
    })?;
    let params = row.params();
    let inv = command::build(template, target, &params, row.id);
    let shown: Vec<String> = template
        .shown
        .iter()
        .filter_map(|e| command::fill(e, &params))
        .collect();
    Ok(RunCommand {
        job_id: row.id,
        dispatch: row.dispatch,
        template: template.id.clone(),
        argv: inv.argv,
        env: inv.env,
        cwd: inv.workdir,
        opening: format!(
            "running on {} (agent {agent}): {}",
            target.id,
            command::display(&shown)
        ),
        timeout_secs: template.timeout.map(|t| t.as_secs().max(1)),
        kill_grace_secs: template.kill_grace.as_secs(),
        max_line_bytes: template.max_line_bytes,
        max_log_bytes: template.max_log_bytes,
        tail_lines: template.tail_lines,
        warning_exit_codes: template.warning_exit_codes.clone(),
        after_seq: row.last_seq,
    })
}

/// Fails a claimed job that cannot be sent to its agent, saying why.
pub async fn fail_unrunnable(sink: &Sink, row: &JobRow, why: String) {
    tracing::warn!(job = row.id, "{why}");
    let t = Transition::fail(&sink.hub, row, why.clone(), why, false).for_dispatch(row.dispatch);
    let t = Arc::new(t);
    match sink.committer.commit(t.clone()).await {
        Ok(()) if t.row().is_some() => sink.metrics.job_finished(JobState::Failed),
        Ok(()) => {}
        Err(e) => tracing::error!(job = row.id, error = %e, "cannot record how the job ended"),
    }
}
