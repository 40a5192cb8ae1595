//! The filter form of the job list pages (`/jobs`, `/admin/jobs`, a
//! target's full history): a GET form, so every view has a URL and works
//! without JavaScript; the table below it reads the same URL query.
//!
//! N.B.: apart from [`crate::jobs::table`] on purpose. Only the lazy pages
//! show it, so its code — the router's `<Form>` (with the Unicode
//! lower-case table it pulls in), the template and target lists it loads —
//! goes into their wasm parts, not into the main wasm that the dashboard's
//! first visit downloads (docs/benchmarks.md, issue 16).

use leptos::prelude::*;
use leptos_router::components::Form;
use leptos_router::hooks::use_query_map;

use crate::jobs::table::TableSpec;
use crate::jobs::{list_targets, list_templates};
use crate::model::job::{JobState, StateSet};

/// The filter form (state, template, target) of a job table whose
/// `spec.filters` is set, as a GET form: put it just above that table.
#[component]
pub fn JobFilters(spec: TableSpec) -> impl IntoView {
    let query = use_query_map();
    let templates = Resource::new(|| (), |_| list_templates());
    let targets = Resource::new(|| (), |_| list_targets());
    let current = move |k: &str| query.with(|q| q.get(k)).unwrap_or_default();
    let fixed = spec.fixed.clone();
    view! {
        <Form method="GET" action=spec.path.clone() attr:class="row-form filters">
            <label for="f-state">"State"</label>
            <select id="f-state" name="state">
                <option value="" selected=move || current("state").is_empty()>"any"</option>
                <option value=StateSet::active().to_string() selected=move || current("state") == StateSet::active().to_string()>
                    "active"
                </option>
                {JobState::ALL
                    .iter()
                    .map(|s| {
                        let v = s.as_str();
                        view! { <option value=v selected=move || current("state") == v>{v}</option> }
                    })
                    .collect_view()}
            </select>
            {fixed.template.is_none().then(|| view! {
                <label for="f-template">"Template"</label>
                <select id="f-template" name="template">
                    <option value="">"any"</option>
                    <Transition fallback=|| ()>
                        {move || Suspend::new(async move {
                            templates.await.unwrap_or_default().into_iter().map(|t| {
                                let id = t.id.clone();
                                let sel = current("template") == id;
                                view! { <option value=id.clone() selected=sel>{t.title}</option> }
                            }).collect_view()
                        })}
                    </Transition>
                </select>
            })}
            {fixed.target.is_none().then(|| view! {
                <label for="f-target">"Target"</label>
                <select id="f-target" name="target">
                    <option value="">"any"</option>
                    <Transition fallback=|| ()>
                        {move || Suspend::new(async move {
                            targets.await.unwrap_or_default().into_iter().map(|t| {
                                let id = t.id.clone();
                                let sel = current("target") == id;
                                view! { <option value=id.clone() selected=sel>{id.clone()}</option> }
                            }).collect_view()
                        })}
                    </Transition>
                </select>
            })}
            <button type="submit">"Filter"</button>
            <a href=spec.path.clone() class="button secondary">"Clear"</a>
        </Form>
    }
}
