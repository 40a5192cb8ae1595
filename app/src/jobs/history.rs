//! A target's history as pictures, for the target page: its recent jobs
//! as bars (height the duration, colour the outcome, a click opens the
//! job) and, per template, the success rate and the p50/p95 durations over
//! the last 30 days. Hand-written SVG rendered by the same component on the
//! server and in the browser (no chart library in the wasm), coloured by
//! the stylesheet's outcome variables so light and dark both read, and
//! kept live from the page's feed. Each picture has its text equivalent: a
//! caption, a `<title>` per bar, a visually hidden table of the jobs.

use leptos::prelude::*;

use crate::components::ErrorList;
use crate::jobs::live::Feed;
use crate::jobs::table::receive;
use crate::jobs::widgets::{pill_of, use_clock, Time};
use crate::jobs::{list_jobs, target_stats};
use crate::model::event::FeedEvent;
use crate::model::history::{TargetStats, TemplateStats};
use crate::model::job::{Job, JobFilter, JobState};
use crate::model::time::format_duration_secs;

/// How many of a target's newest jobs the chart shows.
pub const BARS: usize = 40;

// The chart's geometry, in SVG user units (it scales to the page's width).
const W: f64 = 800.0;
const H: f64 = 150.0;
const LEFT: f64 = 56.0;
const TOP: f64 = 8.0;
const BOTTOM: f64 = 6.0;

/// The history panel of `target`.
#[component]
pub fn TargetHistory(target: String) -> impl IntoView {
    let filter = JobFilter {
        target: Some(target.clone()),
        limit: Some(BARS as u64),
        ..Default::default()
    };
    let jobs = Resource::new(|| (), {
        let f = filter.clone();
        move |_| list_jobs(f.clone())
    });
    let stats = Resource::new(|| (), {
        let t = target.clone();
        move |_| target_stats(t.clone())
    });
    // The figures change when a job here ends (or the feed missed some).
    Feed::subscribe({
        let target = target.clone();
        move |msg| match msg {
            FeedEvent::Job(j) if j.target == target && j.state.is_finished() => stats.refetch(),
            FeedEvent::Resync => stats.refetch(),
            _ => {}
        }
    });
    let filter = StoredValue::new(filter);
    view! {
        <section class="panel history" aria-labelledby="history-heading">
            <h2 id="history-heading">"History"</h2>
            <Transition fallback=|| view! { <p class="muted">"Loading the history…"</p> }>
                <ErrorBoundary fallback=|errors| view! { <ErrorList errors /> }>
                    {move || Suspend::new(async move {
                        jobs.await.map(|page| view! { <JobBars initial=page.jobs filter=filter.get_value() /> })
                    })}
                </ErrorBoundary>
            </Transition>
            <Transition fallback=|| ()>
                <ErrorBoundary fallback=|errors| view! { <ErrorList errors /> }>
                    {move || Suspend::new(async move {
                        stats.await.map(|stats| view! { <StatsTable stats /> })
                    })}
                </ErrorBoundary>
            </Transition>
        </section>
    }
}

/// The outcome class of a job (the state pill's colour) and its words.
fn outcome(job: &Job) -> (&'static str, &'static str) {
    let (class, label) = pill_of(job.state, job.warnings);
    (class.trim_start_matches("pill "), label)
}

/// One bar per started or finished job, oldest on the left, newest on the
/// right; live from the feed.
#[component]
fn JobBars(initial: Vec<Job>, filter: JobFilter) -> impl IntoView {
    let rows = RwSignal::new(initial);
    let filter = StoredValue::new(filter);
    Feed::subscribe(move |msg| match msg {
        FeedEvent::Resync => {
            let f = filter.get_value();
            leptos::task::spawn_local(async move {
                if let Ok(page) = list_jobs(f).await {
                    rows.try_set(page.jobs);
                }
            });
        }
        msg => filter.with_value(|f| rows.update(|r| receive(r, msg, f, BARS, true))),
    });
    let clock = use_clock();
    // Queued jobs have no duration yet; a job cancelled in the queue is a
    // stub, so it still shows.
    let shown = Memo::new(move |_| {
        rows.with(|r| {
            r.iter()
                .rev()
                .filter(|j| j.state != JobState::Queued)
                .cloned()
                .collect::<Vec<_>>()
        })
    });
    let secs = move |j: &Job| {
        if j.state.is_finished() {
            j.duration_secs(j.finished_at.unwrap_or(j.created_at))
        } else {
            j.duration_secs(clock.get())
        }
    };
    let target = filter.with_value(|f| f.target.clone().unwrap_or_default());
    let chart = move || {
        let jobs = shown.get();
        if jobs.is_empty() {
            return view! { <p class="muted">"No jobs on this target yet."</p> }.into_any();
        }
        let durations: Vec<Option<i64>> = jobs.iter().map(secs).collect();
        let max = durations
            .iter()
            .flatten()
            .copied()
            .max()
            .unwrap_or(0)
            .max(1);
        let plot_h = H - TOP - BOTTOM;
        let slot = (W - LEFT) / BARS as f64;
        let first_slot = BARS - jobs.len().min(BARS);
        let bars = jobs
            .iter()
            .zip(&durations)
            .enumerate()
            .map(|(i, (j, d))| {
                let (class, label) = outcome(j);
                let h = d.map_or(2.0, |d| (d as f64 / max as f64 * plot_h).max(2.0));
                let x = LEFT + (first_slot + i) as f64 * slot + slot * 0.15;
                let title = format!(
                    "#{} {}: {label}, {}",
                    j.id,
                    j.template,
                    d.map_or_else(|| "did not run".to_string(), format_duration_secs)
                );
                let name = title.clone();
                view! {
                    <g class=format!("bar {class}") data-job=j.id data-state=j.state.as_str() data-warnings=j.warnings.to_string()>
                        <a href=format!("/jobs/{}", j.id) aria-label=name>
                            <rect class="hit" x=format!("{:.1}", x) y=TOP width=format!("{:.1}", slot * 0.7) height=plot_h></rect>
                            <rect class="b" x=format!("{:.1}", x) y=format!("{:.1}", TOP + plot_h - h) width=format!("{:.1}", slot * 0.7) height=format!("{:.1}", h) rx="1.5"></rect>
                            <title>{title}</title>
                        </a>
                    </g>
                }
            })
            .collect_view();
        let count = |pred: &dyn Fn(&Job) -> bool| jobs.iter().filter(|j| pred(j)).count();
        let summary = format!(
            "The last {} jobs: {} succeeded, {} failed, {} cancelled, {} running; the longest took {}.",
            jobs.len(),
            count(&|j| j.state == JobState::Succeeded),
            count(&|j| j.state == JobState::Failed),
            count(&|j| j.state == JobState::Cancelled),
            count(&|j| j.state.is_active()),
            format_duration_secs(max),
        );
        let mid = TOP + plot_h / 2.0;
        let base = TOP + plot_h;
        view! {
            <figure class="chart-figure">
                <svg class="chart job-bars" viewBox=format!("0 0 {W} {H}") role="group" aria-label=format!("Durations of the last jobs on {target}")>
                    <g class="axis" aria-hidden="true">
                        <line class="grid" x1=LEFT x2=W y1=TOP y2=TOP></line>
                        <line class="grid" x1=LEFT x2=W y1=mid y2=mid></line>
                        <line class="grid base" x1=LEFT x2=W y1=base y2=base></line>
                        <text class="axis-label" x={LEFT - 6.0} y={TOP + 4.0} text-anchor="end">{format_duration_secs(max)}</text>
                        <text class="axis-label" x={LEFT - 6.0} y={mid + 4.0} text-anchor="end">{format_duration_secs(max / 2)}</text>
                        <text class="axis-label" x={LEFT - 6.0} y=base text-anchor="end">"0s"</text>
                    </g>
                    {bars}
                </svg>
                <figcaption class="muted small">{summary} " Oldest on the left; each bar opens its job."</figcaption>
            </figure>
            <JobsAsText jobs durations />
        }
        .into_any()
    };
    view! { <div class="job-chart">{chart}</div> }
}

/// The bars as a table, for screen readers.
#[component]
fn JobsAsText(jobs: Vec<Job>, durations: Vec<Option<i64>>) -> impl IntoView {
    view! {
        <table class="visually-hidden">
            <caption>"The last jobs on this target, oldest first"</caption>
            <thead>
                <tr>
                    <th scope="col">"Job"</th>
                    <th scope="col">"Outcome"</th>
                    <th scope="col">"Duration"</th>
                    <th scope="col">"Created"</th>
                </tr>
            </thead>
            <tbody>
                {jobs
                    .into_iter()
                    .zip(durations)
                    .map(|(j, d)| {
                        let label = outcome(&j).1;
                        view! {
                            <tr>
                                <th scope="row"><a href=format!("/jobs/{}", j.id)>{format!("#{} {}", j.id, j.template)}</a></th>
                                <td>{label}</td>
                                <td>{d.map_or_else(|| "did not run".to_string(), format_duration_secs)}</td>
                                <td><Time at=Some(j.created_at) short=true /></td>
                            </tr>
                        }
                    })
                    .collect_view()}
            </tbody>
        </table>
    }
}

/// Per template: jobs, success rate (with a bar) and p50/p95 durations.
#[component]
fn StatsTable(stats: TargetStats) -> impl IntoView {
    if stats.templates.is_empty() {
        return view! {
            <p class="muted">{format!("No job finished here in the last {} days.", stats.days)}</p>
        }
        .into_any();
    }
    view! {
        <div class="table-wrap">
            <table class="data template-stats">
                <caption>{format!("Per template, the last {} days", stats.days)}</caption>
                <thead>
                    <tr>
                        <th scope="col">"Template"</th>
                        <th scope="col">"Jobs"</th>
                        <th scope="col">"Succeeded"</th>
                        <th scope="col">"Median (p50)"</th>
                        <th scope="col">"p95"</th>
                    </tr>
                </thead>
                <tbody>
                    {stats.templates.into_iter().map(|t| view! { <StatsRow t /> }).collect_view()}
                </tbody>
            </table>
        </div>
        <p class="muted small">"Success rate: succeeded out of succeeded or failed (cancelled jobs are left out). Durations: of the jobs that succeeded."</p>
    }
    .into_any()
}

#[component]
fn StatsRow(t: TemplateStats) -> impl IntoView {
    let runs = t.runs();
    let rate = t.success_rate();
    let text = match rate {
        Some(r) => format!("{:.0}%", r * 100.0),
        None => "—".to_string(),
    };
    let detail = format!(
        "{} succeeded{}, {} failed, {} cancelled",
        t.succeeded,
        if t.warnings > 0 {
            format!(" ({} with warnings)", t.warnings)
        } else {
            String::new()
        },
        t.failed,
        t.cancelled
    );
    let ok = rate.unwrap_or(0.0) * 100.0;
    let meter = rate.map(|_| {
        view! {
            <svg class="meter" viewBox="0 0 100 8" preserveAspectRatio="none" aria-hidden="true">
                <rect class="meter-bad" x="0" y="0" width="100" height="8"></rect>
                <rect class="meter-ok" x="0" y="0" width=format!("{ok:.1}") height="8"></rect>
            </svg>
        }
    });
    view! {
        <tr data-template=t.template.clone()>
            <th scope="row">{t.title}</th>
            <td>{runs}</td>
            <td title=detail.clone()>
                <span class="rate">{meter} <span class="rate-text">{text}</span></span>
                <span class="visually-hidden">{format!(" ({detail})")}</span>
            </td>
            <td>{t.p50_secs.map_or_else(|| "—".to_string(), format_duration_secs)}</td>
            <td>{t.p95_secs.map_or_else(|| "—".to_string(), format_duration_secs)}</td>
        </tr>
    }
}
