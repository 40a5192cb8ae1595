//! The `opsdeck` command line: `serve` (the default) and the subcommands.
//! Options are read here, once, and turned into a [`Config`].

mod accounts;
mod agents;
mod client;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError};
use crate::startup::{cancel_on_signals, Server};

/// `opsdeck --version`: the release and the commit it was built from
/// (`unknown` when built outside a git checkout; see build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("OPSDECK_COMMIT"),
    ")"
);

#[derive(Parser, Debug)]
#[command(
    name = "opsdeck",
    version = VERSION,
    about = "A self-hosted operations console: run named, parameterised jobs on your hosts from a browser.",
    after_help = "Without a subcommand, opsdeck serves. Without --config, it uses the built-in demo configuration."
)]
pub struct Cli {
    /// Configuration file (TOML). Default: the built-in demo configuration.
    #[arg(long, global = true, env = "OPSDECK_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Database URL, instead of [server].database_url.
    #[arg(long, global = true, env = "DATABASE_URL", value_name = "URL")]
    database_url: Option<String>,

    /// The first admin's password, used only when no user exists yet.
    #[arg(
        long,
        global = true,
        env = "OPSDECK_ADMIN_PASSWORD",
        hide_env_values = true,
        hide = true
    )]
    admin_password: Option<String>,

    #[command(flatten)]
    remote: client::Remote,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start the server (the default).
    Serve(ServeArgs),
    /// Check the configuration and exit: 0 if it is valid, 2 if not.
    CheckConfig,
    /// Manage users (on the server host, against its database).
    #[command(subcommand)]
    User(accounts::UserCommand),
    /// Manage API tokens (on the server host, against its database).
    #[command(subcommand)]
    Token(accounts::TokenCommand),
    /// Run an agent (`--server URL --token-file FILE`), or enrol, list and
    /// revoke agents on the server host (`add NAME`, `list`, `revoke NAME`).
    Agent(agents::AgentArgs),
    /// Launch a job on a running server (OPSDECK_URL, OPSDECK_TOKEN).
    Run(client::RunArgs),
    /// List jobs on a running server, newest first.
    Jobs(client::JobsArgs),
    /// Cancel a job on a running server.
    Cancel { id: i64 },
    /// Print a job's log; --follow keeps printing until it ends.
    Logs(client::LogsArgs),
    /// Copy the SQLite database to FILE, consistently, while the server
    /// runs (PostgreSQL: use pg_dump).
    Backup {
        /// The copy to write; it must not exist yet.
        file: PathBuf,
    },
    /// Write OUT: this executable carrying the built site in SITE (for
    /// `make dist`; the release binary then needs no site on disk).
    #[command(hide = true)]
    EmbedSite {
        /// cargo-leptos' site directory (target/site).
        #[arg(long, value_name = "SITE")]
        site: PathBuf,
        /// The executable to write.
        #[arg(long, value_name = "OUT")]
        out: PathBuf,
    },
}

#[derive(clap::Args, Debug, Default)]
pub struct ServeArgs {
    /// Listen address, instead of [server].addr.
    #[arg(long, value_name = "HOST:PORT")]
    addr: Option<SocketAddr>,

    /// A built front-end directory to serve instead of the one this
    /// executable carries, like [server].site_root (cargo-leptos sets it).
    #[arg(long, env = "LEPTOS_SITE_ROOT", value_name = "DIR", hide = true)]
    site_root: Option<PathBuf>,
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let mut cli = Cli::parse();
    let command = cli
        .command
        .take()
        .unwrap_or(Command::Serve(ServeArgs::default()));
    match command {
        // Client commands talk to a server: no config, no database, no logs.
        Command::Run(a) => client::main(cli.remote, client::Action::Run(a)),
        Command::Jobs(a) => client::main(cli.remote, client::Action::Jobs(a)),
        Command::Cancel { id } => client::main(cli.remote, client::Action::Cancel(id)),
        Command::Logs(a) => client::main(cli.remote, client::Action::Logs(a)),
        Command::CheckConfig => with_config(&cli, |config| {
            println!(
                "{}: valid ({} targets, {} templates)",
                config.source,
                config.targets.len(),
                config.templates.len()
            );
            ExitCode::SUCCESS
        }),
        Command::Serve(args) => with_config(&cli, |config| serve(config, args)),
        Command::Backup { file } => with_config(&cli, |config| backup(&config, &file)),
        Command::EmbedSite { site, out } => embed_site(&site, &out),
        Command::User(cmd) => with_config(&cli, |config| {
            with_database(&config, |db| Box::pin(accounts::user(db, cmd)))
        }),
        Command::Token(cmd) => with_config(&cli, |config| {
            with_database(&config, |db| Box::pin(accounts::token(db, cmd)))
        }),
        Command::Agent(args) => match args.command {
            None => crate::agent::main(args.run),
            Some(cmd) => with_config(&cli, |config| {
                let c = config.clone();
                with_database(&config, move |db| {
                    Box::pin(async move { agents::manage(db, &c, cmd).await })
                })
            }),
        },
    }
}

/// Starts logging, reads the configuration (exit code 2 if it is bad),
/// and runs `f` with it.
fn with_config(cli: &Cli, f: impl FnOnce(Config) -> ExitCode) -> ExitCode {
    crate::telemetry::init();
    match load_config(cli) {
        Ok(config) => f(config),
        Err(e) => {
            eprintln!("opsdeck: configuration error: {e}");
            ExitCode::from(2)
        }
    }
}

fn load_config(cli: &Cli) -> Result<Config, ConfigError> {
    let mut config = Config::load_or_demo(cli.config.as_deref())?;
    if let Some(url) = &cli.database_url {
        config.server.database_url = url.clone();
    }
    config.auth.bootstrap_password = cli.admin_password.clone();
    Ok(config)
}

type DbTask<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + 'a>>;

/// Opens the configured database and runs one account command on it.
fn with_database(
    config: &Config,
    task: impl for<'a> FnOnce(&'a sea_orm::DatabaseConnection) -> DbTask<'a>,
) -> ExitCode {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        eprintln!("opsdeck: cannot start the async runtime");
        return ExitCode::FAILURE;
    };
    runtime.block_on(async {
        let db = match crate::db::connect(&config.server.database_url).await {
            Ok(db) => db,
            Err(e) => {
                eprintln!("opsdeck: {e}");
                return ExitCode::from(2);
            }
        };
        let result = task(&db).await;
        db.close().await.ok();
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("opsdeck: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

fn backup(config: &Config, file: &std::path::Path) -> ExitCode {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        eprintln!("opsdeck: cannot start the async runtime");
        return ExitCode::FAILURE;
    };
    let url = &config.server.database_url;
    match runtime.block_on(crate::db::backup::backup(url, file)) {
        Ok(bytes) => {
            println!(
                "backed up {} to {} ({bytes} bytes)",
                crate::db::redact(url),
                file.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("opsdeck: backup: {e}");
            ExitCode::from(2)
        }
    }
}

fn embed_site(site: &std::path::Path, out: &std::path::Path) -> ExitCode {
    match crate::site::archive::pack(site, out) {
        Ok(p) => {
            println!(
                "{}: {} files of {} ({} KiB; {} KiB with their gzip and brotli forms) appended",
                out.display(),
                p.files,
                site.display(),
                p.site_bytes / 1024,
                p.archive_bytes / 1024
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("opsdeck: embed-site: {e}");
            ExitCode::from(2)
        }
    }
}

fn serve(mut config: Config, args: ServeArgs) -> ExitCode {
    if let Some(addr) = args.addr {
        config.server.addr = addr;
    }
    if let Some(root) = args.site_root {
        config.server.site_root = Some(root);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("opsdeck: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let server = match Server::build(config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("opsdeck: cannot start: {e}");
                return ExitCode::from(2);
            }
        };
        cancel_on_signals(server.state.shutdown.clone());
        match server.run().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("opsdeck: server error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
