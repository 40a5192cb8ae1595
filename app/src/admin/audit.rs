//! `/admin/audit`: who did what, newest first, filtered by user and action,
//! paged with an `Older entries` cursor. The filter is a GET form, so it
//! works without JavaScript and every view has a shareable URL.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::Form;
use leptos_router::hooks::use_query_map;

use crate::auth::RequireAdmin;
use crate::components::{ErrorList, Time};
use crate::error::AppError;
use crate::model::user::{AuditPage, AuditQuery};

/// Actions offered in the filter's suggestions.
const KNOWN_ACTIONS: &[&str] = &[
    "login",
    "login.success",
    "login.failure",
    "logout",
    "user",
    "token",
    "job.launch",
    "job.cancel",
    "terminal",
];

/// A page of the audit log.
#[server(output = crate::codec::Json)]
pub async fn audit_log(query: AuditQuery) -> Result<AuditPage, AppError> {
    use crate::backend::{backend, caller, respond};
    respond(async { backend()?.audit(&caller(), query).await }.await)
}

#[component]
pub fn AuditPageView() -> impl IntoView {
    view! {
        <Title text="Audit log" />
        <RequireAdmin>
            <Audit />
        </RequireAdmin>
    }
}

#[component]
fn Audit() -> impl IntoView {
    let query = use_query_map();
    let filter = move || {
        query.with(|q| AuditQuery {
            actor: q.get("actor").filter(|s| !s.is_empty()),
            action: q.get("action").filter(|s| !s.is_empty()),
            before: q.get("before").and_then(|b| b.parse().ok()),
            limit: Some(50),
        })
    };
    let page = Resource::new(filter, audit_log);

    view! {
        <h1>"Audit log"</h1>
        <Form method="GET" action="/admin/audit" attr:class="row-form filters">
            <label for="audit-actor">"User"</label>
            <input id="audit-actor" name="actor" type="text" value=move || filter().actor.unwrap_or_default() />
            <label for="audit-action">"Action"</label>
            <input
                id="audit-action"
                name="action"
                type="text"
                list="audit-actions"
                value=move || filter().action.unwrap_or_default()
            />
            <datalist id="audit-actions">
                {KNOWN_ACTIONS.iter().map(|a| view! { <option value=*a></option> }).collect_view()}
            </datalist>
            <button type="submit">"Filter"</button>
            <a href="/admin/audit" class="button secondary">"Clear"</a>
        </Form>
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            <ErrorBoundary fallback=|errors| view! { <ErrorList errors /> }>
                {move || Suspend::new(async move {
                    page.await.map(|p| view! { <AuditTable page=p filter=filter() /> })
                })}
            </ErrorBoundary>
        </Transition>
    }
}

#[component]
fn AuditTable(page: AuditPage, filter: AuditQuery) -> impl IntoView {
    let older = page.next_before.map(|before| {
        let mut url = format!("/admin/audit?before={before}");
        if let Some(a) = &filter.actor {
            url.push_str(&format!("&actor={}", encode(a)));
        }
        if let Some(a) = &filter.action {
            url.push_str(&format!("&action={}", encode(a)));
        }
        url
    });
    view! {
        {if page.entries.is_empty() {
            view! { <p class="muted">"No entries match."</p> }.into_any()
        } else {
            view! {
                <div class="table-wrap">
                    <table class="data audit">
                        <thead>
                            <tr>
                                <th scope="col">"When"</th>
                                <th scope="col">"User"</th>
                                <th scope="col">"Action"</th>
                                <th scope="col">"Subject"</th>
                                <th scope="col">"Address"</th>
                                <th scope="col">"Detail"</th>
                            </tr>
                        </thead>
                        <tbody>
                            {page
                                .entries
                                .into_iter()
                                .map(|e| {
                                    let replay = replay_link(&e.action, e.detail.as_ref());
                                    view! {
                                        <tr>
                                            <td>
                                                <Time at=Some(e.at) />
                                            </td>
                                            <td>{e.actor}</td>
                                            <td>
                                                <code>{e.action}</code>
                                            </td>
                                            <td>{e.subject}</td>
                                            <td>{e.ip.unwrap_or_default()}</td>
                                            <td class="detail">
                                                {e.detail.as_ref().map(|d| d.to_string()).unwrap_or_default()}
                                                {replay}
                                            </td>
                                        </tr>
                                    }
                                })
                                .collect_view()}
                        </tbody>
                    </table>
                </div>
            }
                .into_any()
        }}
        {older.map(|href| view! { <p><a href=href class="button secondary">"Older entries"</a></p> })}
    }
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A finished terminal session's recording, if it was recorded.
fn replay_link(action: &str, detail: Option<&serde_json::Value>) -> Option<impl IntoView> {
    let id = detail?.get("recording")?.as_str()?.to_string();
    (action == "terminal.end").then(|| {
        view! {
            " "
            <a href=format!("/admin/recordings/{id}") rel="external" class="replay">"Replay"</a>
        }
    })
}
