//! Parameter validation (`app::model::template::validate_params`): for any
//! schema and any submitted values, either an error naming a field, or
//! canonical values that satisfy every rule of their parameter.
#![no_main]

use std::cell::RefCell;
use std::collections::HashMap;

use app::model::template::{validate_params, ParamSpec, ParamType, MAX_PARAM_BYTES};
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use regex::Regex;
use serde_json::{Map, Value};

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Kind {
    String,
    Enum,
    Int,
    Bool,
    Path,
}

#[derive(Arbitrary, Debug, Clone)]
enum V {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<String>),
}

impl V {
    fn json(&self) -> Value {
        match self {
            V::Null => Value::Null,
            V::Bool(b) => Value::Bool(*b),
            V::Int(n) => Value::from(*n),
            V::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            V::Str(s) => Value::String(s.clone()),
            V::List(l) => Value::from(l.clone()),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Spec {
    name: u8,
    kind: Kind,
    required: bool,
    default: Option<V>,
    pattern: Option<String>,
    choices: Vec<String>,
    min: Option<i64>,
    max: Option<i64>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    specs: Vec<Spec>,
    given: Vec<(u8, V)>,
}

fn name(n: u8) -> String {
    format!("p{}", n % 8)
}

thread_local! {
    static PATTERNS: RefCell<HashMap<String, Option<Regex>>> = RefCell::new(HashMap::new());
}

/// The server's rule: a full match of the configured regex.
fn pattern_matches(pattern: &str, value: &str) -> bool {
    PATTERNS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.len() > 1000 {
            cache.clear();
        }
        cache
            .entry(pattern.to_string())
            .or_insert_with(|| Regex::new(&format!("^(?:{pattern})$")).ok())
            .as_ref()
            .is_some_and(|re| re.is_match(value))
    })
}

fuzz_target!(|input: Input| {
    let mut specs: Vec<ParamSpec> = Vec::new();
    for s in input.specs {
        let n = name(s.name);
        if specs.iter().any(|p| p.name == n) {
            continue; // the config loader refuses a name defined twice
        }
        specs.push(ParamSpec {
            name: n,
            kind: match s.kind {
                Kind::String => ParamType::String,
                Kind::Enum => ParamType::Enum,
                Kind::Int => ParamType::Int,
                Kind::Bool => ParamType::Bool,
                Kind::Path => ParamType::Path,
            },
            label: None,
            help: None,
            required: s.required,
            default: s.default.as_ref().map(V::json),
            pattern: s.pattern,
            choices: s.choices,
            min: s.min,
            max: s.max,
        });
    }
    let mut given = Map::new();
    for (n, v) in &input.given {
        given.insert(name(*n), v.json());
    }

    match validate_params(&specs, &given, &pattern_matches) {
        Ok(out) => {
            for (k, v) in &out {
                let spec = specs
                    .iter()
                    .find(|p| &p.name == k)
                    .expect("only known parameters");
                // Canonical: checking the output again changes nothing.
                assert_eq!(spec.check(v, &pattern_matches).as_ref(), Ok(v), "{k}");
                match spec.kind {
                    ParamType::Bool => assert!(v.is_boolean()),
                    ParamType::Int => {
                        let n = v.as_i64().expect("an int is a number");
                        assert!(spec.min.is_none_or(|m| n >= m) && spec.max.is_none_or(|m| n <= m));
                    }
                    ParamType::String | ParamType::Enum | ParamType::Path => {
                        let s = v.as_str().expect("text");
                        assert!(s.len() <= MAX_PARAM_BYTES);
                        assert!(!s.chars().any(char::is_control));
                        match spec.kind {
                            ParamType::Enum => assert!(spec.choices.iter().any(|c| c == s)),
                            ParamType::Path => {
                                assert!(s.starts_with('/'));
                                assert!(!s.split('/').any(|c| c == ".."));
                            }
                            _ => {
                                if let Some(p) = &spec.pattern {
                                    assert!(pattern_matches(p, s));
                                }
                            }
                        }
                    }
                }
            }
            for spec in &specs {
                if spec.required || spec.kind == ParamType::Bool {
                    assert!(out.contains_key(&spec.name), "{} missing", spec.name);
                }
            }
        }
        Err(e) => {
            let field = e.field_name().expect("a refusal names the field");
            assert!(specs.iter().any(|p| p.name == field) || given.contains_key(field));
        }
    }
});
