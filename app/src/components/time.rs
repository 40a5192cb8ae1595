//! Times as the reader wants them: in the browser's zone, with UTC on
//! hover, and how long ago in lists. Server-rendered as UTC (the server
//! cannot know the zone), switched after hydration.

use chrono::{DateTime, Utc};
use leptos::prelude::*;

use crate::jobs::widgets::use_clock;
use crate::model::time::{format_ago, format_in_offset, format_utc, format_utc_minutes};

/// Minutes east of UTC of the browser's zone at `t` (0 on the server).
fn zone_offset_minutes(t: &DateTime<Utc>) -> i32 {
    #[cfg(feature = "hydrate")]
    {
        let date = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(t.timestamp_millis() as f64));
        -(date.get_timezone_offset() as i32)
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = t;
        0
    }
}

/// A `<time>` element, or a dash. The server renders UTC (it cannot know
/// the reader's zone); once the page has hydrated, the text is in the
/// browser's zone, with UTC in the tooltip. `short` (lists) shows how long
/// ago instead, ticking, with the full time in the tooltip.
///
/// N.B.: the switch happens in an effect, after this element has
/// hydrated: hydration keeps the server's text node as it is, so a first
/// render in the browser's zone would stay UTC on screen.
#[component]
pub fn Time(
    #[prop(into)] at: Signal<Option<DateTime<Utc>>>,
    #[prop(optional)] short: bool,
) -> impl IntoView {
    let local = RwSignal::new(false);
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| local.set(true));
    let clock = use_clock();
    move || match at.get() {
        Some(t) => {
            let utc = format_utc(&t);
            let text = {
                let utc = utc.clone();
                move || match (local.get(), short) {
                    (false, true) => format_utc_minutes(&t),
                    (false, false) => utc.clone(),
                    (true, true) => format_ago((clock.get() - t).num_seconds()),
                    (true, false) => format_in_offset(&t, zone_offset_minutes(&t)),
                }
            };
            let title = {
                let utc = utc.clone();
                move || match (local.get(), short) {
                    (true, true) => {
                        format!("{} ({utc})", format_in_offset(&t, zone_offset_minutes(&t)))
                    }
                    _ => utc.clone(),
                }
            };
            view! { <time datetime=t.to_rfc3339() title=title>{text}</time> }.into_any()
        }
        None => view! { <span class="muted">"—"</span> }.into_any(),
    }
}
