//! The ops journal feature: its server functions and its dashboard panel.
//!
//! It is also the vertical slice that proves every pipe: an `<ActionForm>`
//! posts to a `#[server]` function, which writes through sea-orm; the list is a
//! `Resource` keyed on the action's version, so it refreshes after each post,
//! and without JavaScript the form post redirects back and the server renders
//! the new list.

use leptos::prelude::*;

use crate::components::Time;
use crate::error::AppError;
use crate::model::journal::{JournalEntry, MAX_NOTE_CHARS};

/// The newest journal notes.
#[server(output = crate::codec::Json)]
pub async fn list_journal() -> Result<Vec<JournalEntry>, AppError> {
    use crate::backend::{backend, caller, respond};
    respond(async { backend()?.journal(&caller(), 20).await }.await)
}

/// Adds a note to the journal.
#[server(output = crate::codec::Json)]
pub async fn post_journal_note(text: String) -> Result<JournalEntry, AppError> {
    use crate::backend::{backend, caller, respond};
    respond(async { backend()?.post_journal(&caller(), text).await }.await)
}

/// The journal panel: a form with a live character counter, and the notes.
#[component]
pub fn JournalPanel() -> impl IntoView {
    let post = ServerAction::<PostJournalNote>::new();
    let notes = Resource::new(move || post.version().get(), |_| list_journal());
    let draft = RwSignal::new(String::new());
    let remaining = move || MAX_NOTE_CHARS as i64 - draft.with(|d| d.trim().chars().count() as i64);

    // A successful post clears the draft; a failed one keeps it for fixing.
    Effect::new(move |_| {
        if let Some(Ok(_)) = post.value().get() {
            draft.set(String::new());
        }
    });

    let error = move || post.value().get().and_then(Result::err);

    view! {
        <section class="panel journal" aria-labelledby="journal-heading">
            <h2 id="journal-heading">"Ops journal"</h2>
            <ActionForm action=post attr:class="journal-form">
                <label for="journal-text">"What did you change, and why?"</label>
                <textarea
                    id="journal-text"
                    name="text"
                    rows="2"
                    required
                    aria-describedby="journal-counter"
                    on:input=move |ev| draft.set(event_target_value(&ev))
                    prop:value=move || draft.get()
                ></textarea>
                <div class="form-row">
                    <span
                        id="journal-counter"
                        class="counter"
                        class:over=move || { remaining() < 0 }
                        aria-live="polite"
                    >
                        {move || format!("{} characters left", remaining())}
                    </span>
                    <button type="submit" disabled=move || post.pending().get()>
                        "Add note"
                    </button>
                </div>
                {move || {
                    error()
                        .map(|e| {
                            view! {
                                <p class="field-error" role="alert">
                                    {e.to_string()}
                                </p>
                            }
                        })
                }}
            </ActionForm>
            <Transition fallback=|| view! { <p class="muted">"Loading notes…"</p> }>
                <ErrorBoundary fallback=|errors| {
                    view! { <crate::components::ErrorList errors/> }
                }>
                    {move || Suspend::new(async move {
                        notes.await.map(|notes| view! { <JournalList notes/> })
                    })}
                </ErrorBoundary>
            </Transition>
        </section>
    }
}

#[component]
fn JournalList(notes: Vec<JournalEntry>) -> impl IntoView {
    if notes.is_empty() {
        return view! { <p class="muted">"No notes yet."</p> }.into_any();
    }
    view! {
        <ol class="journal-list">
            {notes
                .into_iter()
                .map(|n| {
                    view! {
                        <li>
                            <p class="note-text">{n.text}</p>
                            <p class="note-meta">
                                {n.author} " · "
                                <Time at=Some(n.created_at) short=true />
                            </p>
                        </li>
                    }
                })
                .collect_view()}
        </ol>
    }
    .into_any()
}
