//! `/admin/recordings/{id}`: replays a recorded terminal session (asciicast
//! v2, from `GET /api/recordings/{id}`) in xterm.js, at its own pace or
//! faster, with long pauses cut to one second. Linked from the audit log's
//! `terminal.end` entries.

use leptos::prelude::*;
use leptos_meta::{Stylesheet, Title};
use leptos_router::hooks::use_params_map;

use crate::auth::RequireAdmin;

#[component]
pub fn RecordingPage() -> impl IntoView {
    view! {
        <Title text="Session recording" />
        <RequireAdmin>
            <Replay />
        </RequireAdmin>
    }
}

#[component]
fn Replay() -> impl IntoView {
    let params = use_params_map();
    let id = params.with_untracked(|p| p.get("id")).unwrap_or_default();
    let status = RwSignal::new(String::from("Loading the recording…"));
    let speed = RwSignal::new(1.0f64);
    let play = RwSignal::new(0u32);
    let host = NodeRef::<leptos::html::Div>::new();
    #[cfg(feature = "hydrate")]
    {
        let id = id.clone();
        Effect::new(move |_| {
            if let Some(el) = host.get() {
                player::start(el, id.clone(), status, speed, play);
            }
        });
    }
    view! {
        <Stylesheet id="xterm-css" href="/vendor/xterm/xterm.css" />
        <div class="page-head">
            <h1>"Session recording " <span class="muted small"><code>{id.clone()}</code></span></h1>
            <a href="/admin/audit?action=terminal.end" class="button secondary">"Back to the audit log"</a>
        </div>
        <div class="toolbar">
            <button type="button" on:click=move |_| play.update(|n| *n += 1)>"Play from the start"</button>
            <label>
                "Speed "
                <select on:change=move |ev| {
                    speed.set(event_target_value(&ev).parse().unwrap_or(1.0));
                }>
                    <option value="1">"1×"</option>
                    <option value="2">"2×"</option>
                    <option value="8">"8×"</option>
                    <option value="0">"all at once"</option>
                </select>
            </label>
            <span class="muted" role="status" aria-live="polite" data-replay=move || status.get()>{move || status.get()}</span>
        </div>
        <div class="terminal-box" node_ref=host aria-label="Recorded terminal"></div>
        <p class="muted small">
            <a href=format!("/api/recordings/{id}") rel="external" download=format!("{id}.cast")>"Download the .cast file"</a>
            " (plays in asciinema too)."
        </p>
    }
}

#[cfg(feature = "hydrate")]
mod player {
    use std::cell::RefCell;
    use std::rc::Rc;

    use leptos::prelude::*;
    use wasm_bindgen::JsCast;
    use wasm_bindgen_futures::JsFuture;
    use xterm_js_rs::{Terminal, TerminalOptions};

    use crate::console::load_xterm;

    /// One event of the recording: seconds, then output or a new size.
    enum Event {
        Output(f64, String),
        Resize(f64, u32, u32),
    }

    fn parse(text: &str) -> Option<((u32, u32), Vec<Event>)> {
        let mut lines = text.lines();
        let header: serde_json::Value = serde_json::from_str(lines.next()?).ok()?;
        let size = (
            header["width"].as_u64()? as u32,
            header["height"].as_u64()? as u32,
        );
        let events = lines
            .filter_map(|l| serde_json::from_str::<(f64, String, String)>(l).ok())
            .filter_map(|(t, code, data)| match code.as_str() {
                "o" => Some(Event::Output(t, data)),
                "r" => {
                    let (c, r) = data.split_once('x')?;
                    Some(Event::Resize(t, c.parse().ok()?, r.parse().ok()?))
                }
                _ => None,
            })
            .collect();
        Some((size, events))
    }

    async fn fetch_text(url: &str) -> Option<String> {
        let window = web_sys::window()?;
        let res: web_sys::Response = JsFuture::from(window.fetch_with_str(url))
            .await
            .ok()?
            .dyn_into()
            .ok()?;
        if !res.ok() {
            return None;
        }
        JsFuture::from(res.text().ok()?).await.ok()?.as_string()
    }

    pub fn start(
        el: web_sys::HtmlDivElement,
        id: String,
        status: RwSignal<String>,
        speed: RwSignal<f64>,
        play: RwSignal<u32>,
    ) {
        leptos::task::spawn_local(async move {
            let (Ok(_), Some(text)) = (
                JsFuture::from(load_xterm()).await,
                fetch_text(&format!("/api/recordings/{id}")).await,
            ) else {
                status.set("The recording could not be loaded (it may have been deleted).".into());
                return;
            };
            let Some(((cols, rows), events)) = parse(&text) else {
                status.set("This file is not an asciicast v2 recording.".into());
                return;
            };
            let opts: TerminalOptions = js_sys::Object::new().unchecked_into();
            opts.set_cols(cols);
            opts.set_rows(rows);
            opts.set_disable_stdin(true);
            opts.set_scrollback(10_000);
            let term = Rc::new(Terminal::construct(Some(&opts)));
            term.open(el.unchecked_into());
            let events = Rc::new(events);
            // Each play bumps the generation; a stale timer chain stops.
            let generation = Rc::new(RefCell::new(0u32));
            let t = term.clone();
            Effect::new(move |_| {
                play.track();
                let g = {
                    let mut g = generation.borrow_mut();
                    *g += 1;
                    *g
                };
                t.reset();
                t.resize(cols, rows);
                step(
                    t.clone(),
                    events.clone(),
                    0,
                    0.0,
                    g,
                    generation.clone(),
                    speed,
                    status,
                );
            });
        });
    }

    /// Plays event `i` (whose predecessor was at `prev` seconds) and
    /// schedules the next.
    #[allow(clippy::too_many_arguments)]
    fn step(
        term: Rc<Terminal>,
        events: Rc<Vec<Event>>,
        mut i: usize,
        mut prev: f64,
        g: u32,
        generation: Rc<RefCell<u32>>,
        speed: RwSignal<f64>,
        status: RwSignal<String>,
    ) {
        if *generation.borrow() != g {
            return;
        }
        let s = speed.get_untracked();
        loop {
            let Some(ev) = events.get(i) else {
                status.set(format!("Played {} events.", events.len()));
                return;
            };
            let t = match ev {
                Event::Output(t, _) | Event::Resize(t, _, _) => *t,
            };
            let wait = ((t - prev).clamp(0.0, 1.0)) / if s > 0.0 { s } else { f64::INFINITY };
            if wait > 0.004 {
                status.set(format!("Playing… {:.1} s", t));
                let (term, events, generation) = (term.clone(), events.clone(), generation.clone());
                set_timeout(
                    move || {
                        apply(&term, &events[i]);
                        step(term, events, i + 1, t, g, generation, speed, status);
                    },
                    std::time::Duration::from_secs_f64(wait),
                );
                return;
            }
            apply(&term, ev);
            prev = t;
            i += 1;
        }
    }

    fn apply(term: &Terminal, ev: &Event) {
        match ev {
            Event::Output(_, data) => term.write(data),
            Event::Resize(_, c, r) => term.resize(*c, *r),
        }
    }
}
