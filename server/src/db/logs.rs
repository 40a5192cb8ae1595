//! `job_logs`: one row per output line, keyed `(job_id, seq)`. Written in
//! batches by the engine's log writer and by `engine::transition` (system
//! lines that come with a state change), and read in pages by the API and
//! the streams.
//!
//! N.B.: one rule numbers every line, [`Seqs`]: the next seq after the
//! job's `last_seq`, stored in the same transaction as the line. The log
//! writer keeps its `Seqs` in memory while it owns a running job; a
//! transition takes its own from the row it just changed.

use app::model::job::{LogLine, LogStream};
use chrono::{DateTime, TimeZone, Utc};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, FromQueryResult, Statement, Value,
};

use super::txn::Txn;

#[derive(FromQueryResult)]
struct Row {
    seq: i64,
    stream: i16,
    ts: i64,
    text: String,
}

/// Types the rows read for `job_id`; a stream code no version writes is an
/// error naming the line.
fn typed(job_id: i64, rows: Vec<Row>) -> Result<Vec<LogLine>, DbErr> {
    rows.into_iter()
        .map(|r| {
            let stream = LogStream::from_code(r.stream).ok_or_else(|| {
                DbErr::Type(format!(
                    "job {job_id}, line {}: {} in job_logs.stream is not a stream (0 stdout, 1 stderr, 2 system)",
                    r.seq, r.stream
                ))
            })?;
            Ok(LogLine {
                seq: r.seq,
                stream,
                ts: Utc.timestamp_millis_opt(r.ts).single().unwrap_or_default(),
                text: r.text,
            })
        })
        .collect()
}

/// Numbers a job's lines: each gets the seq after the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seqs {
    last: i64,
}

impl Seqs {
    /// Numbering after a log whose last stored seq is `last`.
    pub fn after(last: i64) -> Seqs {
        Seqs { last }
    }

    /// Hands out the next seq.
    pub fn take(&mut self) -> i64 {
        self.last += 1;
        self.last
    }

    /// The last seq handed out.
    pub fn last(&self) -> i64 {
        self.last
    }

    /// A line with the next seq.
    pub fn line(&mut self, stream: LogStream, text: String, ts: DateTime<Utc>) -> LogLine {
        LogLine {
            seq: self.take(),
            stream,
            ts,
            text,
        }
    }
}

/// Rows per insert statement, at most.
const ROWS_PER_INSERT: usize = 1000;

/// Inserts lines. N.B.: only a few statement shapes are ever used, so the
/// prepared-statement cache reuses them: a statement per distinct row count
/// (or with values written inline) would be parsed anew every batch and fill
/// the cache with large compiled statements. On SQLite: 1,000 rows of bound
/// values, then powers of two for the rest. On PostgreSQL: one statement for
/// any count, the rows passed as one JSON array and unpacked by
/// `json_to_recordset` — PostgreSQL parses and binds a 5,000-parameter
/// `VALUES` list slowly, and one text parameter is cheap to send.
pub async fn insert_batch(
    db: &impl ConnectionTrait,
    job_id: i64,
    lines: &[LogLine],
) -> Result<(), DbErr> {
    insert_chunked(db, job_id, lines, false).await
}

/// Stores a batch of `job_id`'s lines in `txn`: with `COPY` on
/// PostgreSQL, else as [`insert_batch`].
///
/// N.B.: `COPY` parses and stores a line in about half the time of
/// [`insert_json`]'s `INSERT … SELECT` (measured in psql on 1,000,000
/// lines: 2.2 against 4.5–5.0 ms per 1,000). It cannot skip lines already
/// stored, so [`insert_batch_once`] keeps the insert. A `COPY` costs two
/// round trips to an insert's one, so a small batch is inserted.
pub async fn store_batch(txn: &Txn, job_id: i64, lines: &[LogLine]) -> Result<(), DbErr> {
    if lines.len() < COPY_FROM_LINES || txn.get_database_backend() != DbBackend::Postgres {
        return insert_batch(txn, job_id, lines).await;
    }
    txn.copy_in(COPY_LINES, &copy_text(job_id, lines))
        .await
        .map(|_| ())
}

/// Lines from which [`store_batch`] copies.
const COPY_FROM_LINES: usize = 64;

const COPY_LINES: &str = "COPY job_logs (job_id, seq, stream, ts, text) FROM STDIN";

/// Lines in `COPY`'s text format: one row per line, tab between columns,
/// and in the text the four characters that format gives a meaning
/// escaped (`\\`, tab, newline, carriage return). A NUL never gets here
/// (`engine::output` replaced it).
fn copy_text(job_id: i64, lines: &[LogLine]) -> Vec<u8> {
    use std::io::Write;
    let size: usize = lines.iter().map(|l| l.text.len() + 40).sum();
    let mut out = Vec::with_capacity(size);
    for l in lines {
        // N.B.: writes to a Vec cannot fail.
        let _ = write!(
            out,
            "{job_id}\t{}\t{}\t{}\t",
            l.seq,
            l.stream.code(),
            l.ts.timestamp_millis()
        );
        let text = l.text.as_bytes();
        let mut from = 0;
        for (i, b) in text.iter().enumerate() {
            let escaped: &[u8] = match b {
                b'\\' => b"\\\\",
                b'\t' => b"\\t",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                _ => continue,
            };
            out.extend_from_slice(&text[from..i]);
            out.extend_from_slice(escaped);
            from = i + 1;
        }
        out.extend_from_slice(&text[from..]);
        out.push(b'\n');
    }
    out
}

/// [`insert_batch`], skipping lines already stored (an agent resending a
/// batch whose acknowledgement it never got).
pub async fn insert_batch_once(
    db: &impl ConnectionTrait,
    job_id: i64,
    lines: &[LogLine],
) -> Result<(), DbErr> {
    insert_chunked(db, job_id, lines, true).await
}

async fn insert_chunked(
    db: &impl ConnectionTrait,
    job_id: i64,
    lines: &[LogLine],
    once: bool,
) -> Result<(), DbErr> {
    if db.get_database_backend() == DbBackend::Postgres {
        for chunk in lines.chunks(PG_ROWS_PER_INSERT) {
            insert_json(db, job_id, chunk, once).await?;
        }
        return Ok(());
    }
    let mut rest = lines;
    while !rest.is_empty() {
        let n = if rest.len() >= ROWS_PER_INSERT {
            ROWS_PER_INSERT
        } else {
            1 << (usize::BITS - 1 - rest.len().leading_zeros())
        };
        let (now, later) = rest.split_at(n);
        insert_rows(db, job_id, now, once).await?;
        rest = later;
    }
    Ok(())
}

/// Rows per PostgreSQL insert, at most (a bound on one statement's text).
const PG_ROWS_PER_INSERT: usize = 10_000;

/// One line as [`insert_json`] sends it: short keys, as the JSON is parsed
/// once per row.
#[derive(serde::Serialize)]
struct JsonRow<'a> {
    s: i64,
    k: i16,
    t: i64,
    x: &'a str,
}

async fn insert_json(
    db: &impl ConnectionTrait,
    job_id: i64,
    lines: &[LogLine],
    once: bool,
) -> Result<(), DbErr> {
    let rows: Vec<JsonRow> = lines
        .iter()
        .map(|l| JsonRow {
            s: l.seq,
            k: l.stream.code(),
            t: l.ts.timestamp_millis(),
            x: &l.text,
        })
        .collect();
    let json = serde_json::to_string(&rows).map_err(|e| DbErr::Custom(e.to_string()))?;
    let sql = if once {
        "INSERT INTO job_logs (job_id, seq, stream, ts, text) \
         SELECT $1, r.s, r.k, r.t, r.x FROM json_to_recordset($2::json) \
           AS r(s bigint, k smallint, t bigint, x text) \
         ON CONFLICT (job_id, seq) DO NOTHING"
    } else {
        "INSERT INTO job_logs (job_id, seq, stream, ts, text) \
         SELECT $1, r.s, r.k, r.t, r.x FROM json_to_recordset($2::json) \
           AS r(s bigint, k smallint, t bigint, x text)"
    };
    db.execute(Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        [job_id.into(), json.into()],
    ))
    .await
    .map(|_| ())
}

/// Inserts on SQLite.
async fn insert_rows(
    db: &impl ConnectionTrait,
    job_id: i64,
    lines: &[LogLine],
    once: bool,
) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    let mut sql = String::with_capacity(64 + lines.len() * 24);
    sql.push_str("INSERT INTO job_logs (job_id, seq, stream, ts, text) VALUES ");
    let mut values: Vec<Value> = Vec::with_capacity(lines.len() * 5);
    for (i, l) in lines.iter().enumerate() {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?)");
        values.push(job_id.into());
        values.push(l.seq.into());
        values.push(l.stream.code().into());
        values.push(l.ts.timestamp_millis().into());
        values.push(l.text.as_str().into());
    }
    if once {
        sql.push_str(" ON CONFLICT (job_id, seq) DO NOTHING");
    }
    db.execute(Statement::from_sql_and_values(backend, sql, values))
        .await
        .map(|_| ())
}

/// Lines with `seq > after`, in order, at most `limit`.
pub async fn page(
    db: &impl ConnectionTrait,
    job_id: i64,
    after: i64,
    limit: u64,
) -> Result<Vec<LogLine>, DbErr> {
    let backend = db.get_database_backend();
    let sql = "SELECT seq, stream, ts, text FROM job_logs WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";
    let rows = Row::find_by_statement(Statement::from_sql_and_values(
        backend,
        sql,
        [job_id.into(), after.into(), (limit as i64).into()],
    ))
    .all(db)
    .await?;
    typed(job_id, rows)
}

/// Lines with `seq < before`, in order, the last `limit` of them.
pub async fn page_before(
    db: &impl ConnectionTrait,
    job_id: i64,
    before: i64,
    limit: u64,
) -> Result<Vec<LogLine>, DbErr> {
    let backend = db.get_database_backend();
    let sql = "SELECT seq, stream, ts, text FROM job_logs WHERE job_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3";
    let rows = Row::find_by_statement(Statement::from_sql_and_values(
        backend,
        sql,
        [job_id.into(), before.into(), (limit as i64).into()],
    ))
    .all(db)
    .await?;
    let mut lines = typed(job_id, rows)?;
    lines.reverse();
    Ok(lines)
}

/// The last `n` lines of one stream (the failure panel's stderr).
pub async fn tail_of_stream(
    db: &DatabaseConnection,
    job_id: i64,
    stream: LogStream,
    n: u64,
) -> Result<Vec<LogLine>, DbErr> {
    let backend = db.get_database_backend();
    let sql = "SELECT seq, stream, ts, text FROM job_logs WHERE job_id = $1 AND stream = $2 ORDER BY seq DESC LIMIT $3";
    let rows = Row::find_by_statement(Statement::from_sql_and_values(
        backend,
        sql,
        [job_id.into(), stream.code().into(), (n as i64).into()],
    ))
    .all(db)
    .await?;
    let mut lines = typed(job_id, rows)?;
    lines.reverse();
    Ok(lines)
}

/// Deletes lines with `from <= seq < to`.
pub async fn delete_range(
    db: &impl ConnectionTrait,
    job_id: i64,
    from: i64,
    to: i64,
) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    db.execute(Statement::from_sql_and_values(
        backend,
        "DELETE FROM job_logs WHERE job_id = $1 AND seq >= $2 AND seq < $3",
        [job_id.into(), from.into(), to.into()],
    ))
    .await
    .map(|_| ())
}

/// Rewrites one line's text (the omitted-middle marker gets its final size).
pub async fn set_text(
    db: &impl ConnectionTrait,
    job_id: i64,
    seq: i64,
    text: &str,
) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    db.execute(Statement::from_sql_and_values(
        backend,
        "UPDATE job_logs SET text = $1 WHERE job_id = $2 AND seq = $3",
        [text.into(), job_id.into(), seq.into()],
    ))
    .await
    .map(|_| ())
}

/// Now, at the precision lines are stored with (milliseconds), so a line
/// read back equals the line published.
pub fn now_millis() -> DateTime<Utc> {
    Utc.timestamp_millis_opt(Utc::now().timestamp_millis())
        .single()
        .unwrap_or_default()
}

/// The seqs of lines containing `needle` (case-insensitive for ASCII), in
/// order, at most `limit`. `%` and `_` in the needle match themselves.
pub async fn search(
    db: &impl ConnectionTrait,
    job_id: i64,
    needle: &str,
    limit: u64,
) -> Result<Vec<i64>, DbErr> {
    #[derive(FromQueryResult)]
    struct Seq {
        seq: i64,
    }
    let backend = db.get_database_backend();
    let escaped = needle
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    let pattern = format!("%{escaped}%");
    let like = match backend {
        DbBackend::Postgres => "ILIKE",
        _ => "LIKE",
    };
    let sql = format!(
        "SELECT seq FROM job_logs WHERE job_id = $1 AND text {like} $2 ESCAPE '\\' ORDER BY seq LIMIT $3"
    );
    Ok(Seq::find_by_statement(Statement::from_sql_and_values(
        backend,
        sql,
        [job_id.into(), pattern.into(), (limit as i64).into()],
    ))
    .all(db)
    .await?
    .into_iter()
    .map(|r| r.seq)
    .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: i64, stream: LogStream, text: &str) -> LogLine {
        LogLine {
            seq,
            stream,
            ts: Utc.timestamp_millis_opt(1_700_000_000_123).unwrap(),
            text: text.into(),
        }
    }

    #[test]
    fn copy_rows_escape_what_the_text_format_gives_a_meaning() {
        let lines = [
            line(1, LogStream::Stdout, "plain ünïcode"),
            line(2, LogStream::Stderr, "a\tb\\c\rd\ne"),
            line(3, LogStream::System, ""),
            line(4, LogStream::Stdout, "\\."),
        ];
        let text = String::from_utf8(copy_text(7, &lines)).unwrap();
        assert_eq!(
            text,
            "7\t1\t0\t1700000000123\tplain ünïcode\n\
             7\t2\t1\t1700000000123\ta\\tb\\\\c\\rd\\ne\n\
             7\t3\t2\t1700000000123\t\n\
             7\t4\t0\t1700000000123\t\\\\.\n"
        );
    }
}
