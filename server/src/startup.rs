//! Starting and stopping a server: open the database (migrating it), bind
//! the port, build the state, serve until SIGINT/SIGTERM, then let in-flight
//! requests finish.

use std::net::SocketAddr;
use std::sync::Arc;

use leptos::config::LeptosOptions;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::db::{self, DbSetupError};
use crate::engine::{Engine, Sink};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::site::{Site, SiteError, SiteSource};
use crate::state::{AppState, Inner};

/// Why the server could not start. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Database(#[from] DbSetupError),
    #[error(transparent)]
    Site(#[from] SiteError),
    #[error("cannot listen on {addr}: the address is already in use; stop the other process or choose another address with [server].addr or --addr")]
    AddrInUse { addr: SocketAddr },
    #[error(
        "cannot listen on {addr}: {source}; choose another address with [server].addr or --addr"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The site to serve: the `site_root` directory if one is set, else the
/// one this executable carries, else `target/site` of a checkout (a
/// server started by plain `cargo run`), else none.
async fn load_site(site_root: Option<std::path::PathBuf>) -> Result<Site, SiteError> {
    let source = match site_root {
        Some(dir) => SiteSource::Dir(dir),
        None if crate::site::archive::has_own() => SiteSource::Embedded,
        None if std::path::Path::new("target/site/pkg").is_dir() => {
            SiteSource::Dir("target/site".into())
        }
        None => SiteSource::None,
    };
    let started = std::time::Instant::now();
    let site = tokio::task::spawn_blocking(move || Site::load(&source))
        .await
        .map_err(|e| SiteError::Embedded(format!("loading the site: {e}")))??;
    match site.source() {
        Some(SiteSource::None) | None => tracing::warn!(
            "this executable carries no site and no [server].site_root is set: \
             pages render without styles and never hydrate (build a release with `make dist`)"
        ),
        Some(source) => tracing::info!(
            ?source,
            files = site.len(),
            ms = started.elapsed().as_millis() as u64,
            "serving the site from memory"
        ),
    }
    Ok(site)
}

/// A server that is ready to serve: database open, port bound.
pub struct Server {
    pub state: AppState,
    listener: TcpListener,
}

impl Server {
    /// Opens the database and binds the listen address.
    pub async fn build(mut config: Config) -> Result<Server, StartError> {
        warn_of_consoles_as_server(&config);
        let db = db::connect(&config.server.database_url).await?;
        let addr = config.server.addr;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::AddrInUse => StartError::AddrInUse { addr },
                _ => StartError::Bind { addr, source },
            })?;
        let local = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        // The default node id names the port actually bound.
        config.cluster.settle(local.port());
        let config = Arc::new(config);
        let url = config
            .server
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{local}"));
        crate::auth::bootstrap::ensure_first_admin(
            &db,
            config.auth.bootstrap_password.as_deref(),
            &url,
        )
        .await
        .map_err(|source| {
            StartError::Database(DbSetupError::Migrate {
                url: db::redact(&config.server.database_url),
                source,
            })
        })?;
        let reader = db::connect_reader(&config.server.database_url, &db).await?;
        crate::auth::password::warm_up();
        let site = load_site(config.server.site_root.clone()).await?;
        let leptos = LeptosOptions::builder()
            // The hashed name of the site's JS, wasm and CSS (crate::site).
            .output_name(site.output_name())
            .site_pkg_dir("pkg")
            .site_addr(local)
            .build();
        let shutdown = CancellationToken::new();
        // Several replicas share a PostgreSQL database: what this one
        // commits is announced to the others (crate::notify).
        let outbox = db::is_postgres(&db).then(crate::notify::Outbox::default);
        let sink = Sink {
            committer: db::commit::Committer::start(db.clone()),
            hub: Hub::new(outbox.clone(), crate::webhooks::Hooks::new(&config.notify)),
            metrics: Arc::new(Metrics::default()),
            shutdown: shutdown.clone(),
        };
        let replicas = outbox.map(|outbox| crate::state::Replicas {
            tails: crate::notify::tail::Tails::new(
                reader.clone(),
                sink.hub.clone(),
                sink.metrics.clone(),
                shutdown.clone(),
            ),
            outbox,
            tag: crate::notify::new_sender_tag(),
        });
        let agents = crate::agents::Agents::default();
        let engine = Engine::new(
            config.clone(),
            db.clone(),
            reader.clone(),
            sink.clone(),
            agents.clone(),
        );
        let stream_slots = crate::streams::limits::StreamSlots::new(
            config.server.max_streams_per_user,
            config.server.max_streams_per_address,
            sink.metrics.refusals().clone(),
        );
        let state = AppState::new(Inner {
            config,
            committer: sink.committer,
            db,
            reader,
            leptos,
            site: Arc::new(site),
            shutdown,
            engine,
            hub: sink.hub,
            metrics: sink.metrics,
            terminals: Default::default(),
            agents,
            agent_terminals: Default::default(),
            revocations: Default::default(),
            stream_slots,
            live: Default::default(),
            scheduler: Default::default(),
            replicas,
        });
        Ok(Server { state, listener })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.state.leptos.site_addr
    }

    /// Serves until `state.shutdown` is cancelled, then waits for in-flight
    /// requests (up to `[server].shutdown_timeout`).
    pub async fn run(self) -> std::io::Result<()> {
        let Server { state, listener } = self;
        let app = crate::http::router(state.clone());
        let token = state.shutdown.clone();
        let grace = state.config.server.shutdown_timeout;
        tracing::info!(
            addr = %state.leptos.site_addr,
            config = %state.config.source,
            "opsdeck is listening on http://{}",
            state.leptos.site_addr
        );
        let streams = crate::http::route_table().event_streams();
        let serving = tokio::spawn(crate::http::serve::serve(
            listener,
            app,
            streams,
            token.clone(),
        ));
        let maintenance = tokio::spawn(crate::maintenance::run(state.clone()));
        let scheduler = tokio::spawn(crate::schedules::run(state.clone()));
        let engine = tokio::spawn(state.engine.clone().run());
        let probes = tokio::spawn(
            crate::status::Prober {
                config: state.config.clone(),
                db: state.db.clone(),
                reader: state.reader.clone(),
                hub: state.hub.clone(),
                metrics: state.metrics.clone(),
                agents: state.agents.clone(),
                shutdown: token.clone(),
            }
            .run(),
        );
        let webhooks = tokio::spawn(
            crate::webhooks::deliver::Deliverer {
                db: state.db.clone(),
                hooks: std::sync::Arc::new(state.config.notify.clone()),
                shutdown: token.clone(),
            }
            .run(),
        );
        let revocations = tokio::spawn(state.revocations.clone().run(
            state.reader.clone(),
            crate::auth::revocation::CHECK_EVERY,
            token.clone(),
        ));
        // N.B.: the sender stops after the engine, so the other replicas
        // hear of the jobs this one gave back or ended at shutdown.
        let stop_sending = CancellationToken::new();
        let notify = state.replicas.as_ref().map(|r| {
            let receivers = crate::notify::Receivers {
                engine: state.engine.clone(),
                agents: state.agents.clone(),
                hub: state.hub.clone(),
                tails: r.tails.clone(),
                reader: state.reader.clone(),
                metrics: state.metrics.clone(),
            };
            [
                tokio::spawn(crate::notify::send(
                    r.outbox.clone(),
                    state.db.clone(),
                    r.tag.clone(),
                    state.metrics.clone(),
                    stop_sending.clone(),
                )),
                tokio::spawn(crate::notify::listen(
                    state.config.server.database_url.clone(),
                    r.tag.clone(),
                    receivers,
                    token.clone(),
                )),
            ]
        });
        token.cancelled().await;
        tracing::info!("shutting down: letting in-flight requests finish");
        match tokio::time::timeout(grace, serving).await {
            Ok(joined) => joined.map_err(std::io::Error::other)?,
            Err(_) => tracing::warn!(
                "in-flight requests did not finish within {grace:?}; stopping anyway"
            ),
        }
        let _ = maintenance.await;
        let _ = scheduler.await;
        let _ = engine.await;
        let _ = probes.await;
        let _ = webhooks.await;
        stop_sending.cancel();
        let _ = revocations.await;
        for task in notify.into_iter().flatten() {
            let _ = task.await;
        }
        state.reader.clone().close().await.ok();
        state.db.clone().close().await.ok();
        tracing::info!("stopped");
        Ok(())
    }
}

/// Says, for each `local` target whose console is a shell as the server's
/// own user, what that means (docs/security.md, "Least privilege").
fn warn_of_consoles_as_server(config: &Config) {
    for t in config.targets.iter().filter(|t| t.console_as_server()) {
        tracing::warn!(
            target_id = %t.id,
            roles = ?t.terminal_roles,
            "target `{}`: its console is a shell as opsdeck's own user, so whoever may open it ({:?}) can read opsdeck's database and configuration and act as any user; set `user = \"NAME\"` on the target to run its jobs and console as an unprivileged user",
            t.id,
            t.terminal_roles,
        );
    }
}

/// Cancels `token` on the first SIGINT or SIGTERM.
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers; stop the server with SIGKILL");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
        token.cancel();
    });
}
