//! Job templates and targets as the API and the browser see them, and the
//! parameter schema with its validation, shared so the browser checks a form
//! with exactly the rules the server applies again.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::AppError;

/// The type of a template parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    /// Free text, optionally restricted by `pattern` (a full-match regex).
    String,
    /// One of `choices`.
    Enum,
    /// A whole number within `min`..=`max`.
    Int,
    /// true or false.
    Bool,
    /// An absolute path without `..` components.
    Path,
}

/// One parameter of a template, from the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    /// The name used in placeholders (`{name}`) and as the form field.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: ParamType,
    /// The form label; defaults to the name.
    #[serde(default)]
    pub label: Option<String>,
    /// A sentence shown under the field.
    #[serde(default)]
    pub help: Option<String>,
    /// Whether a value must be given (a default counts as given).
    #[serde(default)]
    pub required: bool,
    /// The value used when none is given.
    #[serde(default)]
    pub default: Option<Value>,
    /// For `string`: a regex the whole value must match.
    #[serde(default)]
    pub pattern: Option<String>,
    /// For `enum`: the allowed values.
    #[serde(default)]
    pub choices: Vec<String>,
    /// For `int`: the smallest allowed value.
    #[serde(default)]
    pub min: Option<i64>,
    /// For `int`: the largest allowed value.
    #[serde(default)]
    pub max: Option<i64>,
}

/// Longest accepted parameter value, in bytes.
pub const MAX_PARAM_BYTES: usize = 4096;

impl ParamSpec {
    /// The label to show.
    pub fn label(&self) -> &str {
        self.label.as_deref().unwrap_or(&self.name)
    }

    /// Checks one value and returns it in its canonical JSON form (strings for
    /// string, enum and path; a number for int; a bool for bool). Form posts
    /// send every value as a string, so strings are accepted for every type.
    /// `pattern_matches(pattern, value)` decides `pattern` (regex on the
    /// server, the browser's RegExp in the browser).
    pub fn check(
        &self,
        value: &Value,
        pattern_matches: &dyn Fn(&str, &str) -> bool,
    ) -> Result<Value, String> {
        match self.kind {
            ParamType::Bool => match value {
                Value::Bool(b) => Ok(Value::Bool(*b)),
                Value::String(s) => match s.trim() {
                    "true" | "on" | "yes" | "1" => Ok(Value::Bool(true)),
                    "false" | "off" | "no" | "0" | "" => Ok(Value::Bool(false)),
                    _ => Err("must be true or false".into()),
                },
                _ => Err("must be true or false".into()),
            },
            ParamType::Int => {
                let n = match value {
                    Value::Number(n) => n.as_i64().ok_or("must be a whole number")?,
                    Value::String(s) => s
                        .trim()
                        .parse::<i64>()
                        .map_err(|_| "must be a whole number".to_string())?,
                    _ => return Err("must be a whole number".into()),
                };
                if let Some(min) = self.min.filter(|min| n < *min) {
                    return Err(format!("must be at least {min}"));
                }
                if let Some(max) = self.max.filter(|max| n > *max) {
                    return Err(format!("must be at most {max}"));
                }
                Ok(Value::from(n))
            }
            ParamType::String | ParamType::Enum | ParamType::Path => {
                let s = match value {
                    Value::String(s) => s.as_str(),
                    _ => return Err("must be text".into()),
                };
                if s.len() > MAX_PARAM_BYTES {
                    return Err(format!("must be at most {MAX_PARAM_BYTES} bytes"));
                }
                if s.chars().any(|c| c.is_control()) {
                    return Err("must not contain control characters".into());
                }
                match self.kind {
                    ParamType::Enum if !self.choices.iter().any(|c| c == s) => {
                        Err(format!("must be one of: {}", self.choices.join(", ")))
                    }
                    ParamType::Path => check_path(s).map(|_| Value::String(s.to_string())),
                    ParamType::String => match &self.pattern {
                        Some(p) if !pattern_matches(p, s) => {
                            Err(format!("must match the pattern {p}"))
                        }
                        _ => Ok(Value::String(s.to_string())),
                    },
                    _ => Ok(Value::String(s.to_string())),
                }
            }
        }
    }
}

/// An absolute path with no `..` component and no NUL.
pub fn check_path(s: &str) -> Result<(), String> {
    if !s.starts_with('/') {
        return Err("must be an absolute path (starting with /)".into());
    }
    if s.split('/').any(|c| c == "..") {
        return Err("must not contain `..`".into());
    }
    Ok(())
}

/// Whether a submitted value counts as absent (missing, null or an empty form field).
fn is_blank(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.trim().is_empty(),
        _ => false,
    }
}

/// Validates submitted parameters against a template's schema and returns the
/// canonical values (defaults filled in). Errors name the parameter as `field`.
pub fn validate_params(
    specs: &[ParamSpec],
    input: &Map<String, Value>,
    pattern_matches: &dyn Fn(&str, &str) -> bool,
) -> Result<Map<String, Value>, AppError> {
    if let Some(unknown) = input.keys().find(|k| !specs.iter().any(|p| &p.name == *k)) {
        return Err(AppError::field(
            unknown.clone(),
            format!("unknown parameter `{unknown}`"),
        ));
    }
    let mut out = Map::new();
    for spec in specs {
        let given = input.get(&spec.name);
        // An unchecked checkbox sends nothing: a bool is false unless defaulted.
        let value = if is_blank(given) {
            match (&spec.default, spec.kind) {
                (Some(d), _) => d.clone(),
                (None, ParamType::Bool) => Value::Bool(false),
                (None, _) if spec.required => {
                    return Err(AppError::field(
                        spec.name.clone(),
                        format!("{} is required", spec.label()),
                    ))
                }
                (None, _) => continue,
            }
        } else {
            given.cloned().unwrap_or(Value::Null)
        };
        let checked = spec
            .check(&value, pattern_matches)
            .map_err(|msg| AppError::field(spec.name.clone(), format!("{} {msg}", spec.label())))?;
        out.insert(spec.name.clone(), checked);
    }
    Ok(out)
}

/// The text a parameter value contributes to an argv element.
pub fn param_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// How a template's jobs may overlap with others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exclusive {
    /// Never two running jobs on one target (the default).
    #[default]
    Target,
    /// Runs alone: nothing else runs while it runs.
    Global,
    /// No restriction.
    None,
}

impl Exclusive {
    pub const ALL: [Exclusive; 3] = [Exclusive::Target, Exclusive::Global, Exclusive::None];

    /// The name in the configuration and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Exclusive::Target => "target",
            Exclusive::Global => "global",
            Exclusive::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<Exclusive> {
        Exclusive::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

/// How a template reports progress in its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgressKind {
    /// No progress.
    #[default]
    None,
    /// restic-style JSON status lines (`percent_done`, `bytes_done`, `total_bytes`).
    Json,
    /// Marker lines: `::progress 45 copying files`.
    Marker,
}

/// A template as `GET /api/templates` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateInfo {
    pub id: String,
    pub title: String,
    pub description: Option<String>,
    pub params: Vec<ParamSpec>,
    /// The targets the caller may launch it on.
    pub targets: Vec<String>,
    pub exclusive: Exclusive,
    pub progress: ProgressKind,
    /// The argv it runs, placeholders unfilled, for the operator's information.
    pub command: Vec<String>,
}

/// A template as its launch button shows it (the dashboard's target
/// cards, a target's page): the page it opens, its title, what it does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateChoice {
    pub id: String,
    pub title: String,
    pub description: Option<String>,
}

impl TemplateChoice {
    /// The choices among `templates` that run on `target`, in their order.
    pub fn on_target(templates: &[TemplateInfo], target: &str) -> Vec<TemplateChoice> {
        templates
            .iter()
            .filter(|t| t.targets.iter().any(|x| x == target))
            .map(TemplateChoice::from)
            .collect()
    }
}

impl From<&TemplateInfo> for TemplateChoice {
    fn from(t: &TemplateInfo) -> Self {
        TemplateChoice {
            id: t.id.clone(),
            title: t.title.clone(),
            description: t.description.clone(),
        }
    }
}

/// The kind of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    Local,
    Docker,
    Ssh,
    Agent,
}

/// A target as `GET /api/targets` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetInfo {
    pub id: String,
    pub title: String,
    pub description: Option<String>,
    pub kind: TargetKind,
    pub owners: Vec<String>,
    /// Whether the caller may open a terminal on it.
    pub terminal: bool,
    /// The templates the caller may launch on it.
    pub templates: Vec<String>,
    /// The Unix user its jobs and console run as (`user =`), when not the
    /// server's own.
    #[serde(default)]
    pub runs_as: Option<String>,
    /// For admins: its console is a shell as the server's own user (a
    /// `local` target with a terminal and no `user`).
    #[serde(default)]
    pub console_as_server: bool,
    /// Its actual state (its status probe) and last error, if there is
    /// either.
    #[serde(default)]
    pub status: Option<crate::model::status::TargetStatus>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(kind: ParamType) -> ParamSpec {
        ParamSpec {
            name: "p".into(),
            kind,
            label: None,
            help: None,
            required: true,
            default: None,
            pattern: None,
            choices: vec![],
            min: None,
            max: None,
        }
    }

    fn no_pattern(_: &str, _: &str) -> bool {
        true
    }

    #[test]
    fn ints_accept_numbers_and_numeric_strings_within_bounds() {
        let mut s = spec(ParamType::Int);
        s.min = Some(1);
        s.max = Some(10);
        assert_eq!(s.check(&json!(5), &no_pattern), Ok(json!(5)));
        assert_eq!(s.check(&json!(" 7 "), &no_pattern), Ok(json!(7)));
        assert!(s
            .check(&json!(0), &no_pattern)
            .unwrap_err()
            .contains("at least 1"));
        assert!(s
            .check(&json!(11), &no_pattern)
            .unwrap_err()
            .contains("at most 10"));
        assert!(s.check(&json!("5x"), &no_pattern).is_err());
        assert!(s.check(&json!(1.5), &no_pattern).is_err());
    }

    #[test]
    fn paths_must_be_absolute_without_dotdot() {
        let s = spec(ParamType::Path);
        assert!(s.check(&json!("/srv/www"), &no_pattern).is_ok());
        assert!(s.check(&json!("srv"), &no_pattern).is_err());
        assert!(s.check(&json!("/srv/../etc"), &no_pattern).is_err());
        assert!(s.check(&json!("/srv/..x"), &no_pattern).is_ok());
    }

    #[test]
    fn enums_only_take_their_choices() {
        let mut s = spec(ParamType::Enum);
        s.choices = vec!["a".into(), "b".into()];
        assert!(s.check(&json!("a"), &no_pattern).is_ok());
        assert!(s
            .check(&json!("c"), &no_pattern)
            .unwrap_err()
            .contains("one of: a, b"));
    }

    #[test]
    fn strings_are_checked_by_the_given_pattern_matcher_and_never_hold_control_chars() {
        let mut s = spec(ParamType::String);
        s.pattern = Some("[a-z]+".into());
        let only_abc = |_: &str, v: &str| v == "abc";
        assert!(s.check(&json!("abc"), &only_abc).is_ok());
        assert!(s.check(&json!("abd"), &only_abc).is_err());
        s.pattern = None;
        assert!(s.check(&json!("a\nb"), &no_pattern).is_err());
    }

    #[test]
    fn validation_fills_defaults_names_the_field_and_refuses_unknown_params() {
        let mut n = spec(ParamType::Int);
        n.name = "n".into();
        n.default = Some(json!(3));
        let mut b = spec(ParamType::Bool);
        b.name = "b".into();
        b.required = false;
        let mut p = spec(ParamType::Path);
        p.name = "path".into();
        let specs = vec![n, b, p];

        let out = validate_params(
            &specs,
            json!({"path": "/x"}).as_object().unwrap(),
            &no_pattern,
        )
        .unwrap();
        assert_eq!(
            Value::Object(out),
            json!({"n": 3, "b": false, "path": "/x"})
        );

        let err = validate_params(&specs, json!({}).as_object().unwrap(), &no_pattern).unwrap_err();
        assert_eq!(err.field_name(), Some("path"));

        let err = validate_params(
            &specs,
            json!({"path": "/x", "zzz": 1}).as_object().unwrap(),
            &no_pattern,
        )
        .unwrap_err();
        assert_eq!(err.field_name(), Some("zzz"));
    }
}
