//! Revocation that reaches what is open. A request is authenticated once,
//! by the guard; an event stream or a terminal then lives for hours. Each
//! of them holds a [`Hold`] on the credential that opened it (a session or
//! an API token), and ends as soon as that credential stops being valid:
//! signed out, its password changed or reset, its user disabled, the token
//! revoked.
//!
//! Work is per credential, not per stream: the registry keeps one entry per
//! credential that something open depends on (with a count of its
//! holders), and one task ([`Revocations::run`]) checks all of them against
//! the database every [`CHECK_EVERY`], with one query for the sessions and
//! one for the tokens (in chunks of [`CHUNK`]), however many streams share
//! them, and no query at all when nothing is open. A revoked credential's
//! entry is told the reason once; every stream and terminal holding it wakes
//! from the same `watch` channel.
//!
//! The database is the one source of truth, so a change made anywhere —
//! another replica on the same PostgreSQL, `opsdeck user disable` from the
//! command line — reaches every replica's open streams within
//! [`CHECK_EVERY`]; the use cases that revoke here also call
//! [`Revocations::check_now`] so this server does not wait for its tick.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use app::backend::Caller;
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, FromQueryResult, Statement, Value};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::sync::Locked;

/// How often the open credentials are checked against the database. With
/// a local revocation checked at once, this bounds how late a revocation
/// made on another replica (or by the CLI) is noticed.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);
/// Credentials per query (well under SQLite's 32,766 bound parameters).
const CHUNK: usize = 500;

/// What a request was authenticated with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Credential {
    /// A browser session, by its id hash.
    Session(String),
    /// An API token, by its id.
    Token(i64),
}

impl Credential {
    /// The credential behind a caller (none for an anonymous one).
    pub fn of(caller: &Caller) -> Option<Credential> {
        match (&caller.session, caller.token) {
            (_, Some(token)) => Some(Credential::Token(token)),
            (Some(session), None) => Some(Credential::Session(session.clone())),
            (None, None) => None,
        }
    }
}

type Reason = Option<Arc<str>>;

/// The credentials that open streams and terminals depend on.
#[derive(Clone, Default)]
pub struct Revocations {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    watched: Mutex<HashMap<Credential, Entry>>,
    wake: Notify,
    /// Database queries made by the checks (tests and docs use it to show
    /// that the cost does not grow with the number of streams).
    queries: AtomicU64,
}

struct Entry {
    holders: usize,
    revoked: watch::Sender<Reason>,
}

/// Something open (a stream, a terminal) depending on a credential; the
/// registry forgets the credential when its last hold is dropped.
pub struct Hold {
    held: Option<Held>,
}

struct Held {
    credential: Credential,
    rx: watch::Receiver<Reason>,
    owner: Arc<Inner>,
}

impl Hold {
    /// A hold on nothing: never revoked.
    pub fn none() -> Hold {
        Hold { held: None }
    }

    /// Waits until the credential is revoked; the reason, for the user.
    /// Cancel-safe (a `select!` may drop it and call it again).
    pub async fn revoked(&mut self) -> Arc<str> {
        if let Some(held) = self.held.as_mut() {
            if let Ok(reason) = held.rx.wait_for(Option::is_some).await {
                if let Some(reason) = reason.clone() {
                    return reason;
                }
            }
        }
        std::future::pending().await
    }

    /// The reason, if the credential was revoked.
    pub fn reason(&self) -> Option<Arc<str>> {
        self.held.as_ref().and_then(|h| h.rx.borrow().clone())
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let Some(held) = self.held.take() else {
            return;
        };
        let mut watched = held.owner.watched.locked();
        if let Some(entry) = watched.get_mut(&held.credential) {
            entry.holders -= 1;
            if entry.holders == 0 {
                watched.remove(&held.credential);
            }
        }
    }
}

impl Revocations {
    /// A hold on `credential` for something that stays open (none: never
    /// revoked).
    pub fn hold(&self, credential: Option<Credential>) -> Hold {
        let Some(credential) = credential else {
            return Hold::none();
        };
        let mut watched = self.inner.watched.locked();
        let entry = watched.entry(credential.clone()).or_insert_with(|| Entry {
            holders: 0,
            revoked: watch::Sender::new(None),
        });
        entry.holders += 1;
        let rx = entry.revoked.subscribe();
        drop(watched);
        Hold {
            held: Some(Held {
                credential,
                rx,
                owner: self.inner.clone(),
            }),
        }
    }

    /// Asks for a check now (a credential was just revoked here).
    pub fn check_now(&self) {
        self.inner.wake.notify_one();
    }

    /// How many distinct credentials are held.
    pub fn held(&self) -> usize {
        self.inner.watched.locked().len()
    }

    /// Database queries the checks have made so far.
    pub fn queries(&self) -> u64 {
        self.inner.queries.load(Ordering::Relaxed)
    }

    /// Checks the held credentials every `every`, or at once when asked,
    /// until `shutdown`.
    pub async fn run(
        self,
        reader: DatabaseConnection,
        every: Duration,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.inner.wake.notified() => {}
                _ = shutdown.cancelled() => return,
            }
            if let Err(e) = self.check(&reader).await {
                tracing::warn!(error = %e, "cannot check open sessions and tokens for revocation; trying again in {every:?}");
            }
        }
    }

    /// One check of every held credential not yet revoked.
    async fn check(&self, reader: &DatabaseConnection) -> Result<(), DbErr> {
        let (sessions, tokens) = {
            let watched = self.inner.watched.locked();
            let mut sessions = Vec::new();
            let mut tokens = Vec::new();
            for (credential, entry) in watched.iter() {
                if entry.revoked.borrow().is_some() {
                    continue;
                }
                match credential {
                    Credential::Session(id) => sessions.push(id.clone()),
                    Credential::Token(id) => tokens.push(*id),
                }
            }
            (sessions, tokens)
        };
        let mut revoked: Vec<(Credential, &'static str)> = Vec::new();
        for chunk in sessions.chunks(CHUNK) {
            self.inner.queries.fetch_add(1, Ordering::Relaxed);
            let found = sessions_of(reader, chunk).await?;
            for id in chunk {
                let why = match found.get(id) {
                    None => SESSION_ENDED,
                    Some(true) => USER_DISABLED,
                    Some(false) => continue,
                };
                revoked.push((Credential::Session(id.clone()), why));
            }
        }
        for chunk in tokens.chunks(CHUNK) {
            self.inner.queries.fetch_add(1, Ordering::Relaxed);
            let found = tokens_of(reader, chunk).await?;
            for id in chunk {
                let why = match found.get(id) {
                    None | Some((true, _)) => TOKEN_REVOKED,
                    Some((false, true)) => USER_DISABLED,
                    Some((false, false)) => continue,
                };
                revoked.push((Credential::Token(*id), why));
            }
        }
        if revoked.is_empty() {
            return Ok(());
        }
        let watched = self.inner.watched.locked();
        for (credential, why) in revoked {
            if let Some(entry) = watched.get(&credential) {
                tracing::info!(
                    holders = entry.holders,
                    reason = why,
                    "ending what a revoked credential holds open"
                );
                entry.revoked.send_replace(Some(Arc::from(why)));
            }
        }
        Ok(())
    }
}

/// The reasons, as the browser and the terminal show them.
pub const SESSION_ENDED: &str =
    "signed out: the session ended (a sign-out, a password change or a password reset)";
pub const USER_DISABLED: &str = "signed out: the account was disabled";
pub const TOKEN_REVOKED: &str = "the API token was revoked";

/// `$1, $2, …, $n`.
fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(FromQueryResult)]
struct SessionRow {
    id: String,
    disabled: bool,
}

/// Of the sessions `ids`, those that exist: whether their user is disabled.
async fn sessions_of(
    db: &DatabaseConnection,
    ids: &[String],
) -> Result<HashMap<String, bool>, DbErr> {
    let sql = format!(
        "SELECT s.id AS id, u.disabled AS disabled FROM sessions s \
         JOIN users u ON u.id = s.user_id WHERE s.id IN ({})",
        placeholders(ids.len())
    );
    let values = ids.iter().map(|id| Value::from(id.clone()));
    let rows = SessionRow::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        sql,
        values,
    ))
    .all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.disabled)).collect())
}

#[derive(FromQueryResult)]
struct TokenRow {
    id: i64,
    revoked_at: Option<DateTime<Utc>>,
    disabled: bool,
}

/// Of the tokens `ids`, those that exist: (revoked, user disabled).
async fn tokens_of(
    db: &DatabaseConnection,
    ids: &[i64],
) -> Result<HashMap<i64, (bool, bool)>, DbErr> {
    let sql = format!(
        "SELECT t.id AS id, t.revoked_at AS revoked_at, u.disabled AS disabled \
         FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.id IN ({})",
        placeholders(ids.len())
    );
    let values = ids.iter().map(|id| Value::from(*id));
    let rows = TokenRow::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        sql,
        values,
    ))
    .all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.id, (r.revoked_at.is_some(), r.disabled)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn holds_share_one_entry_per_credential_and_the_last_drop_forgets_it() {
        let r = Revocations::default();
        let cred = Credential::Token(7);
        let a = r.hold(Some(cred.clone()));
        let b = r.hold(Some(cred.clone()));
        let _other = r.hold(Some(Credential::Session("s".into())));
        let _nothing = r.hold(None);
        assert_eq!(r.held(), 2);
        drop(a);
        assert_eq!(r.held(), 2);
        drop(b);
        assert_eq!(r.held(), 1);
    }

    #[tokio::test]
    async fn a_revocation_wakes_every_holder_of_the_credential_only() {
        let r = Revocations::default();
        let cred = Credential::Session("abc".into());
        let mut a = r.hold(Some(cred.clone()));
        let mut b = r.hold(Some(cred.clone()));
        let mut other = r.hold(Some(Credential::Token(1)));
        r.inner
            .watched
            .locked()
            .get(&cred)
            .unwrap()
            .revoked
            .send_replace(Some(Arc::from("why")));
        assert_eq!(&*a.revoked().await, "why");
        assert_eq!(&*b.revoked().await, "why");
        assert_eq!(b.reason().as_deref(), Some("why"));
        assert_eq!(other.reason(), None);
        let waited = tokio::time::timeout(Duration::from_millis(50), other.revoked()).await;
        assert!(waited.is_err(), "another credential is not revoked");
    }

    #[test]
    fn placeholders_are_numbered() {
        assert_eq!(placeholders(3), "$1, $2, $3");
    }
}
