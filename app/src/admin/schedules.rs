//! `/admin/schedules`: each `[[schedules]]` entry with what it runs, its
//! policies, its next fires and its latest fires (launched, waiting or
//! skipped, and why), with pause/resume and "run now".

use leptos::prelude::*;
use leptos_meta::Title;

use crate::auth::RequireAdmin;
use crate::components::ErrorList;
use crate::error::AppError;
use crate::jobs::widgets::Time;
use crate::model::job::Job;
use crate::model::schedule::{FireInfo, FireOutcome, ScheduleInfo};

/// Every schedule with its next and latest fires.
#[server(output = crate::codec::Json)]
pub async fn list_schedules() -> Result<Vec<ScheduleInfo>, AppError> {
    use crate::backend::{backend, caller, respond};
    respond(async { backend()?.schedules(&caller()).await }.await)
}

/// Pauses (`paused = true`) or resumes a schedule.
#[server(output = crate::codec::Json)]
pub async fn pause_schedule(id: String, paused: bool) -> Result<(), AppError> {
    use crate::backend::{backend, caller, respond};
    respond(async { backend()?.pause_schedule(&caller(), id, paused).await }.await)
}

/// Launches a schedule's job now.
#[server(output = crate::codec::Json)]
pub async fn run_schedule(id: String) -> Result<Job, AppError> {
    use crate::backend::{backend, caller, respond};
    respond(async { backend()?.run_schedule(&caller(), id).await }.await)
}

#[component]
pub fn SchedulesPage() -> impl IntoView {
    view! {
        <Title text="Schedules" />
        <RequireAdmin>
            <Schedules />
        </RequireAdmin>
    }
}

#[component]
fn Schedules() -> impl IntoView {
    let pause = ServerAction::<PauseSchedule>::new();
    let run = ServerAction::<RunSchedule>::new();
    let list = Resource::new(
        move || (pause.version().get(), run.version().get()),
        |_| list_schedules(),
    );
    view! {
        <h1>"Schedules"</h1>
        <p class="muted">
            "Each " <code>"[[schedules]]"</code> " entry of the configuration, its next fires and what "
            "became of its latest ones. A paused schedule neither runs nor counts its fires as missed. "
            "Times are UTC; policies are explained in docs/automation.md. Reload the page for the latest."
        </p>
        {move || run.value().get().map(|r| match r {
            Ok(job) => view! {
                <p class="callout ok" role="status">
                    "Launched " <a href=format!("/jobs/{}", job.id)>{format!("job {}", job.id)}</a> "."
                </p>
            }.into_any(),
            Err(e) => view! { <p class="field-error" role="alert">{e.to_string()}</p> }.into_any(),
        })}
        {move || pause.value().get().and_then(Result::err).map(|e| {
            view! { <p class="field-error" role="alert">{e.to_string()}</p> }
        })}
        <Transition fallback=|| view! { <p class="muted">"Loading schedules…"</p> }>
            <ErrorBoundary fallback=|errors| view! { <ErrorList errors /> }>
                {move || Suspend::new(async move {
                    list.await.map(|list| {
                        if list.is_empty() {
                            view! {
                                <p class="muted">
                                    "No schedule is configured: add a " <code>"[[schedules]]"</code>
                                    " section to the configuration."
                                </p>
                            }
                            .into_any()
                        } else {
                            list.into_iter()
                                .map(|s| view! { <Schedule s pause run /> })
                                .collect_view()
                                .into_any()
                        }
                    })
                })}
            </ErrorBoundary>
        </Transition>
    }
}

#[component]
fn Schedule(
    s: ScheduleInfo,
    pause: ServerAction<PauseSchedule>,
    run: ServerAction<RunSchedule>,
) -> impl IntoView {
    let heading = format!("schedule-{}", s.id);
    let labelled_by = heading.clone();
    let params = if s.params.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = s.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!(" with {}", list.join(", "))
    };
    let mut policies = vec![
        format!("misfire {}", s.misfire.as_str()),
        format!("overlap {}", s.overlap.as_str()),
    ];
    if s.misfire == crate::model::schedule::Misfire::All {
        policies.push(format!("max_catchup {}", s.max_catchup));
    }
    if s.jitter_ms > 0 {
        policies.push(format!("jitter up to {} s", s.jitter_ms.div_ceil(1000)));
    }
    let (pill, state) = if s.paused {
        ("pill warn", "paused")
    } else {
        ("pill ok", "active")
    };
    let paused_note = s.paused.then(|| {
        view! {
            <span class="muted">
                " by " {s.paused_by.clone().unwrap_or_default()} " at "
                <Time at=s.paused_at short=true />
            </span>
        }
    });
    let id = s.id.clone();
    let id_run = s.id.clone();
    let toggle_label = if s.paused { "Resume" } else { "Pause" };
    let to = (!s.paused).to_string();
    let confirm_text = format!("Run schedule {} now?", s.id);
    let empty = s.fires.is_empty();
    view! {
        <section class="panel" aria-labelledby=labelled_by data-schedule=s.id.clone()>
            <h2 id=heading>{s.id.clone()}</h2>
            <p>
                <span class=pill data-schedule-state=state>{state}</span>
                {paused_note}
            </p>
            <p>
                "Runs " <a href=format!("/launch/{}", s.template)>{s.template.clone()}</a>
                " on " <a href=format!("/targets/{}", s.target)>{s.target.clone()}</a> {params}
                " at " <code>{s.cron.clone()}</code> " (" {s.timezone.clone()} "); "
                {policies.join(", ")} "."
            </p>
            <div class="row-form">
                <ActionForm action=pause attr:class="inline">
                    <input type="hidden" name="id" value=id.clone() />
                    <input type="hidden" name="paused" value=to />
                    <button type="submit" class="secondary small">{toggle_label}</button>
                </ActionForm>
                <ActionForm action=run attr:class="inline">
                    <input type="hidden" name="id" value=id_run />
                    <button
                        type="submit"
                        class="small"
                        on:click=move |ev| {
                            if !crate::jobs::page::confirm(&confirm_text) {
                                ev.prevent_default();
                            }
                        }
                    >
                        "Run now"
                    </button>
                </ActionForm>
            </div>
            <h3>"Next fires"</h3>
            {if s.next.is_empty() {
                view! { <p class="muted">"None while paused."</p> }.into_any()
            } else {
                view! {
                    <ul class="next-fires">
                        {s.next.into_iter().map(|t| view! { <li><Time at=Some(t) /></li> }).collect_view()}
                    </ul>
                }
                .into_any()
            }}
            <h3>"Latest fires"</h3>
            {if empty {
                view! { <p class="muted">"It has not fired yet."</p> }.into_any()
            } else {
                view! {
                    <div class="table-wrap">
                        <table class="data fires">
                            <thead>
                                <tr>
                                    <th scope="col">"Scheduled for"</th>
                                    <th scope="col">"Outcome"</th>
                                    <th scope="col">"Job"</th>
                                    <th scope="col">"Why"</th>
                                </tr>
                            </thead>
                            <tbody>
                                {s.fires.into_iter().map(|f| view! { <Fire f /> }).collect_view()}
                            </tbody>
                        </table>
                    </div>
                }
                .into_any()
            }}
        </section>
    }
}

#[component]
fn Fire(f: FireInfo) -> impl IntoView {
    let class = match f.outcome {
        FireOutcome::Launched => "pill ok",
        FireOutcome::Waiting => "pill warn",
        FireOutcome::Skipped => "pill bad",
    };
    let outcome = if f.count > 1 {
        format!("{} ×{}", f.outcome.as_str(), f.count)
    } else {
        f.outcome.as_str().to_string()
    };
    let until = f.until.map(|u| view! { " – " <Time at=Some(u) /> });
    let job = match (f.job, f.job_state) {
        (Some(id), Some(state)) => view! {
            <a href=format!("/jobs/{id}")>{format!("job {id}")}</a> " " {state.to_string()}
        }
        .into_any(),
        (Some(id), None) => {
            view! { <span class="muted">{format!("job {id} (deleted)")}</span> }.into_any()
        }
        (None, _) => view! { <span class="muted">"—"</span> }.into_any(),
    };
    let why = match (f.manual_by, f.reason) {
        (Some(by), _) => format!("run now by {by}"),
        (None, Some(r)) => r,
        (None, None) => String::new(),
    };
    view! {
        <tr data-fire=f.id.to_string() data-outcome=f.outcome.as_str()>
            <td><Time at=Some(f.scheduled_for) />{until}</td>
            <td><span class=class>{outcome}</span></td>
            <td>{job}</td>
            <td>{why}</td>
        </tr>
    }
}
