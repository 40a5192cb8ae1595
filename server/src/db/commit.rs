//! Group commit: the engine's writes (launches, claims, log batches and the
//! finish that rides with a job's last batch) go through committing tasks
//! ("lanes"), each of which applies whatever is waiting for it in one
//! transaction and answers each caller after the commit.
//!
//! N.B.: why. Every statement is a round trip to the database connection's
//! own thread (sqlx), about 85 µs here even on an idle machine, and every
//! transaction adds `BEGIN`, `COMMIT` and the pool's check of the returned
//! connection: a job that runs `true` cost some fifteen of them in a row on
//! SQLite's one writer. Grouped, the concurrent launches, claims and log
//! batches share one transaction's three, and nobody waits for a commit
//! that is not their own turn.
//!
//! SQLite has one writer, so one lane. PostgreSQL gets [`PG_LANES`]: there a
//! `COMMIT` waits for the WAL to reach the disk (1.6 ms on average under
//! load here), and one lane spent most of its time waiting for that while
//! the workers waited for it; several lanes' commits are flushed together
//! by PostgreSQL.
//!
//! A work item must be safe to apply twice: when a group fails, it is rolled
//! back and each item is applied again alone, so one bad item fails only
//! its own caller.
//!
//! Order. The items of one job ([`Work::job`]) always go through the same
//! lane, so they are applied in the order they were handed over, also when
//! a caller hands over several without waiting ([`Committer::submit`]).
//! Items of different jobs may commit in any order, as they would from
//! different callers.
//!
//! N.B.: what a change announces (to the hub, to other replicas) it
//! announces in [`Work::committed`], called after the commit, in commit
//! order across all lanes, before any caller hears back. Each group takes a
//! ticket just before it sends `COMMIT`, and groups are announced in ticket
//! order (a group waits for the groups with earlier tickets to commit or
//! fail). A transaction that saw another's rows began its `COMMIT` after
//! that one's had been carried out, so it holds the later ticket: a job's
//! `queued` reaches the feed before its `running`, its lines in order, and
//! nothing is announced that did not commit.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr};
use tokio::sync::{mpsc, oneshot};

use super::txn::Txn;
use crate::sync::Locked;

/// Items applied in one transaction, at most.
const GROUP: usize = 64;
/// Items waiting per lane, at most (callers then wait to hand theirs over).
const QUEUE: usize = 1024;
/// Lanes on PostgreSQL (each holds one pooled connection while it commits).
pub const PG_LANES: usize = 4;

/// A write to apply inside the group's transaction.
#[async_trait]
pub trait Work: Send + Sync + 'static {
    async fn apply(&self, txn: &Txn) -> Result<(), DbErr>;

    /// Called once, after the transaction that applied this item last
    /// committed: announce what it did. Never called for an item whose
    /// commit failed.
    fn committed(&self) {}

    /// The job this item writes, if it is about one: the items of one job
    /// are applied in the order they were handed over.
    fn job(&self) -> Option<i64> {
        None
    }
}

struct Pending {
    work: Arc<dyn Work>,
    done: oneshot::Sender<Result<(), DbErr>>,
}

/// The handle callers use; the lanes end when the last handle is dropped.
#[derive(Clone)]
pub struct Committer {
    lanes: Arc<[mpsc::Sender<Pending>]>,
    /// The lane of the next item that is about no job.
    next: Arc<AtomicUsize>,
}

impl Committer {
    /// Starts the committing lanes on `db`: one on SQLite, [`PG_LANES`] on
    /// PostgreSQL.
    pub fn start(db: DatabaseConnection) -> Committer {
        let lanes = match db.get_database_backend() {
            DbBackend::Postgres => PG_LANES,
            _ => 1,
        };
        Committer::with_lanes(db, lanes)
    }

    fn with_lanes(db: DatabaseConnection, lanes: usize) -> Committer {
        let order = Arc::new(Announcer::default());
        let lanes: Vec<_> = (0..lanes.max(1))
            .map(|_| {
                let (queue, rx) = mpsc::channel(QUEUE);
                tokio::spawn(run(db.clone(), rx, order.clone()));
                queue
            })
            .collect();
        Committer {
            lanes: lanes.into(),
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Applies `work` and commits it (with whatever else was waiting). When
    /// this returns `Ok`, the committer holds no handle to `work` any more.
    pub async fn commit(&self, work: Arc<dyn Work>) -> Result<(), DbErr> {
        self.submit(work).await?.await
    }

    /// Hands `work` over without waiting for its commit; the returned
    /// future answers as [`Committer::commit`] does. Items of one job are
    /// applied in the order they are handed over (one lane, first in,
    /// first out, also when a failed group is applied again item by item).
    pub async fn submit(
        &self,
        work: Arc<dyn Work>,
    ) -> Result<impl std::future::Future<Output = Result<(), DbErr>> + Send + 'static, DbErr> {
        let n = self.lanes.len();
        let lane = match work.job() {
            Some(id) => id.rem_euclid(n as i64) as usize,
            None => self.next.fetch_add(1, Ordering::Relaxed) % n,
        };
        let (done, answer) = oneshot::channel();
        self.lanes[lane]
            .send(Pending { work, done })
            .await
            .map_err(|_| gone())?;
        Ok(async move { answer.await.map_err(|_| gone())? })
    }
}

fn gone() -> DbErr {
    DbErr::Custom("the database writer has stopped".into())
}

/// An item with the result of its commit.
type Answer = (Pending, Result<(), DbErr>);

/// Announces committed groups in the order of their tickets.
#[derive(Default)]
struct Announcer {
    state: Mutex<Tickets>,
}

#[derive(Default)]
struct Tickets {
    /// The ticket the next `COMMIT` gets.
    issued: u64,
    /// The ticket announced next.
    next: u64,
    /// Groups whose commit ended, by ticket, waiting for earlier ones.
    ended: BTreeMap<u64, Vec<Answer>>,
}

impl Announcer {
    /// A ticket for a `COMMIT` about to be sent.
    fn ticket(&self) -> u64 {
        let mut t = self.state.locked();
        t.issued += 1;
        t.issued - 1
    }

    /// The commit of `ticket` ended with these answers (none if it failed
    /// and its items are to be tried again). Announces and answers every
    /// group whose turn has come.
    ///
    /// N.B.: under the lock, so that two lanes never announce at once.
    fn ended(&self, ticket: u64, answers: Vec<Answer>) {
        let mut t = self.state.locked();
        t.ended.insert(ticket, answers);
        loop {
            let next = t.next;
            let Some(answers) = t.ended.remove(&next) else {
                break;
            };
            t.next += 1;
            for (p, result) in &answers {
                if result.is_ok() {
                    p.work.committed();
                }
            }
            for (p, result) in answers {
                answer(p, result);
            }
        }
    }
}

async fn run(db: DatabaseConnection, mut rx: mpsc::Receiver<Pending>, order: Arc<Announcer>) {
    let mut group: Vec<Pending> = Vec::with_capacity(GROUP);
    while let Some(first) = rx.recv().await {
        group.push(first);
        while group.len() < GROUP {
            match rx.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => break,
            }
        }
        let works: Vec<&Arc<dyn Work>> = group.iter().map(|p| &p.work).collect();
        match apply(&db, &works, &order).await {
            Ok(ticket) => {
                let answers = group.drain(..).map(|p| (p, Ok(()))).collect();
                order.ended(ticket, answers);
            }
            Err(e) if group.len() == 1 => {
                if let Some(p) = group.pop() {
                    answer(p, Err(e));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, items = group.len(), "a grouped commit failed; applying its items one by one");
                for p in group.drain(..) {
                    match apply(&db, &[&p.work], &order).await {
                        Ok(ticket) => order.ended(ticket, vec![(p, Ok(()))]),
                        Err(e) => answer(p, Err(e)),
                    }
                }
            }
        }
    }
}

/// Lets go of the work before answering (see [`Committer::commit`]).
fn answer(p: Pending, result: Result<(), DbErr>) {
    let Pending { work, done } = p;
    drop(work);
    let _ = done.send(result);
}

/// Applies `works` in one transaction and commits it: the commit's ticket.
/// On an error nothing stays written, and the ticket (if one was taken) is
/// passed with nothing to announce.
async fn apply(
    db: &DatabaseConnection,
    works: &[&Arc<dyn Work>],
    order: &Announcer,
) -> Result<u64, DbErr> {
    let txn = Txn::begin(db).await?;
    for work in works {
        if let Err(e) = work.apply(&txn).await {
            let _ = txn.rollback().await;
            return Err(e);
        }
    }
    let ticket = order.ticket();
    match txn.commit().await {
        Ok(()) => Ok(ticket),
        Err(e) => {
            order.ended(ticket, Vec::new());
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use sea_orm::{ConnectionTrait, Database, Statement};

    use super::*;

    /// Inserts `value` into `t`; or, if `bad`, fails after inserting it.
    struct Insert {
        value: i64,
        bad: bool,
        /// The job it is about, if any (its lane).
        job: Option<i64>,
        /// Also inserts a row whose foreign key fails at `COMMIT`.
        orphan: bool,
        applied: AtomicUsize,
        announced: Arc<Mutex<Vec<i64>>>,
    }

    impl Insert {
        fn new(value: i64, announced: &Arc<Mutex<Vec<i64>>>) -> Insert {
            Insert {
                value,
                bad: false,
                job: None,
                orphan: false,
                applied: AtomicUsize::new(0),
                announced: announced.clone(),
            }
        }
    }

    #[async_trait]
    impl Work for Insert {
        fn job(&self) -> Option<i64> {
            self.job
        }

        async fn apply(&self, txn: &Txn) -> Result<(), DbErr> {
            self.applied.fetch_add(1, Ordering::SeqCst);
            txn.execute_unprepared(&format!("INSERT INTO t (v) VALUES ({})", self.value))
                .await?;
            if self.orphan {
                txn.execute_unprepared("INSERT INTO child (parent) VALUES (404)")
                    .await?;
            }
            if self.bad {
                return Err(DbErr::Custom(format!("item {} is bad", self.value)));
            }
            Ok(())
        }

        fn committed(&self) {
            self.announced.lock().unwrap().push(self.value);
        }
    }

    async fn memory_db() -> DatabaseConnection {
        // One connection: each connection to `:memory:` is its own database.
        let mut opts = sea_orm::ConnectOptions::new("sqlite::memory:");
        opts.max_connections(1).min_connections(1);
        let db = Database::connect(opts).await.unwrap();
        db.execute_unprepared("CREATE TABLE t (v INTEGER NOT NULL)")
            .await
            .unwrap();
        // A foreign key checked at COMMIT: a commit that fails.
        db.execute_unprepared(
            "PRAGMA foreign_keys = ON;
             CREATE TABLE parent (id INTEGER PRIMARY KEY);
             CREATE TABLE child (parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)",
        )
        .await
        .unwrap();
        db
    }

    /// The values in `t`, in ascending order.
    async fn stored(db: &DatabaseConnection) -> Vec<i64> {
        values(db, "v").await
    }

    /// The values in `t` in the order they were inserted (one connection:
    /// the order of the commits).
    async fn in_commit_order(db: &DatabaseConnection) -> Vec<i64> {
        values(db, "rowid").await
    }

    async fn values(db: &DatabaseConnection, order_by: &str) -> Vec<i64> {
        let rows = db
            .query_all(Statement::from_string(
                db.get_database_backend(),
                format!("SELECT v FROM t ORDER BY {order_by}"),
            ))
            .await
            .unwrap();
        rows.iter()
            .map(|r| r.try_get::<i64>("", "v").unwrap())
            .collect()
    }

    #[tokio::test]
    async fn a_failed_group_is_applied_again_item_by_item_and_only_the_bad_item_fails() {
        let db = memory_db().await;
        let committer = Committer::start(db.clone());
        let announced = Arc::new(Mutex::new(Vec::new()));
        let items: Vec<Arc<Insert>> = (1..=5)
            .map(|value| {
                Arc::new(Insert {
                    bad: value == 3,
                    ..Insert::new(value, &announced)
                })
            })
            .collect();
        // N.B.: all five are queued before the committer runs (one thread),
        // so they form one group, which item 3 makes fail.
        let results = futures::future::join_all(
            items
                .iter()
                .map(|i| committer.commit(i.clone() as Arc<dyn Work>)),
        )
        .await;
        let ok: Vec<bool> = results.iter().map(Result::is_ok).collect();
        assert_eq!(ok, [true, true, false, true, true]);
        assert_eq!(
            stored(&db).await,
            [1, 2, 4, 5],
            "each good item exactly once"
        );
        let applied: Vec<usize> = items
            .iter()
            .map(|i| i.applied.load(Ordering::SeqCst))
            .collect();
        // 1 to 3 in the group (which 3 ended), then each alone; 4 and 5 alone.
        assert_eq!(applied, [2, 2, 2, 1, 1]);
        assert_eq!(
            *announced.lock().unwrap(),
            [1, 2, 4, 5],
            "announced after its own commit, in order"
        );
    }

    #[tokio::test]
    async fn a_group_that_commits_announces_every_item_in_order_before_answering() {
        let db = memory_db().await;
        let committer = Committer::start(db.clone());
        let announced = Arc::new(Mutex::new(Vec::new()));
        let items: Vec<Arc<Insert>> = (1..=4)
            .map(|value| Arc::new(Insert::new(value, &announced)))
            .collect();
        let seen = announced.clone();
        let results = futures::future::join_all(items.iter().map(|i| {
            let fut = committer.commit(i.clone() as Arc<dyn Work>);
            let seen = seen.clone();
            let value = i.value;
            async move {
                fut.await.unwrap();
                // By the time a caller hears back, its item was announced.
                assert!(seen.lock().unwrap().contains(&value));
            }
        }))
        .await;
        assert_eq!(results.len(), 4);
        assert_eq!(*announced.lock().unwrap(), [1, 2, 3, 4]);
        for item in &items {
            assert_eq!(item.applied.load(Ordering::SeqCst), 1, "one group, one try");
        }
    }

    #[tokio::test]
    async fn groups_are_announced_and_answered_in_ticket_order_whatever_order_they_end_in() {
        let order = Announcer::default();
        let announced = Arc::new(Mutex::new(Vec::new()));
        let pending = |value| {
            let (done, answer) = oneshot::channel();
            let work: Arc<dyn Work> = Arc::new(Insert::new(value, &announced));
            (Pending { work, done }, answer)
        };
        let tickets: Vec<u64> = (0..4).map(|_| order.ticket()).collect();
        assert_eq!(tickets, [0, 1, 2, 3]);
        let (p1, mut a1) = pending(1);
        let (p3, a3) = pending(3);
        // Ticket 1 commits first: it waits for ticket 0.
        order.ended(1, vec![(p1, Ok(()))]);
        assert!(announced.lock().unwrap().is_empty());
        assert!(a1.try_recv().is_err(), "not answered before its turn");
        // Ticket 3 commits; ticket 2's commit failed (nothing to announce).
        order.ended(3, vec![(p3, Ok(()))]);
        order.ended(2, Vec::new());
        assert!(announced.lock().unwrap().is_empty());
        // Ticket 0 commits: 0, 1 and 3 go out, in that order.
        let (p0, a0) = pending(0);
        order.ended(0, vec![(p0, Ok(()))]);
        assert_eq!(*announced.lock().unwrap(), [0, 1, 3]);
        assert!(a0.await.unwrap().is_ok());
        assert!(a1.await.unwrap().is_ok());
        assert!(a3.await.unwrap().is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 3)]
    async fn across_lanes_a_jobs_items_keep_their_order_and_all_are_announced_in_commit_order() {
        let db = memory_db().await;
        // N.B.: three lanes on one connection: they take turns, each with
        // whatever piled up in its queue meanwhile.
        let committer = Committer::with_lanes(db.clone(), 3);
        let announced = Arc::new(Mutex::new(Vec::new()));
        let items: Vec<Arc<Insert>> = (1..=60)
            .map(|value| {
                Arc::new(Insert {
                    // Jobs 0 to 4, and every seventh item about no job.
                    job: (value % 7 != 0).then_some(value % 5),
                    ..Insert::new(value, &announced)
                })
            })
            .collect();
        // Handed over one after the other without waiting, as an agent's
        // connection hands over its batches.
        let mut answers = Vec::new();
        for item in &items {
            answers.push(
                committer
                    .submit(item.clone() as Arc<dyn Work>)
                    .await
                    .unwrap(),
            );
        }
        for answer in answers {
            answer.await.unwrap();
        }
        let committed = in_commit_order(&db).await;
        assert_eq!(committed.len(), 60, "each item exactly once");
        assert_eq!(
            *announced.lock().unwrap(),
            committed,
            "announced in the order of the commits"
        );
        for job in 0..5 {
            let of_job: Vec<i64> = committed
                .iter()
                .copied()
                .filter(|v| v % 7 != 0 && v % 5 == job)
                .collect();
            assert!(
                of_job.windows(2).all(|w| w[0] < w[1]),
                "job {job}'s items in the order handed over: {of_job:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_commit_that_fails_passes_its_turn_and_only_its_bad_item_fails() {
        let db = memory_db().await;
        let committer = Committer::with_lanes(db.clone(), 2);
        let announced = Arc::new(Mutex::new(Vec::new()));
        let items: Vec<Arc<Insert>> = (1..=6)
            .map(|value| {
                Arc::new(Insert {
                    orphan: value == 2,
                    job: Some(value % 2),
                    ..Insert::new(value, &announced)
                })
            })
            .collect();
        let results = futures::future::join_all(
            items
                .iter()
                .map(|i| committer.commit(i.clone() as Arc<dyn Work>)),
        )
        .await;
        let ok: Vec<bool> = results.iter().map(Result::is_ok).collect();
        assert_eq!(ok, [true, false, true, true, true, true]);
        assert_eq!(stored(&db).await, [1, 3, 4, 5, 6]);
        let committed = in_commit_order(&db).await;
        assert_eq!(*announced.lock().unwrap(), committed);
        // Later commits are announced too: the failed one's turn passed.
        let late = Arc::new(Insert::new(7, &announced));
        committer.commit(late as Arc<dyn Work>).await.unwrap();
        assert_eq!(announced.lock().unwrap().last(), Some(&7));
    }
}
