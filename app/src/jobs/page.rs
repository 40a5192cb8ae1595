//! `/jobs/{id}`: one job, live. The header (state pill, template, target,
//! owner, times, a ticking duration, exit code), the progress bar, the
//! failure panel, Cancel (with a confirmation) and Rerun, and the log.
//! Once hydrated, the job's stream (a subscription of the browser's one
//! live connection, `jobs::live`) brings new lines and state changes;
//! after any error or hand-over it resumes from the last seq it rendered.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_params_map;

use crate::auth::SignInAgain;
use crate::error::AppError;
use crate::jobs::live::Feed;
use crate::jobs::live::{Conn, ConnBanner};
use crate::jobs::log::{LogModel, LogViewer};
use crate::jobs::widgets::{JobDuration, ProgressBar, StatePill, Time};
use crate::jobs::{view_job, CancelJob, MarkJobFailed, RerunJob};
use crate::model::agent::{AgentInfo, AgentStatus};
use crate::model::event::FeedEvent;
use crate::model::job::{Job, JobState, JobView, LogLine};
use crate::model::template::{param_text, ParamSpec};

#[component]
pub fn JobPage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.with(|p| p.get("id").and_then(|s| s.parse::<i64>().ok()));
    let view = Resource::new(id, |id| async move {
        match id {
            Some(id) => view_job(id).await,
            None => Err(AppError::NotFound("that is not a job number".into())),
        }
    });
    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading the job…"</p> }>
            {move || Suspend::new(async move {
                match view.await {
                    Ok(v) => view! { <JobDetail view=v /> }.into_any(),
                    Err(AppError::Unauthorized(_)) => view! { <SignInAgain /> }.into_any(),
                    Err(AppError::NotFound(msg)) => view! { <JobNotFound msg /> }.into_any(),
                    Err(e) => view! { <p class="field-error" role="alert">{e.to_string()}</p> }.into_any(),
                }
            })}
        </Transition>
    }
}

#[component]
fn JobNotFound(msg: String) -> impl IntoView {
    #[cfg(feature = "ssr")]
    crate::backend::set_status(404);
    view! {
        <Title text="Job not found" />
        <section class="panel">
            <h1>"Job not found"</h1>
            <p>{msg} ". It may have been deleted, or it is not one you can see."</p>
            <p><a href="/jobs">"All jobs"</a></p>
        </section>
    }
}

#[component]
fn JobDetail(view: JobView) -> impl IntoView {
    let JobView {
        job: initial,
        template_title,
        target_title,
        lines,
        stderr_tail,
        agent,
        attempts,
        param_specs,
    } = view;
    let id = initial.id;
    let job = RwSignal::new(initial.clone());
    let progress = RwSignal::new(initial.progress.clone());
    let stderr = RwSignal::new(stderr_tail);
    let model = LogModel::new(id, lines, initial.last_seq, initial.omitted);
    let conn = RwSignal::new(Conn::Connecting);
    let running = Signal::derive(move || !job.with(|j| j.state.is_finished()));

    #[cfg(feature = "hydrate")]
    start_stream(id, job, progress, stderr, model, conn);

    let cancel = ServerAction::<CancelJob>::new();
    let rerun = ServerAction::<RerunJob>::new();
    Effect::new(move |_| {
        if let Some(Ok(j)) = cancel.value().get() {
            update_job(job, j);
        }
    });
    let action_error = move || {
        cancel
            .value()
            .get()
            .and_then(Result::err)
            .or_else(|| rerun.value().get().and_then(Result::err))
    };

    let title = format!("Job #{id}");
    view! {
        <Title text=title.clone() />
        <ConnBanner conn />
        {agent.map(|a| view! { <AgentBanner job agent=a /> })}
        <header class="job-header">
            <div class="job-title">
                <h1>{title} " · " {template_title}</h1>
                <StatePill
                    state=Signal::derive(move || job.with(|j| j.state))
                    warnings=Signal::derive(move || job.with(|j| j.warnings))
                />
            </div>
            <dl class="job-facts">
                <div>
                    <dt>"Target"</dt>
                    <dd>
                        <a href=format!("/targets/{}", initial.target)>{target_title}</a>
                    </dd>
                </div>
                <div>
                    <dt>"Owner"</dt>
                    <dd>{initial.owner.clone()}</dd>
                </div>
                <div>
                    <dt>"Created"</dt>
                    <dd>
                        <Time at=Signal::derive(move || Some(job.with(|j| j.created_at))) />
                    </dd>
                </div>
                <div>
                    <dt>"Started"</dt>
                    <dd>
                        <Time at=Signal::derive(move || job.with(|j| j.started_at)) />
                    </dd>
                </div>
                <div>
                    <dt>"Finished"</dt>
                    <dd>
                        <Time at=Signal::derive(move || job.with(|j| j.finished_at)) />
                    </dd>
                </div>
                <div>
                    <dt>"Duration"</dt>
                    <dd class="duration">
                        <JobDuration job=Signal::derive(move || job.get()) />
                    </dd>
                </div>
                <div>
                    <dt>"Exit code"</dt>
                    <dd class="exit-code">
                        {move || job.with(|j| j.exit_code.map_or("—".to_string(), |c| c.to_string()))}
                    </dd>
                </div>
            </dl>
            <Params job=initial.clone() specs=param_specs />
            {(!attempts.is_empty()).then(|| view! { <Attempts current=id attempts /> })}
            <div class="job-actions">
                {move || {
                    let state = job.with(|j| j.state);
                    if matches!(state, JobState::Queued | JobState::Running) {
                        view! {
                            <ActionForm action=cancel attr:class="inline">
                                <input type="hidden" name="id" value=id />
                                <button
                                    type="submit"
                                    class="danger"
                                    on:click=move |ev| {
                                        if !confirm(&format!("Cancel job #{id}? Its processes get SIGTERM, then SIGKILL.")) {
                                            ev.prevent_default();
                                        }
                                    }
                                >
                                    "Cancel job"
                                </button>
                            </ActionForm>
                        }
                            .into_any()
                    } else if state.is_finished() {
                        view! {
                            <ActionForm action=rerun attr:class="inline">
                                <input type="hidden" name="id" value=id />
                                <button type="submit">"Rerun"</button>
                            </ActionForm>
                        }
                            .into_any()
                    } else {
                        view! { <span class="muted">"Cancelling…"</span> }.into_any()
                    }
                }}
                {move || action_error().map(|e| view! { <p class="field-error" role="alert">{e.to_string()}</p> })}
            </div>
        </header>
        <ProgressBar progress=Signal::derive(move || {
            if job.with(|j| j.state.is_active()) || job.with(|j| j.state.is_finished()) { progress.get() } else { None }
        }) />
        <FailurePanel job stderr />
        <LogViewer model running />
    }
}

/// Takes a newer view of the job, unless it would step back from a
/// finished state (a late answer must not undo what the stream said).
fn update_job(job: RwSignal<Job>, new: Job) {
    job.update(|cur| {
        if !cur.state.is_finished() || new.state.is_finished() {
            *cur = new;
        }
    });
}

/// A job on an agent that is not connected: since when, and (admins) a
/// way to fail it now instead of waiting for `[agents].lost_after`.
#[component]
fn AgentBanner(job: RwSignal<Job>, agent: AgentInfo) -> impl IntoView {
    let agent = RwSignal::new(agent);
    let name = agent.with_untracked(|a| a.name.clone());
    Feed::subscribe(move |msg| {
        if let FeedEvent::Agent(a) = msg {
            if a.name == agent.with_untracked(|x| x.name.clone()) {
                agent.set((**a).clone());
            }
        }
    });
    let mark = ServerAction::<MarkJobFailed>::new();
    Effect::new(move |_| {
        if let Some(Ok(j)) = mark.value().get() {
            update_job(job, j);
        }
    });
    let is_admin = crate::auth::use_is_admin();
    move || {
        let a = agent.get();
        let away = a.status != AgentStatus::Online;
        (away && job.with(|j| j.state.is_active())).then(|| {
            let since = a.last_heartbeat;
            let id = job.with_untracked(|j| j.id);
            let name = name.clone();
            view! {
                <div class="banner warn" role="status" data-agent-banner=a.status.as_str()>
                    <p>
                        "Agent " <strong>{name.clone()}</strong> " is " {a.status.as_str()}
                        {since.map(|t| view! { ": not heard from since " <Time at=Some(t) /> })}
                        ". The job goes on on its host; its log resumes when the agent is back."
                    </p>
                    {is_admin.get().then(|| view! {
                        <ActionForm action=mark attr:class="inline">
                            <input type="hidden" name="id" value=id />
                            <button
                                type="submit"
                                class="danger small"
                                on:click=move |ev| {
                                    if !confirm(&format!("Mark job #{id} failed? What it does on {name} after this is not followed.")) {
                                        ev.prevent_default();
                                    }
                                }
                            >
                                "Mark failed"
                            </button>
                        </ActionForm>
                    })}
                    {move || mark.value().get().and_then(Result::err).map(|e| view! {
                        <p class="field-error" role="alert">{e.to_string()}</p>
                    })}
                </div>
            }
        })
    }
}

/// Asks the browser to confirm (always yes on the server, which never asks).
pub fn confirm(message: &str) -> bool {
    #[cfg(feature = "hydrate")]
    {
        window().confirm_with_message(message).unwrap_or(false)
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = message;
        true
    }
}

/// The job's parameters, each by its label ("Exit code", not
/// `exit_code`), in the template's order; a value the template no longer
/// names keeps its name, after them.
#[component]
fn Params(job: Job, specs: Vec<ParamSpec>) -> impl IntoView {
    if job.params.is_empty() {
        return ().into_any();
    }
    view! {
        <dl class="job-params">
            {labelled_params(&job.params, &specs)
                .into_iter()
                .map(|(name, label, value)| {
                    view! {
                        <div data-param=name>
                            <dt>{label}</dt>
                            <dd><code>{value}</code></dd>
                        </div>
                    }
                })
                .collect_view()}
        </dl>
    }
    .into_any()
}

/// Every attempt of a retried job's chain, kept current from the feed (a
/// retry queued while the page is open joins the list).
#[component]
fn Attempts(current: i64, attempts: Vec<Job>) -> impl IntoView {
    let root = attempts
        .first()
        .and_then(|j| j.attempt.as_ref().and_then(|a| a.retry_of).or(Some(j.id)))
        .unwrap_or(current);
    let chain = RwSignal::new(attempts);
    Feed::subscribe(move |msg| {
        if let FeedEvent::Job(j) = msg {
            let Some(a) = &j.attempt else { return };
            if j.id != root && a.retry_of != Some(root) {
                return;
            }
            chain.update(|c| match c.iter_mut().find(|x| x.id == j.id) {
                Some(x) => *x = (**j).clone(),
                None => {
                    c.push((**j).clone());
                    c.sort_by_key(|x| (x.attempt.as_ref().map_or(1, |a| a.number), x.id));
                }
            });
        }
    });
    view! {
        <section class="job-attempts" aria-labelledby="attempts-heading">
            <h2 id="attempts-heading">"Attempts"</h2>
            <ol>
                {move || {
                    chain
                        .get()
                        .into_iter()
                        .map(|j| {
                            let (number, of, not_before) = j
                                .attempt
                                .as_ref()
                                .map_or((1, 1, None), |a| (a.number, a.of, a.not_before));
                            let waiting = (j.state == JobState::Queued)
                                .then_some(not_before)
                                .flatten()
                                .map(|t| {
                                    format!(
                                        " · not before {}",
                                        crate::model::time::format_utc(&t),
                                    )
                                });
                            let label = format!("Attempt {number} of {of}");
                            let (class, state) = crate::jobs::widgets::pill_of(j.state, j.warnings);
                            let link = format!("/jobs/{}", j.id);
                            let id = j.id;
                            let here = id == current;
                            view! {
                                <li data-attempt=number aria-current=here.then_some("page")>
                                    {if here {
                                        view! { <strong>{label}" · job #"{id}</strong> }.into_any()
                                    } else {
                                        view! { <a href=link>{label}" · job #"{id}</a> }.into_any()
                                    }}
                                    " · "
                                    <span class=class data-state=j.state.as_str()>{state}</span>
                                    {waiting}
                                </li>
                            }
                        })
                        .collect_view()
                }}
            </ol>
        </section>
    }
}

/// (name, label, value as text) of each parameter given.
pub fn labelled_params(
    params: &serde_json::Map<String, serde_json::Value>,
    specs: &[ParamSpec],
) -> Vec<(String, String, String)> {
    let known = specs.iter().filter_map(|s| {
        params
            .get(&s.name)
            .map(|v| (s.name.clone(), s.label().to_string(), param_text(v)))
    });
    let unknown = params
        .iter()
        .filter(|(k, _)| !specs.iter().any(|s| &s.name == *k))
        .map(|(k, v)| (k.clone(), k.clone(), param_text(v)));
    known.chain(unknown).collect()
}

/// The error and the last stderr lines of a failed job.
#[component]
fn FailurePanel(job: RwSignal<Job>, stderr: RwSignal<Vec<LogLine>>) -> impl IntoView {
    move || {
        let j = job.get();
        (j.state == JobState::Failed).then(|| {
            let lines = stderr.get();
            view! {
                <section class="failure-panel" aria-labelledby="failure-heading">
                    <h2 id="failure-heading">"Failed: " {j.error.unwrap_or_else(|| "unknown error".into())}</h2>
                    {(!lines.is_empty()).then(|| view! {
                        <p class="muted">"The last lines on stderr:"</p>
                        <pre class="stderr-tail">
                            {lines.into_iter().map(|l| format!("{}\n", l.text)).collect::<String>()}
                        </pre>
                    })}
                </section>
            }
        })
    }
}

/// Follows the job's event stream (browser only).
#[cfg(feature = "hydrate")]
fn start_stream(
    id: i64,
    job: RwSignal<Job>,
    progress: RwSignal<Option<crate::model::job::Progress>>,
    stderr: RwSignal<Vec<LogLine>>,
    model: LogModel,
    conn: RwSignal<Conn>,
) {
    use std::rc::Rc;

    use crate::model::event::{JobEvent, JobEventKind};

    if job.get_untracked().state.is_finished() {
        conn.set(Conn::Closed);
        return;
    }
    let on: crate::jobs::live::Handler = Rc::new(move |name: &str, data: &str| {
        let event = match JobEvent::decode(name, data) {
            Ok(Some(event)) => event,
            Ok(None) => return true,
            Err(e) => {
                leptos::logging::warn!("{e}");
                // An end without a job (it was deleted) still ends.
                return name != JobEventKind::End.name();
            }
        };
        match event {
            JobEvent::Log(line) => {
                let (expected, seq) = (model.received.get_value() + 1, line.seq);
                // N.B.: never expected: the stream resumes after the last
                // line this page has, and a gap is announced first. Said
                // where a user and the browser tests see it; the viewer
                // fetches what is missing when it comes into view.
                if model.push(line) && seq > expected {
                    leptos::logging::error!(
                        "job {id}: lines {expected}–{} never arrived on the live stream",
                        seq - 1
                    );
                }
            }
            JobEvent::State(j) => {
                if j.progress.is_some() {
                    progress.set(j.progress.clone());
                }
                if j.omitted.is_some() {
                    model.gap.set(j.omitted);
                }
                model.last_seq.update(|l| *l = (*l).max(j.last_seq));
                update_job(job, j);
            }
            JobEvent::Progress(p) => progress.set(Some(p)),
            JobEvent::Gap(g) => {
                model.gap.update(|cur| {
                    if cur.is_none() {
                        *cur = Some(g);
                    }
                });
                model.received.set_value(g.to);
            }
            JobEvent::End(j) => {
                model.last_seq.update(|l| *l = (*l).max(j.last_seq));
                if j.omitted.is_some() {
                    model.gap.set(j.omitted);
                }
                job.set(j);
                // The failure panel needs the stderr tail.
                leptos::task::spawn_local(async move {
                    if let Ok(v) = view_job(id).await {
                        stderr.set(v.stderr_tail);
                    }
                });
                return false;
            }
        }
        true
    });
    let stream = crate::jobs::live::Stream::Job {
        id,
        after: Rc::new(move || model.received.try_get_value().unwrap_or(0)),
    };
    let live = crate::jobs::live::subscribe(stream, on, conn);
    let live = send_wrapper::SendWrapper::new(live);
    on_cleanup(move || live.stop());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::template::ParamType;

    fn spec(name: &str, label: Option<&str>) -> ParamSpec {
        ParamSpec {
            name: name.into(),
            kind: ParamType::Int,
            label: label.map(Into::into),
            help: None,
            required: false,
            default: None,
            pattern: None,
            choices: Vec::new(),
            min: None,
            max: None,
        }
    }

    #[test]
    fn parameters_show_by_label_in_the_templates_order() {
        let params = serde_json::json!({"retries": 3, "old": "x", "exit_code": 2})
            .as_object()
            .cloned()
            .unwrap();
        let specs = [spec("exit_code", Some("Exit code")), spec("retries", None)];
        let shown = labelled_params(&params, &specs);
        let labels: Vec<(&str, &str)> = shown
            .iter()
            .map(|(_, l, v)| (l.as_str(), v.as_str()))
            .collect();
        assert_eq!(labels, [("Exit code", "2"), ("retries", "3"), ("old", "x")]);
    }
}
