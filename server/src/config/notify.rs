//! `[[notify]]`: webhook hooks (server/src/webhooks, docs/automation.md).
//!
//! ```toml
//! [[notify]]
//! id = "ops-chat"
//! url = "https://hooks.example.com/opsdeck"
//! events = ["job.failed", "agent.lost"]      # default: every kind
//! templates = ["restic-backup"]              # default: any template
//! targets = ["backup-host"]                  # default: any target
//! secret_file = "/etc/opsdeck/hook-secret"   # or secret = "…"
//! ```

use std::collections::HashSet;
use std::ops::Range;
use std::time::Duration;

use app::model::webhook::EventKind;
use serde::Deserialize;
use toml::Spanned;

use super::{ConfigDuration, ConfigError, Ctx, FileSource, Target, Template, ID_RE};

/// The shortest secret a hook takes: a receiver checks signatures with it.
pub const MIN_SECRET_LEN: usize = 16;

/// One validated hook.
#[derive(Clone)]
pub struct Hook {
    pub id: String,
    pub url: reqwest::Url,
    /// The kinds it is sent.
    pub events: Vec<EventKind>,
    /// Only events of jobs of these templates (empty: any). Events that
    /// concern no template (`schedule.missed` of a deleted template) pass.
    pub templates: Vec<String>,
    /// Only events about these targets (empty: any).
    pub targets: Vec<String>,
    /// The HMAC-SHA256 key of its signatures.
    pub secret: Vec<u8>,
    /// How long one POST may take.
    pub timeout: Duration,
    /// The wait after the first failed try; each next wait doubles, up to
    /// `backoff_max`.
    pub backoff: Duration,
    pub backoff_max: Duration,
    /// How long after the event it is still tried (then given up).
    pub retry_for: Duration,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hook")
            .field("id", &self.id)
            .field("url", &self.url.as_str())
            .field("events", &self.events)
            .field("templates", &self.templates)
            .field("targets", &self.targets)
            .field("secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl Hook {
    /// Whether an event of `kind` about `template` on `target` goes to it.
    pub fn wants(&self, kind: EventKind, template: Option<&str>, target: Option<&str>) -> bool {
        let passes = |list: &[String], v: Option<&str>| {
            list.is_empty() || v.is_none_or(|v| list.iter().any(|x| x == v))
        };
        self.events.contains(&kind)
            && passes(&self.templates, template)
            && passes(&self.targets, target)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    id: Spanned<String>,
    url: Spanned<String>,
    events: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    templates: Vec<Spanned<String>>,
    #[serde(default)]
    targets: Vec<Spanned<String>>,
    secret: Option<Spanned<String>>,
    secret_file: Option<Spanned<String>>,
    timeout: Option<Spanned<ConfigDuration>>,
    backoff: Option<Spanned<ConfigDuration>>,
    backoff_max: Option<Spanned<ConfigDuration>>,
    retry_for: Option<Spanned<ConfigDuration>>,
}

/// Validates every `[[notify]]` entry against the targets and templates.
pub(super) fn validate(
    ctx: &Ctx,
    raw: Vec<Spanned<RawNotify>>,
    targets: &[Target],
    templates: &[Template],
    files: &FileSource,
) -> Result<Vec<Hook>, ConfigError> {
    let mut hooks = Vec::new();
    let mut seen = HashSet::new();
    for (i, r) in raw.into_iter().enumerate() {
        let span = r.span();
        let hook = r
            .into_inner()
            .validate(ctx, i, span.clone(), targets, templates, files)?;
        if !seen.insert(hook.id.clone()) {
            return Err(ctx.error(
                span,
                &format!("notify[{i}].id"),
                format!("hook `{}` is defined twice", hook.id),
            ));
        }
        hooks.push(hook);
    }
    Ok(hooks)
}

impl RawNotify {
    fn validate(
        self,
        ctx: &Ctx,
        i: usize,
        span: Range<usize>,
        targets: &[Target],
        templates: &[Template],
        files: &FileSource,
    ) -> Result<Hook, ConfigError> {
        let key = |k: &str| format!("notify[{i}].{k}");
        if !ID_RE.is_match(self.id.get_ref()) {
            return Err(ctx.error(
                self.id.span(),
                &key("id"),
                "must match ^[a-z0-9][a-z0-9_.-]{0,62}$",
            ));
        }
        let url = reqwest::Url::parse(self.url.get_ref())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                ctx.error(
                    self.url.span(),
                    &key("url"),
                    format!(
                        "`{}` is not an http:// or https:// URL with a host",
                        self.url.get_ref()
                    ),
                )
            })?;
        let events = match self.events {
            None => EventKind::ALL.to_vec(),
            Some(list) if list.get_ref().is_empty() => {
                return Err(ctx.error(
                    list.span(),
                    &key("events"),
                    "name at least one event (or leave `events` out for all of them)",
                ))
            }
            Some(list) => {
                let mut kinds = Vec::new();
                for name in list.get_ref() {
                    let kind = EventKind::parse(name).ok_or_else(|| {
                        let all: Vec<&str> = EventKind::ALL.iter().map(|k| k.name()).collect();
                        ctx.error(
                            list.span(),
                            &key("events"),
                            format!("unknown event `{name}`: use {}", all.join(", ")),
                        )
                    })?;
                    if !kinds.contains(&kind) {
                        kinds.push(kind);
                    }
                }
                kinds
            }
        };
        for t in &self.templates {
            if !templates.iter().any(|x| &x.id == t.get_ref()) {
                return Err(ctx.error(
                    t.span(),
                    &key("templates"),
                    format!("no template `{}` is defined", t.get_ref()),
                ));
            }
        }
        for t in &self.targets {
            if !targets.iter().any(|x| &x.id == t.get_ref()) {
                return Err(ctx.error(
                    t.span(),
                    &key("targets"),
                    format!("no target `{}` is defined", t.get_ref()),
                ));
            }
        }
        let (secret, secret_span, secret_key) = match (self.secret, self.secret_file) {
            (Some(s), None) => {
                let span = s.span();
                (s.into_inner(), span, key("secret"))
            }
            (None, Some(f)) => {
                let text = files
                    .read(f.get_ref())
                    .map_err(|m| ctx.error(f.span(), &key("secret_file"), m))?;
                (text.trim().to_string(), f.span(), key("secret_file"))
            }
            _ => {
                return Err(ctx.error(
                    span,
                    &key("secret"),
                    "give exactly one of `secret` or `secret_file`: receivers check each delivery's signature with it",
                ))
            }
        };
        if secret.chars().count() < MIN_SECRET_LEN {
            return Err(ctx.error(
                secret_span,
                &secret_key,
                format!("the secret must be at least {MIN_SECRET_LEN} characters long"),
            ));
        }
        let within = |d: Option<Spanned<ConfigDuration>>,
                      k: &str,
                      default: Duration,
                      range: Range<Duration>|
         -> Result<Duration, ConfigError> {
            match d {
                Some(d) if !range.contains(&d.get_ref().0) => Err(ctx.error(
                    d.span(),
                    &key(k),
                    format!(
                        "must be at least {} ms and less than {} s",
                        range.start.as_millis(),
                        range.end.as_secs()
                    ),
                )),
                Some(d) => Ok(d.into_inner().0),
                None => Ok(default),
            }
        };
        let day = Duration::from_secs(86_400);
        let timeout = within(
            self.timeout,
            "timeout",
            Duration::from_secs(10),
            Duration::from_millis(100)..Duration::from_secs(301),
        )?;
        let backoff = within(
            self.backoff,
            "backoff",
            Duration::from_secs(10),
            Duration::from_millis(100)..Duration::from_secs(3_601),
        )?;
        let backoff_max = within(
            self.backoff_max,
            "backoff_max",
            Duration::from_secs(3_600).max(backoff),
            backoff..Duration::from_secs(86_401),
        )?;
        let retry_for = within(
            self.retry_for,
            "retry_for",
            day,
            Duration::from_secs(1)..day * 7 + Duration::from_secs(1),
        )?;
        Ok(Hook {
            id: self.id.into_inner(),
            url,
            events,
            templates: self
                .templates
                .into_iter()
                .map(Spanned::into_inner)
                .collect(),
            targets: self.targets.into_iter().map(Spanned::into_inner).collect(),
            secret: secret.into_bytes(),
            timeout,
            backoff,
            backoff_max,
            retry_for,
        })
    }
}
