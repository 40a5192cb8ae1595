//! Building what a job runs: the template's argv with its placeholders filled
//! (each placeholder's value stays inside its one argv element, never split,
//! never seen by a shell), wrapped for the target's kind.
//!
//! - `local`: the argv itself;
//! - `docker`: `docker exec [-e K=V]… [-w DIR] CONTAINER argv…`;
//! - `ssh`: `ssh -o BatchMode=yes [-p PORT] HOST -- 'cd' 'DIR' && exec 'env' 'K=V' 'argv0' 'argv1'…`:
//!   ssh hands the remote side one string for its shell, so every element is
//!   single-quoted for it here (the one place a shell sees our text, and it
//!   sees only quoted words).

use app::model::template::param_text;
use serde_json::{Map, Value};

use crate::config::{Target, TargetAccess, Template};

/// What to execute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub argv: Vec<String>,
    /// Extra environment for the local process.
    pub env: Vec<(String, String)>,
    /// Working directory of the local process.
    pub workdir: Option<String>,
}

/// Fills one argv element: `{name}` → the parameter's text; `{{`/`}}` → braces.
/// Returns `None` when the element is a lone placeholder of a parameter that
/// has no value (an optional parameter left out): the element is dropped.
pub fn fill(element: &str, params: &Map<String, Value>) -> Option<String> {
    if let Some(name) = element.strip_prefix('{').and_then(|e| e.strip_suffix('}')) {
        if !name.contains(['{', '}']) {
            return params.get(name).map(param_text);
        }
    }
    let mut out = String::with_capacity(element.len());
    let mut chars = element.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                out.push_str(&params.get(&name).map(param_text).unwrap_or_default());
            }
            c => out.push(c),
        }
    }
    Some(out)
}

/// Quotes a word for a POSIX shell: `it's` → `'it'\''s'`.
pub fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The invocation for a job of `template` on `target` with `params`.
pub fn build(
    template: &Template,
    target: &Target,
    params: &Map<String, Value>,
    job_id: i64,
) -> Invocation {
    let argv: Vec<String> = template
        .command
        .iter()
        .filter_map(|e| fill(e, params))
        .collect();
    let mut env: Vec<(String, String)> = template
        .env
        .iter()
        .map(|(k, v)| (k.clone(), fill(v, params).unwrap_or_default()))
        .collect();
    env.push(("OPSDECK_JOB_ID".into(), job_id.to_string()));
    env.push(("OPSDECK_TEMPLATE".into(), template.id.clone()));
    env.push(("OPSDECK_TARGET".into(), target.id.clone()));

    on_target(target, argv, env, template.workdir.clone())
}

/// `argv` with `env` and `workdir`, wrapped to run on `target` as its kind
/// reaches it (the module comment): what a job runs, and what a status
/// probe runs (`status::probe`), built the one same way.
pub fn on_target(
    target: &Target,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    workdir: Option<String>,
) -> Invocation {
    match &target.access {
        TargetAccess::Local | TargetAccess::Agent { .. } => Invocation { argv, env, workdir },
        TargetAccess::Docker { container } => {
            let mut full = vec!["docker".to_string(), "exec".to_string()];
            for (k, v) in &env {
                full.push("-e".into());
                full.push(format!("{k}={v}"));
            }
            if let Some(wd) = &workdir {
                full.push("-w".into());
                full.push(wd.clone());
            }
            full.push(container.clone());
            full.extend(argv);
            Invocation {
                argv: full,
                env: Vec::new(),
                workdir: None,
            }
        }
        TargetAccess::Ssh { host, port } => {
            let mut remote = String::new();
            if let Some(wd) = &workdir {
                remote.push_str(&format!("cd {} && ", shell_quote(wd)));
            }
            remote.push_str("exec env");
            for (k, v) in &env {
                remote.push(' ');
                remote.push_str(&shell_quote(&format!("{k}={v}")));
            }
            for word in &argv {
                remote.push(' ');
                remote.push_str(&shell_quote(word));
            }
            let mut full = vec!["ssh".to_string(), "-o".into(), "BatchMode=yes".into()];
            if let Some(p) = port {
                full.push("-p".into());
                full.push(p.to_string());
            }
            full.push(host.clone());
            full.push("--".into());
            full.push(remote);
            Invocation {
                argv: full,
                env: Vec::new(),
                workdir: None,
            }
        }
    }
}

/// The argv as a person reads it in the log (quoted where needed).
pub fn display(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
            {
                a.clone()
            } else {
                shell_quote(a)
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, FileSource};
    use serde_json::json;

    fn config(extra: &str) -> Config {
        let text = format!(
            "[[targets]]\nid = \"local\"\nkind = \"local\"\n[[targets]]\nid = \"box\"\nkind = \"docker\"\ncontainer = \"web\"\n\
             [[targets]]\nid = \"far\"\nkind = \"ssh\"\nhost = \"ops@far.example\"\nport = 2222\n{extra}"
        );
        Config::parse(&text, "t.toml", &FileSource::Embedded).unwrap()
    }

    fn params(v: serde_json::Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_placeholder_fills_exactly_one_element_whatever_its_value() {
        let p = params(json!({"path": "/srv/my files; rm -rf /", "n": 5, "v": true}));
        assert_eq!(fill("{path}", &p).unwrap(), "/srv/my files; rm -rf /");
        assert_eq!(fill("--count={n}", &p).unwrap(), "--count=5");
        assert_eq!(fill("{v}", &p).unwrap(), "true");
        assert_eq!(fill("{{literal}}", &p).unwrap(), "{literal}");
        assert_eq!(
            fill("{missing}", &p),
            None,
            "an absent optional parameter drops its lone element"
        );
        assert_eq!(fill("x{missing}y", &p).unwrap(), "xy");
    }

    #[test]
    fn local_docker_and_ssh_targets_build_the_right_argv() {
        let c = config(
            "[[templates]]\nid = \"t\"\ncommand = [\"du\", \"-sh\", \"{path}\"]\nworkdir = \"/srv\"\nenv = { MODE = \"fast\" }\n\
             params = [{ name = \"path\", type = \"path\" }]\n",
        );
        let t = c.template("t").unwrap();
        let p = params(json!({"path": "/srv/it's here"}));

        let local = build(t, c.target("local").unwrap(), &p, 7);
        assert_eq!(local.argv, ["du", "-sh", "/srv/it's here"]);
        assert_eq!(local.workdir.as_deref(), Some("/srv"));
        assert!(local.env.contains(&("MODE".into(), "fast".into())));
        assert!(local.env.contains(&("OPSDECK_JOB_ID".into(), "7".into())));

        let docker = build(t, c.target("box").unwrap(), &p, 7);
        assert_eq!(&docker.argv[..2], ["docker", "exec"]);
        assert!(docker.argv.windows(2).any(|w| w == ["-e", "MODE=fast"]));
        assert!(docker.argv.windows(2).any(|w| w == ["-w", "/srv"]));
        let c_at = docker.argv.iter().position(|a| a == "web").unwrap();
        assert_eq!(&docker.argv[c_at + 1..], ["du", "-sh", "/srv/it's here"]);

        let ssh = build(t, c.target("far").unwrap(), &p, 7);
        assert_eq!(
            &ssh.argv[..7],
            [
                "ssh",
                "-o",
                "BatchMode=yes",
                "-p",
                "2222",
                "ops@far.example",
                "--"
            ]
        );
        let remote = &ssh.argv[7];
        assert!(remote.starts_with("cd '/srv' && exec env "), "{remote}");
        assert!(
            remote.ends_with(r"'du' '-sh' '/srv/it'\''s here'"),
            "{remote}"
        );
    }

    #[test]
    fn quoting_survives_a_real_shell() {
        let nasty = "a'b\"c $(echo pwned) `x` \\ ;|&";
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("printf %s {}", shell_quote(nasty)))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), nasty);
    }
}
