//! The environment a process starts with, and nothing else: jobs and
//! terminals never inherit the server's own environment.
//!
//! - a job: `[jobs]`' base variables (the few the server passes on, read
//!   once at start: `PATH`, `HOME`, `USER`, `LOGNAME`, `LANG`, `LC_ALL`,
//!   `TZ`), then its template's `env`, then opsdeck's own
//!   (`OPSDECK_JOB_ID`, …);
//! - a terminal: the same base variables, with `PATH`, `HOME` and `LANG`
//!   filled in where the server had none, and `TERM`/`COLORTERM` for
//!   xterm.js.
//!
//! A later variable of the same name replaces an earlier one.

use std::path::Path;

/// `PATH` when the base variables hold none.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// `LANG` for a terminal when the base variables hold none.
const DEFAULT_LANG: &str = "C.UTF-8";

/// An explicit environment: names in first-set order, each with its last value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment(Vec<(String, String)>);

impl Environment {
    /// Sets `key` (replacing an earlier value).
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let (key, value) = (key.into(), value.into());
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// Sets `key` unless it is set.
    pub fn set_default(&mut self, key: &str, value: impl Into<String>) {
        if self.get(key).is_none() {
            self.set(key, value);
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn vars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The `PATH` a bare program name is looked up in.
    pub fn path(&self) -> &str {
        self.get("PATH").unwrap_or(DEFAULT_PATH)
    }

    /// A job's: the base variables, then `extra` (its template's and
    /// opsdeck's own), later ones winning.
    pub fn for_job(base: &[(String, String)], extra: &[(String, String)]) -> Environment {
        let mut env = Environment::default();
        for (k, v) in base.iter().chain(extra) {
            env.set(k.clone(), v.clone());
        }
        env
    }

    /// A terminal's: the base variables with `PATH`, `HOME` (`home`, else
    /// `/`) and `LANG` filled in, and `TERM`, `COLORTERM` for xterm.js.
    pub fn for_terminal(base: &[(String, String)], home: Option<&Path>) -> Environment {
        let mut env = Environment::for_job(base, &[]);
        env.set_default("PATH", DEFAULT_PATH);
        match home {
            Some(h) => env.set("HOME", h.to_string_lossy()),
            None => env.set_default("HOME", "/"),
        }
        env.set_default("LANG", DEFAULT_LANG);
        env.set("TERM", "xterm-256color");
        env.set("COLORTERM", "truecolor");
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_jobs_own_variables_replace_the_base_ones_and_appear_once() {
        let base = vars(&[("PATH", "/usr/bin"), ("LANG", "C")]);
        let extra = vars(&[("PATH", "/opt/bin"), ("OPSDECK_JOB_ID", "7")]);
        let env = Environment::for_job(&base, &extra);
        let all: Vec<_> = env.vars().collect();
        assert_eq!(
            all,
            [("PATH", "/opt/bin"), ("LANG", "C"), ("OPSDECK_JOB_ID", "7")]
        );
        assert_eq!(env.path(), "/opt/bin");
    }

    #[test]
    fn a_terminal_gets_path_home_lang_and_term_even_from_an_empty_base() {
        let env = Environment::for_terminal(&[], None);
        assert_eq!(env.get("PATH"), Some(DEFAULT_PATH));
        assert_eq!(env.get("HOME"), Some("/"));
        assert_eq!(env.get("LANG"), Some("C.UTF-8"));
        assert_eq!(env.get("TERM"), Some("xterm-256color"));
        let env = Environment::for_terminal(
            &vars(&[("HOME", "/root"), ("LANG", "de_DE.UTF-8")]),
            Some(Path::new("/home/ops")),
        );
        assert_eq!(
            env.get("HOME"),
            Some("/home/ops"),
            "the user's own home wins"
        );
        assert_eq!(env.get("LANG"), Some("de_DE.UTF-8"));
    }
}
