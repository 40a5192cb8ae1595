//! `/launch/{template}?target=…`: the launch form, generated from the
//! template's parameter schema. Inputs are typed (and carry the HTML
//! constraints, so the browser checks them even without the app); with
//! JavaScript the same rules the server applies run first, and a field's
//! error shows beside it; the server checks again. Success lands on the new
//! job's page.

use leptos::html;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::{use_params_map, use_query_map};

use crate::components::ErrorList;
use crate::error::AppError;
use crate::jobs::{list_templates, LaunchJob};
use crate::model::template::{ParamSpec, ParamType, TemplateInfo};

#[component]
pub fn LaunchPage() -> impl IntoView {
    let params = use_params_map();
    let query = use_query_map();
    let templates = Resource::new(|| (), |_| list_templates());
    let template_id = move || params.with(|p| p.get("template")).unwrap_or_default();
    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            <ErrorBoundary fallback=|errors| view! { <ErrorList errors /> }>
                {move || Suspend::new(async move {
                    let id = template_id();
                    let target = query.with_untracked(|q| q.get("target")).unwrap_or_default();
                    templates.await.map(|all| match all.into_iter().find(|t| t.id == id) {
                        Some(t) => view! { <LaunchForm template=t target /> }.into_any(),
                        None => view! { <NoTemplate id /> }.into_any(),
                    })
                })}
            </ErrorBoundary>
        </Transition>
    }
}

#[component]
fn NoTemplate(id: String) -> impl IntoView {
    #[cfg(feature = "ssr")]
    crate::backend::set_status(404);
    view! {
        <Title text="No such template" />
        <section class="panel">
            <h1>"No such template"</h1>
            <p>"There is no template “" {id} "” you can run. " <a href="/">"Back to the dashboard"</a></p>
        </section>
    }
}

#[component]
fn LaunchForm(template: TemplateInfo, target: String) -> impl IntoView {
    let launch = ServerAction::<LaunchJob>::new();
    let client_error = RwSignal::new(None::<AppError>);
    let form = NodeRef::<html::Form>::new();
    let specs = StoredValue::new(template.params.clone());
    // The error to show for a field: the browser's own check first, else the server's.
    let error_for = move |field: String| {
        move || {
            client_error
                .get()
                .or_else(|| launch.value().get().and_then(Result::err))
                .and_then(|e| e.message_for(&field))
        }
    };
    let general_error = move || {
        launch
            .value()
            .get()
            .and_then(Result::err)
            .filter(|e| e.field_name().is_none())
            .map(|e| e.to_string())
    };
    let selected = if template.targets.contains(&target) {
        target
    } else {
        template.targets.first().cloned().unwrap_or_default()
    };

    let on_submit_click = move |ev: leptos::ev::MouseEvent| {
        client_error.set(None);
        #[cfg(feature = "hydrate")]
        if let Some(form) = form.get_untracked() {
            if let Err(e) = check_in_browser(&form, &specs.get_value()) {
                client_error.set(Some(e));
                ev.prevent_default();
            }
        }
        let _ = (&ev, specs);
    };

    let title = template.title.clone();
    view! {
        <Title text=format!("Launch {title}") />
        <h1>"Launch: " {title}</h1>
        {template.description.clone().map(|d| view! { <p class="lead">{d}</p> })}
        <p class="muted command">
            "Runs " <code>{template.command.join(" ")}</code>
        </p>
        <section class="panel">
            <ActionForm action=launch node_ref=form attr:class="stack launch-form">
                <input type="hidden" name="template" value=template.id.clone() />
                <div class="field">
                    <label for="launch-target">"Target"</label>
                    <select id="launch-target" name="target" required>
                        {template
                            .targets
                            .iter()
                            .map(|t| view! { <option value=t.clone() selected=*t == selected>{t.clone()}</option> })
                            .collect_view()}
                    </select>
                    <FieldError msg=Signal::derive(error_for("target".into())) id="launch-target-error".to_string() />
                </div>
                {template
                    .params
                    .iter()
                    .cloned()
                    .map(|spec| {
                        let error = Signal::derive(error_for(spec.name.clone()));
                        view! { <ParamField spec error /> }
                    })
                    .collect_view()}
                {move || general_error().map(|m| view! { <p class="field-error" role="alert">{m}</p> })}
                <div class="form-actions">
                    <button type="submit" on:click=on_submit_click disabled=move || launch.pending().get()>
                        "Launch"
                    </button>
                    <a href="/" class="button secondary">"Cancel"</a>
                </div>
            </ActionForm>
        </section>
    }
}

#[component]
fn FieldError(msg: Signal<Option<String>>, id: String) -> impl IntoView {
    move || {
        msg.get()
            .map(|m| view! { <p class="field-error" id=id.clone() role="alert">{m}</p> })
    }
}

/// One input, typed by the parameter's schema.
#[component]
fn ParamField(spec: ParamSpec, error: Signal<Option<String>>) -> impl IntoView {
    let id = format!("param-{}", spec.name);
    let name = format!("params[{}]", spec.name);
    let error_id = format!("{id}-error");
    let label = spec.label().to_string();
    let help = spec.help.clone();
    let default = spec
        .default
        .as_ref()
        .map(crate::model::template::param_text)
        .unwrap_or_default();
    let required = spec.required;
    let input = match spec.kind {
        ParamType::Bool => view! {
            <input id=id.clone() name=name type="checkbox" value="true" checked=default == "true"
                aria-invalid=move || error.get().is_some().to_string() aria-describedby=error_id.clone() />
        }
        .into_any(),
        ParamType::Enum => view! {
            <select id=id.clone() name=name required=required aria-describedby=error_id.clone()>
                {(!required).then(|| view! { <option value="">"—"</option> })}
                {spec.choices.iter().map(|c| view! { <option value=c.clone() selected=*c == default>{c.clone()}</option> }).collect_view()}
            </select>
        }
        .into_any(),
        ParamType::Int => view! {
            <input id=id.clone() name=name type="number" step="1" value=default required=required
                min=spec.min.map(|m| m.to_string()) max=spec.max.map(|m| m.to_string())
                aria-invalid=move || error.get().is_some().to_string() aria-describedby=error_id.clone() />
        }
        .into_any(),
        ParamType::Path => view! {
            <input id=id.clone() name=name type="text" value=default required=required pattern="/.*"
                placeholder="/absolute/path" spellcheck="false" autocapitalize="none"
                aria-invalid=move || error.get().is_some().to_string() aria-describedby=error_id.clone() />
        }
        .into_any(),
        ParamType::String => view! {
            <input id=id.clone() name=name type="text" value=default required=required
                pattern=spec.pattern.clone() spellcheck="false"
                aria-invalid=move || error.get().is_some().to_string() aria-describedby=error_id.clone() />
        }
        .into_any(),
    };
    let is_bool = spec.kind == ParamType::Bool;
    view! {
        <div class="field" class:checkbox=is_bool>
            <label for=id>{label}{required.then_some(" *")}</label>
            {input}
            {help.map(|h| view! { <p class="help">{h}</p> })}
            <FieldError msg=error id=error_id />
        </div>
    }
}

/// The server's parameter rules, run in the browser on the form's values.
#[cfg(feature = "hydrate")]
fn check_in_browser(form: &web_sys::HtmlFormElement, specs: &[ParamSpec]) -> Result<(), AppError> {
    use wasm_bindgen::JsCast;
    let Ok(data) = web_sys::FormData::new_with_form(form) else {
        return Ok(());
    };
    let mut input = serde_json::Map::new();
    for spec in specs {
        let key = format!("params[{}]", spec.name);
        if let Some(v) = data.get(&key).as_string() {
            input.insert(spec.name.clone(), serde_json::Value::String(v));
        }
    }
    let regex_ok = |pattern: &str, value: &str| {
        js_sys::RegExp::new(&format!("^(?:{pattern})$"), "u").test(value)
    };
    let _ = form.dyn_ref::<web_sys::HtmlFormElement>();
    crate::model::template::validate_params(specs, &input, &regex_ok).map(|_| ())
}
