//! Small pieces of job UI: the state pill, the ticking clock, durations,
//! the progress bar (and times, from `components`).

use chrono::{DateTime, Utc};
use leptos::prelude::*;

use crate::model::job::{Job, JobState, Progress};
use crate::model::time::format_duration_secs;

pub use crate::components::Time;

/// Now, in the browser or on the server.
pub fn now() -> DateTime<Utc> {
    #[cfg(feature = "hydrate")]
    {
        DateTime::from_timestamp_millis(js_sys::Date::now() as i64).unwrap_or_default()
    }
    #[cfg(not(feature = "hydrate"))]
    {
        #[cfg(feature = "ssr")]
        {
            Utc::now()
        }
        #[cfg(not(feature = "ssr"))]
        {
            DateTime::<Utc>::default()
        }
    }
}

/// A clock that ticks every second in the browser (for live durations).
#[derive(Clone, Copy)]
pub struct Clock(pub RwSignal<DateTime<Utc>>);

/// Provides the [`Clock`] (once, in `App`).
pub fn provide_clock() {
    let clock = RwSignal::new(now());
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| {
        set_interval(move || clock.set(now()), std::time::Duration::from_secs(1));
    });
    provide_context(Clock(clock));
}

pub fn use_clock() -> RwSignal<DateTime<Utc>> {
    use_context::<Clock>()
        .map(|c| c.0)
        .unwrap_or_else(|| RwSignal::new(now()))
}

/// The CSS class and label of a job's state.
pub fn pill_of(state: JobState, warnings: bool) -> (&'static str, &'static str) {
    match state {
        JobState::Queued => ("pill muted", "queued"),
        JobState::Running => ("pill info", "running"),
        JobState::Cancelling => ("pill warn", "cancelling"),
        JobState::Succeeded if warnings => ("pill warn", "succeeded with warnings"),
        JobState::Succeeded => ("pill ok", "succeeded"),
        JobState::Failed => ("pill bad", "failed"),
        JobState::Cancelled => ("pill muted", "cancelled"),
    }
}

/// The state pill.
#[component]
pub fn StatePill(
    #[prop(into)] state: Signal<JobState>,
    #[prop(into)] warnings: Signal<bool>,
) -> impl IntoView {
    let pill = move || pill_of(state.get(), warnings.get());
    view! { <span class=move || pill().0 data-state=move || state.get().as_str()>{move || pill().1}</span> }
}

/// How long a job ran, ticking while it runs.
#[component]
pub fn JobDuration(#[prop(into)] job: Signal<Job>) -> impl IntoView {
    let clock = use_clock();
    move || {
        job.with(|j| j.duration_secs(clock.get()))
            .map(format_duration_secs)
            .unwrap_or_else(|| "—".to_string())
    }
}

/// The progress bar with its message, while there is progress to show.
#[component]
pub fn ProgressBar(#[prop(into)] progress: Signal<Option<Progress>>) -> impl IntoView {
    move || {
        progress.get().map(|p| {
            let pct = p.percent.unwrap_or(0.0).clamp(0.0, 100.0);
            let label = format!("{pct:.0}%");
            view! {
                <div class="progress-wrap">
                    <div
                        class="progress"
                        role="progressbar"
                        aria-label="Progress"
                        aria-valuemin="0"
                        aria-valuemax="100"
                        aria-valuenow=format!("{pct:.1}")
                    >
                        <div class="progress-bar" style=format!("width: {pct:.2}%")></div>
                    </div>
                    <span class="progress-text">
                        <strong>{label}</strong>
                        " "
                        {p.message.unwrap_or_default()}
                    </span>
                </div>
            }
        })
    }
}
