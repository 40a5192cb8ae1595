//! `/admin/users`: add users, change roles, disable, reset passwords, and
//! list, create and revoke everyone's API tokens.

use leptos::prelude::*;
use leptos_meta::Title;

use crate::auth::RequireAdmin;
use crate::components::{ErrorList, Time};
use crate::error::AppError;
use crate::model::user::{Role, UserInfo};
use crate::tokens::{list_tokens, CreateToken, NewTokenNotice, RevokeToken, TokenTable};

#[cfg(feature = "ssr")]
fn parse_role(role: &str) -> Result<Role, AppError> {
    Role::parse(role).ok_or_else(|| AppError::field("role", "the role is admin or operator"))
}

/// Every user.
#[server(output = crate::codec::Json)]
pub async fn list_users() -> Result<Vec<UserInfo>, AppError> {
    use crate::backend::{backend, caller, respond};
    respond(async { backend()?.users(&caller()).await }.await)
}

/// Adds a user.
#[server(output = crate::codec::Json)]
pub async fn create_user(
    username: String,
    role: String,
    password: String,
) -> Result<UserInfo, AppError> {
    use crate::backend::{backend, caller, respond};
    respond(
        async {
            let role = parse_role(&role)?;
            backend()?
                .create_user(&caller(), username.trim().to_string(), role, password)
                .await
        }
        .await,
    )
}

/// Changes a user's role.
#[server(output = crate::codec::Json)]
pub async fn set_user_role(username: String, role: String) -> Result<UserInfo, AppError> {
    use crate::backend::{backend, caller, respond};
    respond(
        async {
            backend()?
                .set_role(&caller(), username, parse_role(&role)?)
                .await
        }
        .await,
    )
}

/// Disables or re-enables a user.
#[server(output = crate::codec::Json)]
pub async fn set_user_disabled(username: String, disabled: bool) -> Result<UserInfo, AppError> {
    use crate::backend::{backend, caller, respond};
    respond(async { backend()?.set_disabled(&caller(), username, disabled).await }.await)
}

/// Sets a new password for a user.
#[server(output = crate::codec::Json)]
pub async fn reset_user_password(username: String, password: String) -> Result<(), AppError> {
    use crate::backend::{backend, caller, respond};
    respond(
        async {
            backend()?
                .reset_password(&caller(), username, password)
                .await
        }
        .await,
    )
}

#[component]
pub fn UsersPage() -> impl IntoView {
    view! {
        <Title text="Users" />
        <RequireAdmin>
            <Users />
        </RequireAdmin>
    }
}

#[component]
fn Users() -> impl IntoView {
    let create = ServerAction::<CreateUser>::new();
    let set_role = ServerAction::<SetUserRole>::new();
    let set_disabled = ServerAction::<SetUserDisabled>::new();
    let reset = ServerAction::<ResetUserPassword>::new();
    let create_token = ServerAction::<CreateToken>::new();
    let revoke = ServerAction::<RevokeToken>::new();

    let users = Resource::new(
        move || {
            (
                create.version().get(),
                set_role.version().get(),
                set_disabled.version().get(),
            )
        },
        |_| list_users(),
    );
    let tokens = Resource::new(
        move || (create_token.version().get(), revoke.version().get()),
        |_| list_tokens(true),
    );

    // The outcome of the last row action, in one place under the table.
    let row_status = move || {
        let results: [Option<Result<String, AppError>>; 3] = [
            set_role
                .value()
                .get()
                .map(|r| r.map(|u| format!("{} is now {}.", u.username, u.role))),
            set_disabled.value().get().map(|r| {
                r.map(|u| {
                    format!(
                        "{} is {}.",
                        u.username,
                        if u.disabled { "disabled" } else { "enabled" }
                    )
                })
            }),
            reset
                .value()
                .get()
                .map(|r| r.map(|()| "Password reset.".to_string())),
        ];
        results.into_iter().flatten().last().map(|r| match r {
            Ok(msg) => view! { <p class="callout ok" role="status">{msg}</p> }.into_any(),
            Err(e) => view! { <p class="field-error" role="alert">{e.to_string()}</p> }.into_any(),
        })
    };
    let create_error = move |field: &'static str| {
        move || {
            create
                .value()
                .get()
                .and_then(Result::err)
                .and_then(|e| e.message_for(field))
                .map(|m| view! { <p class="field-error" role="alert">{m}</p> })
        }
    };

    view! {
        <h1>"Users"</h1>
        <section class="panel" aria-labelledby="add-user-heading">
            <h2 id="add-user-heading">"Add a user"</h2>
            <ActionForm action=create attr:class="grid-form">
                <div>
                    <label for="new-username">"Username"</label>
                    <input id="new-username" name="username" type="text" autocapitalize="none" required />
                    {create_error("username")}
                </div>
                <div>
                    <label for="new-role">"Role"</label>
                    <select id="new-role" name="role">
                        <option value="operator" selected>"operator"</option>
                        <option value="admin">"admin"</option>
                    </select>
                </div>
                <div>
                    <label for="new-password">"Password (at least 10 characters)"</label>
                    <input id="new-password" name="password" type="password" autocomplete="new-password" required />
                    {create_error("password")}
                </div>
                <div class="form-actions">
                    <button type="submit">"Add user"</button>
                </div>
            </ActionForm>
            {move || match create.value().get() {
                Some(Ok(u)) => Some(view! { <p class="callout ok" role="status">"Added " {u.username} "."</p> }.into_any()),
                Some(Err(e)) if e.field_name().is_none() => {
                    Some(view! { <p class="field-error" role="alert">{e.to_string()}</p> }.into_any())
                }
                _ => None,
            }}
        </section>

        <section class="panel" aria-labelledby="users-heading">
            <h2 id="users-heading">"All users"</h2>
            <Transition fallback=|| view! { <p class="muted">"Loading users…"</p> }>
                <ErrorBoundary fallback=|errors| view! { <ErrorList errors /> }>
                    {move || Suspend::new(async move {
                        users.await.map(|list| view! { <UserTable list set_role set_disabled reset /> })
                    })}
                </ErrorBoundary>
            </Transition>
            {row_status}
        </section>

        <section class="panel" aria-labelledby="all-tokens-heading">
            <h2 id="all-tokens-heading">"API tokens"</h2>
            <ActionForm action=create_token attr:class="row-form">
                <label for="token-user">"For user"</label>
                <input id="token-user" name="username" type="text" autocapitalize="none" required />
                <label for="token-label-admin">"Label"</label>
                <input id="token-label-admin" name="label" type="text" placeholder="ci" required />
                <button type="submit">"Create token"</button>
            </ActionForm>
            <NewTokenNotice action=create_token />
            <Transition fallback=|| view! { <p class="muted">"Loading tokens…"</p> }>
                <ErrorBoundary fallback=|errors| view! { <ErrorList errors /> }>
                    {move || Suspend::new(async move {
                        tokens.await.map(|t| view! { <TokenTable tokens=t revoke show_user=true /> })
                    })}
                </ErrorBoundary>
            </Transition>
        </section>
    }
}

#[component]
fn UserTable(
    list: Vec<UserInfo>,
    set_role: ServerAction<SetUserRole>,
    set_disabled: ServerAction<SetUserDisabled>,
    reset: ServerAction<ResetUserPassword>,
) -> impl IntoView {
    view! {
        <div class="table-wrap">
            <table class="data users">
                <thead>
                    <tr>
                        <th scope="col">"User"</th>
                        <th scope="col">"Role"</th>
                        <th scope="col">"Status"</th>
                        <th scope="col">"Last sign-in"</th>
                        <th scope="col">"Password"</th>
                    </tr>
                </thead>
                <tbody>
                    {list
                        .into_iter()
                        .map(|u| view! { <UserRow u set_role set_disabled reset /> })
                        .collect_view()}
                </tbody>
            </table>
        </div>
    }
}

#[component]
fn UserRow(
    u: UserInfo,
    set_role: ServerAction<SetUserRole>,
    set_disabled: ServerAction<SetUserDisabled>,
    reset: ServerAction<ResetUserPassword>,
) -> impl IntoView {
    // Each form's children own their copies (they are moved into closures).
    let name = u.username;
    let role_id = format!("role-{name}");
    let pw_id = format!("pw-{name}");
    let role_label = format!("Role of {name}");
    let pw_label = format!("New password for {name}");
    let (name_role, name_disable, name_reset) = (name.clone(), name.clone(), name.clone());
    let row_key = name.clone();
    view! {
        <tr data-user=row_key>
            <th scope="row">{name}</th>
            <td>
                <ActionForm action=set_role attr:class="inline">
                    <input type="hidden" name="username" value=name_role />
                    <label class="visually-hidden" for=role_id.clone()>
                        {role_label}
                    </label>
                    <select id=role_id name="role">
                        <option value="operator" selected=u.role == Role::Operator>
                            "operator"
                        </option>
                        <option value="admin" selected=u.role == Role::Admin>
                            "admin"
                        </option>
                    </select>
                    <button type="submit" class="secondary small">
                        "Save"
                    </button>
                </ActionForm>
            </td>
            <td>
                <ActionForm action=set_disabled attr:class="inline">
                    <input type="hidden" name="username" value=name_disable />
                    <input type="hidden" name="disabled" value=(!u.disabled).to_string() />
                    <span class=if u.disabled { "pill bad" } else { "pill ok" }>
                        {if u.disabled { "disabled" } else { "active" }}
                    </span>
                    <button type="submit" class="secondary small">
                        {if u.disabled { "Enable" } else { "Disable" }}
                    </button>
                </ActionForm>
            </td>
            <td>
                {match u.last_login_at {
                    Some(at) => view! { <Time at=Some(at) short=true /> }.into_any(),
                    None => "never".into_any(),
                }}
            </td>
            <td>
                <ActionForm action=reset attr:class="inline">
                    <input type="hidden" name="username" value=name_reset />
                    <label class="visually-hidden" for=pw_id.clone()>
                        {pw_label}
                    </label>
                    <input
                        id=pw_id
                        name="password"
                        type="password"
                        autocomplete="new-password"
                        placeholder="new password"
                        required
                    />
                    <button type="submit" class="secondary small">
                        "Reset"
                    </button>
                </ActionForm>
            </td>
        </tr>
    }
}
