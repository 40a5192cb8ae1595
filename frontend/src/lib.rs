//! The wasm entry point: hydrates the page the server rendered. Nothing else
//! lives here; the app is in the `app` crate.

#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
}
