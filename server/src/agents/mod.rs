//! The server's side of remote agents (the agent process itself is
//! `crate::agent`). An agent dials `GET /api/agent` and keeps one WebSocket
//! open ([`link`]); this module keeps the registry of the agents connected
//! to this server, which the engine asks who is online (it claims an
//! agent's jobs only while it is) and through which it dispatches them.
//!
//! A job on an agent has no runner task here: [`link`] applies what the
//! agent sends (log batches, the start, the end) as it arrives, each
//! through `db::commit`, and the job ends through its one transition.

pub mod dispatch;
pub mod link;
pub mod terminal;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use app::model::agent::{ProbeCommand, ServerMsg, PROBES_SINCE};
use app::model::status::ProbeState;
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::sync::Locked;

/// Messages queued for one agent, at most (a link that cannot keep up is
/// dropped and the agent reconnects: nothing is lost, see `link`).
pub const QUEUE: usize = 4096;

/// What an agent said of itself when it connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub hostname: String,
    pub version: String,
    /// The agent protocol it speaks.
    pub protocol: u32,
    pub connected_at: DateTime<Utc>,
}

struct Link {
    id: u64,
    tx: mpsc::Sender<ServerMsg>,
    close: CancellationToken,
    info: LinkInfo,
}

/// The agents connected to this server (clones share it).
#[derive(Clone, Default)]
pub struct Agents(Arc<Inner>);

#[derive(Default)]
struct Inner {
    links: Mutex<HashMap<String, Link>>,
    /// Open sockets per agent, from the upgrade on (also those not yet
    /// past `hello`), for `[agents].max_connections_per_token`.
    sockets: Mutex<HashMap<String, usize>>,
    next_id: AtomicU64,
    /// Woken when an agent connects (the engine then claims its jobs).
    connected: tokio::sync::Notify,
    /// Status probes sent and not answered yet, by id.
    probes: Mutex<HashMap<u64, PendingProbe>>,
}

/// A status probe an agent was asked to run.
struct PendingProbe {
    agent: String,
    /// The connection it was sent on: it is answered on that one or never.
    link: u64,
    answer: oneshot::Sender<(ProbeState, String)>,
}

/// How much longer than the probe's own timeout the server waits for its
/// answer (the agent kills a probe at its timeout and answers at once).
pub const PROBE_SLACK: Duration = Duration::from_secs(5);

/// A link's registration: its id and the token that closes it.
pub struct Attached {
    pub id: u64,
    pub close: CancellationToken,
    pub rx: mpsc::Receiver<ServerMsg>,
}

/// One open socket of an agent, counted until dropped.
pub struct Socket {
    agents: Agents,
    name: String,
}

impl Drop for Socket {
    fn drop(&mut self) {
        let mut sockets = self.agents.0.sockets.locked();
        if let Some(n) = sockets.get_mut(&self.name) {
            *n -= 1;
            if *n == 0 {
                sockets.remove(&self.name);
            }
        }
    }
}

impl Agents {
    /// Counts a new socket of `name`, or `None` when it already holds
    /// `max` (a copied token dialling in a loop, say). The default of 2
    /// lets an agent reconnect while its old half-open socket is closing.
    pub fn admit(&self, name: &str, max: usize) -> Option<Socket> {
        let mut sockets = self.0.sockets.locked();
        let n = sockets.entry(name.to_string()).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Socket {
            agents: self.clone(),
            name: name.to_string(),
        })
    }

    /// Registers `name`'s new connection. An older connection of the same
    /// agent (a half-open socket the agent already gave up on) is closed:
    /// the newest wins.
    pub fn attach(&self, name: &str, info: LinkInfo) -> Attached {
        let (tx, rx) = mpsc::channel(QUEUE);
        let close = CancellationToken::new();
        let id = self.0.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let old = self.0.links.locked().insert(
            name.to_string(),
            Link {
                id,
                tx,
                close: close.clone(),
                info,
            },
        );
        if let Some(old) = old {
            tracing::info!(
                agent = name,
                "a newer connection of this agent replaces the older one"
            );
            old.close.cancel();
        }
        self.0.connected.notify_waiters();
        Attached { id, close, rx }
    }

    /// The connection `id` of `name` closed.
    pub fn detach(&self, name: &str, id: u64) {
        let mut links = self.0.links.locked();
        if links.get(name).is_some_and(|l| l.id == id) {
            links.remove(name);
        }
        // Its probes are never answered now (their waiters hear so).
        self.0.probes.locked().retain(|_, p| p.link != id);
    }

    /// Has `name` run a target's status probe (`cmd` without its id) and
    /// waits for what it found; why not, when it cannot answer: not
    /// connected here, too old for probes, gone or silent meanwhile.
    pub async fn probe(
        &self,
        name: &str,
        mut cmd: ProbeCommand,
    ) -> Result<(ProbeState, String), String> {
        let (tx, rx) = oneshot::channel();
        cmd.id = self.0.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let id = cmd.id;
        {
            let links = self.0.links.locked();
            let Some(link) = links.get(name) else {
                return Err(format!("agent `{name}` is not connected"));
            };
            if link.info.protocol < PROBES_SINCE {
                return Err(format!(
                    "agent `{name}` runs opsdeck {} (agent protocol {}), which cannot run status probes: upgrade it",
                    link.info.version, link.info.protocol
                ));
            }
            self.0.probes.locked().insert(
                id,
                PendingProbe {
                    agent: name.to_string(),
                    link: link.id,
                    answer: tx,
                },
            );
        }
        let wait = Duration::from_millis(cmd.timeout_ms) + PROBE_SLACK;
        if !self.send(name, ServerMsg::Probe(cmd)) {
            self.0.probes.locked().remove(&id);
            return Err(format!("agent `{name}` is not connected"));
        }
        let answer = tokio::time::timeout(wait, rx).await;
        self.0.probes.locked().remove(&id);
        match answer {
            Ok(Ok(found)) => Ok(found),
            Ok(Err(_)) => Err(format!("agent `{name}` disconnected during the probe")),
            Err(_) => Err(format!(
                "agent `{name}` did not answer the probe within {} s",
                wait.as_secs()
            )),
        }
    }

    /// `name` answered probe `id` (an answer nobody waits for, or from
    /// another agent, is dropped).
    pub fn probe_answered(&self, name: &str, id: u64, state: ProbeState, message: String) -> bool {
        let mut probes = self.0.probes.locked();
        if probes.get(&id).is_none_or(|p| p.agent != name) {
            return false;
        }
        probes
            .remove(&id)
            .is_some_and(|p| p.answer.send((state, message)).is_ok())
    }

    /// Whether `name` is connected here.
    pub fn is_online(&self, name: &str) -> bool {
        self.0.links.locked().contains_key(name)
    }

    /// The agents connected here.
    pub fn online(&self) -> Vec<String> {
        let mut names: Vec<String> = self.0.links.locked().keys().cloned().collect();
        names.sort();
        names
    }

    pub fn info(&self, name: &str) -> Option<LinkInfo> {
        self.0.links.locked().get(name).map(|l| l.info.clone())
    }

    /// Queues `msg` for `name`; false if it is not connected here (or its
    /// queue is full, and then its connection is closed).
    pub fn send(&self, name: &str, msg: ServerMsg) -> bool {
        let links = self.0.links.locked();
        let Some(link) = links.get(name) else {
            return false;
        };
        match link.tx.try_send(msg) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(
                    agent = name,
                    "the agent does not keep up with its messages: closing its connection"
                );
                link.close.cancel();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Closes `name`'s connection here, if it has one (its token was
    /// revoked).
    pub fn disconnect(&self, name: &str) -> bool {
        match self.0.links.locked().get(name) {
            Some(link) => {
                link.close.cancel();
                true
            }
            None => false,
        }
    }

    /// Waits until some agent connects.
    pub async fn connected(&self) {
        self.0.connected.notified().await
    }
}

/// Fails the jobs of agents silent for `[agents].lost_after` ("agent
/// lost"), each through its transition, audited by `system`. Called by
/// every replica's heartbeat loop: the compare-and-set lets one win.
pub async fn fail_lost(
    state_db: &sea_orm::DatabaseConnection,
    sink: &crate::engine::Sink,
    config: &crate::config::Config,
) {
    let Ok(active) = crate::db::jobs::active_on_agents(state_db).await else {
        return;
    };
    if active.is_empty() {
        return;
    }
    let lost_after = chrono::Duration::from_std(config.agents.lost_after)
        .unwrap_or(chrono::Duration::minutes(10));
    let now = chrono::Utc::now();
    for row in active {
        let Some(name) = row.agent.clone() else {
            continue;
        };
        let agent = match crate::db::agents::by_name(state_db, &name).await {
            Ok(a) => a,
            Err(_) => continue,
        };
        let silent_since = agent.as_ref().and_then(|a| a.last_seen_at);
        let lost = match &agent {
            None => true,
            Some(a) if a.revoked_at.is_some() => true,
            Some(_) => silent_since.is_none_or(|at| now - at > lost_after),
        };
        // A job dispatched but never heard of counts from its start.
        let lost = lost && row.started_at.is_none_or(|s| now - s > lost_after);
        if !lost {
            continue;
        }
        let since = silent_since.map_or_else(
            || "ever".to_string(),
            |at| app::model::time::format_utc(&at),
        );
        let line = format!(
            "failed: agent `{name}` lost (not heard from since {since}, past [agents].lost_after); what the job did on the host after that is unknown"
        );
        let t = crate::engine::transition::Transition::fail_as(
            &sink.hub,
            &row,
            line,
            "agent lost".into(),
            crate::engine::transition::Actor::system(),
            crate::engine::transition::AGENT_LOST,
        );
        let t = std::sync::Arc::new(t);
        match sink.committer.commit(t.clone()).await {
            Ok(()) if t.row().is_some() => {
                tracing::warn!(job = row.id, agent = %name, "failed: agent lost");
                sink.metrics.job_finished(app::model::job::JobState::Failed);
            }
            Ok(()) => {}
            Err(e) => {
                tracing::error!(job = row.id, error = %e, "cannot fail a job of a lost agent")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> LinkInfo {
        LinkInfo {
            protocol: app::model::agent::PROTOCOL,
            hostname: "h".into(),
            version: "1".into(),
            connected_at: Utc::now(),
        }
    }

    #[test]
    fn sockets_past_the_limit_are_refused_until_one_closes() {
        let agents = Agents::default();
        let a = agents.admit("edge", 2).expect("first");
        let _b = agents.admit("edge", 2).expect("second");
        assert!(agents.admit("edge", 2).is_none());
        assert!(agents.admit("other", 2).is_some(), "per agent, not global");
        drop(a);
        assert!(agents.admit("edge", 2).is_some());
    }

    #[test]
    fn a_newer_connection_replaces_the_older_and_only_its_own_detach_counts() {
        let agents = Agents::default();
        let first = agents.attach("a1", info());
        let second = agents.attach("a1", info());
        assert!(first.close.is_cancelled(), "the older link is closed");
        assert!(!second.close.is_cancelled());
        agents.detach("a1", first.id);
        assert!(
            agents.is_online("a1"),
            "the old link's detach leaves the new one"
        );
        agents.detach("a1", second.id);
        assert!(!agents.is_online("a1"));
    }

    #[test]
    fn messages_reach_a_connected_agent_in_order_and_revocation_closes_it() {
        let agents = Agents::default();
        assert!(!agents.send("a1", ServerMsg::Heartbeat { at: Utc::now() }));
        let mut link = agents.attach("a1", info());
        for i in 1..=3 {
            let msg = ServerMsg::Refused {
                reason: format!("{i}"),
            };
            assert!(agents.send("a1", msg));
        }
        for i in 1..=3 {
            match link.rx.try_recv() {
                Ok(ServerMsg::Refused { reason }) => assert_eq!(reason, format!("{i}")),
                other => panic!("{other:?}"),
            }
        }
        assert!(agents.disconnect("a1"));
        assert!(link.close.is_cancelled());
    }
}
