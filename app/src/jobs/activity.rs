//! The dashboard's load chart: how many jobs ran, and how many waited in
//! the queue, at most at once in each 10-minute interval of the last six
//! hours (stacked bars). The server derives it from the jobs' created,
//! started and finished times (`server::service::history`), so it needs no
//! sampler and is right from the first job on. Hand-written SVG, the same
//! on the server and in the browser; a visually hidden table says the same
//! in words. It follows the feed: a job change asks for the figures again
//! (at most every two seconds), and a timer moves the window every minute;
//! both stop once the server has revoked the page's session.

use leptos::prelude::*;

use crate::components::ErrorList;
use crate::jobs::live::{revoked_reason, Feed};
use crate::jobs::recent_activity;
use crate::model::event::FeedEvent;
use crate::model::history::Activity;

const W: f64 = 800.0;
const H: f64 = 110.0;
const LEFT: f64 = 28.0;
const TOP: f64 = 6.0;
const BOTTOM: f64 = 18.0;

/// Running and queued jobs over the last hours, live.
#[component]
pub fn ActivityChart() -> impl IntoView {
    let data = Resource::new(|| (), |_| recent_activity());
    // N.B.: once the session is revoked every request is refused (401, a
    // console error): the feed stops by itself, but a refetch already
    // waiting (the resync on connecting schedules one) or the minute's
    // timer would still ask. Both check here, at the moment they fire.
    let refetch = move || {
        if revoked_reason().is_none() {
            data.refetch();
        }
    };
    let pending = StoredValue::new(false);
    Feed::subscribe(move |msg| {
        // Only jobs change the load (agents and target probes do not).
        let jobs_changed = matches!(
            msg,
            FeedEvent::Job(_) | FeedEvent::Deleted(_) | FeedEvent::Resync
        );
        if !jobs_changed || pending.get_value() {
            return;
        }
        pending.set_value(true);
        set_timeout(
            move || {
                // The chart may be gone by now.
                if pending.try_update_value(|p| *p = false).is_some() {
                    refetch();
                }
            },
            std::time::Duration::from_secs(2),
        );
    });
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| {
        if let Ok(h) = set_interval_with_handle(refetch, std::time::Duration::from_secs(60)) {
            on_cleanup(move || h.clear());
        }
    });
    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            <ErrorBoundary fallback=|errors| view! { <ErrorList errors /> }>
                {move || Suspend::new(async move { data.await.map(|a| view! { <LoadBars a /> }) })}
            </ErrorBoundary>
        </Transition>
    }
}

/// "1 h 20 min", "40 min", "now".
fn minutes(m: i64) -> String {
    match (m / 60, m % 60) {
        (0, 0) => "now".to_string(),
        (0, m) => format!("{m} min"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m} min"),
    }
}

/// The span of interval `k` of `n` (`step` seconds each) ending now, in words.
fn span(k: usize, n: usize, step: i64) -> String {
    let from = (n - k) as i64 * step / 60;
    let to = (n - k - 1) as i64 * step / 60;
    if to == 0 {
        format!("the last {}", minutes(from))
    } else {
        format!("{} to {} ago", minutes(from), minutes(to))
    }
}

#[component]
fn LoadBars(a: Activity) -> impl IntoView {
    let n = a.running.len().min(a.queued.len());
    let totals: Vec<u32> = (0..n).map(|k| a.running[k] + a.queued[k]).collect();
    let max = totals.iter().copied().max().unwrap_or(0).max(1);
    let plot_h = H - TOP - BOTTOM;
    let slot = (W - LEFT) / n.max(1) as f64;
    let y_of = |v: u32| v as f64 / max as f64 * plot_h;
    let base = TOP + plot_h;
    let hours = n as i64 * a.step_secs / 3600;
    let bars = (0..n)
        .map(|k| {
            let (r, q) = (a.running[k], a.queued[k]);
            let x = LEFT + k as f64 * slot + slot * 0.1;
            let w = slot * 0.8;
            let (hr, hq) = (y_of(r), y_of(q));
            let title = format!("{}: {r} running, {q} queued", span(k, n, a.step_secs));
            view! {
                <g class="slot" data-running=r data-queued=q>
                    <rect class="b running" x=format!("{x:.1}") y=format!("{:.1}", base - hr) width=format!("{w:.1}") height=format!("{hr:.1}")></rect>
                    <rect class="b queued" x=format!("{x:.1}") y=format!("{:.1}", base - hr - hq) width=format!("{w:.1}") height=format!("{hq:.1}")></rect>
                    <title>{title}</title>
                </g>
            }
        })
        .collect_view();
    let peak_running = a.running.iter().copied().max().unwrap_or(0);
    let peak_queued = a.queued.iter().copied().max().unwrap_or(0);
    let summary = format!(
        "The last {hours} hours: at most {peak_running} running and {peak_queued} queued at once."
    );
    let busy: Vec<(usize, u32, u32)> = (0..n)
        .filter(|&k| totals[k] > 0)
        .map(|k| (k, a.running[k], a.queued[k]))
        .collect();
    let step = a.step_secs;
    let mid = TOP + plot_h / 2.0;
    view! {
        <figure class="chart-figure">
            <svg class="chart load-bars" viewBox=format!("0 0 {W} {H}") role="img" aria-label=summary.clone()>
                <g class="axis">
                    <line class="grid" x1=LEFT x2=W y1=TOP y2=TOP></line>
                    <line class="grid" x1=LEFT x2=W y1=mid y2=mid></line>
                    <line class="grid base" x1=LEFT x2=W y1=base y2=base></line>
                    <text class="axis-label" x={LEFT - 5.0} y={TOP + 4.0} text-anchor="end">{max}</text>
                    <text class="axis-label" x={LEFT - 5.0} y=base text-anchor="end">"0"</text>
                    <text class="axis-label" x=LEFT y={H - 4.0}>{format!("{hours} h ago")}</text>
                    <text class="axis-label" x={LEFT + (W - LEFT) / 2.0} y={H - 4.0} text-anchor="middle">{format!("{} h ago", hours as f64 / 2.0)}</text>
                    <text class="axis-label" x=W y={H - 4.0} text-anchor="end">"now"</text>
                </g>
                {bars}
            </svg>
            <figcaption class="legend small">
                <span class="swatch running" aria-hidden="true"></span>"running "
                <span class="swatch queued" aria-hidden="true"></span>"queued"
                <span class="muted">" · the most at once in each " {step / 60} "-minute interval. " {summary}</span>
            </figcaption>
        </figure>
        <table class="visually-hidden">
            <caption>"Jobs running and queued at once, per interval (intervals with none are left out)"</caption>
            <thead>
                <tr>
                    <th scope="col">"When"</th>
                    <th scope="col">"Running"</th>
                    <th scope="col">"Queued"</th>
                </tr>
            </thead>
            <tbody>
                {busy
                    .into_iter()
                    .map(|(k, r, q)| view! {
                        <tr><th scope="row">{span(k, n, step)}</th><td>{r}</td><td>{q}</td></tr>
                    })
                    .collect_view()}
            </tbody>
        </table>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_read_as_time_ago() {
        assert_eq!(span(35, 36, 600), "the last 10 min");
        assert_eq!(span(34, 36, 600), "20 min to 10 min ago");
        assert_eq!(span(0, 36, 600), "6 h to 5 h 50 min ago");
        assert_eq!(minutes(90), "1 h 30 min");
    }
}
