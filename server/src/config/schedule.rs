//! `[[schedules]]`: a template launched on a target by the clock
//! (server/src/schedules, docs/automation.md).
//!
//! ```toml
//! [[schedules]]
//! id = "nightly-backup"
//! template = "restic-backup"
//! target = "backup-host"
//! params = { path = "/srv" }
//! cron = "30 2 * * *"            # five fields, or six with seconds first
//! timezone = "Europe/Berlin"     # IANA name; default UTC
//! misfire = "latest"             # skip | latest | all (with max_catchup)
//! overlap = "skip"               # skip | queue | cancel_previous | allow
//! jitter = "5m"                  # a random delay up to this, per fire
//! ```

use std::collections::HashSet;
use std::ops::Range;
use std::str::FromStr;
use std::time::Duration;

use app::model::schedule::{Misfire, Overlap};
use app::model::template::validate_params;
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use serde::Deserialize;
use toml::Spanned;

use super::{ConfigDuration, ConfigError, Ctx, Target, Template, ID_RE};

/// `max_catchup` unless set: the fires run after an outage with
/// `misfire = "all"`, at most.
pub const DEFAULT_MAX_CATCHUP: u32 = 10;
/// `misfire_grace` unless set: a fire this late still counts as on time
/// (a busy moment, a restart of a few seconds); an older one is a misfire.
pub const DEFAULT_MISFIRE_GRACE: Duration = Duration::from_secs(60);

/// One validated schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub id: String,
    pub template: String,
    pub target: String,
    /// The launch's parameters, checked against the template (defaults
    /// filled in), as a launch from the browser would send them.
    pub params: serde_json::Map<String, serde_json::Value>,
    /// The expression as written (shown on the admin page).
    pub cron_text: String,
    pub cron: Cron,
    pub timezone: Tz,
    pub misfire: Misfire,
    pub max_catchup: u32,
    pub misfire_grace: Duration,
    pub overlap: Overlap,
    /// Each fire is launched up to this much later, at random (zero: at
    /// once), so many hosts' schedules do not all start in one second.
    pub jitter: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchedule {
    id: Spanned<String>,
    template: Spanned<String>,
    target: Spanned<String>,
    params: Option<Spanned<toml::Table>>,
    cron: Spanned<String>,
    timezone: Option<Spanned<String>>,
    #[serde(default)]
    misfire: Misfire,
    max_catchup: Option<Spanned<u32>>,
    misfire_grace: Option<Spanned<ConfigDuration>>,
    #[serde(default)]
    overlap: Overlap,
    jitter: Option<Spanned<ConfigDuration>>,
}

/// Validates every `[[schedules]]` entry against the targets and templates.
pub(super) fn validate(
    ctx: &Ctx,
    raw: Vec<Spanned<RawSchedule>>,
    targets: &[Target],
    templates: &[Template],
) -> Result<Vec<Schedule>, ConfigError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, r) in raw.into_iter().enumerate() {
        let span = r.span();
        let s = r
            .into_inner()
            .validate(ctx, i, span.clone(), targets, templates)?;
        if !seen.insert(s.id.clone()) {
            return Err(ctx.error(
                span,
                &format!("schedules[{i}].id"),
                format!("schedule `{}` is defined twice", s.id),
            ));
        }
        out.push(s);
    }
    Ok(out)
}

/// Parses a cron expression as `[[schedules]]` takes it: five fields
/// (minute first) or six (second first), no year; POSIX day-of-month OR
/// day-of-week. The error is croner's, which names the bad field.
pub fn parse_cron(text: &str) -> Result<Cron, String> {
    let fields = text.split_whitespace().count();
    if !text.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
        return Err(format!(
            "`{text}` has {fields} fields: write five (minute hour day-of-month month day-of-week) or six (with seconds first)"
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(text)
        .map_err(|e| format!("`{text}` is not a cron expression: {e}"))
}

impl RawSchedule {
    fn validate(
        self,
        ctx: &Ctx,
        i: usize,
        span: Range<usize>,
        targets: &[Target],
        templates: &[Template],
    ) -> Result<Schedule, ConfigError> {
        let key = |k: &str| format!("schedules[{i}].{k}");
        if !ID_RE.is_match(self.id.get_ref()) {
            return Err(ctx.error(
                self.id.span(),
                &key("id"),
                format!(
                    "`{}` is not a valid id: use ^[a-z0-9][a-z0-9_.-]{{0,62}}$",
                    self.id.get_ref()
                ),
            ));
        }
        let template = templates
            .iter()
            .find(|t| &t.id == self.template.get_ref())
            .ok_or_else(|| {
                ctx.error(
                    self.template.span(),
                    &key("template"),
                    format!("no template `{}` is defined", self.template.get_ref()),
                )
            })?;
        if !targets.iter().any(|t| &t.id == self.target.get_ref()) {
            return Err(ctx.error(
                self.target.span(),
                &key("target"),
                format!("no target `{}` is defined", self.target.get_ref()),
            ));
        }
        if !template.allows_target(self.target.get_ref()) {
            return Err(ctx.error(
                self.target.span(),
                &key("target"),
                format!(
                    "template `{}` does not run on `{}`: it runs on {}",
                    template.id,
                    self.target.get_ref(),
                    template.targets.as_deref().unwrap_or_default().join(", ")
                ),
            ));
        }
        let (given, params_span) = match self.params {
            Some(p) => {
                let span = p.span();
                let json = serde_json::to_value(p.into_inner()).map_err(|e| {
                    ctx.error(span.clone(), &key("params"), format!("cannot be read: {e}"))
                })?;
                (json.as_object().cloned().unwrap_or_default(), span)
            }
            None => (serde_json::Map::new(), span.clone()),
        };
        let params = validate_params(&template.params, &given, &|pattern, value| {
            template
                .params
                .iter()
                .find(|p| p.pattern.as_deref() == Some(pattern))
                .is_none_or(|p| template.pattern_matches(&p.name, value))
        })
        .map_err(|e| {
            let k = match e.field_name() {
                Some(field) => key(&format!("params.{field}")),
                None => key("params"),
            };
            ctx.error(params_span.clone(), &k, e.to_string())
        })?;
        let cron = parse_cron(self.cron.get_ref())
            .map_err(|m| ctx.error(self.cron.span(), &key("cron"), m))?;
        let timezone = match &self.timezone {
            Some(tz) => Tz::from_str(tz.get_ref()).map_err(|_| {
                ctx.error(
                    tz.span(),
                    &key("timezone"),
                    format!(
                        "`{}` is not an IANA time zone name: write e.g. \"Europe/Berlin\", \"America/New_York\" or \"UTC\"",
                        tz.get_ref()
                    ),
                )
            })?,
            None => Tz::UTC,
        };
        let max_catchup = match self.max_catchup {
            Some(n) if !(1..=1000).contains(n.get_ref()) => {
                return Err(ctx.error(n.span(), &key("max_catchup"), "must be between 1 and 1000"))
            }
            Some(n) if self.misfire != Misfire::All => {
                return Err(ctx.error(
                    n.span(),
                    &key("max_catchup"),
                    "only applies with misfire = \"all\": remove it, or set misfire = \"all\"",
                ))
            }
            Some(n) => n.into_inner(),
            None => DEFAULT_MAX_CATCHUP,
        };
        let within = |d: Option<Spanned<ConfigDuration>>,
                      k: &str,
                      default: Duration,
                      range: Range<Duration>,
                      message: &str|
         -> Result<Duration, ConfigError> {
            match d {
                Some(d) if !range.contains(&d.get_ref().0) => {
                    Err(ctx.error(d.span(), &key(k), message))
                }
                Some(d) => Ok(d.into_inner().0),
                None => Ok(default),
            }
        };
        let misfire_grace = within(
            self.misfire_grace,
            "misfire_grace",
            DEFAULT_MISFIRE_GRACE,
            Duration::from_millis(500)..Duration::from_secs(86_401),
            "must be between 500ms and 1d",
        )?;
        let jitter = within(
            self.jitter,
            "jitter",
            Duration::ZERO,
            Duration::ZERO..Duration::from_secs(3_601),
            "must be between 0s and 1h",
        )?;
        Ok(Schedule {
            id: self.id.into_inner(),
            template: template.id.clone(),
            target: self.target.into_inner(),
            params,
            cron_text: self.cron.into_inner(),
            cron,
            timezone,
            misfire: self.misfire,
            max_catchup,
            misfire_grace,
            overlap: self.overlap,
            jitter,
        })
    }
}
