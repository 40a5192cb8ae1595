//! Webhook hooks as a use case: the admin page's and `/api/webhooks`'
//! delivery log, per configured hook (its URL shown without path or query,
//! which often hold a token; never its secret).

use app::backend::Caller;
use app::error::AppError;
use app::model::webhook::HookInfo;

use crate::auth::policy;
use crate::db::webhooks;
use crate::http::error::db_error;
use crate::state::AppState;

/// Deliveries shown per hook.
const SHOWN: u64 = 100;

pub async fn list(state: &AppState, caller: &Caller) -> Result<Vec<HookInfo>, AppError> {
    policy::require_admin(caller)?;
    let mut out = Vec::with_capacity(state.config.notify.len());
    for h in &state.config.notify {
        let deliveries = webhooks::latest_for_hook(&state.reader, &h.id, SHOWN)
            .await
            .map_err(|e| db_error(e, "listing webhook deliveries"))?;
        let mut url = format!("{}://{}", h.url.scheme(), h.url.host_str().unwrap_or(""));
        if let Some(port) = h.url.port() {
            url.push_str(&format!(":{port}"));
        }
        if h.url.path() != "/" || h.url.query().is_some() {
            url.push_str("/…");
        }
        out.push(HookInfo {
            id: h.id.clone(),
            url,
            events: h.events.iter().map(|k| k.name().to_string()).collect(),
            templates: h.templates.clone(),
            targets: h.targets.clone(),
            deliveries,
        });
    }
    Ok(out)
}
