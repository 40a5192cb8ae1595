//! The wasm entry point: hydrates the page the server rendered. Nothing else
//! lives here; the app is in the `app` crate.

// The pages' view types are deep (see app's recursion_limit); the wasm's
// hydrate entry point computes their layouts too.
#![recursion_limit = "256"]

#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    // Every page but the dashboard is a lazy route (app::routes): its code
    // is a wasm part of its own, fetched before its part of the page can
    // hydrate, so hydration is asynchronous (what `hydrate_lazy` does; here
    // by hand to learn when it is over).
    wasm_bindgen_futures::spawn_local(async {
        let body = leptos::prelude::document()
            .body()
            .expect("the page has a <body>");
        leptos::mount::hydrate_from_async(body, app::App)
            .await
            .forget();
        // `<html data-hydrated>` once the page's event handlers are attached:
        // after the tasks hydration queued (suspended parts read their data
        // from the page in them). Until then a form submits as a plain POST;
        // the end-to-end tests wait for this instead of retrying clicks.
        leptos::prelude::set_timeout(
            || {
                if let Some(html) = leptos::prelude::document().document_element() {
                    let _ = html.set_attribute("data-hydrated", "");
                }
            },
            std::time::Duration::ZERO,
        );
    });
}
