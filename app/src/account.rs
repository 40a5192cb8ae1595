//! `/account`: the signed-in user's own password and API tokens.

use leptos::prelude::*;
use leptos_meta::Title;

use crate::auth::use_auth;
use crate::components::ErrorList;
use crate::error::AppError;
use crate::tokens::{list_tokens, CreateToken, NewTokenNotice, RevokeToken, TokenTable};

/// Changes the caller's own password.
#[server(output = crate::codec::Json)]
pub async fn change_password(current: String, password: String) -> Result<(), AppError> {
    use crate::backend::{backend, caller, respond};
    respond(
        async {
            backend()?
                .change_own_password(&caller(), current, password)
                .await
        }
        .await,
    )
}

#[component]
pub fn AccountPage() -> impl IntoView {
    let auth = use_auth();
    let change = ServerAction::<ChangePassword>::new();
    let create = ServerAction::<CreateToken>::new();
    let revoke = ServerAction::<RevokeToken>::new();
    let tokens = Resource::new(
        move || (create.version().get(), revoke.version().get()),
        |_| list_tokens(false),
    );

    view! {
        <Title text="Your account" />
        <h1>"Your account"</h1>
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                auth.me
                    .await
                    .map(|me| {
                        me.map(|u| {
                            view! {
                                <p>
                                    "Signed in as " <strong>{u.username}</strong> " (" {u.role.as_str()} ")."
                                </p>
                            }
                        })
                    })
            })}
        </Transition>

        <section class="panel" aria-labelledby="pw-heading">
            <h2 id="pw-heading">"Change your password"</h2>
            <ActionForm action=change attr:class="stack narrow">
                <div>
                    <label for="pw-current">"Current password"</label>
                    <input id="pw-current" name="current" type="password" autocomplete="current-password" required />
                </div>
                <div>
                    <label for="pw-new">"New password (at least 10 characters)"</label>
                    <input id="pw-new" name="password" type="password" autocomplete="new-password" minlength="10" required />
                </div>
                <button type="submit">"Change password"</button>
                {move || match change.value().get() {
                    Some(Ok(())) => view! { <p class="callout ok" role="status">"Password changed."</p> }.into_any(),
                    Some(Err(e)) => view! { <p class="field-error" role="alert">{e.to_string()}</p> }.into_any(),
                    None => ().into_any(),
                }}
            </ActionForm>
        </section>

        <section class="panel" aria-labelledby="tokens-heading">
            <h2 id="tokens-heading">"Your API tokens"</h2>
            <p class="muted">
                "For scripts and the CLI: " <code>"OPSDECK_TOKEN=… opsdeck run …"</code>
                " or " <code>"Authorization: Bearer …"</code> "."
            </p>
            <ActionForm action=create attr:class="row-form">
                <label for="token-label">"Label"</label>
                <input id="token-label" name="label" type="text" placeholder="laptop" required />
                <button type="submit">"Create token"</button>
            </ActionForm>
            <NewTokenNotice action=create />
            <Transition fallback=|| view! { <p class="muted">"Loading tokens…"</p> }>
                <ErrorBoundary fallback=|errors| view! { <ErrorList errors /> }>
                    {move || Suspend::new(async move {
                        tokens.await.map(|t| view! { <TokenTable tokens=t revoke show_user=false /> })
                    })}
                </ErrorBoundary>
            </Transition>
        </section>
    }
}
