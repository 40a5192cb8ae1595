//! `opsdeck user …` and `opsdeck token …`: account management on the server
//! host, straight against the database (as the actor `cli` in the audit log).

use std::io::{BufRead, IsTerminal, Write};

use app::error::AppError;
use app::model::user::Role;
use clap::Subcommand;
use sea_orm::DatabaseConnection;

use crate::service::accounts::{self, Actor};

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add a user; the password is read from stdin.
    Add {
        name: String,
        #[arg(long, value_parser = ["admin", "operator"])]
        role: String,
    },
    /// Set a user's password (read from stdin); ends their sessions.
    Passwd { name: String },
    /// Disable a user: they can no longer sign in, their sessions end.
    Disable { name: String },
    /// Enable a disabled user again.
    Enable { name: String },
    /// List users.
    List,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create an API token for a user; it is printed once, stored hashed.
    Create {
        #[arg(long)]
        user: String,
        #[arg(long)]
        label: String,
    },
    /// Revoke a token by its id.
    Revoke { id: i64 },
    /// List tokens (never their secrets).
    List,
}

/// Reads a password: prompted twice without echo on a terminal, else one
/// line of stdin.
fn read_password(prompt: &str) -> Result<String, String> {
    let stdin = std::io::stdin();
    let read_line = || -> Result<String, String> {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password: {e}"))?;
        Ok(line.trim_end_matches(['\n', '\r']).to_string())
    };
    if !stdin.is_terminal() {
        return read_line();
    }
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let fd = std::io::stdin();
    let saved = tcgetattr(&fd).map_err(|e| format!("cannot read the terminal settings: {e}"))?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    let ask = |p: &str| -> Result<String, String> {
        eprint!("{p}");
        let _ = std::io::stderr().flush();
        tcsetattr(&fd, SetArg::TCSANOW, &quiet).map_err(|e| e.to_string())?;
        let line = read_line();
        let _ = tcsetattr(&fd, SetArg::TCSANOW, &saved);
        eprintln!();
        line
    };
    let first = ask(prompt)?;
    let second = ask("Again: ")?;
    if first != second {
        return Err("the two passwords differ; nothing was changed".into());
    }
    Ok(first)
}

fn show(e: AppError) -> String {
    e.to_string()
}

pub async fn user(db: &DatabaseConnection, cmd: UserCommand) -> Result<(), String> {
    match cmd {
        UserCommand::Add { name, role } => {
            let role = Role::parse(&role).ok_or("the role is admin or operator")?;
            let password = read_password(&format!("Password for {name}: "))?;
            let u = accounts::create_user(db, Actor::CLI, &name, role, password)
                .await
                .map_err(show)?;
            println!("added {} ({})", u.username, u.role);
        }
        UserCommand::Passwd { name } => {
            let password = read_password(&format!("New password for {name}: "))?;
            accounts::set_password(db, Actor::CLI, &name, password, None)
                .await
                .map_err(show)?;
            println!("password of {name} changed; their sessions ended");
        }
        UserCommand::Disable { name } => {
            accounts::set_disabled(db, Actor::CLI, &name, true)
                .await
                .map_err(show)?;
            println!("{name} disabled; their sessions ended");
        }
        UserCommand::Enable { name } => {
            accounts::set_disabled(db, Actor::CLI, &name, false)
                .await
                .map_err(show)?;
            println!("{name} enabled");
        }
        UserCommand::List => {
            println!("{:<24} {:<9} {:<9} LAST SIGN-IN", "USER", "ROLE", "STATUS");
            for u in accounts::list_users(db).await.map_err(show)? {
                println!(
                    "{:<24} {:<9} {:<9} {}",
                    u.username,
                    u.role,
                    if u.disabled { "disabled" } else { "active" },
                    u.last_login_at
                        .map_or("never".into(), |t| app::model::time::format_utc(&t))
                );
            }
        }
    }
    Ok(())
}

pub async fn token(db: &DatabaseConnection, cmd: TokenCommand) -> Result<(), String> {
    match cmd {
        TokenCommand::Create { user, label } => {
            let t = accounts::create_token(db, Actor::CLI, &user, &label)
                .await
                .map_err(show)?;
            eprintln!(
                "token {} for {} ({}); it is shown only now:",
                t.info.id, t.info.username, t.info.label
            );
            println!("{}", t.token);
        }
        TokenCommand::Revoke { id } => {
            let t = accounts::revoke_token(db, Actor::CLI, id)
                .await
                .map_err(show)?;
            println!("token {} of {} ({}) revoked", t.id, t.username, t.label);
        }
        TokenCommand::List => {
            println!("{:<6} {:<24} {:<20} STATUS", "ID", "USER", "LABEL");
            for t in accounts::list_tokens(db, None).await.map_err(show)? {
                println!(
                    "{:<6} {:<24} {:<20} {}",
                    t.id,
                    t.username,
                    t.label,
                    if t.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    }
                );
            }
        }
    }
    Ok(())
}
