//! Wake-ups between replicas on PostgreSQL: `LISTEN/NOTIFY` carrying job
//! ids only. On SQLite (one process) none of this runs.
//!
//! Sending: the hub marks what each commit announced in the [`Outbox`]
//! (`Hub::new`); one task per replica ([`send`]) turns what was
//! marked into notifications, all channels in one statement, at most once
//! per [`WINDOW`]. Receiving: one connection per replica ([`listen`])
//! `LISTEN`s on the five [`Channel`]s, reconnecting by itself with backoff,
//! and hands each notification to what it wakes: the engine (queue), the
//! tails of jobs watched here ([`tail`]: log lines, state), the feed (state)
//! and the runner or the agent link holding a cancelled job (cancel).
//!
//! N.B.: a notification is only ever a hint to look at the database: each
//! receiver reads the committed rows, so a lost, late or repeated
//! notification costs latency, never correctness. What was missed while
//! the listener was down is made up by the polling that stays beside it
//! (the engine's `[jobs].poll_interval`, the tails' [`tail::POLL`], the
//! runner's cancel poll) and, at each reconnect, by waking all of them and
//! telling the feed's browsers to reload (`resync`).

pub mod tail;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use app::model::event::FeedEvent;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::agents::Agents;
use crate::db::jobs;
use crate::engine::runner::StopReason;
use crate::engine::Engine;
use crate::hub::Hub;
use crate::sync::Locked;

/// How often, at most, this replica sends notifications: what was marked
/// meanwhile goes out together, every channel in one statement.
///
/// N.B.: a transaction that notified takes a cluster-wide lock at commit
/// (PostgreSQL serialises the commits of notifying transactions), so the
/// notifications never ride in the engine's group commits: they go in a
/// statement of their own, at most 10 per second per replica whatever the
/// load, and a quiet replica's first one goes at once. 100 ms keeps the
/// extra latency of a live line on another replica well under the 200 ms
/// budget (measured in tests/it/replicas.rs).
pub const WINDOW: Duration = Duration::from_millis(100);

/// The longest payload sent: PostgreSQL refuses one of 8,000 bytes or
/// more; longer id lists are split into several notifications.
const MAX_PAYLOAD: usize = 7000;

/// The first wait before the listener connects again, doubled each failure
/// up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What a notification says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// A job was enqueued or a job's end freed a slot: claim (and dispatch
    /// to the agents connected here). No ids: any replica may claim.
    Queue,
    /// These jobs have new committed lines (or progress, or a gap).
    Log,
    /// These jobs changed (state, progress) or were deleted: the feed.
    Job,
    /// A cancel of these running jobs was committed.
    Cancel,
    /// A target's actual state or last error changed. No ids (target ids
    /// are names): the receiver reads every target's row, a handful.
    Target,
}

/// How many channels there are.
const CHANNELS: usize = 5;

impl Channel {
    pub const ALL: [Channel; CHANNELS] = [
        Channel::Queue,
        Channel::Log,
        Channel::Job,
        Channel::Cancel,
        Channel::Target,
    ];

    /// The PostgreSQL channel name.
    pub fn name(self) -> &'static str {
        match self {
            Channel::Queue => "opsdeck_queue",
            Channel::Log => "opsdeck_log",
            Channel::Job => "opsdeck_job",
            Channel::Cancel => "opsdeck_cancel",
            Channel::Target => "opsdeck_target",
        }
    }

    /// The `channel` label in `/metrics`.
    pub fn label(self) -> &'static str {
        match self {
            Channel::Queue => "queue",
            Channel::Log => "log",
            Channel::Job => "job",
            Channel::Cancel => "cancel",
            Channel::Target => "target",
        }
    }

    fn of_name(name: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Whether its payload lists job ids.
    fn has_ids(self) -> bool {
        !matches!(self, Channel::Queue | Channel::Target)
    }
}

/// This process's notification counters, rendered into `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    sent: [AtomicU64; CHANNELS],
    received: [AtomicU64; CHANNELS],
    reconnects: AtomicU64,
    send_errors: AtomicU64,
    tails: AtomicU64,
}

impl Counters {
    fn sent(&self, c: Channel) {
        self.sent[c as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn received(&self, c: Channel) {
        self.received[c as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A tail task started (`true`) or ended (`false`).
    fn tail(&self, started: bool) {
        if started {
            self.tails.fetch_add(1, Ordering::Relaxed);
        } else {
            self.tails.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Tail tasks running now.
    pub fn tails(&self) -> u64 {
        self.tails.load(Ordering::Relaxed)
    }

    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// Appends the counters in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let per_channel =
            |out: &mut String, name: &str, help: &str, values: &[AtomicU64; CHANNELS]| {
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} counter");
                for c in Channel::ALL {
                    let _ = writeln!(
                        out,
                        "{name}{{channel=\"{}\"}} {}",
                        c.label(),
                        values[c as usize].load(Ordering::Relaxed)
                    );
                }
            };
        per_channel(
            out,
            "opsdeck_notifications_sent_total",
            "PostgreSQL notifications this replica sent, by channel (coalesced: at most one per channel per 100 ms).",
            &self.sent,
        );
        per_channel(
            out,
            "opsdeck_notifications_received_total",
            "PostgreSQL notifications from other replicas this replica received, by channel.",
            &self.received,
        );
        let single = |out: &mut String, name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {v}");
        };
        single(
            out,
            "opsdeck_notify_listener_reconnects_total",
            "counter",
            "Times the listening connection to PostgreSQL was lost and opened again.",
            self.reconnects(),
        );
        single(
            out,
            "opsdeck_notify_send_errors_total",
            "counter",
            "Notification statements that failed (what they carried is sent again).",
            self.send_errors.load(Ordering::Relaxed),
        );
        single(
            out,
            "opsdeck_stream_tails",
            "gauge",
            "Jobs of other replicas whose committed lines this replica tails for its streams.",
            self.tails(),
        );
    }
}

/// What this replica marked to announce, waiting for the sender.
#[derive(Default)]
struct Pending {
    ids: [BTreeSet<i64>; CHANNELS],
    any: [bool; CHANNELS],
}

/// The marks the hub makes as commits announce things (clones share it).
#[derive(Clone, Default)]
pub struct Outbox(Arc<OutboxInner>);

#[derive(Default)]
struct OutboxInner {
    pending: Mutex<Pending>,
    ready: Notify,
}

impl Outbox {
    /// Marks `id` (ignored on [`Channel::Queue`]) for the next notification.
    /// Never waits on the database.
    pub fn mark(&self, channel: Channel, id: i64) {
        {
            let mut p = self.0.pending.locked();
            p.any[channel as usize] = true;
            if channel.has_ids() {
                p.ids[channel as usize].insert(id);
            }
        }
        self.0.ready.notify_one();
    }

    /// Whether `channel` is marked, and with which ids (for tests).
    #[cfg(test)]
    pub fn marked(&self, channel: Channel) -> (bool, Vec<i64>) {
        let p = self.0.pending.locked();
        let i = channel as usize;
        (p.any[i], p.ids[i].iter().copied().collect())
    }

    fn take(&self) -> Pending {
        std::mem::take(&mut *self.0.pending.locked())
    }

    /// Puts back what a failed send carried.
    fn restore(&self, back: Pending) {
        let mut p = self.0.pending.locked();
        for c in Channel::ALL {
            let i = c as usize;
            p.any[i] |= back.any[i];
            p.ids[i].extend(&back.ids[i]);
        }
    }
}

/// A random tag for this process, first in each payload, so a replica
/// ignores its own notifications (it announced those in-process already).
pub fn new_sender_tag() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// The payloads of one channel: `TAG:id,id,…`, each under [`MAX_PAYLOAD`].
fn payloads(tag: &str, ids: &BTreeSet<i64>) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = format!("{tag}:");
    for id in ids {
        if cur.len() + 21 > MAX_PAYLOAD {
            out.push(std::mem::replace(&mut cur, format!("{tag}:")));
        }
        if !cur.ends_with(':') {
            cur.push(',');
        }
        let _ = write!(cur, "{id}");
    }
    out.push(cur);
    out
}

/// Parses a payload: (sender tag, ids); `None` if it is not ours.
fn parse(payload: &str) -> Option<(&str, Vec<i64>)> {
    let (tag, ids) = payload.split_once(':')?;
    let ids = ids
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect::<Result<Vec<i64>, _>>()
        .ok()?;
    Some((tag, ids))
}

/// Sends what the hub marked, at most once per [`WINDOW`], on `db` (its
/// own autocommit statement), until shutdown (sending what is left then).
pub async fn send(
    outbox: Outbox,
    db: DatabaseConnection,
    tag: String,
    counters: Arc<crate::metrics::Metrics>,
    shutdown: CancellationToken,
) {
    loop {
        let stopping = tokio::select! {
            _ = outbox.0.ready.notified() => false,
            _ = shutdown.cancelled() => true,
        };
        let pending = outbox.take();
        if pending.any.iter().any(|a| *a) {
            let mut values: Vec<sea_orm::Value> = Vec::new();
            let mut sent = Vec::new();
            for c in Channel::ALL
                .into_iter()
                .filter(|c| pending.any[*c as usize])
            {
                for p in payloads(&tag, &pending.ids[c as usize]) {
                    values.push(c.name().into());
                    values.push(p.into());
                    sent.push(c);
                }
            }
            let calls: Vec<String> = (0..values.len() / 2)
                .map(|i| format!("pg_notify(${}, ${})", 2 * i + 1, 2 * i + 2))
                .collect();
            let sql = format!("SELECT {}", calls.join(", "));
            let stmt = Statement::from_sql_and_values(DbBackend::Postgres, sql, values);
            match db.execute(stmt).await {
                Ok(_) => sent.into_iter().for_each(|c| counters.notify.sent(c)),
                Err(e) => {
                    counters.notify.send_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "cannot notify the other replicas; they poll meanwhile, and this is sent again");
                    if !stopping {
                        outbox.restore(pending);
                        outbox.0.ready.notify_one();
                    }
                }
            }
        }
        if stopping {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(WINDOW) => {}
            _ = shutdown.cancelled() => {}
        }
    }
}

/// What a notification from another replica wakes here.
#[derive(Clone)]
pub struct Receivers {
    pub engine: Engine,
    pub agents: Agents,
    pub hub: Hub,
    pub tails: tail::Tails,
    /// Reads the rows a notification names.
    pub reader: DatabaseConnection,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Listens on every [`Channel`] over one connection of its own to `url`
/// until shutdown; connects again by itself, with backoff, whenever the
/// connection is lost, and makes up for what it may have missed.
pub async fn listen(url: String, tag: String, to: Receivers, shutdown: CancellationToken) {
    let mut backoff = BACKOFF_MIN;
    let mut first = true;
    loop {
        let connected = tokio::select! {
            c = connect(&url) => c,
            _ = shutdown.cancelled() => return,
        };
        let mut listener = match connected {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "cannot listen for the other replicas' notifications; polling meanwhile");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        backoff = BACKOFF_MIN;
        if first {
            tracing::info!("listening for the other replicas' notifications");
            first = false;
        } else {
            to.metrics.notify.reconnects.fetch_add(1, Ordering::Relaxed);
            tracing::info!("listening for the other replicas' notifications again");
            missed(&to);
        }
        loop {
            let next = tokio::select! {
                n = listener.try_recv() => n,
                _ = shutdown.cancelled() => return,
            };
            match next {
                Ok(Some(n)) => receive(&to, &tag, n.channel(), n.payload()).await,
                // The connection was lost and sqlx opened a new one (which
                // listens again): anything sent between was missed.
                Ok(None) => {
                    to.metrics.notify.reconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!("the listening connection was lost and opened again");
                    missed(&to);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lost the listening connection to PostgreSQL; connecting again");
                    break;
                }
            }
        }
    }
}

async fn connect(url: &str) -> Result<PgListener, sqlx::Error> {
    let mut l = PgListener::connect(url).await?;
    l.listen_all(Channel::ALL.iter().map(|c| c.name())).await?;
    Ok(l)
}

/// Notifications may have been missed: look at everything once.
fn missed(to: &Receivers) {
    to.engine.wake();
    to.tails.wake_all();
    to.hub.relay_feed(FeedEvent::Resync);
}

/// Acts on one notification.
async fn receive(to: &Receivers, tag: &str, channel: &str, payload: &str) {
    let Some(channel) = Channel::of_name(channel) else {
        return;
    };
    let Some((from, ids)) = parse(payload) else {
        tracing::debug!(channel = channel.name(), payload, "ignored a notification");
        return;
    };
    if from == tag {
        return;
    }
    to.metrics.notify.received(channel);
    match channel {
        Channel::Queue => to.engine.wake(),
        Channel::Log => ids.iter().for_each(|id| to.tails.wake(*id)),
        Channel::Job => {
            ids.iter().for_each(|id| to.tails.wake(*id));
            feed(to, &ids).await;
        }
        Channel::Cancel => {
            for id in ids {
                cancel(to, id).await;
            }
        }
        Channel::Target => targets(to).await,
    }
}

/// Tells this replica's feed every target's state as another replica
/// recorded it (a probe, a job's end).
async fn targets(to: &Receivers) {
    match crate::db::target_state::all(&to.reader).await {
        Ok(all) => all
            .into_iter()
            .for_each(|s| to.hub.relay_feed(FeedEvent::Target(Arc::new(s)))),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the targets' state another replica changed; the feed's browsers reload");
            to.hub.relay_feed(FeedEvent::Resync);
        }
    }
}

/// Tells this replica's feed what the jobs are now (gone: deleted).
async fn feed(to: &Receivers, ids: &[i64]) {
    let rows = match jobs::by_ids(&to.reader, ids).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the jobs another replica changed; the feed's browsers reload");
            to.hub.relay_feed(FeedEvent::Resync);
            return;
        }
    };
    for id in ids {
        match rows.iter().find(|r| r.id == *id) {
            Some(row) => to.hub.relay_feed(FeedEvent::Job(Arc::new(row.to_job()))),
            None => to.hub.relay_feed(FeedEvent::Deleted(*id)),
        }
    }
}

/// A cancel committed on another replica: stop the job if it runs here,
/// or push the cancel to its agent if that is connected here.
async fn cancel(to: &Receivers, id: i64) {
    let row = match jobs::by_id(&to.reader, id).await {
        Ok(Some(row)) => row,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(job = id, error = %e, "cannot read a job cancelled on another replica; the runner's poll sees it");
            return;
        }
    };
    if row.state != app::model::job::JobState::Cancelling {
        return;
    }
    let by = row
        .cancel_requested_by
        .clone()
        .unwrap_or_else(|| "someone".into());
    match row.agent.as_deref() {
        Some(agent) => {
            let msg = app::model::agent::ServerMsg::Cancel {
                job_id: id,
                dispatch: row.dispatch,
                by,
            };
            if to.agents.send(agent, msg) {
                tracing::info!(
                    job = id,
                    agent,
                    "pushed a cancel from another replica to the agent"
                );
            }
        }
        None => {
            if to.engine.stop_job(id, StopReason::Cancel { by }) {
                tracing::info!(job = id, "stopping a job cancelled through another replica");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_is_the_senders_tag_and_ids_and_parses_back() {
        let ids: BTreeSet<i64> = [3, 1, 2].into();
        let p = payloads("abcd0123", &ids);
        assert_eq!(p, ["abcd0123:1,2,3"]);
        assert_eq!(parse(&p[0]), Some(("abcd0123", vec![1, 2, 3])));
        assert_eq!(payloads("t", &BTreeSet::new()), ["t:"]);
        assert_eq!(parse("t:"), Some(("t", vec![])));
        assert_eq!(parse("no tag"), None);
        assert_eq!(parse("t:1,x"), None);
    }

    #[test]
    fn many_ids_are_split_into_payloads_postgresql_accepts() {
        let ids: BTreeSet<i64> = (1_000_000_000_000..1_000_000_002_000).collect();
        let p = payloads("abcd0123", &ids);
        assert!(p.len() > 1);
        assert!(p.iter().all(|s| s.len() < MAX_PAYLOAD));
        let back: Vec<i64> = p.iter().flat_map(|s| parse(s).unwrap().1).collect();
        assert_eq!(back, ids.into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn marks_coalesce_per_channel_and_a_failed_send_keeps_them() {
        let o = Outbox::default();
        o.mark(Channel::Log, 7);
        o.mark(Channel::Log, 7);
        o.mark(Channel::Queue, 7);
        let p = o.take();
        assert_eq!(p.ids[Channel::Log as usize].len(), 1);
        assert!(p.any[Channel::Queue as usize] && p.ids[Channel::Queue as usize].is_empty());
        assert!(!p.any[Channel::Cancel as usize]);
        o.restore(p);
        assert!(o.take().ids[Channel::Log as usize].contains(&7));
    }

    #[test]
    fn the_counters_render_per_channel() {
        let m = crate::metrics::Metrics::default();
        m.notify.sent(Channel::Log);
        m.notify.received(Channel::Cancel);
        let mut out = String::new();
        m.notify.render(&mut out);
        assert!(out.contains("opsdeck_notifications_sent_total{channel=\"log\"} 1\n"));
        assert!(out.contains("opsdeck_notifications_received_total{channel=\"cancel\"} 1\n"));
        assert!(out.contains("opsdeck_notify_listener_reconnects_total 0\n"));
        assert!(out.contains("opsdeck_stream_tails 0\n"));
    }
}
