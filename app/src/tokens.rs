//! API tokens: server functions and the pieces both the account page and the
//! admin page use to list, create and revoke them.

use leptos::prelude::*;

use crate::components::Time;
use crate::error::AppError;
use crate::model::user::{NewToken, TokenInfo};

/// The caller's tokens, or (admins, `all`) everyone's.
#[server(output = crate::codec::Json)]
pub async fn list_tokens(all: bool) -> Result<Vec<TokenInfo>, AppError> {
    use crate::backend::{backend, caller, respond};
    respond(async { backend()?.tokens(&caller(), all).await }.await)
}

/// Creates a token for the caller, or (admins) for `username`.
#[server(output = crate::codec::Json)]
pub async fn create_token(username: Option<String>, label: String) -> Result<NewToken, AppError> {
    use crate::backend::{backend, caller, respond};
    let username = username.filter(|u| !u.is_empty());
    respond(async { backend()?.create_token(&caller(), username, label).await }.await)
}

/// Revokes a token.
#[server(output = crate::codec::Json)]
pub async fn revoke_token(id: i64) -> Result<TokenInfo, AppError> {
    use crate::backend::{backend, caller, respond};
    respond(async { backend()?.revoke_token(&caller(), id).await }.await)
}

/// The one time a new token's secret is shown.
#[component]
pub fn NewTokenNotice(action: ServerAction<CreateToken>) -> impl IntoView {
    move || match action.value().get() {
        Some(Ok(NewToken { info, token })) => view! {
            <div class="callout ok" role="status">
                <p>
                    "Token “" {info.label} "” for " <strong>{info.username}</strong>
                    " created. Copy it now: it is not shown again."
                </p>
                <code class="secret" data-testid="new-token">{token}</code>
            </div>
        }
        .into_any(),
        Some(Err(e)) => {
            view! { <p class="field-error" role="alert">{e.to_string()}</p> }.into_any()
        }
        None => ().into_any(),
    }
}

/// A table of tokens with a Revoke button for the live ones.
#[component]
pub fn TokenTable(
    tokens: Vec<TokenInfo>,
    revoke: ServerAction<RevokeToken>,
    show_user: bool,
) -> impl IntoView {
    if tokens.is_empty() {
        return view! { <p class="muted">"No tokens yet."</p> }.into_any();
    }
    view! {
        <div class="table-wrap">
            <table class="data">
                <thead>
                    <tr>
                        {show_user.then(|| view! { <th scope="col">"User"</th> })}
                        <th scope="col">"Label"</th>
                        <th scope="col">"Created"</th>
                        <th scope="col">"Last used"</th>
                        <th scope="col">"Status"</th>
                        <th scope="col">
                            <span class="visually-hidden">"Actions"</span>
                        </th>
                    </tr>
                </thead>
                <tbody>
                    {tokens
                        .into_iter()
                        .map(|t| {
                            let live = t.revoked_at.is_none();
                            view! {
                                <tr>
                                    {show_user.then(|| view! { <td>{t.username.clone()}</td> })}
                                    <td>{t.label.clone()}</td>
                                    <td><Time at=Some(t.created_at) short=true /></td>
                                    <td>
                                        {match t.last_used_at {
                                            Some(at) => view! { <Time at=Some(at) short=true /> }.into_any(),
                                            None => "never".into_any(),
                                        }}
                                    </td>
                                    <td>
                                        {match t.revoked_at {
                                            Some(at) => view! { "revoked " <Time at=Some(at) short=true /> }.into_any(),
                                            None => "active".into_any(),
                                        }}
                                    </td>
                                    <td>
                                        {live
                                            .then(|| {
                                                view! {
                                                    <ActionForm action=revoke attr:class="inline">
                                                        <input type="hidden" name="id" value=t.id />
                                                        <button
                                                            type="submit"
                                                            class="danger small"
                                                            aria-label=format!("Revoke token {}", t.label)
                                                        >
                                                            "Revoke"
                                                        </button>
                                                    </ActionForm>
                                                }
                                            })}
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
}
