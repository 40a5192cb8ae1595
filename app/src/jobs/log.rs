//! The log viewer. The server renders the last lines of the log at first
//! load (readable with JavaScript off); once hydrated the viewer becomes
//! virtual: the DOM holds only the rows in view (plus a margin), rows are
//! fixed-height, and lines not yet in the browser are fetched in pages from
//! the server as the user scrolls — a 1,000,000-line log stays responsive.
//! It follows new lines (auto-scroll) until the user scrolls up; the Follow
//! pill re-attaches. Line numbers are seqs and link to `#L<seq>`; find asks
//! the server for matching lines and jumps between them.

use std::collections::BTreeMap;

use leptos::html;
use leptos::prelude::*;

use crate::ansi;
use crate::jobs::rows::{Row, Rows};
use crate::model::job::{human_bytes, Gap, LogLine, LogStream};

/// Height of one row in pixels (the stylesheet sets the same).
pub const LINE_H: f64 = 20.0;
/// Rows rendered above and below the visible ones.
const OVERSCAN: i64 = 40;
/// Browsers cap element heights; beyond this the scroll space is scaled.
const MAX_SPACER: f64 = 15_000_000.0;
/// Lines kept in the browser at most; far ones are dropped.
const CACHE_MAX: usize = 40_000;
/// Lines fetched per request.
const PAGE: u64 = 1000;

/// What the browser knows of a job's log. Shared by the job page (which
/// feeds it from the event stream) and the viewer.
#[derive(Clone, Copy)]
pub struct LogModel {
    pub job_id: i64,
    pub lines: RwSignal<BTreeMap<i64, LogLine>>,
    /// The highest seq the log has (from the job and the stream).
    pub last_seq: RwSignal<i64>,
    pub gap: RwSignal<Option<Gap>>,
    /// The last seq received in order from the stream (resume point).
    pub received: StoredValue<i64>,
}

impl LogModel {
    pub fn new(job_id: i64, initial: Vec<LogLine>, last_seq: i64, gap: Option<Gap>) -> LogModel {
        let received = initial.last().map_or(0, |l| l.seq);
        LogModel {
            job_id,
            lines: RwSignal::new(initial.into_iter().map(|l| (l.seq, l)).collect()),
            last_seq: RwSignal::new(last_seq),
            gap: RwSignal::new(gap),
            received: StoredValue::new(received),
        }
    }

    /// Adds a line from the stream; false if it was not the next one.
    pub fn push(&self, line: LogLine) -> bool {
        if line.seq <= self.received.get_value() {
            return false;
        }
        self.received.set_value(line.seq);
        let seq = line.seq;
        self.lines.update(|m| {
            m.insert(seq, line);
        });
        self.last_seq.update(|l| *l = (*l).max(seq));
        true
    }

    fn rows(&self) -> Rows {
        Rows {
            last_seq: self.last_seq.get(),
            gap: self.gap.get(),
        }
    }
}

/// One rendered row.
#[component]
fn LineRow(row: Row, line: Option<LogLine>, highlighted: bool, matched: bool) -> impl IntoView {
    match row {
        Row::Gap(g) => view! {
            <div class="log-line gap" role="note">
                <span class="ln"></span>
                <span class="lt">
                    {format!("… lines {}–{} ({}) omitted: the log reached its size limit …", g.from, g.to, human_bytes(g.bytes.max(0) as u64))}
                </span>
            </div>
        }
        .into_any(),
        Row::Line(seq) => {
            let (class, text) = match &line {
                Some(l) => (
                    match l.stream {
                        LogStream::Stdout => "log-line",
                        LogStream::Stderr => "log-line stderr",
                        LogStream::System => "log-line system",
                    },
                    Some(l.text.clone()),
                ),
                None => ("log-line pending", None),
            };
            view! {
                <div class=class class:hl=highlighted class:match=matched data-seq=seq>
                    <a class="ln" href=format!("#L{seq}") id=format!("L{seq}") tabindex="-1">
                        {seq}
                    </a>
                    <span class="lt">{text.map(render_text)}</span>
                </div>
            }
            .into_any()
        }
    }
}

/// A line's text with its ANSI colours (always as text nodes).
fn render_text(text: String) -> AnyView {
    if !text.contains('\u{1b}') && !text.chars().any(|c| c.is_control() && c != '\t') {
        return text.into_any();
    }
    ansi::parse(&text)
        .into_iter()
        .map(|span| {
            if span.style.is_plain() {
                span.text.into_any()
            } else {
                let class = span.style.classes();
                let style = span.style.inline();
                view! { <span class=class style=style>{span.text}</span> }.into_any()
            }
        })
        .collect_view()
        .into_any()
}

/// The viewer.
#[component]
pub fn LogViewer(model: LogModel, #[prop(into)] running: Signal<bool>) -> impl IntoView {
    let hydrated = RwSignal::new(false);
    Effect::new(move |_| hydrated.set(true));
    let job_id = model.job_id;
    let download = format!("/api/jobs/{job_id}/log?format=text");

    view! {
        <section class="log-section" aria-label="Log">
            {move || {
                if hydrated.get() {
                    view! { <VirtualLog model running /> }.into_any()
                } else {
                    view! { <StaticLog model /> }.into_any()
                }
            }}
            <p class="log-foot">
                <a href=download download>"Download the raw log"</a>
            </p>
        </section>
    }
}

/// What the server renders: the lines it sent, as a plain list.
#[component]
fn StaticLog(model: LogModel) -> impl IntoView {
    let lines: Vec<LogLine> = model.lines.get_untracked().into_values().collect();
    let last = model.last_seq.get_untracked();
    let shown = lines.len() as i64;
    view! {
        <div class="log-static" role="log" aria-label="Job log" tabindex="0">
            {lines
                .into_iter()
                .map(|l| view! { <LineRow row=Row::Line(l.seq) line=Some(l) highlighted=false matched=false /> })
                .collect_view()}
        </div>
        {(last > shown).then(|| view! {
            <p class="muted">{format!("Showing the last {shown} of {last} lines. Download the full log below.")}</p>
        })}
    }
}

#[component]
fn VirtualLog(model: LogModel, running: Signal<bool>) -> impl IntoView {
    let viewport = NodeRef::<html::Div>::new();
    let scroll_top = RwSignal::new(0.0f64);
    let height = RwSignal::new(600.0f64);
    let following = RwSignal::new(true);
    let highlight = RwSignal::new(None::<i64>);
    let fetching = RwSignal::new(false);
    let query = RwSignal::new(String::new());
    let matches = RwSignal::new(Vec::<i64>::new());
    let match_at = RwSignal::new(0usize);
    let searched = RwSignal::new(false);

    let rows = move || model.rows();
    let px_per_row = move || {
        let total = rows().total().max(1) as f64;
        if total * LINE_H > MAX_SPACER {
            MAX_SPACER / total
        } else {
            LINE_H
        }
    };
    let spacer_h = move || rows().total() as f64 * px_per_row();
    // The first row in view.
    let in_view = move || (height.get() / LINE_H).ceil() as i64 + 1;
    // N.B.: when the scroll space is scaled, the scroll position maps to a
    // fraction of the rows, so the bottom of the scroll shows the last page.
    let scaled_rows = move || (rows().total() - (height.get() / LINE_H).floor() as i64).max(0);
    let max_scroll = move || (spacer_h() - height.get()).max(1.0);
    let first_row = move || {
        if px_per_row() < LINE_H {
            let frac = (scroll_top.get() / max_scroll()).clamp(0.0, 1.0);
            (frac * scaled_rows() as f64).floor() as i64
        } else {
            (scroll_top.get() / LINE_H).floor() as i64
        }
    };
    let range = move || {
        let total = rows().total();
        let scaled = px_per_row() < LINE_H;
        let start = if scaled {
            first_row()
        } else {
            (first_row() - OVERSCAN).max(0)
        };
        let end = (first_row() + in_view() + OVERSCAN).min(total);
        (start, end.max(start))
    };
    let block_top = move || {
        let (start, _) = range();
        if px_per_row() < LINE_H {
            scroll_top.get()
        } else {
            start as f64 * LINE_H
        }
    };

    let scroll_to_row = move |row: i64| {
        if let Some(el) = viewport.get_untracked() {
            // Put the row a third of the way down the view.
            let row = (row - in_view() / 3).max(0);
            let top = if px_per_row() < LINE_H {
                row as f64 / scaled_rows().max(1) as f64 * max_scroll()
            } else {
                row as f64 * LINE_H
            };
            el.set_scroll_top(top as i32);
            scroll_top.set(top);
        }
    };
    let jump_to_seq = move |seq: i64| {
        following.set(false);
        highlight.set(Some(seq));
        scroll_to_row(model.rows().row_of(seq));
    };
    let to_bottom = move || {
        if let Some(el) = viewport.get_untracked() {
            let top = el.scroll_height() - el.client_height();
            el.set_scroll_top(top.max(0));
            scroll_top.set(top.max(0) as f64);
        }
    };

    // Measure the viewport and follow window resizes.
    Effect::new(move |_| {
        if let Some(el) = viewport.get() {
            height.set(el.client_height() as f64);
            let on_resize = window_event_listener(leptos::ev::resize, move |_| {
                if let Some(el) = viewport.get_untracked() {
                    height.set(el.client_height() as f64);
                }
            });
            on_cleanup(move || on_resize.remove());
            // A `#L123` in the address jumps there; otherwise start at the end.
            let hash = window().location().hash().unwrap_or_default();
            match hash.strip_prefix("#L").and_then(|s| s.parse::<i64>().ok()) {
                Some(seq) => jump_to_seq(seq),
                None => request_animation_frame(to_bottom),
            }
        }
    });
    // Line links (`#L…`) jump within the page.
    let on_hash = window_event_listener(leptos::ev::hashchange, move |_| {
        let hash = window().location().hash().unwrap_or_default();
        if let Some(seq) = hash.strip_prefix("#L").and_then(|s| s.parse::<i64>().ok()) {
            jump_to_seq(seq);
        }
    });
    on_cleanup(move || on_hash.remove());

    // Follow new lines. The frame checks again: a scroll up between the
    // line's arrival and the frame stops following, and the frame must not
    // pull the view back down (its own scroll event would then turn
    // following on again).
    Effect::new(move |_| {
        model.last_seq.track();
        model.lines.track();
        if following.get_untracked() {
            request_animation_frame(move || {
                if following.get_untracked() {
                    to_bottom();
                }
            });
        }
    });

    // Fetch the lines in view that the browser does not have.
    Effect::new(move |_| {
        let (start, end) = range();
        let r = rows();
        let missing = (start..end).find_map(|row| match r.row(row) {
            Row::Line(seq) if !model.lines.with(|m| m.contains_key(&seq)) => Some(seq),
            _ => None,
        });
        let Some(first_missing) = missing else { return };
        if fetching.get_untracked() {
            return;
        }
        fetching.set(true);
        let span = ((end - start) as u64).max(PAGE);
        leptos::task::spawn_local(async move {
            if let Ok(page) = crate::jobs::fetch_log(model.job_id, first_missing - 1, span).await {
                model.lines.update(|m| {
                    for l in page.lines {
                        m.insert(l.seq, l);
                    }
                    // Keep the browser's memory bounded: drop lines far away.
                    if m.len() > CACHE_MAX {
                        let keep_from = first_missing - (CACHE_MAX as i64) / 2;
                        let keep_to = first_missing + (CACHE_MAX as i64) / 2;
                        let last = model.last_seq.get_untracked();
                        m.retain(|s, _| (*s >= keep_from && *s <= keep_to) || *s > last - 2000);
                    }
                });
                if model.gap.get_untracked().is_none() {
                    model.gap.set(page.omitted);
                }
            }
            fetching.set(false);
        });
    });

    let on_scroll = move |_| {
        if let Some(el) = viewport.get_untracked() {
            let top = el.scroll_top() as f64;
            let before = scroll_top.get_untracked();
            scroll_top.set(top);
            let at_bottom =
                top + el.client_height() as f64 >= el.scroll_height() as f64 - LINE_H * 1.5;
            // N.B.: a scroll event is dispatched a frame after its scroll
            // (later still in a busy or background tab), and lines that
            // arrived meanwhile leave the position the view itself moved
            // to short of the bottom: only a move up stops following.
            let moved_up = top < before - 1.0;
            following.set(at_bottom || (following.get_untracked() && !moved_up));
        }
    };

    let run_search = move || {
        let q = query.get_untracked();
        if q.trim().is_empty() {
            matches.set(Vec::new());
            searched.set(false);
            return;
        }
        leptos::task::spawn_local(async move {
            let found = crate::jobs::search_log(model.job_id, q)
                .await
                .unwrap_or_default();
            searched.set(true);
            match_at.set(0);
            if let Some(first) = found.first() {
                jump_to_seq(*first);
            }
            matches.set(found);
        });
    };
    let step = move |delta: i64| {
        let n = matches.with_untracked(Vec::len) as i64;
        if n == 0 {
            return;
        }
        let i = (match_at.get_untracked() as i64 + delta).rem_euclid(n) as usize;
        match_at.set(i);
        if let Some(seq) = matches.with_untracked(|m| m.get(i).copied()) {
            jump_to_seq(seq);
        }
    };

    let visible = move || {
        let (start, end) = range();
        let r = rows();
        let hl = highlight.get();
        let found = matches.get();
        model.lines.with(|m| {
            (start..end)
                .map(|row| {
                    let kind = r.row(row);
                    let line = match kind {
                        Row::Line(seq) => m.get(&seq).cloned(),
                        Row::Gap(_) => None,
                    };
                    let seq = match kind {
                        Row::Line(s) => s,
                        Row::Gap(g) => -g.from,
                    };
                    let matched = found.binary_search(&seq).is_ok();
                    (seq, line, hl == Some(seq), matched, kind)
                })
                .collect::<Vec<_>>()
        })
    };

    view! {
        <div class="log-toolbar">
            <form
                class="log-find"
                role="search"
                on:submit=move |ev| {
                    ev.prevent_default();
                    run_search();
                }
            >
                <label for="log-find" class="visually-hidden">"Find in log"</label>
                <input
                    id="log-find"
                    type="search"
                    placeholder="Find in log"
                    prop:value=move || query.get()
                    on:input=move |ev| query.set(event_target_value(&ev))
                />
                <button type="submit" class="secondary small">"Find"</button>
                <button type="button" class="secondary small" aria-label="Previous match" on:click=move |_| step(-1)>
                    "↑"
                </button>
                <button type="button" class="secondary small" aria-label="Next match" on:click=move |_| step(1)>
                    "↓"
                </button>
                <span class="muted find-count" aria-live="polite">
                    {move || {
                        let n = matches.with(Vec::len);
                        if !searched.get() {
                            String::new()
                        } else if n == 0 {
                            "no matches".to_string()
                        } else {
                            format!("{} of {}{}", match_at.get() + 1, n, if n >= 1000 { "+" } else { "" })
                        }
                    }}
                </span>
            </form>
            <span class="muted line-count">{move || format!("{} lines", model.last_seq.get())}</span>
            {move || {
                (!following.get())
                    .then(|| {
                        view! {
                            <button
                                type="button"
                                class="follow-pill"
                                on:click=move |_| {
                                    following.set(true);
                                    highlight.set(None);
                                    to_bottom();
                                }
                            >
                                {move || if running.get() { "Follow ↓" } else { "Jump to end ↓" }}
                            </button>
                        }
                    })
            }}
        </div>
        <div
            class="log-viewport"
            node_ref=viewport
            on:scroll=on_scroll
            tabindex="0"
            role="log"
            aria-label="Job log"
            style=move || {
                // A short log gets a short box; a long one scrolls in 65vh.
                let rows_h = rows().total() as f64 * LINE_H + 24.0;
                format!("height: min(65vh, {}px)", rows_h.max(160.0))
            }
        >
            <div class="log-spacer" style=move || format!("height: {}px", spacer_h())>
                <div class="log-rows" style=move || format!("transform: translateY({}px)", block_top())>
                    <For
                        each=visible
                        key=|(seq, line, hl, matched, _)| (*seq, line.is_some(), *hl, *matched)
                        let:item
                    >
                        <LineRow row=item.4 line=item.1 highlighted=item.2 matched=item.3 />
                    </For>
                </div>
            </div>
        </div>
    }
}
