//! The dashboard `/`: a banner for the caller's jobs still running, the
//! load of the last hours as a chart, the active and recent jobs (live),
//! each target with its last job and its launch buttons, and the ops
//! journal.

use leptos::prelude::*;
use leptos_meta::Title;

use crate::components::ErrorList;
use crate::jobs::activity::ActivityChart;
use crate::jobs::table::{JobTable, TableSpec};
use crate::jobs::widgets::StatePill;
use crate::jobs::{list_jobs, target_overview};
use crate::journal::JournalPanel;
use crate::model::job::{JobFilter, StateSet};
use crate::targets::{LaunchButtons, LiveStatus, TargetState};

#[component]
pub fn Dashboard() -> impl IntoView {
    let active = TableSpec {
        fixed: JobFilter {
            state: Some(StateSet::active()),
            ..Default::default()
        },
        filters: false,
        path: "/".into(),
        limit: 20,
        empty: "Nothing is running.",
    };
    let recent = TableSpec {
        fixed: JobFilter {
            state: Some(StateSet::finished()),
            ..Default::default()
        },
        filters: false,
        path: "/".into(),
        limit: 10,
        empty: "No finished jobs yet.",
    };
    view! {
        <Title text="Dashboard" />
        <h1>"Dashboard"</h1>
        <MyRunningBanner />
        <section class="panel" aria-labelledby="load-heading">
            <h2 id="load-heading">"Running and queued, the last 6 hours"</h2>
            <ActivityChart />
        </section>
        <div class="dash-grid">
            <section class="panel" aria-labelledby="active-heading">
                <h2 id="active-heading">"Running and queued"</h2>
                <JobTable spec=active />
            </section>
            <section class="panel" aria-labelledby="recent-heading">
                <h2 id="recent-heading">"Recently finished"</h2>
                <JobTable spec=recent />
                <p><a href="/jobs">"All jobs"</a></p>
            </section>
        </div>
        <Targets />
        <JournalPanel />
    }
}

/// "You have 2 jobs still running": links to the caller's own active jobs.
#[component]
fn MyRunningBanner() -> impl IntoView {
    let mine = Resource::new(
        || (),
        |_| {
            list_jobs(JobFilter {
                state: Some(StateSet::active()),
                mine: Some(true),
                limit: Some(10),
                ..Default::default()
            })
        },
    );
    view! {
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                let jobs = mine.await.map(|p| p.jobs).unwrap_or_default();
                (!jobs.is_empty()).then(|| {
                    let n = jobs.len();
                    view! {
                        <div class="banner info" role="status">
                            {format!("You have {n} job{} still running: ", if n == 1 { "" } else { "s" })}
                            {jobs
                                .into_iter()
                                .map(|j| view! {
                                    <a href=format!("/jobs/{}", j.id)>{format!("#{} {} on {}", j.id, j.template, j.target)}</a>
                                    " "
                                })
                                .collect_view()}
                        </div>
                    }
                })
            })}
        </Transition>
    }
}

#[component]
fn Targets() -> impl IntoView {
    let data = Resource::new(|| (), |_| target_overview());
    view! {
        <section aria-labelledby="targets-heading">
            <h2 id="targets-heading">"Targets"</h2>
            <Transition fallback=|| view! { <p class="muted">"Loading targets…"</p> }>
                <ErrorBoundary fallback=|errors| view! { <ErrorList errors /> }>
                    {move || Suspend::new(async move {
                        data.await.map(|targets| {
                            if targets.is_empty() {
                                return view! { <p class="muted">"You have no targets yet: an admin lists you as an owner in the configuration."</p> }.into_any();
                            }
                            let live = LiveStatus::new(targets.iter().filter_map(|s| s.target.status.clone()));
                            view! {
                                <div class="target-cards">
                                    {targets.into_iter().map(|s| {
                                        let t = s.target;
                                        let id = t.id.clone();
                                        view! {
                                            <article class="panel target-card" aria-label=t.title.clone()>
                                                <header>
                                                    <h3><a href=format!("/targets/{id}")>{t.title.clone()}</a></h3>
                                                    <span class="muted small">{id.clone()}</span>
                                                </header>
                                                <TargetState status=live.of(id.clone()) />
                                                <p class="last-job">
                                                    {match s.last_job {
                                                        Some(j) => view! {
                                                            "Last job: "
                                                            <a href=format!("/jobs/{}", j.id)>{format!("#{} {}", j.id, j.template)}</a>
                                                            " "
                                                            <StatePill state=j.state warnings=j.warnings />
                                                        }.into_any(),
                                                        None => view! { <span class="muted">"No jobs yet"</span> }.into_any(),
                                                    }}
                                                </p>
                                                <LaunchButtons target=id.clone() templates=s.templates />
                                                {t.terminal.then(|| view! {
                                                    <p><a href=format!("/targets/{id}/console") rel="external">"Open console"</a></p>
                                                })}
                                                {t.console_as_server.then(|| view! {
                                                    <p class="small console-as-server" role="note">"⚠ The console is a shell as opsdeck's own user (no "<code>"user ="</code>")."</p>
                                                })}
                                            </article>
                                        }
                                    }).collect_view()}
                                </div>
                            }.into_any()
                        })
                    })}
                </ErrorBoundary>
            </Transition>
        </section>
    }
}
