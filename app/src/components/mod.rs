//! Small components shared by several pages.

use leptos::prelude::*;

mod time;
pub use time::Time;

/// Renders the errors an `<ErrorBoundary>` caught, with what to do.
#[component]
pub fn ErrorList(errors: ArcRwSignal<Errors>) -> impl IntoView {
    view! {
        <div class="error-panel" role="alert">
            <p>"This part of the page could not be loaded:"</p>
            <ul>
                {move || {
                    errors
                        .get()
                        .into_iter()
                        .map(|(_, e)| view! { <li>{e.to_string()}</li> })
                        .collect_view()
                }}
            </ul>
            <p>"Reload the page to try again."</p>
        </div>
    }
}

/// The error a plain form post (JavaScript off) of server function `S`
/// brought back in the URL (`?__path=…&__err=…`), for actions created above
/// the router, which leptos does not hand that error to.
pub fn url_error<S>() -> Option<S::Error>
where
    S: leptos::server_fn::ServerFn,
    S::Error: leptos::server_fn::error::FromServerFnError,
{
    use leptos::server_fn::error::ServerFnUrlError;
    let query = leptos_router::hooks::use_query_map();
    query.with_untracked(|q| {
        (q.get_str("__path") == Some(S::PATH))
            .then(|| {
                q.get_str("__err")
                    .map(ServerFnUrlError::<S::Error>::decode_err)
            })
            .flatten()
    })
}
