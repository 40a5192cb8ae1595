//! The wasm entry point: hydrates the page the server rendered. Nothing else
//! lives here; the app is in the `app` crate.

// The pages' view types are deep (see app's recursion_limit); the wasm's
// hydrate entry point computes their layouts too.
#![recursion_limit = "256"]

#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
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
}
