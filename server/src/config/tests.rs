use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "test.toml", &FileSource::Embedded)
}

/// The (line, key, message) of a config error.
fn invalid(text: &str) -> (usize, String, String) {
    match parse(text) {
        Err(ConfigError::Invalid {
            file,
            line,
            key,
            message,
            ..
        }) => {
            assert_eq!(file, "test.toml");
            (line, key, message)
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("config was accepted:\n{text}"),
    }
}

#[test]
fn the_demo_configuration_is_valid_and_complete() {
    let c = Config::demo().expect("demo config");
    assert_eq!(c.server.addr.to_string(), "127.0.0.1:3000");
    assert_eq!(c.server.database_url, "sqlite://data/opsdeck.db");
    assert_eq!(c.server.workers, 4);
    let ids: Vec<_> = c.targets.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["web-1", "web-2", "db-1"]);
    let templates: Vec<_> = c.templates.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(
        templates,
        [
            "demo-backup",
            "sleep",
            "disk-usage",
            "flaky",
            "install-runtime",
            "web-start",
            "web-stop"
        ]
    );
    let backup = c.template("demo-backup").unwrap();
    assert_eq!(&backup.command[..2], ["/bin/sh", "-c"]);
    assert!(
        backup.command[2].contains("message_type"),
        "the script is inlined"
    );
    assert_eq!(
        &backup.command[3..],
        ["demo-backup", "{path}", "{seconds}", "{warnings}"]
    );
    assert_eq!(backup.warning_exit_codes, [3]);
    let retry = c
        .template("flaky")
        .unwrap()
        .retry
        .clone()
        .expect("flaky retries");
    assert_eq!((retry.max, retry.backoff_ms), (2, 5_000));
    assert_eq!(
        c.template("install-runtime").unwrap().exclusive,
        Exclusive::Global
    );
}

#[test]
fn the_shipped_example_file_is_the_built_in_demo() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/opsdeck.toml");
    let from_file = Config::load(&path).expect("examples/opsdeck.toml loads");
    let demo = Config::demo().unwrap();
    assert_eq!(from_file.templates.len(), demo.templates.len());
    for (a, b) in from_file.templates.iter().zip(&demo.templates) {
        assert_eq!(a.command, b.command, "template {}", a.id);
    }
}

#[test]
fn an_empty_file_gives_the_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c.server.workers, 4);
    assert_eq!(c.jobs.max_line_bytes, 64 << 10);
    assert_eq!(c.jobs.max_log_bytes, 64 << 20);
    assert_eq!(c.jobs.tail_lines, 10_000);
    assert_eq!(c.jobs.kill_grace, Duration::from_secs(10));
    assert_eq!(c.auth.session_idle, Duration::from_secs(7 * 86_400));
    assert_eq!(c.retention.days, None);
    assert_eq!(c.terminal.shell, ["/bin/bash", "-l"]);
    assert_eq!(c.server.max_body_bytes, 1 << 20);
    assert_eq!(c.terminal.max_frame_bytes, 64 << 10);
    assert_eq!(c.terminal.max_frames_per_second, 200);
}

#[test]
fn request_and_terminal_limits_are_read_and_checked() {
    let c = parse(
        "[server]\nmax_body_bytes = \"256KiB\"\n[terminal]\nmax_frame_bytes = 4096\nmax_frames_per_second = 50\n",
    )
    .unwrap();
    assert_eq!(c.server.max_body_bytes, 256 << 10);
    assert_eq!(c.terminal.max_frame_bytes, 4096);
    assert_eq!(c.terminal.max_frames_per_second, 50);

    let (line, key, message) = invalid("[server]\nworkers = 2\nmax_body_bytes = 12\n");
    assert_eq!((line, key.as_str()), (3, "server.max_body_bytes"));
    assert_eq!(message, "must be between 1KiB and 64MiB");
    let (line, key, message) = invalid("[server]\nmax_body_bytes = \"lots\"\n");
    assert_eq!((line, key.as_str()), (2, "server.max_body_bytes"));
    assert!(message.contains("is not a size"), "{message}");
    let (line, key, message) = invalid("[terminal]\n\nmax_frame_bytes = \"1GiB\"\n");
    assert_eq!((line, key.as_str()), (3, "terminal.max_frame_bytes"));
    assert_eq!(message, "must be between 1KiB and 16MiB");
    let (line, key, message) = invalid("[terminal]\nmax_frames_per_second = 0\n");
    assert_eq!((line, key.as_str()), (2, "terminal.max_frames_per_second"));
    assert_eq!(message, "must be between 1 and 100000");
}

#[test]
fn a_syntax_error_names_its_line() {
    let (line, _, message) = invalid("[server]\nworkers = 4\naddr = \n");
    assert_eq!(line, 3);
    assert!(!message.is_empty());
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let (line, key, message) = invalid("[server]\nworkers = 2\nwokers = 3\n");
    assert_eq!(line, 3);
    assert_eq!(key, "server.wokers");
    assert!(message.contains("unknown field"), "{message}");
}

#[test]
fn a_bad_value_names_its_key_path_and_line() {
    let text = "[[targets]]\nid = \"a\"\nkind = \"local\"\n\n[[templates]]\nid = \"t\"\ncommand = [\"true\"]\ntimeout = \"soon\"\n";
    let (line, key, message) = invalid(text);
    assert_eq!(line, 8);
    assert_eq!(key, "templates[0].timeout");
    assert!(message.contains("not a duration"), "{message}");

    let (line, key, _) = invalid("[server]\n\nworkers = 0\n");
    assert_eq!((line, key.as_str()), (3, "server.workers"));

    let (line, key, _) = invalid("[server]\naddr = \"localhost\"\n");
    assert_eq!((line, key.as_str()), (2, "server.addr"));
}

#[test]
fn ids_must_be_lowercase_slugs() {
    let (line, key, message) = invalid("[[targets]]\nid = \"Web 1\"\nkind = \"local\"\n");
    assert_eq!((line, key.as_str()), (2, "targets[0].id"));
    assert!(message.contains("not a valid id"));
}

#[test]
fn placeholders_must_name_a_parameter_and_never_choose_the_program() {
    let text = "[[templates]]\nid = \"t\"\ncommand = [\"echo\", \"{nope}\"]\n";
    let (line, key, message) = invalid(text);
    assert_eq!((line, key.as_str()), (3, "templates[0].command"));
    assert!(message.contains("{nope}"), "{message}");

    let text = "[[templates]]\nid = \"t\"\ncommand = [\"{prog}\"]\nparams = [{ name = \"prog\", type = \"string\" }]\n";
    let (_, key, message) = invalid(text);
    assert_eq!(key, "templates[0].command");
    assert!(message.contains("must be literal"), "{message}");
}

#[test]
fn parameter_schemas_are_checked() {
    let (line, key, _) = invalid(
        "[[templates]]\nid = \"t\"\ncommand = [\"x\"]\nparams = [\n  { name = \"e\", type = \"enum\" },\n]\n",
    );
    assert_eq!((line, key.as_str()), (5, "templates[0].params[0].choices"));

    let (_, key, _) = invalid(
        "[[templates]]\nid = \"t\"\ncommand = [\"x\"]\nparams = [{ name = \"n\", type = \"int\", min = 5, max = 1 }]\n",
    );
    assert_eq!(key, "templates[0].params[0].min");

    let (_, key, message) = invalid(
        "[[templates]]\nid = \"t\"\ncommand = [\"x\"]\nparams = [{ name = \"s\", type = \"string\", pattern = \"(\" }]\n",
    );
    assert_eq!(key, "templates[0].params[0].pattern");
    assert!(message.contains("regex"));

    let (_, key, _) = invalid(
        "[[templates]]\nid = \"t\"\ncommand = [\"x\"]\nparams = [{ name = \"p\", type = \"path\", default = \"relative\" }]\n",
    );
    assert_eq!(key, "templates[0].params[0].default");

    let (_, key, _) = invalid(
        "[[templates]]\nid = \"t\"\ncommand = [\"x\"]\nparams = [{ name = \"p\", type = \"path\", choices = [\"a\"] }]\n",
    );
    assert_eq!(key, "templates[0].params[0].choices");

    let (_, key, _) = invalid(
        "[[templates]]\nid = \"t\"\ncommand = [\"x\"]\nparams = [{ name = \"p\", type = \"colour\" }]\n",
    );
    assert_eq!(key, "templates[0].params[0].type");
}

#[test]
fn cross_references_are_checked() {
    let (line, key, message) = invalid(
        "[[targets]]\nid = \"a\"\nkind = \"local\"\n[[templates]]\nid = \"t\"\ncommand = [\"x\"]\ntargets = [\"a\", \"b\"]\n",
    );
    assert_eq!((line, key.as_str()), (7, "templates[0].targets"));
    assert!(message.contains("`b`"));

    let (_, key, _) = invalid(
        "[[targets]]\nid = \"a\"\nkind = \"local\"\n[[targets]]\nid = \"a\"\nkind = \"local\"\n",
    );
    assert_eq!(key, "targets[1].id");
}

#[test]
fn target_kinds_need_their_settings() {
    let (_, key, _) = invalid("[[targets]]\nid = \"c\"\nkind = \"docker\"\n");
    assert_eq!(key, "targets[0].container");
    let (_, key, _) =
        invalid("[[targets]]\nid = \"c\"\nkind = \"docker\"\ncontainer = \"web; rm -rf /\"\n");
    assert_eq!(key, "targets[0].container");
    let (_, key, _) =
        invalid("[[targets]]\nid = \"s\"\nkind = \"ssh\"\nhost = \"-oProxyCommand=x\"\n");
    assert_eq!(key, "targets[0].host");
    let (_, key, message) = invalid("[[targets]]\nid = \"g\"\nkind = \"agent\"\n");
    assert_eq!(key, "targets[0].agent");
    assert!(message.contains("opsdeck agent add NAME"));
    let (_, key, _) = invalid("[[targets]]\nid = \"g\"\nkind = \"agent\"\nagent = \"Bad Name\"\n");
    assert_eq!(key, "targets[0].agent");
    let (_, key, _) = invalid("[[targets]]\nid = \"g\"\nkind = \"local\"\nagent = \"edge\"\n");
    assert_eq!(key, "targets[0].agent");

    let c =
        parse("[[targets]]\nid = \"c\"\nkind = \"docker\"\ncontainer = \"web_1.blue\"\n").unwrap();
    assert_eq!(
        c.targets[0].access,
        TargetAccess::Docker {
            container: "web_1.blue".into()
        }
    );
}

#[test]
fn a_script_is_literal_text_and_its_arguments_come_as_positional_parameters() {
    let c = parse(
        "[[templates]]\nid = \"t\"\nscript = \"echo ${1} {not-a-placeholder}\"\nargs = [\"{who}\"]\nparams = [{ name = \"who\", type = \"string\" }]\n",
    )
    .unwrap();
    let t = &c.templates[0];
    assert_eq!(
        t.command,
        [
            "/bin/sh",
            "-c",
            "echo ${{1}} {{not-a-placeholder}}",
            "t",
            "{who}"
        ]
    );
}

#[test]
fn placeholders_are_found_and_braces_escaped() {
    assert_eq!(
        placeholders("--repo={repo}:{tag}").unwrap(),
        ["repo", "tag"]
    );
    assert!(placeholders("{{literal}}").unwrap().is_empty());
    assert!(placeholders("{open").is_err());
    assert!(placeholders("close}").is_err());
}

#[test]
fn a_missing_file_says_which_and_what_to_do() {
    let err = Config::load(Path::new("/nonexistent/opsdeck.toml")).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("/nonexistent/opsdeck.toml"), "{text}");
    assert!(text.contains("--config"), "{text}");
}

#[test]
fn a_script_is_shown_by_its_name_not_its_text() {
    let c = Config::demo().unwrap();
    let t = c.template("demo-backup").unwrap();
    assert_eq!(
        t.shown,
        [
            "/bin/sh",
            "-c",
            "<scripts/demo-backup.sh>",
            "{path}",
            "{seconds}",
            "{warnings}"
        ]
    );
    let sleep = c.template("sleep").unwrap();
    assert_eq!(sleep.shown, sleep.command);
}

#[test]
fn a_duration_past_a_hundred_years_is_refused_with_its_key() {
    let (line, key, message) = invalid("[jobs]\nkill_grace = 18446744073709551615\n");
    assert_eq!((line, key.as_str()), (2, "jobs.kill_grace"));
    assert!(message.contains("longer than 100 years"), "{message}");
    let (_, key, _) =
        invalid("[[templates]]\nid = \"t\"\ncommand = [\"true\"]\ntimeout = \"9999999999999d\"\n");
    assert_eq!(key, "templates[0].timeout");
}

#[test]
fn a_bad_value_of_a_spanned_key_is_named_by_its_key_alone() {
    let (line, key, message) = invalid("[jobs]\nmax_line_bytes = \"lots\"\n");
    assert_eq!((line, key.as_str()), (2, "jobs.max_line_bytes"));
    assert!(message.contains("is not a size"), "{message}");
}

#[test]
fn stream_limits_have_defaults_and_are_checked() {
    let c = parse("").unwrap();
    assert_eq!(c.server.max_streams_per_user, 100);
    assert_eq!(c.server.max_streams_per_address, 200);
    let c = parse("[server]\nmax_streams_per_user = 5\nmax_streams_per_address = 9\n").unwrap();
    assert_eq!(
        (
            c.server.max_streams_per_user,
            c.server.max_streams_per_address
        ),
        (5, 9)
    );
    let (line, key, message) = invalid("[server]\nworkers = 2\nmax_streams_per_user = 0\n");
    assert_eq!((line, key.as_str()), (3, "server.max_streams_per_user"));
    assert_eq!(message, "must be between 1 and 1000000");
    let (line, key, _) = invalid("[server]\nmax_streams_per_address = -1\n");
    assert_eq!((line, key.as_str()), (2, "server.max_streams_per_address"));
}

const LOCAL: &str = "[[targets]]\nid = \"t\"\nkind = \"local\"\nterminal = true\n";

#[test]
fn a_targets_user_is_checked_where_it_is_written() {
    let root = nix::unistd::Uid::effective().is_root();
    let (line, key, message) = invalid(&format!("{LOCAL}user = \"no-such-user-here\"\n"));
    assert_eq!((line, key.as_str()), (5, "targets[0].user"));
    if root {
        assert!(
            message.contains("there is no user `no-such-user-here`"),
            "{message}"
        );
    } else {
        assert!(
            message.contains("cannot start processes as another user"),
            "{message}"
        );
    }
    let (line, key, message) = invalid(&format!("{LOCAL}user = \"bad name\"\n"));
    assert_eq!((line, key.as_str()), (5, "targets[0].user"));
    assert!(message.contains("must be a Unix name"), "{message}");
    let (line, key, message) = invalid(&format!("{LOCAL}group = \"root\"\n"));
    assert_eq!((line, key.as_str()), (5, "targets[0].group"));
    assert!(message.contains("goes with `user`"), "{message}");
    let (line, key, message) = invalid(
        "[[targets]]\nid = \"d\"\nkind = \"docker\"\ncontainer = \"web\"\nuser = \"root\"\n",
    );
    assert_eq!((line, key.as_str()), (5, "targets[0].user"));
    assert!(message.contains("for local targets"), "{message}");
    if root {
        let c = parse(&format!("{LOCAL}user = \"root\"\ngroup = \"root\"\n")).unwrap();
        let t = &c.targets[0];
        assert_eq!(
            t.run_as,
            Some(crate::proc::RunAs {
                user: "root".into(),
                group: Some("root".into())
            })
        );
        assert!(!t.console_as_server());
        let (_, key, message) = invalid(&format!(
            "{LOCAL}user = \"root\"\ngroup = \"no-such-group-here\"\n"
        ));
        assert_eq!(key, "targets[0].group");
        assert!(
            message.contains("no group `no-such-group-here`"),
            "{message}"
        );
    }
    let c = parse(LOCAL).unwrap();
    assert!(c.targets[0].console_as_server());
}

#[test]
fn the_cluster_section_has_defaults_and_is_checked() {
    let c = parse("[server]\naddr = \"127.0.0.1:3100\"\n").unwrap();
    assert!(!c.cluster.node_set);
    assert!(
        c.cluster.node.ends_with("-3100"),
        "the default node id names the port: {}",
        c.cluster.node
    );
    assert!(ID_RE.is_match(&c.cluster.node), "{}", c.cluster.node);
    assert_eq!(c.cluster.node_timeout, Duration::from_secs(15));
    assert_eq!(c.cluster.heartbeat_interval(), Duration::from_secs(3));

    let c = parse("[cluster]\nnode = \"replica-a\"\nnode_timeout = \"3s\"\n").unwrap();
    assert_eq!(c.cluster.node, "replica-a");
    assert!(c.cluster.node_set);
    assert_eq!(c.cluster.heartbeat_interval(), Duration::from_millis(600));

    let (line, key, message) = invalid("[cluster]\n\nnode = \"Replica A\"\n");
    assert_eq!((line, key.as_str()), (3, "cluster.node"));
    assert!(
        message.contains("`Replica A` is not a node id"),
        "{message}"
    );
    let (line, key, message) = invalid("[cluster]\nnode_timeout = \"500ms\"\n");
    assert_eq!((line, key.as_str()), (2, "cluster.node_timeout"));
    assert_eq!(message, "must be between 1s and 1h");
    let (line, key, message) = invalid("[cluster]\nnode_timeout = \"soon\"\n");
    assert_eq!((line, key.as_str()), (2, "cluster.node_timeout"));
    assert!(message.contains("not a duration"), "{message}");
    let (line, key, _) = invalid("[cluster]\nnodes = \"a\"\n");
    assert_eq!((line, key.as_str()), (2, "cluster.nodes"));
}

#[test]
fn the_old_places_of_the_node_settings_say_where_they_went() {
    let (line, key, message) = invalid("[server]\nnode = \"a\"\n");
    assert_eq!((line, key.as_str()), (2, "server.node"));
    assert!(message.contains("moved to [cluster].node"), "{message}");
    let (line, key, message) = invalid("[jobs]\n\nheartbeat_interval = \"5s\"\n");
    assert_eq!((line, key.as_str()), (3, "jobs.heartbeat_interval"));
    assert!(message.contains("[cluster].node_timeout"), "{message}");
}

#[test]
fn a_default_node_id_is_the_host_and_port_made_valid() {
    assert_eq!(node_name("vm", 3000), "vm-3000");
    assert_eq!(node_name("Web_1.Example.COM", 80), "web_1.example.com-80");
    assert_eq!(node_name("höst name", 3000), "h-st-name-3000");
    assert_eq!(node_name("", 3000), "node-3000");
    assert_eq!(node_name("-leading", 1), "node-1");
    let long = node_name(&"a".repeat(100), 65535);
    assert_eq!(long.len(), 63);
    assert!(long.ends_with("-65535") && ID_RE.is_match(&long), "{long}");
    let mut c = parse("").unwrap().cluster;
    c.settle(4242);
    assert!(c.node.ends_with("-4242"), "{}", c.node);
    let mut set = parse("[cluster]\nnode = \"fixed\"\n").unwrap().cluster;
    set.settle(4242);
    assert_eq!(set.node, "fixed", "a node id written in the file is kept");
}

const HOOK_BASE: &str = "[[targets]]\nid = \"web\"\nkind = \"local\"\n\n[[templates]]\nid = \"deploy\"\ncommand = [\"true\"]\n\n";

#[test]
fn a_notify_hook_is_read_with_its_defaults_and_filters() {
    let c = parse(&format!(
        "{HOOK_BASE}[[notify]]\nid = \"ops\"\nurl = \"https://hooks.example.com/x?k=1\"\nevents = [\"job.failed\", \"agent.lost\"]\ntargets = [\"web\"]\nsecret = \"0123456789abcdef\"\nbackoff = \"2s\"\n"
    ))
    .unwrap();
    let h = &c.notify[0];
    assert_eq!(h.id, "ops");
    assert_eq!(h.url.as_str(), "https://hooks.example.com/x?k=1");
    assert_eq!(
        h.events,
        [
            app::model::webhook::EventKind::JobFailed,
            app::model::webhook::EventKind::AgentLost
        ]
    );
    assert_eq!(h.secret, b"0123456789abcdef");
    assert_eq!(h.backoff, Duration::from_secs(2));
    assert_eq!(h.backoff_max, Duration::from_secs(3600));
    assert_eq!(h.retry_for, Duration::from_secs(86_400));
    use app::model::webhook::EventKind::*;
    assert!(h.wants(JobFailed, Some("deploy"), Some("web")));
    assert!(!h.wants(JobFailed, Some("deploy"), Some("db")));
    assert!(!h.wants(JobSucceeded, Some("deploy"), Some("web")));
    assert!(
        !format!("{h:?}").contains("0123456789abcdef"),
        "the secret is never logged"
    );

    let all = parse(&format!(
        "{HOOK_BASE}[[notify]]\nid = \"all\"\nurl = \"http://127.0.0.1:9000/\"\nsecret = \"0123456789abcdef\"\n"
    ))
    .unwrap();
    assert_eq!(all.notify[0].events.len(), 6);
}

#[test]
fn a_bad_notify_hook_names_its_line_and_key() {
    let line_of = |text: &str| HOOK_BASE.lines().count() + text.lines().count();
    let hook = |rest: &str| format!("{HOOK_BASE}[[notify]]\nid = \"ops\"\n{rest}");
    for (rest, key, says) in [
        (
            "secret = \"0123456789abcdef\"\nurl = \"ftp://example.com/\"\n",
            "notify[0].url",
            "not an http:// or https:// URL",
        ),
        (
            "secret = \"0123456789abcdef\"\nurl = \"http://x/\"\nevents = [\"job.exploded\"]\n",
            "notify[0].events",
            "unknown event `job.exploded`",
        ),
        (
            "secret = \"0123456789abcdef\"\nurl = \"http://x/\"\ntemplates = [\"nope\"]\n",
            "notify[0].templates",
            "no template `nope`",
        ),
        (
            "url = \"http://x/\"\nsecret = \"short\"\n",
            "notify[0].secret",
            "at least 16 characters",
        ),
        (
            "url = \"http://x/\"\nsecret_file = \"no/such/file\"\n",
            "notify[0].secret_file",
            "no built-in file",
        ),
        (
            "url = \"http://x/\"\nsecret = \"0123456789abcdef\"\nbackoff = \"10ms\"\n",
            "notify[0].backoff",
            "at least 100 ms",
        ),
    ] {
        let text = hook(rest);
        let (line, k, message) = invalid(&text);
        assert_eq!(k, key, "{text}");
        assert_eq!(line, line_of(&format!("x\nx\n{rest}")), "{text}");
        assert!(message.contains(says), "{message}");
    }
    let (_, key, message) = invalid(&hook("url = \"http://x/\"\n"));
    assert_eq!(key, "notify[0].secret");
    assert!(
        message.contains("exactly one of `secret` or `secret_file`"),
        "{message}"
    );
}

#[test]
fn a_retry_policy_has_defaults_and_each_bad_key_is_named() {
    let head = "[[targets]]\nid = \"a\"\nkind = \"local\"\n\n[[templates]]\nid = \"t\"\ncommand = [\"true\"]\n";
    let c = parse(&format!("{head}retry = {{ max = 3 }}\n")).expect("valid");
    let p = c.template("t").unwrap().retry.clone().expect("a policy");
    assert_eq!(
        (p.max, p.backoff_ms, p.factor, p.max_delay_ms),
        (3, 10_000, 2.0, 600_000)
    );
    assert_eq!(p.on, app::model::retry::Failure::ALL);
    let c = parse(&format!(
        "{head}retry = {{ max = 2, backoff = \"500ms\", factor = 3, max_delay = \"2s\", on = [\"timeout\", \"agent_lost\"] }}\n"
    ))
    .expect("valid");
    let p = c.template("t").unwrap().retry.clone().unwrap();
    assert_eq!((p.backoff_ms, p.factor, p.max_delay_ms), (500, 3.0, 2_000));
    assert_eq!(
        p.on,
        [
            app::model::retry::Failure::Timeout,
            app::model::retry::Failure::AgentLost
        ]
    );
    assert!(parse(head).unwrap().template("t").unwrap().retry.is_none());

    for (retry, key, says) in [
        ("{ max = 0 }", "templates[0].retry.max", "1 to 100"),
        (
            "{ max = 1, factor = 0.5 }",
            "templates[0].retry.factor",
            "from 1 to 100",
        ),
        (
            "{ max = 1, backoff = \"1m\", max_delay = \"10s\" }",
            "templates[0].retry.max_delay",
            "shorter than `backoff`",
        ),
        (
            "{ max = 1, on = [] }",
            "templates[0].retry.on",
            "lists no failure",
        ),
        (
            "{ max = 1, on = [\"oops\"] }",
            "templates[0].retry.on[0]",
            "unknown variant",
        ),
        (
            "{ max = 1, backoff = \"soon\" }",
            "templates[0].retry.backoff",
            "not a duration",
        ),
        (
            "{ max = 1, every = 2 }",
            "templates[0].retry.every",
            "unknown field",
        ),
        (
            "{ backoff = \"1s\" }",
            "templates[0].retry",
            "missing field `max`",
        ),
    ] {
        let (line, k, message) = invalid(&format!("{head}retry = {retry}\n"));
        assert_eq!((line, k.as_str()), (8, key), "{retry}: {message}");
        assert!(message.contains(says), "{retry}: {message}");
    }
}

#[test]
fn a_schedule_has_defaults_and_each_bad_key_is_named() {
    let head = "[[targets]]\nid = \"a\"\nkind = \"local\"\n\n[[targets]]\nid = \"b\"\nkind = \"local\"\n\n\
                [[templates]]\nid = \"t\"\ncommand = [\"echo\", \"{n}\"]\ntargets = [\"a\"]\n\
                params = [{ name = \"n\", type = \"int\", default = 1, max = 9 }]\n\n[[schedules]]\n";
    let c = parse(&format!(
        "{head}id = \"s\"\ntemplate = \"t\"\ntarget = \"a\"\ncron = \"30 2 * * *\"\n"
    ))
    .expect("valid");
    let s = &c.schedules[0];
    assert_eq!(
        (s.id.as_str(), s.template.as_str(), s.target.as_str()),
        ("s", "t", "a")
    );
    assert_eq!(s.timezone, chrono_tz::Tz::UTC);
    assert_eq!(s.misfire, app::model::schedule::Misfire::Latest);
    assert_eq!(s.overlap, app::model::schedule::Overlap::Skip);
    assert_eq!(s.misfire_grace, schedule::DEFAULT_MISFIRE_GRACE);
    assert_eq!(s.jitter, Duration::ZERO);
    assert_eq!(s.params["n"], 1, "the parameter's default is filled in");
    let c = parse(&format!(
        "{head}id = \"s\"\ntemplate = \"t\"\ntarget = \"a\"\ncron = \"*/10 * * * * *\"\n\
         timezone = \"Europe/Berlin\"\nparams = {{ n = 7 }}\nmisfire = \"all\"\nmax_catchup = 3\n\
         overlap = \"cancel_previous\"\njitter = \"30s\"\nmisfire_grace = \"5s\"\n"
    ))
    .expect("valid");
    let s = &c.schedules[0];
    assert_eq!(s.timezone, chrono_tz::Tz::Europe__Berlin);
    assert_eq!((s.max_catchup, s.params["n"].as_i64()), (3, Some(7)));
    assert_eq!(s.jitter, Duration::from_secs(30));

    let base = "id = \"s\"\ntemplate = \"t\"\ntarget = \"a\"\n";
    for (body, key, says) in [
        (
            format!("{base}cron = \"61 * * * *\"\n"),
            "schedules[0].cron",
            "not a cron expression",
        ),
        (
            format!("{base}cron = \"* * *\"\n"),
            "schedules[0].cron",
            "has 3 fields",
        ),
        (
            format!("{base}cron = \"0 0 * * * * 2030\"\n"),
            "schedules[0].cron",
            "has 7 fields",
        ),
        (
            format!("{base}cron = \"* * * * *\"\ntimezone = \"Mars/Olympus\"\n"),
            "schedules[0].timezone",
            "not an IANA time zone",
        ),
        (
            format!("{base}cron = \"* * * * *\"\nparams = {{ n = 10 }}\n"),
            "schedules[0].params.n",
            "at most 9",
        ),
        (
            format!("{base}cron = \"* * * * *\"\nparams = {{ m = 1 }}\n"),
            "schedules[0].params.m",
            "unknown parameter",
        ),
        (
            format!("{base}cron = \"* * * * *\"\nmax_catchup = 3\n"),
            "schedules[0].max_catchup",
            "only applies with misfire = \"all\"",
        ),
        (
            format!("{base}cron = \"* * * * *\"\nmisfire = \"sometimes\"\n"),
            "schedules[0].misfire",
            "unknown variant",
        ),
        (
            format!("{base}cron = \"* * * * *\"\noverlap = \"queue_all\"\n"),
            "schedules[0].overlap",
            "unknown variant",
        ),
        (
            format!("{base}cron = \"* * * * *\"\njitter = \"2h\"\n"),
            "schedules[0].jitter",
            "between 0s and 1h",
        ),
        (
            "id = \"s\"\ntemplate = \"t\"\ntarget = \"b\"\ncron = \"* * * * *\"\n".to_string(),
            "schedules[0].target",
            "does not run on `b`",
        ),
        (
            "id = \"s\"\ntemplate = \"nope\"\ntarget = \"a\"\ncron = \"* * * * *\"\n".to_string(),
            "schedules[0].template",
            "no template `nope`",
        ),
        (
            "id = \"S!\"\ntemplate = \"t\"\ntarget = \"a\"\ncron = \"* * * * *\"\n".to_string(),
            "schedules[0].id",
            "not a valid id",
        ),
        (
            format!("{base}cron = \"* * * * *\"\nevery = \"1h\"\n"),
            "schedules[0].every",
            "unknown field",
        ),
    ] {
        let (line, k, message) = invalid(&format!("{head}{body}"));
        assert_eq!(k, key, "{body}: {message}");
        assert!(line >= 15, "{body}: line {line}");
        assert!(message.contains(says), "{body}: {message}");
    }
    let (_, k, message) = invalid(&format!(
        "{head}{base}cron = \"* * * * *\"\n\n[[schedules]]\n{base}cron = \"* * * * *\"\n"
    ));
    assert_eq!(k, "schedules[1].id");
    assert!(message.contains("defined twice"), "{message}");
}

#[test]
fn a_status_probe_has_defaults_and_runs_as_written() {
    let c = parse(
        "[[targets]]\nid = \"w\"\nkind = \"local\"\nstatus = [\"test\", \"-e\", \"/run/w.up\"]\n\
         [[targets]]\nid = \"b\"\nkind = \"local\"\nstatus = [\"sh\", \"-c\", \"test -e x || {{ echo no; exit 1; }}\"]\n\
         [[targets]]\nid = \"d\"\nkind = \"docker\"\ncontainer = \"web\"\nstatus = [\"pgrep\", \"nginx\"]\n\
         status_interval = \"5s\"\nstatus_timeout = \"2s\"\nstatus_env = { MODE = \"probe\" }\n\
         [[targets]]\nid = \"n\"\nkind = \"local\"\n",
    )
    .unwrap();
    let w = c.target("w").unwrap().status.clone().unwrap();
    assert_eq!(w.argv, ["test", "-e", "/run/w.up"]);
    assert_eq!(w.interval, DEFAULT_STATUS_INTERVAL);
    assert_eq!(w.timeout, DEFAULT_STATUS_TIMEOUT);
    assert!(w.env.is_empty());
    let d = c.target("d").unwrap().status.clone().unwrap();
    assert_eq!(d.interval, Duration::from_secs(5));
    assert_eq!(d.timeout, Duration::from_secs(2));
    assert_eq!(d.env.get("MODE").map(String::as_str), Some("probe"));
    assert!(c.target("n").unwrap().status.is_none());
    let b = c.target("b").unwrap().status.clone().unwrap();
    assert_eq!(
        b.argv[2], "test -e x || { echo no; exit 1; }",
        "braces as in a command"
    );
}

#[test]
fn a_bad_status_probe_names_its_line_and_key() {
    let target = "[[targets]]\nid = \"w\"\nkind = \"local\"\n";
    let cases = [
        ("status = []\n", "targets[0].status", "must name a program"),
        (
            "status = [\"{prog}\"]\n",
            "targets[0].status",
            "must be literal",
        ),
        (
            "status = [\"test\", \"-e\", \"{path}\"]\n",
            "targets[0].status",
            "has no parameters: `{path}`",
        ),
        (
            "status = [\"true\"]\nstatus_interval = \"500ms\"\n",
            "targets[0].status_interval",
            "between 1s and 1d",
        ),
        (
            "status = [\"true\"]\nstatus_interval = \"2d\"\n",
            "targets[0].status_interval",
            "between 1s and 1d",
        ),
        (
            "status = [\"true\"]\nstatus_timeout = \"2h\"\n",
            "targets[0].status_timeout",
            "between 1s and 1h",
        ),
        (
            "status_interval = \"5s\"\n",
            "targets[0].status_interval",
            "goes with `status`",
        ),
        (
            "status_env = { A = \"b\" }\n",
            "targets[0].status_env",
            "goes with `status`",
        ),
    ];
    for (extra, key, message) in cases {
        let (line, k, m) = invalid(&format!("{target}{extra}"));
        assert_eq!(k, key, "{extra}");
        assert!(m.contains(message), "{extra}: {m}");
        assert!(
            line >= 4,
            "{extra}: the line of the key, not the table's: {line}"
        );
    }
    // An agent target's probe runs on its agent.
    let far = Config::parse(
        "[[targets]]\nid = \"a\"\nkind = \"agent\"\nagent = \"far\"\nstatus = [\"true\"]\n",
        "t.toml",
        &FileSource::Embedded,
    )
    .unwrap();
    assert_eq!(far.targets[0].status.as_ref().unwrap().argv, ["true"]);
    let (_, key, message) =
        invalid("[[targets]]\nid = \"w\"\nkind = \"local\"\nstatus_probe = [\"true\"]\n");
    assert!(key.starts_with("targets[0]"), "{key}");
    assert!(message.contains("unknown field"), "{message}");
}
