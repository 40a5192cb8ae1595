//! The one shared state of a running server, handed to axum handlers by
//! `State`, to server functions through the `Backend` context, and to the
//! service layer. Cheap to clone. It only wires the parts together: the
//! engine, the streams and the hub each get the handles they use
//! ([`crate::engine::Sink`], [`crate::streams::StreamDeps`]), never this.

use std::ops::Deref;
use std::sync::Arc;

use axum::extract::FromRef;
use leptos::config::LeptosOptions;
use sea_orm::DatabaseConnection;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::db::commit::Committer;
use crate::engine::Engine;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::streams::StreamDeps;

/// A handle to the running server's state.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// What [`AppState`] holds.
pub struct Inner {
    /// The validated configuration, read once at start.
    pub config: Arc<Config>,
    /// The database: every write, and the reads that go with them.
    pub db: DatabaseConnection,
    /// The heavy reads (log pages, stream replays, lists): on SQLite they
    /// run beside the one writer connection (`db::connect_reader`).
    pub reader: DatabaseConnection,
    /// The engine's writes and every job transition, committed in groups on
    /// `db` (`db::commit`).
    pub committer: Committer,
    /// How the built front-end is named (its hashed `output_name`).
    pub leptos: LeptosOptions,
    /// The built front-end's files, served from memory.
    pub site: Arc<crate::site::Site>,
    /// Cancelled when the server shuts down: long-lived streams and
    /// background tasks watch it and end.
    pub shutdown: CancellationToken,
    /// The job engine's handle: wake it, stop a running job.
    pub engine: Engine,
    /// Live fan-out of committed log lines and job changes.
    pub hub: Hub,
    /// This process's counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Open browser terminal sessions.
    pub terminals: crate::terminal::Terminals,
    /// The agents connected to this server.
    pub agents: crate::agents::Agents,
    /// Terminals on agents' hosts waiting for, or relayed over, the
    /// agent's connection.
    pub agent_terminals: crate::agents::terminal::Relays,
    /// The sessions and tokens open streams and terminals depend on,
    /// checked for revocation (`auth::revocation`).
    pub revocations: crate::auth::revocation::Revocations,
    /// Open event streams per user and per address (`streams::limits`).
    pub stream_slots: crate::streams::limits::StreamSlots,
    /// The shared live connections open here (`/api/live`), where their
    /// subscribe and unsubscribe requests find them.
    pub live: crate::streams::mux::Connections,
    /// Wakes this replica's scheduler (a pause, resume or "run now").
    pub scheduler: crate::schedules::Handle,
    /// On PostgreSQL: what brings the other replicas' commits to this
    /// replica's streams (`notify::tail`), and this replica's tag in its
    /// notifications (`notify`).
    pub replicas: Option<Replicas>,
}

/// The parts of a replica that only PostgreSQL has (several replicas).
pub struct Replicas {
    pub tails: crate::notify::tail::Tails,
    pub outbox: crate::notify::Outbox,
    pub tag: String,
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        AppState(Arc::new(inner))
    }

    /// What an event stream uses.
    pub fn stream_deps(&self) -> StreamDeps {
        StreamDeps {
            reader: self.reader.clone(),
            hub: self.hub.clone(),
            metrics: self.metrics.clone(),
            shutdown: self.shutdown.clone(),
            keepalive: self.config.server.stream_keepalive,
            tails: self.replicas.as_ref().map(|c| c.tails.clone()),
        }
    }
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos.clone()
    }
}
