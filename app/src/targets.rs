//! Target pages: `/targets/{id}` (its actual state, its templates to
//! launch, its history as a chart and per-template figures, recent jobs, the
//! console) and `/targets/{id}/jobs` (the full history); the live state
//! badge the dashboard's cards show too.

use std::collections::HashMap;

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_params_map;

use crate::components::ErrorList;
use crate::jobs::filters::JobFilters;
use crate::jobs::history::TargetHistory;
use crate::jobs::live::Feed;
use crate::jobs::table::{JobTable, TableSpec};
use crate::jobs::widgets::use_clock;
use crate::jobs::{list_targets, list_templates};
use crate::model::event::FeedEvent;
use crate::model::job::JobFilter;
use crate::model::status::{ProbeState, TargetStatus};
use crate::model::template::{TargetInfo, TemplateChoice, TemplateInfo};
use crate::model::time::{format_duration_secs, format_utc};

fn target_id() -> impl Fn() -> String + Copy {
    let params = use_params_map();
    move || params.with(|p| p.get("id")).unwrap_or_default()
}

#[component]
pub(crate) fn NoTarget(id: String) -> impl IntoView {
    #[cfg(feature = "ssr")]
    crate::backend::set_status(404);
    view! {
        <Title text="No such target" />
        <section class="panel">
            <h1>"No such target"</h1>
            <p>"There is no target “" {id} "” you can use. " <a href="/">"Back to the dashboard"</a></p>
        </section>
    }
}

#[component]
pub fn TargetPage() -> impl IntoView {
    let id = target_id();
    let data = Resource::new(id, |_| async move {
        let targets = list_targets().await?;
        let templates = list_templates().await?;
        Ok::<_, crate::error::AppError>((targets, templates))
    });
    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            <ErrorBoundary fallback=|errors| view! { <ErrorList errors /> }>
                {move || Suspend::new(async move {
                    let want = id();
                    data.await.map(|(targets, templates)| match targets.into_iter().find(|t| t.id == want) {
                        Some(t) => view! { <TargetDetail target=t templates /> }.into_any(),
                        None => view! { <NoTarget id=want /> }.into_any(),
                    })
                })}
            </ErrorBoundary>
        </Transition>
    }
}

#[component]
fn TargetDetail(target: TargetInfo, templates: Vec<TemplateInfo>) -> impl IntoView {
    let id = target.id.clone();
    let mine = TemplateChoice::on_target(&templates, &id);
    let spec = TableSpec {
        fixed: JobFilter {
            target: Some(id.clone()),
            ..Default::default()
        },
        filters: false,
        path: format!("/targets/{id}"),
        limit: 10,
        empty: "No jobs on this target yet.",
    };
    let live = LiveStatus::new(target.status.clone());
    view! {
        <Title text=target.title.clone() />
        <div class="page-head">
            <h1>{target.title.clone()} <span class="muted small">" (" {id.clone()} ", " {format!("{:?}", target.kind).to_lowercase()} ")"</span></h1>
            {target.terminal.then(|| view! {
                <a href=format!("/targets/{id}/console") class="button" rel="external">"Console"</a>
            })}
        </div>
        {target.description.clone().map(|d| view! { <p class="lead">{d}</p> })}
        {target.runs_as.clone().map(|u| view! {
            <p class="muted">"Jobs and the console run as the Unix user " <code>{u}</code> "."</p>
        })}
        {target.console_as_server.then(|| view! { <ConsoleAsServer /> })}
        <TargetState status=live.of(id.clone()) />
        <section class="panel" aria-labelledby="launch-heading">
            <h2 id="launch-heading">"Launch"</h2>
            <LaunchButtons target=id.clone() templates=mine />
        </section>
        <TargetHistory target=id.clone() />
        <section class="panel" aria-labelledby="recent-heading">
            <h2 id="recent-heading">"Recent jobs"</h2>
            <JobTable spec />
            <p><a href=format!("/targets/{id}/jobs")>"Full history of " {id.clone()}</a></p>
        </section>
    }
}

/// For admins: this target's console is a shell as opsdeck's own user.
#[component]
pub fn ConsoleAsServer() -> impl IntoView {
    view! {
        <div class="banner warn console-as-server" role="note">
            "This target's console is a shell as opsdeck's own user: whoever may open it can read opsdeck's database and configuration. Set "
            <code>"user = \"NAME\""</code>
            " on the target in the configuration to run its jobs and console as an unprivileged user."
        </div>
    }
}

/// The actual states of a page's targets, kept live from the feed: a
/// `target` event replaces its target's; a resync reads them all again.
///
/// N.B.: the events that arrive while that read runs are applied again
/// onto its answer, in order: the read may have been answered from before
/// their commit, and would otherwise put an older state back.
#[derive(Clone, Copy)]
pub struct LiveStatus(RwSignal<HashMap<String, TargetStatus>>);

impl LiveStatus {
    pub fn new(initial: impl IntoIterator<Item = TargetStatus>) -> LiveStatus {
        let map = RwSignal::new(
            initial
                .into_iter()
                .map(|s| (s.target.clone(), s))
                .collect::<HashMap<_, _>>(),
        );
        // The reads begun, and the events since the oldest running one
        // began (None: none runs).
        let reads: StoredValue<(u64, Option<Vec<TargetStatus>>)> = StoredValue::new((0, None));
        Feed::subscribe(move |msg| match msg {
            FeedEvent::Target(s) => {
                reads.update_value(|(_, during)| {
                    if let Some(d) = during {
                        d.push((**s).clone());
                    }
                });
                map.update(|m| {
                    m.insert(s.target.clone(), (**s).clone());
                });
            }
            FeedEvent::Resync => {
                reads.update_value(|(n, during)| {
                    *n += 1;
                    during.get_or_insert_with(Vec::new);
                });
                #[cfg(feature = "hydrate")]
                leptos::task::spawn_local(async move {
                    let mine = reads.with_value(|(n, _)| *n);
                    let read = list_targets().await;
                    // Only the newest read's answer counts (an older one
                    // still running ends here unused).
                    let since = reads
                        .try_update_value(|(n, during)| (*n == mine).then(|| during.take()))
                        .flatten();
                    let (Some(since), Ok(targets)) = (since, read) else {
                        return;
                    };
                    let mut all: HashMap<_, _> = targets
                        .into_iter()
                        .filter_map(|t| t.status)
                        .map(|s| (s.target.clone(), s))
                        .collect();
                    for s in since.into_iter().flatten() {
                        all.insert(s.target.clone(), s);
                    }
                    map.set(all);
                });
            }
            _ => {}
        });
        LiveStatus(map)
    }

    /// `id`'s actual state, as it changes.
    pub fn of(self, id: String) -> Signal<Option<TargetStatus>> {
        Signal::derive(move || self.0.with(|m| m.get(&id).cloned()))
    }
}

/// The CSS class of a state's badge.
fn badge_class(state: ProbeState) -> &'static str {
    match state {
        ProbeState::Up => "pill ok",
        ProbeState::Down => "pill bad",
        ProbeState::Unknown => "pill muted",
    }
}

/// A target's actual state: its badge, the probe's message, how long ago
/// it was checked; and the last failed job's error until a job succeeds.
#[component]
pub fn TargetState(#[prop(into)] status: Signal<Option<TargetStatus>>) -> impl IntoView {
    let clock = use_clock();
    move || {
        status.get().map(|s| {
            let state = s.state.map(|st| {
                let checked = s.checked_at;
                let ago = move || {
                    checked.map(|t| {
                        let secs = (clock.get() - t).num_seconds();
                        format!("checked {} ago", format_duration_secs(secs))
                    })
                };
                view! {
                    <p class="target-state" role="status" aria-label="Actual state" data-state=st.as_str()>
                        <span class=badge_class(st)>{st.as_str()}</span>
                        " "
                        <span class="state-message">{s.message.clone()}</span>
                        " "
                        <span class="muted small" title=checked.as_ref().map(format_utc)>{ago}</span>
                    </p>
                }
            });
            let error = s.last_error.clone().map(|e| {
                view! {
                    <p class="last-error small" role="note" aria-label="Last error">
                        "Last error: "
                        <a href=format!("/jobs/{}", e.job_id)>{format!("#{}", e.job_id)}</a>
                        " "
                        <span title=format_utc(&e.at)>{e.error}</span>
                    </p>
                }
            });
            view! { {state} {error} }
        })
    }
}

/// A button per template, to its launch form for this target.
#[component]
pub fn LaunchButtons(target: String, templates: Vec<TemplateChoice>) -> impl IntoView {
    if templates.is_empty() {
        return view! { <p class="muted">"No template runs on this target."</p> }.into_any();
    }
    view! {
        <ul class="launch-list">
            {templates
                .into_iter()
                .map(|t| {
                    let href = format!("/launch/{}?target={}", t.id, target);
                    view! {
                        <li>
                            <a href=href class="button secondary" title=t.description.clone().unwrap_or_default()>
                                {t.title}
                            </a>
                        </li>
                    }
                })
                .collect_view()}
        </ul>
    }
    .into_any()
}

#[component]
pub fn TargetJobsPage() -> impl IntoView {
    let id = target_id();
    let targets = Resource::new(id, |_| list_targets());
    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            <ErrorBoundary fallback=|errors| view! { <ErrorList errors /> }>
                {move || Suspend::new(async move {
                    let want = id();
                    targets.await.map(|ts| match ts.into_iter().find(|t| t.id == want) {
                        Some(t) => view! { <TargetJobs target=t /> }.into_any(),
                        None => view! { <NoTarget id=want /> }.into_any(),
                    })
                })}
            </ErrorBoundary>
        </Transition>
    }
}

/// The full, filterable history of one target the caller may use.
#[component]
fn TargetJobs(target: TargetInfo) -> impl IntoView {
    let id = target.id.clone();
    let spec = TableSpec {
        fixed: JobFilter {
            target: Some(id.clone()),
            ..Default::default()
        },
        filters: true,
        path: format!("/targets/{id}/jobs"),
        limit: 50,
        empty: "No jobs match.",
    };
    view! {
        <Title text=format!("Jobs on {}", target.title) />
        <h1>"Jobs on " <a href=format!("/targets/{id}")>{target.title.clone()}</a></h1>
        <JobFilters spec=spec.clone() />
        <JobTable spec />
    }
}
