//! Signing in and out, the signed-in user as context for every page, and the
//! pieces pages use to show what the caller may see (`RequireAdmin`,
//! `Forbidden`). Permission decisions themselves are made on the server.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

use crate::error::AppError;
use crate::model::user::CurrentUser;

/// The signed-in user, or `None` when anonymous.
#[server(output = crate::codec::Json)]
pub async fn who_am_i() -> Result<Option<CurrentUser>, AppError> {
    Ok(crate::backend::caller().user)
}

/// Checks the credentials, sets the session cookie and goes to `next`.
#[server(output = crate::codec::Json)]
pub async fn login(
    username: String,
    password: String,
    next: Option<String>,
) -> Result<(), AppError> {
    use crate::backend::{backend, caller, respond, set_cookie};
    use crate::model::user::safe_next;
    respond(
        async {
            let signed_in = backend()?.login(&caller(), username, password).await?;
            set_cookie(&signed_in.set_cookie);
            leptos_axum::redirect(&safe_next(next.as_deref()));
            Ok(())
        }
        .await,
    )
}

/// Ends the session and goes to the sign-in page.
#[server(output = crate::codec::Json)]
pub async fn logout() -> Result<(), AppError> {
    use crate::backend::{backend, caller, respond, set_cookie};
    respond(
        async {
            let clear = backend()?.logout(&caller()).await?;
            set_cookie(&clear);
            leptos_axum::redirect("/login");
            Ok(())
        }
        .await,
    )
}

/// The signed-in user and the actions that change it, shared by every page.
#[derive(Clone, Copy)]
pub struct Auth {
    pub me: Resource<Result<Option<CurrentUser>, AppError>>,
    pub login: ServerAction<Login>,
    pub logout: ServerAction<Logout>,
}

/// Creates the [`Auth`] context (once, in `App`).
pub fn provide_auth() -> Auth {
    let login = ServerAction::<Login>::new();
    let logout = ServerAction::<Logout>::new();
    let me = Resource::new(
        move || (login.version().get(), logout.version().get()),
        |_| who_am_i(),
    );
    let auth = Auth { me, login, logout };
    provide_context(auth);
    auth
}

/// The [`Auth`] context.
pub fn use_auth() -> Auth {
    expect_context::<Auth>()
}

/// Whether the signed-in user is an admin (false until known).
pub fn use_is_admin() -> Signal<bool> {
    let auth = use_auth();
    Signal::derive(move || {
        auth.me
            .get()
            .and_then(Result::ok)
            .flatten()
            .is_some_and(|u| u.is_admin())
    })
}

/// `/login`
#[component]
pub fn LoginPage() -> impl IntoView {
    let auth = use_auth();
    let query = use_query_map();
    let next = query.with_untracked(|q| q.get("next")).unwrap_or_default();
    // With JavaScript the action holds the error; without, the URL does.
    let from_url = crate::components::url_error::<Login>();
    let error = move || {
        auth.login
            .value()
            .get()
            .map_or_else(|| from_url.clone(), Result::err)
    };

    view! {
        <Title text="Sign in" />
        <section class="panel login-panel" aria-labelledby="login-heading">
            <h1 id="login-heading">"Sign in to opsdeck"</h1>
            <ActionForm action=auth.login attr:class="stack">
                <input type="hidden" name="next" value=next />
                <div>
                    <label for="login-username">"Username"</label>
                    <input
                        id="login-username"
                        name="username"
                        type="text"
                        autocomplete="username"
                        autocapitalize="none"
                        spellcheck="false"
                        required
                    />
                </div>
                <div>
                    <label for="login-password">"Password"</label>
                    <input
                        id="login-password"
                        name="password"
                        type="password"
                        autocomplete="current-password"
                        required
                    />
                </div>
                {move || {
                    error().map(|e| view! { <p class="field-error" role="alert">{e.to_string()}</p> })
                }}
                <button type="submit" disabled=move || auth.login.pending().get()>
                    "Sign in"
                </button>
            </ActionForm>
        </section>
    }
}

/// The header's right side: who is signed in, their links, sign-out.
#[component]
pub fn UserMenu() -> impl IntoView {
    let auth = use_auth();
    view! {
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                match auth.me.await {
                    Ok(Some(user)) => {
                        let admin = user.is_admin();
                        view! {
                            <nav class="usermenu" aria-label="Account">
                                {admin
                                    .then(|| {
                                        view! {
                                            <a href="/admin/jobs">"All jobs"</a>
                                            <a href="/admin/users">"Users"</a>
                                            <a href="/admin/agents">"Agents"</a>
                                            <a href="/admin/audit">"Audit log"</a>
                                            <a href="/admin/webhooks">"Webhooks"</a>
                                            <a href="/admin/schedules">"Schedules"</a>
                                        }
                                    })}
                                <a href="/account" class="whoami">
                                    {user.username.clone()}
                                    <span class="role-badge">{user.role.as_str()}</span>
                                </a>
                                <ActionForm action=auth.logout attr:class="inline">
                                    <button type="submit" class="secondary small">
                                        "Sign out"
                                    </button>
                                </ActionForm>
                            </nav>
                        }
                            .into_any()
                    }
                    _ => view! { <a href="/login">"Sign in"</a> }.into_any(),
                }
            })}
        </Transition>
    }
}

/// Renders `children` for admins, and the 403 page for everyone else.
#[component]
pub fn RequireAdmin(children: ChildrenFn) -> impl IntoView {
    let auth = use_auth();
    let children = StoredValue::new(children);
    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match auth.me.await {
                    Ok(Some(u)) if u.is_admin() => children.with_value(|c| c()).into_any(),
                    Ok(Some(_)) => {
                        view! {
                            <Forbidden message="This page is for admins. Ask an admin if you need something here." />
                        }
                            .into_any()
                    }
                    Ok(None) => view! { <SignInAgain /> }.into_any(),
                    Err(e) => view! { <p class="field-error" role="alert">{e.to_string()}</p> }.into_any(),
                }
            })}
        </Transition>
    }
}

/// The 403 page (with a real 403 status when rendered on the server).
#[component]
pub fn Forbidden(#[prop(into)] message: String) -> impl IntoView {
    #[cfg(feature = "ssr")]
    crate::backend::set_status(403);
    view! {
        <Title text="Not allowed" />
        <section class="panel forbidden" aria-labelledby="forbidden-heading">
            <h1 id="forbidden-heading">"Not allowed"</h1>
            <p>{message}</p>
            <p>
                <a href="/">"Back to the dashboard"</a>
            </p>
        </section>
    }
}

/// Shown when a session ended while a page was open.
#[component]
pub fn SignInAgain() -> impl IntoView {
    view! {
        <section class="panel" role="alert">
            <p>"Your session has ended. " <a href="/login" rel="external">"Sign in again"</a></p>
        </section>
    }
}
