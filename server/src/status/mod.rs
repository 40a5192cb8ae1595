//! A target's actual state (docs/automation.md, "A target's actual
//! state"): each target with a `status` probe has it run on the target
//! ([`probe`]) every `status_interval` and right after every job on it
//! ends, and what it found stored (`db::target_state`) and announced on
//! the feed (`target` events), here and, through `notify`, on the other
//! replicas.
//!
//! - The interval: every replica keeps a timer per probed target, but
//!   runs the probe only if it wins the claim in the database (no probe
//!   on the target since almost an interval): one replica probes each
//!   due target, whichever comes first.
//! - After a job: the replica whose process ended the job (its runner,
//!   or the link of the agent that ran it) hears of it through the hub
//!   ([`Hub::ended_targets`]) and probes at once, without a claim, after
//!   a probe of the same target already running here. The job's end is
//!   committed first: the probe never holds up a transition.
//! - On an agent target the probe runs on the agent's host: the replica
//!   the agent is connected to sends it `command.probe` and records the
//!   `probe.result` (a replica without the connection leaves it to that
//!   one); while the agent is connected nowhere, its state is `unknown`
//!   ("agent `NAME` is not connected").
//! - A job's end also sets or clears the target's last error (in the
//!   job's transition); targets without a probe announce that alone.

pub mod probe;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use app::model::agent::ProbeCommand;
use app::model::status::TargetStatus;
use sea_orm::DatabaseConnection;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::agents::Agents;
use crate::config::{Config, StatusProbe, Target};
use crate::db::{agents, nodes, target_state};
use crate::hub::Hub;
use crate::metrics::Metrics;

/// How long after a failed start-up write (the targets' rows) it is
/// tried again.
const RETRY: Duration = Duration::from_secs(5);

/// Runs the probes of this replica (one per server, started with it).
pub struct Prober {
    pub config: Arc<Config>,
    /// The writer: claims and results.
    pub db: DatabaseConnection,
    /// Reads of a target's row to announce.
    pub reader: DatabaseConnection,
    pub hub: Hub,
    pub metrics: Arc<Metrics>,
    /// The agents connected here: an agent target's probe runs on its
    /// agent, asked by the replica it is connected to.
    pub agents: Agents,
    pub shutdown: CancellationToken,
}

/// A target's row as the pages show it: the probe's findings only while
/// the target has a probe (one removed from the configuration leaves its
/// last state in the table); nothing when nothing is left.
pub fn as_configured(target: &Target, mut status: TargetStatus) -> Option<TargetStatus> {
    if target.status.is_none() {
        status.state = None;
        status.message.clear();
        status.checked_at = None;
        status.changed_at = None;
    }
    (target.status.is_some() || status.last_error.is_some()).then_some(status)
}

/// One target's probes in this process.
#[derive(Default)]
struct Slot {
    /// Held while a probe of it runs: one at a time.
    running: tokio::sync::Mutex<()>,
    /// A probe after a job waits for `running`.
    waiting: AtomicBool,
}

/// Why a probe runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// Its interval passed: only if this replica wins the claim.
    Interval,
    /// A job on the target ended here.
    AfterJob,
    /// The target's agent connected here.
    Connected,
}

impl Prober {
    /// Probes until shutdown; waits for the probes running then (they are
    /// killed by it).
    pub async fn run(self) {
        let me = Arc::new(self);
        let probed: Vec<String> = me
            .config
            .targets
            .iter()
            .filter(|t| t.status.is_some())
            .map(|t| t.id.clone())
            .collect();
        while let Err(e) = target_state::ensure(&me.db, &probed).await {
            tracing::error!(error = %e, "cannot write the probed targets' rows; trying again");
            tokio::select! {
                _ = tokio::time::sleep(RETRY) => {}
                _ = me.shutdown.cancelled() => return,
            }
        }
        let slots: HashMap<String, Arc<Slot>> = me
            .config
            .targets
            .iter()
            .map(|t| (t.id.clone(), Arc::default()))
            .collect();
        // The first interval probe of each is due at once.
        let mut due: HashMap<String, Instant> = probed
            .iter()
            .map(|id| (id.clone(), Instant::now()))
            .collect();
        // When each agent's connection here started, as last seen.
        let mut links: HashMap<String, Option<chrono::DateTime<chrono::Utc>>> = HashMap::new();
        let mut tasks = JoinSet::new();
        loop {
            let next = due.values().min().copied();
            tokio::select! {
                _ = me.shutdown.cancelled() => break,
                ended = me.hub.ended_targets() => {
                    for id in ended {
                        let (Some(target), Some(slot)) = (me.config.target(&id), slots.get(&id)) else {
                            continue;
                        };
                        if let Some(p) = &target.status {
                            due.insert(id.clone(), Instant::now() + p.interval);
                        }
                        tasks.spawn(me.clone().probe(id, Why::AfterJob, slot.clone()));
                    }
                }
                _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                    let now = Instant::now();
                    for (id, at) in due.iter_mut().filter(|(_, at)| **at <= now) {
                        let Some(p) = me.config.target(id).and_then(|t| t.status.as_ref()) else {
                            continue;
                        };
                        *at = now + p.interval;
                        if let Some(slot) = slots.get(id) {
                            tasks.spawn(me.clone().probe(id.clone(), Why::Interval, slot.clone()));
                        }
                    }
                }
                _ = me.agents.connected() => {
                    // The targets of each agent connected anew (a new
                    // connection has a new start).
                    for target in me.config.targets.iter().filter(|t| t.status.is_some()) {
                        let Some(agent) = target.agent() else { continue };
                        let since = me.agents.info(agent).map(|i| i.connected_at);
                        let known = links.get(agent).copied().flatten();
                        if since.is_none() || since == known {
                            continue;
                        }
                        if let Some(slot) = slots.get(&target.id) {
                            tasks.spawn(me.clone().probe(target.id.clone(), Why::Connected, slot.clone()));
                        }
                    }
                    for agent in me.config.targets.iter().filter_map(Target::agent) {
                        links.insert(agent.to_string(), me.agents.info(agent).map(|i| i.connected_at));
                    }
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Probes `id` (if it has a probe) and announces its row.
    async fn probe(self: Arc<Self>, id: String, why: Why, slot: Arc<Slot>) {
        let Some(target) = self.config.target(&id) else {
            return;
        };
        let _one = match why {
            // A probe of it is running here already: that one is as new.
            Why::Interval => match slot.running.try_lock() {
                Ok(guard) => guard,
                Err(_) => return,
            },
            // N.B.: one waiting probe covers every job that ended before it
            // starts: a burst of short jobs makes one probe after the one
            // running, not one per job.
            Why::AfterJob | Why::Connected => {
                if slot.waiting.swap(true, Ordering::AcqRel) {
                    return;
                }
                let guard = slot.running.lock().await;
                slot.waiting.store(false, Ordering::Release);
                guard
            }
        };
        if target.status.is_some() {
            match self.probe_target(target, why).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(target_id = %id, error = %e, "cannot record a status probe");
                    return;
                }
            }
        }
        match target_state::get(&self.reader, &id).await {
            Ok(Some(status)) => {
                if let Some(status) = as_configured(target, status) {
                    self.hub.target_changed(status);
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(target_id = %id, error = %e, "cannot read a target's state"),
        }
    }

    /// Runs `target`'s probe and records what it found; false if it did
    /// not run (another replica claimed it, shutdown) or a newer result
    /// was recorded first.
    async fn probe_target(&self, target: &Target, why: Why) -> Result<bool, sea_orm::DbErr> {
        let Some(p) = &target.status else {
            return Ok(false);
        };
        if self.shutdown.is_cancelled() {
            return Ok(false);
        }
        if let Some(agent) = target.agent() {
            if !self.agents.is_online(agent) {
                // N.B.: connected to another replica (and heard from there
                // lately: a dead replica's row may still say connected),
                // that one probes it; connected nowhere, any replica
                // records that it cannot.
                let row = agents::by_name(&self.reader, agent).await?;
                let node = &self.config.cluster.node;
                let lately = chrono::Utc::now()
                    - chrono::TimeDelta::from_std(self.config.agents.unreachable_after)
                        .unwrap_or(chrono::TimeDelta::zero());
                if row.is_some_and(|a| {
                    a.connected_at.is_some()
                        && a.node.as_ref() != Some(node)
                        && a.last_seen_at.is_some_and(|t| t > lately)
                }) {
                    return Ok(false);
                }
            }
        }
        let started = nodes::clock(&self.db).await?;
        if why == Why::Interval {
            // N.B.: a little slack, so a replica whose timer fires a moment
            // early still claims; two replicas within it do not both win.
            let slack = (p.interval / 10).min(Duration::from_secs(1));
            let window = chrono::TimeDelta::from_std(p.interval - slack)
                .unwrap_or(chrono::TimeDelta::zero());
            if !target_state::claim(&self.db, &target.id, started, started - window).await? {
                return Ok(false);
            }
        }
        let span = tracing::debug_span!("probe", target_id = %target.id, ?why);
        let Some(found) = self.run_probe(target, p).instrument(span).await else {
            return Ok(false);
        };
        self.metrics.probed(found.state);
        tracing::debug!(target_id = %target.id, state = found.state.as_str(), message = %found.message, "probed");
        target_state::record(&self.db, &target.id, found.state, &found.message, started).await
    }

    /// Runs `p`: here, or on the target's agent; `None` at shutdown.
    async fn run_probe(&self, target: &Target, p: &StatusProbe) -> Option<probe::Probed> {
        let Some(agent) = target.agent() else {
            return probe::run(target, p, &self.config.jobs.base_env, &self.shutdown).await;
        };
        let cmd = ProbeCommand {
            id: 0,
            target: target.id.clone(),
            argv: p.argv.clone(),
            env: probe::vars(target, p),
            timeout_ms: u64::try_from(p.timeout.as_millis()).unwrap_or(u64::MAX),
        };
        tokio::select! {
            found = self.agents.probe(agent, cmd) => Some(match found {
                Ok((state, message)) => probe::Probed { state, message },
                Err(why) => probe::Probed::unknown(why),
            }),
            _ = self.shutdown.cancelled() => None,
        }
    }
}
