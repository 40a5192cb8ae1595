//! `nodes`: the replicas sharing the database, each with its epoch and
//! heartbeat. The rules (docs/cluster.md):
//!
//! - a node takes a new epoch at every start ([`register`]) and claims
//!   jobs under it (the claim checks the node's row still holds it);
//! - it beats every `node_timeout / 5` ([`beat`]), which only succeeds
//!   while its row still holds its epoch;
//! - another node declares it lost when its heartbeat is older than
//!   `node_timeout` ([`declare_lost`]): one guarded statement that bumps
//!   the lost node's epoch, so from that commit on the lost node can
//!   neither beat nor claim under its old epoch, and the declaring node
//!   fails its jobs in the same transaction.
//!
//! Every time here is the database's clock on PostgreSQL ([`clock`]), so
//! replicas on hosts whose clocks disagree still agree on who is silent.

use chrono::{DateTime, Utc};
use sea_orm::entity::prelude::*;
use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult, QueryOrder, Statement};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "nodes")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub node: String,
    pub started_at: DateTimeUtc,
    pub heartbeat_at: DateTimeUtc,
    /// Bumped at each start of the node and when it is declared lost.
    pub epoch: i64,
    /// When another node declared it lost (cleared when it registers).
    pub lost_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// The time every node's heartbeat is written and judged by: the
/// database's clock on PostgreSQL (one clock for replicas on several
/// hosts); this host's on SQLite (every process on one file is on one host).
pub async fn clock(db: &impl ConnectionTrait) -> Result<DateTime<Utc>, DbErr> {
    if db.get_database_backend() != DbBackend::Postgres {
        return Ok(Utc::now());
    }
    #[derive(FromQueryResult)]
    struct Now {
        now: DateTime<Utc>,
    }
    Now::find_by_statement(Statement::from_string(
        DbBackend::Postgres,
        "SELECT now() AS now",
    ))
    .one(db)
    .await?
    .map(|n| n.now)
    .ok_or_else(|| DbErr::Custom("SELECT now() returned no row".into()))
}

/// Registers `node` as started at `now` under a new epoch (the previous
/// one plus one, or 1), clearing a "lost" mark; returns the new epoch.
/// N.B.: the jobs claimed under any earlier epoch of this node are no
/// longer its runners' to write (fencing): start-up recovery fails them.
pub async fn register(
    db: &impl ConnectionTrait,
    node: &str,
    now: DateTime<Utc>,
) -> Result<i64, DbErr> {
    #[derive(FromQueryResult)]
    struct Epoch {
        epoch: i64,
    }
    let backend = db.get_database_backend();
    Epoch::find_by_statement(Statement::from_sql_and_values(
        backend,
        "INSERT INTO nodes (node, started_at, heartbeat_at, epoch, lost_at) \
         VALUES ($1, $2, $2, 1, NULL) \
         ON CONFLICT (node) DO UPDATE SET epoch = nodes.epoch + 1, \
           started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, lost_at = NULL \
         RETURNING epoch",
        [node.into(), now.into()],
    ))
    .one(db)
    .await?
    .map(|e| e.epoch)
    .ok_or_else(|| DbErr::Custom(format!("registering node `{node}` returned no row")))
}

/// Records that `node` is alive at `now`, if its row still holds `epoch`;
/// false if it does not (the node was declared lost, or another process
/// registered the same node id since).
pub async fn beat(
    db: &impl ConnectionTrait,
    node: &str,
    epoch: i64,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let res = Entity::update_many()
        .col_expr(Column::HeartbeatAt, Expr::value(now))
        .filter(Column::Node.eq(node))
        .filter(Column::Epoch.eq(epoch))
        .exec(db)
        .await?;
    Ok(res.rows_affected == 1)
}

/// The oldest heartbeat among the nodes other than `me` not declared
/// lost: the first of them to become lost if it stays silent (`None` if
/// there is no other).
pub async fn oldest_heartbeat(
    db: &impl ConnectionTrait,
    me: &str,
) -> Result<Option<DateTime<Utc>>, DbErr> {
    #[derive(FromQueryResult)]
    struct Beat {
        heartbeat_at: DateTime<Utc>,
    }
    Ok(Beat::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        "SELECT n.heartbeat_at FROM nodes n WHERE n.node <> $1 AND n.lost_at IS NULL \
         ORDER BY n.heartbeat_at LIMIT 1",
        [me.into()],
    ))
    .one(db)
    .await?
    .map(|b| b.heartbeat_at))
}

/// The nodes other than `me` that need a look: silent since before
/// `cutoff` and not yet declared lost, or declared lost and still holding
/// running jobs of an earlier epoch (one that claimed in the instant
/// before it was declared lost, in a transaction the declaring one could
/// not see yet).
pub async fn to_sweep(
    db: &impl ConnectionTrait,
    me: &str,
    cutoff: DateTime<Utc>,
) -> Result<Vec<String>, DbErr> {
    #[derive(FromQueryResult)]
    struct Name {
        node: String,
    }
    Ok(Name::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        "SELECT n.node FROM nodes n WHERE n.node <> $1 AND ( \
           (n.lost_at IS NULL AND n.heartbeat_at < $2) \
           OR (n.lost_at IS NOT NULL AND EXISTS ( \
             SELECT 1 FROM jobs j WHERE j.node = n.node AND j.agent IS NULL \
               AND j.state IN ('running', 'cancelling') \
               AND (j.epoch IS NULL OR j.epoch < n.epoch)))) \
         ORDER BY n.node",
        [me.into(), cutoff.into()],
    ))
    .all(db)
    .await?
    .into_iter()
    .map(|n| n.node)
    .collect())
}

/// Declares `node` lost if its heartbeat is still older than `cutoff`
/// (N.B.: checked in the same statement that bumps its epoch, so a beat
/// that lands first wins and nothing is declared). Returns the epoch it
/// had: its jobs claimed under that epoch or before are the declarer's to
/// fail, in the same transaction.
pub async fn declare_lost(
    db: &impl ConnectionTrait,
    node: &str,
    cutoff: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Option<i64>, DbErr> {
    #[derive(FromQueryResult)]
    struct Epoch {
        epoch: i64,
    }
    Ok(Epoch::find_by_statement(Statement::from_sql_and_values(
        db.get_database_backend(),
        "UPDATE nodes SET epoch = epoch + 1, lost_at = $1 \
         WHERE node = $2 AND heartbeat_at < $3 AND lost_at IS NULL \
         RETURNING epoch",
        [now.into(), node.into(), cutoff.into()],
    ))
    .one(db)
    .await?
    .map(|e| e.epoch - 1))
}

/// One node's row.
pub async fn get(db: &impl ConnectionTrait, node: &str) -> Result<Option<Model>, DbErr> {
    Entity::find_by_id(node.to_string()).one(db).await
}

/// Every node's row, by name.
pub async fn all(db: &impl ConnectionTrait) -> Result<Vec<Model>, DbErr> {
    Entity::find().order_by_asc(Column::Node).all(db).await
}

#[cfg(test)]
mod tests {
    use app::model::template::Exclusive;

    use super::*;
    use crate::db::jobs::{self, ClaimScope, Enqueue, Owner};

    async fn db() -> sea_orm::DatabaseConnection {
        crate::db::connect("sqlite::memory:").await.unwrap()
    }

    fn enqueue<'a>(
        target: &'a str,
        exclusive: Exclusive,
        params: &'a serde_json::Map<String, serde_json::Value>,
    ) -> Enqueue<'a> {
        Enqueue {
            template: "t",
            target,
            params,
            exclusive,
            owner_id: 1,
            owner: "admin",
            rerun_of: None,
            retry: jobs::Retry::first(None),
        }
    }

    async fn claim(db: &sea_orm::DatabaseConnection, owner: &Owner) -> Option<jobs::JobRow> {
        let txn = crate::db::txn::Txn::begin(db).await.unwrap();
        let row = jobs::claim_in(&txn, owner, ClaimScope::Local { agent_targets: &[] })
            .await
            .unwrap();
        txn.commit().await.unwrap();
        row
    }

    #[tokio::test]
    async fn a_node_declared_lost_can_neither_beat_nor_claim_under_its_old_epoch() {
        let db = db().await;
        let t0 = Utc::now();
        assert_eq!(register(&db, "a", t0).await.unwrap(), 1);
        assert_eq!(
            register(&db, "a", t0).await.unwrap(),
            2,
            "each start bumps it"
        );
        assert!(beat(&db, "a", 2, t0).await.unwrap());
        assert!(
            !beat(&db, "a", 1, t0).await.unwrap(),
            "an old epoch cannot beat"
        );

        // Not silent long enough: nothing is declared.
        let later = t0 + chrono::Duration::seconds(20);
        assert_eq!(
            declare_lost(&db, "a", t0 - chrono::Duration::seconds(1), later)
                .await
                .unwrap(),
            None
        );
        assert_eq!(to_sweep(&db, "b", t0).await.unwrap(), Vec::<String>::new());
        // Silent past the cutoff: declared once, with the epoch it had.
        let cutoff = t0 + chrono::Duration::seconds(5);
        assert_eq!(to_sweep(&db, "b", cutoff).await.unwrap(), ["a"]);
        assert_eq!(
            to_sweep(&db, "a", cutoff).await.unwrap(),
            Vec::<String>::new(),
            "never itself"
        );
        assert_eq!(
            declare_lost(&db, "a", cutoff, later).await.unwrap(),
            Some(2)
        );
        assert_eq!(declare_lost(&db, "a", cutoff, later).await.unwrap(), None);
        let row = get(&db, "a").await.unwrap().unwrap();
        assert_eq!(row.epoch, 3);
        assert!(row.lost_at.is_some());

        let params = serde_json::Map::new();
        jobs::insert(&db, enqueue("web-1", Exclusive::Target, &params))
            .await
            .unwrap();
        let old = Owner {
            node: "a".into(),
            epoch: 2,
        };
        assert!(
            !beat(&db, "a", 2, later).await.unwrap(),
            "the lost node's beat fails"
        );
        assert_eq!(claim(&db, &old).await, None, "and so does its claim");
        // It registers again and claims under the new epoch.
        let epoch = register(&db, "a", later).await.unwrap();
        assert_eq!(epoch, 4);
        assert_eq!(get(&db, "a").await.unwrap().unwrap().lost_at, None);
        let new = Owner {
            node: "a".into(),
            epoch,
        };
        let job = claim(&db, &new).await.expect("claimed");
        assert_eq!(job.owner(), Some(new.clone()));
        // Only the owner's writes land.
        let p = jobs::LogPosition {
            last_seq: 1,
            log_bytes: 3,
            omitted: None,
            process: None,
        };
        assert!(!jobs::store_position(&db, job.id, &old, &p, None)
            .await
            .unwrap());
        assert!(!jobs::hold_if_owned(&db, job.id, &old).await.unwrap());
        assert!(jobs::store_position(&db, job.id, &new, &p, None)
            .await
            .unwrap());
        assert!(jobs::hold_if_owned(&db, job.id, &new).await.unwrap());
    }

    #[tokio::test]
    async fn the_database_refuses_two_running_jobs_where_exclusivity_forbids_them() {
        let db = db().await;
        let params = serde_json::Map::new();
        let mut ids = Vec::new();
        for (target, exclusive) in [
            ("web-1", Exclusive::Target),
            ("web-1", Exclusive::Target),
            ("web-2", Exclusive::Global),
            ("web-3", Exclusive::Global),
            ("web-1", Exclusive::None),
            ("web-1", Exclusive::None),
        ] {
            ids.push(
                jobs::insert(&db, enqueue(target, exclusive, &params))
                    .await
                    .unwrap()
                    .id,
            );
        }
        let run = |id: i64| {
            let db = db.clone();
            async move {
                db.execute(Statement::from_string(
                    DbBackend::Sqlite,
                    format!("UPDATE jobs SET state = 'running' WHERE id = {id}"),
                ))
                .await
            }
        };
        run(ids[0]).await.unwrap();
        assert!(run(ids[1]).await.is_err(), "two target jobs on web-1");
        run(ids[2]).await.unwrap();
        assert!(run(ids[3]).await.is_err(), "two global jobs");
        // `none` jobs are the claim's to keep apart from `target` ones.
        run(ids[4]).await.unwrap();
        run(ids[5]).await.unwrap();
    }
}
