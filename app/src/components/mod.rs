//! Small components shared by several pages.

use leptos::prelude::*;

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
