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
}

struct Pending {
    work: Arc<dyn Work>,
    done: oneshot::Sender<Result<(), DbErr>>,
}

/// The handle callers use; the task ends when the last handle is dropped.
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
        let (done, answer) = oneshot::channel();
        let gone = || DbErr::Custom("the database writer has stopped".into());
        self.queue
            .send(Pending { work, done })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
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
