//! `/admin/webhooks`: each `[[notify]]` hook (where it posts, which events,
//! its filters) with its delivery log: every event it was sent, delivered,
//! still being retried (when next, why the last try failed) or given up.

use leptos::prelude::*;
use leptos_meta::Title;

use crate::auth::RequireAdmin;
use crate::components::ErrorList;
use crate::error::AppError;
use crate::jobs::widgets::Time;
use crate::model::webhook::{DeliveryInfo, DeliveryState, HookInfo};

/// Every configured hook with its latest deliveries.
#[server(output = crate::codec::Json)]
pub async fn list_webhooks() -> Result<Vec<HookInfo>, AppError> {
    use crate::backend::{backend, caller, respond};
    respond(async { backend()?.webhooks(&caller()).await }.await)
}

#[component]
pub fn WebhooksPage() -> impl IntoView {
    view! {
        <Title text="Webhooks" />
        <RequireAdmin>
            <Webhooks />
        </RequireAdmin>
    }
}

#[component]
fn Webhooks() -> impl IntoView {
    let hooks = Resource::new(|| (), |_| list_webhooks());
    view! {
        <h1>"Webhooks"</h1>
        <p class="muted">
            "Each " <code>"[[notify]]"</code> " hook of the configuration and what it was sent. "
            "A delivery is retried with backoff until the receiver answers 2xx (docs/automation.md). "
            "Reload the page for the latest."
        </p>
        <Transition fallback=|| view! { <p class="muted">"Loading hooks…"</p> }>
            <ErrorBoundary fallback=|errors| view! { <ErrorList errors /> }>
                {move || Suspend::new(async move {
                    hooks.await.map(|list| {
                        if list.is_empty() {
                            view! {
                                <p class="muted">
                                    "No hook is configured: add a " <code>"[[notify]]"</code>
                                    " section to the configuration."
                                </p>
                            }
                            .into_any()
                        } else {
                            list.into_iter()
                                .map(|h| view! { <Hook h /> })
                                .collect_view()
                                .into_any()
                        }
                    })
                })}
            </ErrorBoundary>
        </Transition>
    }
}

#[component]
fn Hook(h: HookInfo) -> impl IntoView {
    let heading = format!("hook-{}", h.id);
    let labelled_by = heading.clone();
    let filters = [
        (!h.templates.is_empty()).then(|| format!("templates {}", h.templates.join(", "))),
        (!h.targets.is_empty()).then(|| format!("targets {}", h.targets.join(", "))),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>();
    let empty = h.deliveries.is_empty();
    view! {
        <section class="panel" aria-labelledby=labelled_by data-hook=h.id.clone()>
            <h2 id=heading>{h.id.clone()}</h2>
            <p>
                "Posts to " <code>{h.url.clone()}</code> ": " {h.events.join(", ")}
                {(!filters.is_empty()).then(|| format!(" (only {})", filters.join("; ")))}
            </p>
            {if empty {
                view! { <p class="muted">"Nothing was sent to it yet."</p> }.into_any()
            } else {
                view! {
                    <div class="table-wrap">
                        <table class="data deliveries">
                            <thead>
                                <tr>
                                    <th scope="col">"Event"</th>
                                    <th scope="col">"Event id"</th>
                                    <th scope="col">"Raised"</th>
                                    <th scope="col">"State"</th>
                                    <th scope="col">"Tries"</th>
                                    <th scope="col">"Last try"</th>
                                    <th scope="col">"Last answer"</th>
                                    <th scope="col">"Next try"</th>
                                </tr>
                            </thead>
                            <tbody>
                                {h.deliveries.into_iter().map(|d| view! { <Delivery d /> }).collect_view()}
                            </tbody>
                        </table>
                    </div>
                }
                .into_any()
            }}
        </section>
    }
}

#[component]
fn Delivery(d: DeliveryInfo) -> impl IntoView {
    let class = match d.state {
        DeliveryState::Delivered => "pill ok",
        DeliveryState::Pending => "pill warn",
        DeliveryState::Failed => "pill bad",
    };
    let answer = match (d.last_status, d.last_error) {
        (_, Some(e)) => e,
        (Some(s), None) => s.to_string(),
        (None, None) => "—".into(),
    };
    view! {
        <tr data-delivery=d.id.to_string()>
            <td>{d.kind}</td>
            <td><code>{d.event_id}</code></td>
            <td><Time at=Some(d.created_at) short=true /></td>
            <td><span class=class data-delivery-state=d.state.as_str()>{d.state.as_str()}</span></td>
            <td>{d.attempts}</td>
            <td><Time at=d.last_at short=true /></td>
            <td>{answer}</td>
            <td><Time at=d.next_at short=true /></td>
        </tr>
    }
}
