//! Group commit: the engine's writes (launches, claims, log batches and the
//! finish that rides with a job's last batch) go through one task that
//! applies whatever is waiting in one transaction and answers each caller
//! after the commit.
//!
//! N.B.: why. Every statement is a round trip to the database connection's
//! own thread (sqlx), about 85 µs here even on an idle machine, and every
//! transaction adds `BEGIN`, `COMMIT` and the pool's check of the returned
//! connection: a job that runs `true` cost some fifteen of them in a row on
//! SQLite's one writer. Grouped, the concurrent launches, claims and log
//! batches share one transaction's three, and nobody waits for a commit
//! that is not their own turn.
//!
//! A work item must be safe to apply twice: when a group fails, it is rolled
//! back and each item is applied again alone, so one bad item fails only
//! its own caller.
//!
//! N.B.: what a change announces (to the hub, to other replicas) it
//! announces in [`Work::committed`], which this task calls after the commit,
//! in the order the items were applied, before any caller hears back. So
//! nothing is announced that did not commit, and a job's `queued` reaches
//! the feed before anything a later commit does to it.

use std::sync::Arc;

use async_trait::async_trait;
use sea_orm::{DatabaseConnection, DatabaseTransaction, DbErr, TransactionTrait};
use tokio::sync::{mpsc, oneshot};

/// Items applied in one transaction, at most.
const GROUP: usize = 64;
/// Items waiting, at most (callers then wait to hand theirs over).
const QUEUE: usize = 1024;

/// A write to apply inside the group's transaction.
#[async_trait]
pub trait Work: Send + Sync + 'static {
    async fn apply(&self, txn: &DatabaseTransaction) -> Result<(), DbErr>;

    /// Called once, after the transaction that applied this item last
    /// committed: announce what it did. Never called for an item whose
    /// commit failed.
    fn committed(&self) {}
}

struct Pending {
    work: Arc<dyn Work>,
    done: oneshot::Sender<Result<(), DbErr>>,
}

/// The handle callers use; the task ends when the last handle is dropped.
#[derive(Clone)]
pub struct Committer {
    queue: mpsc::Sender<Pending>,
}

impl Committer {
    /// Starts the committing task on `db`.
    pub fn start(db: DatabaseConnection) -> Committer {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(db, rx));
        Committer { queue }
    }

    /// Applies `work` and commits it (with whatever else was waiting). When
    /// this returns `Ok`, the committer holds no handle to `work` any more.
    pub async fn commit(&self, work: Arc<dyn Work>) -> Result<(), DbErr> {
        self.submit(work).await?.await
    }

    /// Hands `work` over without waiting for its commit; the returned
    /// future answers as [`Committer::commit`] does. Items one caller hands
    /// over are applied in that order (the queue is first in, first out,
    /// also when a failed group is applied again item by item).
    pub async fn submit(
        &self,
        work: Arc<dyn Work>,
    ) -> Result<impl std::future::Future<Output = Result<(), DbErr>> + Send + 'static, DbErr> {
        let (done, answer) = oneshot::channel();
        self.queue
            .send(Pending { work, done })
            .await
            .map_err(|_| gone())?;
        Ok(async move { answer.await.map_err(|_| gone())? })
    }
}

fn gone() -> DbErr {
    DbErr::Custom("the database writer has stopped".into())
}

async fn run(db: DatabaseConnection, mut rx: mpsc::Receiver<Pending>) {
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
        match apply(&db, &works).await {
            Ok(()) => {
                for p in &group {
                    p.work.committed();
                }
                for p in group.drain(..) {
                    answer(p, Ok(()));
                }
            }
            Err(e) if group.len() == 1 => {
                if let Some(p) = group.pop() {
                    answer(p, Err(e));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, items = group.len(), "a grouped commit failed; applying its items one by one");
                for p in group.drain(..) {
                    let result = apply(&db, &[&p.work]).await;
                    if result.is_ok() {
                        p.work.committed();
                    }
                    answer(p, result);
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

async fn apply(db: &DatabaseConnection, works: &[&Arc<dyn Work>]) -> Result<(), DbErr> {
    let txn = db.begin().await?;
    for work in works {
        if let Err(e) = work.apply(&txn).await {
            let _ = txn.rollback().await;
            return Err(e);
        }
    }
    txn.commit().await
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
        applied: AtomicUsize,
        announced: Arc<Mutex<Vec<i64>>>,
    }

    #[async_trait]
    impl Work for Insert {
        async fn apply(&self, txn: &DatabaseTransaction) -> Result<(), DbErr> {
            self.applied.fetch_add(1, Ordering::SeqCst);
            txn.execute_unprepared(&format!("INSERT INTO t (v) VALUES ({})", self.value))
                .await?;
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
        db
    }

    async fn stored(db: &DatabaseConnection) -> Vec<i64> {
        let rows = db
            .query_all(Statement::from_string(
                db.get_database_backend(),
                "SELECT v FROM t ORDER BY v",
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
                    value,
                    bad: value == 3,
                    applied: AtomicUsize::new(0),
                    announced: announced.clone(),
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
            .map(|value| {
                Arc::new(Insert {
                    value,
                    bad: false,
                    applied: AtomicUsize::new(0),
                    announced: announced.clone(),
                })
            })
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
}
