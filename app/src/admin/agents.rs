//! `/admin/agents`: enrol an agent (its token shown once), see each one
//! live (online, unreachable, offline or revoked; version, hostname, last
//! heartbeat, connected since, running jobs, targets) and revoke one.

use leptos::prelude::*;
use leptos_meta::Title;

use crate::auth::RequireAdmin;
use crate::components::ErrorList;
use crate::error::AppError;
use crate::jobs::live::Feed;
use crate::jobs::widgets::Time;
use crate::model::agent::{AgentInfo, AgentStatus, NewAgent};
use crate::model::event::FeedEvent;

/// Every enrolled agent.
#[server(output = crate::codec::Json)]
pub async fn list_agents() -> Result<Vec<AgentInfo>, AppError> {
    use crate::backend::{backend, caller, respond};
    respond(async { backend()?.agents(&caller()).await }.await)
}

/// Enrols an agent; its token comes back once.
#[server(output = crate::codec::Json)]
pub async fn add_agent(name: String) -> Result<NewAgent, AppError> {
    use crate::backend::{backend, caller, respond};
    respond(
        async {
            backend()?
                .add_agent(&caller(), name.trim().to_string())
                .await
        }
        .await,
    )
}

/// Revokes an agent's token; it is disconnected.
#[server(output = crate::codec::Json)]
pub async fn revoke_agent(name: String) -> Result<(), AppError> {
    use crate::backend::{backend, caller, respond};
    respond(async { backend()?.revoke_agent(&caller(), name).await }.await)
}

/// The pill of an agent's status.
#[component]
pub fn AgentPill(status: AgentStatus) -> impl IntoView {
    let class = match status {
        AgentStatus::Online => "pill ok",
        AgentStatus::Unreachable => "pill warn",
        AgentStatus::Offline | AgentStatus::Revoked => "pill bad",
    };
    view! { <span class=class data-agent-status=status.as_str()>{status.as_str()}</span> }
}

#[component]
pub fn AgentsPage() -> impl IntoView {
    view! {
        <Title text="Agents" />
        <RequireAdmin>
            <Agents />
        </RequireAdmin>
    }
}

#[component]
fn Agents() -> impl IntoView {
    let add = ServerAction::<AddAgent>::new();
    let revoke = ServerAction::<RevokeAgent>::new();
    let agents = Resource::new(
        move || (add.version().get(), revoke.version().get()),
        |_| list_agents(),
    );
    view! {
        <h1>"Agents"</h1>
        <section class="panel" aria-labelledby="add-agent-heading">
            <h2 id="add-agent-heading">"Enrol an agent"</h2>
            <p class="muted">
                "An agent runs the jobs of the targets that name it (" <code>"kind = \"agent\""</code> ", "
                <code>"agent = \"NAME\""</code> ") on its own host, dialling out to this server. "
                "See docs/agents.md."
            </p>
            <ActionForm action=add attr:class="row-form">
                <label for="agent-name">"Name"</label>
                <input id="agent-name" name="name" type="text" autocapitalize="none" placeholder="web-3" required />
                <button type="submit">"Enrol"</button>
            </ActionForm>
            {move || match add.value().get() {
                Some(Ok(NewAgent { info, token })) => view! {
                    <div class="callout ok" role="status">
                        <p>
                            "Agent " <strong>{info.name.clone()}</strong>
                            " enrolled. Copy its token now: it is not shown again. On its host:"
                        </p>
                        <code class="secret" data-testid="new-agent-token">{token}</code>
                        <pre class="command">
                            "opsdeck agent --server URL --token-file FILE --name " {info.name}
                        </pre>
                    </div>
                }.into_any(),
                Some(Err(e)) => view! { <p class="field-error" role="alert">{e.to_string()}</p> }.into_any(),
                None => ().into_any(),
            }}
        </section>
        <section class="panel" aria-labelledby="agents-heading">
            <h2 id="agents-heading">"Enrolled agents"</h2>
            <Transition fallback=|| view! { <p class="muted">"Loading agents…"</p> }>
                <ErrorBoundary fallback=|errors| view! { <ErrorList errors /> }>
                    {move || Suspend::new(async move {
                        agents.await.map(|list| view! { <AgentTable list revoke /> })
                    })}
                </ErrorBoundary>
            </Transition>
            {move || revoke.value().get().and_then(Result::err).map(|e| {
                view! { <p class="field-error" role="alert">{e.to_string()}</p> }
            })}
        </section>
    }
}

#[component]
fn AgentTable(list: Vec<AgentInfo>, revoke: ServerAction<RevokeAgent>) -> impl IntoView {
    if list.is_empty() {
        return view! { <p class="muted">"No agent is enrolled yet."</p> }.into_any();
    }
    // Live: each agent's status as the feed tells it.
    let rows = RwSignal::new(list);
    Feed::subscribe(move |msg| match msg {
        FeedEvent::Agent(a) => {
            rows.update(|rows| match rows.iter_mut().find(|r| r.name == a.name) {
                Some(row) => *row = (**a).clone(),
                None => rows.push((**a).clone()),
            })
        }
        // N.B.: the feed carries only what happens after it connects, and
        // it connects after this list was read (here, right after an
        // enrolment: the agent started with the new token often dials in
        // first). Its `online` then came over no feed; without this read
        // the row said "offline" until the page was reloaded.
        FeedEvent::Resync => {
            #[cfg(feature = "hydrate")]
            leptos::task::spawn_local(async move {
                if let Ok(list) = list_agents().await {
                    rows.try_set(list);
                }
            });
        }
        _ => {}
    });
    view! {
        <div class="table-wrap">
            <table class="data agents">
                <thead>
                    <tr>
                        <th scope="col">"Agent"</th>
                        <th scope="col">"Status"</th>
                        <th scope="col">"Host"</th>
                        <th scope="col">"Version"</th>
                        <th scope="col">"Connected since"</th>
                        <th scope="col">"Last heartbeat"</th>
                        <th scope="col">"Running jobs"</th>
                        <th scope="col">"Targets"</th>
                        <th scope="col"><span class="visually-hidden">"Actions"</span></th>
                    </tr>
                </thead>
                <tbody>
                    <For each=move || rows.get() key=|a| (a.name.clone(), a.status, a.last_heartbeat, a.running_jobs) let:a>
                        <AgentRow a revoke />
                    </For>
                </tbody>
            </table>
        </div>
    }
    .into_any()
}

#[component]
fn AgentRow(a: AgentInfo, revoke: ServerAction<RevokeAgent>) -> impl IntoView {
    let name = a.name.clone();
    let revoked = a.status == AgentStatus::Revoked;
    let confirm_text =
        format!("Revoke agent {name}? It is disconnected and can no longer connect.");
    let hidden = name.clone();
    view! {
        <tr data-agent=name.clone()>
            <th scope="row">{name.clone()}</th>
            <td><AgentPill status=a.status /></td>
            <td>{a.hostname.unwrap_or_else(|| "—".into())}</td>
            <td>{a.version.unwrap_or_else(|| "—".into())}</td>
            <td><Time at=a.connected_since short=true /></td>
            <td><Time at=a.last_heartbeat short=true /></td>
            <td>{a.running_jobs}</td>
            <td>{a.targets.join(", ")}</td>
            <td>
                {(!revoked).then(|| view! {
                    <ActionForm action=revoke attr:class="inline">
                        <input type="hidden" name="name" value=hidden.clone() />
                        <button
                            type="submit"
                            class="danger small"
                            on:click=move |ev| {
                                if !crate::jobs::page::confirm(&confirm_text) {
                                    ev.prevent_default();
                                }
                            }
                        >
                            "Revoke"
                        </button>
                    </ActionForm>
                })}
            </td>
        </tr>
    }
}
