//! `opsdeck agent …`: with `--server`, run an agent (`crate::agent`); the
//! subcommands enrol, list and revoke agents on the server host, against
//! its database, as the `cli` actor.

use clap::Subcommand;
use sea_orm::DatabaseConnection;

use crate::config::Config;
use crate::service::agents;

/// `opsdeck agent`: run one, or manage them.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentArgs {
    #[command(subcommand)]
    pub command: Option<AgentCommand>,
    #[command(flatten)]
    pub run: crate::agent::RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum AgentCommand {
    /// Enrol an agent: prints its token once (give it to the agent with
    /// --token-file); name it in targets as `agent = "NAME"`.
    Add { name: String },
    /// List the enrolled agents and their status.
    List,
    /// Revoke an agent's token: it is disconnected within a heartbeat.
    Revoke { name: String },
}

pub async fn manage(
    db: &DatabaseConnection,
    config: &Config,
    cmd: AgentCommand,
) -> Result<(), String> {
    let show = |e: app::error::AppError| e.to_string();
    match cmd {
        AgentCommand::Add { name } => {
            let new = agents::create(db, config, "cli", None, &name)
                .await
                .map_err(show)?;
            println!("{}", new.token);
            eprintln!(
                "enrolled agent `{name}`: start it on its host with\n  opsdeck agent --server URL --token-file FILE --name {name}\nwith FILE holding the token above (shown only now)"
            );
        }
        AgentCommand::List => {
            let all = crate::db::agents::all(db)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "{:<20} {:<12} {:<20} {:<10} {:<25} TARGETS",
                "NAME", "STATUS", "HOSTNAME", "VERSION", "LAST HEARD"
            );
            for a in &all {
                let info = agents::info(db, config, a)
                    .await
                    .map_err(|e| e.to_string())?;
                println!(
                    "{:<20} {:<12} {:<20} {:<10} {:<25} {}",
                    info.name,
                    info.status.as_str(),
                    info.hostname.as_deref().unwrap_or("-"),
                    info.version.as_deref().unwrap_or("-"),
                    info.last_heartbeat
                        .map_or_else(|| "-".into(), |t| app::model::time::format_utc(&t)),
                    info.targets.join(", ")
                );
            }
        }
        AgentCommand::Revoke { name } => {
            agents::revoke(db, "cli", None, &name).await.map_err(show)?;
            eprintln!("revoked agent `{name}`: its connections close within a heartbeat");
        }
    }
    Ok(())
}
