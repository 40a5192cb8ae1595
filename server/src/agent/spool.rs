//! The agent's spool: every batch of a job's log that the server has not
//! acknowledged, on disk before it is sent (so a killed agent, a cut
//! network or a restarted server loses nothing), and the job's end.
//!
//! One directory per job under `--spool`: `meta.json` (the job, its
//! dispatch, its process group, its end once known) and `log.jsonl` (one
//! `LogBatch` per line, appended). The newest batches are also kept in
//! memory (up to [`CACHE_BYTES`]) so a connected agent sends without
//! reading back; older ones are read from the file when they are sent
//! again. When the server acknowledges everything, the file is emptied;
//! when the end is acknowledged, the directory goes.
//!
//! N.B.: a spool that outgrows its bound is compacted: its unsent batches
//! become one, without the lines a later batch deletes (the same
//! head-and-tail rule the job's log follows on the server), so what the
//! server stores is the same as if every batch had reached it.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use app::model::agent::{Ended, LogBatch};
use serde::{Deserialize, Serialize};

/// Unacknowledged batches kept in memory per job, at most (bytes of JSON).
pub const CACHE_BYTES: usize = 8 << 20;

/// What the spool knows of its job besides the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub job_id: i64,
    pub dispatch: i64,
    pub template: String,
    /// The process group and its leader's start time, once it runs.
    pub process: Option<(i32, i64)>,
    /// The log's last seq when the job was dispatched.
    pub after_seq: i64,
    /// The end, once known, with the job's last seq.
    pub ended: Option<(Ended, i64)>,
}

/// The first line of a log file emptied because the server acknowledged
/// everything: where the log stands, so a restarted agent numbers the
/// job's next line after it (not after the dispatch's `after_seq`).
#[derive(Serialize, Deserialize)]
struct Position {
    acked: i64,
    stored_bytes: i64,
}

struct Entry {
    last_seq: i64,
    offset: u64,
    len: u64,
    /// The batch's JSON, while it is cached.
    json: Option<Arc<String>>,
}

/// One job's spool.
pub struct Spool {
    dir: PathBuf,
    pub meta: Meta,
    file: File,
    /// Unacknowledged batches, oldest first.
    entries: VecDeque<Entry>,
    cached: usize,
    /// Everything up to here is acknowledged.
    acked: i64,
    /// The last seq spooled.
    last_seq: i64,
    /// Bytes stored on the server once everything spooled is (the last
    /// batch's `stored_bytes`).
    stored_bytes: i64,
}

fn write_atomically(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

impl Spool {
    /// A new spool for a job just dispatched.
    pub fn create(root: &Path, meta: Meta) -> io::Result<Spool> {
        let dir = root.join(meta.job_id.to_string());
        fs::create_dir_all(&dir)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.join("log.jsonl"))?;
        let spool = Spool {
            acked: meta.after_seq,
            last_seq: meta.after_seq,
            stored_bytes: 0,
            dir,
            meta,
            file,
            entries: VecDeque::new(),
            cached: 0,
        };
        spool.save_meta()?;
        Ok(spool)
    }

    /// The spools an earlier run of the agent left in `root`. A torn last
    /// line (the agent was killed while writing it) is dropped: that batch
    /// never left the agent.
    pub fn load_all(root: &Path) -> io::Result<Vec<Spool>> {
        let mut out = Vec::new();
        let Ok(dirs) = fs::read_dir(root) else {
            return Ok(out);
        };
        for entry in dirs {
            let dir = entry?.path();
            let Ok(meta) = fs::read(dir.join("meta.json")) else {
                continue;
            };
            let Ok(meta) = serde_json::from_slice::<Meta>(&meta) else {
                tracing::warn!(dir = %dir.display(), "a spool with unreadable meta.json: left alone");
                continue;
            };
            out.push(Spool::open(dir, meta)?);
        }
        out.sort_by_key(|s| s.meta.job_id);
        Ok(out)
    }

    fn open(dir: PathBuf, meta: Meta) -> io::Result<Spool> {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(dir.join("log.jsonl"))?;
        let mut entries = VecDeque::new();
        let mut offset = 0u64;
        let (mut last_seq, mut stored_bytes) = (meta.after_seq, 0);
        let mut acked = meta.after_seq;
        {
            let mut reader = BufReader::new(&mut file);
            let mut line = String::new();
            loop {
                line.clear();
                let n = reader.read_line(&mut line)?;
                if n == 0 || !line.ends_with('\n') {
                    break;
                }
                let text = line.trim_end();
                if let Ok(p) = serde_json::from_str::<Position>(text) {
                    (last_seq, stored_bytes, acked) = (p.acked, p.stored_bytes, p.acked);
                    offset += n as u64;
                    continue;
                }
                match serde_json::from_str::<LogBatch>(text) {
                    Ok(b) => {
                        last_seq = b.last_seq;
                        stored_bytes = b.stored_bytes;
                        entries.push_back(Entry {
                            last_seq: b.last_seq,
                            offset,
                            len: n as u64,
                            json: None,
                        });
                    }
                    Err(_) => break,
                }
                offset += n as u64;
            }
        }
        // Drop whatever follows the last whole batch.
        file.set_len(offset)?;
        file.seek(SeekFrom::End(0))?;
        if let Some((_, seq)) = &meta.ended {
            last_seq = last_seq.max(*seq);
        }
        Ok(Spool {
            acked,
            dir,
            meta,
            file,
            entries,
            cached: 0,
            last_seq,
            stored_bytes,
        })
    }

    fn save_meta(&self) -> io::Result<()> {
        let json = serde_json::to_vec(&self.meta).map_err(io::Error::other)?;
        write_atomically(&self.dir.join("meta.json"), &json)
    }

    /// The last seq spooled.
    pub fn last_seq(&self) -> i64 {
        self.last_seq
    }

    /// Bytes the log holds once everything spooled is stored.
    pub fn stored_bytes(&self) -> i64 {
        self.stored_bytes
    }

    /// Bytes of unacknowledged batches on disk.
    pub fn unacked_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.len).sum()
    }

    /// Records the job's process group.
    pub fn set_process(&mut self, pgid: i32, start: i64) -> io::Result<()> {
        self.meta.process = Some((pgid, start));
        self.save_meta()
    }

    /// Records the job's end (its last batch is spooled already).
    pub fn finish(&mut self, ended: Ended) -> io::Result<()> {
        self.meta.ended = Some((ended, self.last_seq));
        self.save_meta()
    }

    /// Appends a batch (written before it is sent).
    pub fn append(&mut self, batch: &LogBatch) -> io::Result<()> {
        let mut json = serde_json::to_string(batch).map_err(io::Error::other)?;
        json.push('\n');
        let offset = self.file.seek(SeekFrom::End(0))?;
        self.file.write_all(json.as_bytes())?;
        self.last_seq = batch.last_seq;
        self.stored_bytes = batch.stored_bytes;
        let len = json.len() as u64;
        let json = (self.cached + json.len() <= CACHE_BYTES).then(|| Arc::new(json));
        self.cached += json.as_ref().map_or(0, |j| j.len());
        self.entries.push_back(Entry {
            last_seq: batch.last_seq,
            offset,
            len,
            json,
        });
        Ok(())
    }

    /// The server stored everything up to `seq`.
    pub fn ack(&mut self, seq: i64) -> io::Result<()> {
        self.acked = self.acked.max(seq);
        while self.entries.front().is_some_and(|e| e.last_seq <= seq) {
            if let Some(e) = self.entries.pop_front() {
                self.cached -= e.json.map_or(0, |j| j.len());
            }
        }
        if self.entries.is_empty() {
            let position = Position {
                acked: self.last_seq,
                stored_bytes: self.stored_bytes,
            };
            let mut line = serde_json::to_string(&position).map_err(io::Error::other)?;
            line.push('\n');
            self.file.set_len(0)?;
            self.file.seek(SeekFrom::Start(0))?;
            self.file.write_all(line.as_bytes())?;
        }
        Ok(())
    }

    /// The acknowledged seq.
    pub fn acked(&self) -> i64 {
        self.acked
    }

    /// The unacknowledged batches after `seq`, oldest first, read from
    /// memory or the file.
    pub fn batches_after(&mut self, seq: i64) -> io::Result<Vec<(i64, Arc<String>)>> {
        let mut out = Vec::new();
        for e in self.entries.iter().filter(|e| e.last_seq > seq) {
            let json = match &e.json {
                Some(j) => j.clone(),
                None => {
                    let mut buf = vec![0u8; e.len as usize];
                    self.file.seek(SeekFrom::Start(e.offset))?;
                    self.file.read_exact(&mut buf)?;
                    Arc::new(String::from_utf8(buf).map_err(io::Error::other)?)
                }
            };
            out.push((e.last_seq, json));
        }
        self.file.seek(SeekFrom::End(0))?;
        Ok(out)
    }

    /// Rewrites the unacknowledged batches as one, without the lines a
    /// later batch deletes: the server ends in the same state as with all
    /// of them. Returns the bytes saved.
    pub fn compact(&mut self) -> io::Result<u64> {
        if self.entries.len() < 2 {
            return Ok(0);
        }
        let before = self.unacked_bytes();
        let batches: Vec<LogBatch> = self
            .batches_after(i64::MIN)?
            .into_iter()
            .map(|(_, j)| serde_json::from_str(j.trim_end()).map_err(io::Error::other))
            .collect::<io::Result<_>>()?;
        let merged = merge(batches);
        self.entries.clear();
        self.cached = 0;
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        if let Some(m) = merged {
            self.append(&m)?;
        }
        Ok(before.saturating_sub(self.unacked_bytes()))
    }

    /// Deletes the spool (the server has the whole job).
    pub fn remove(self) -> io::Result<()> {
        let dir = self.dir.clone();
        drop(self);
        fs::remove_dir_all(dir)
    }
}

/// Batches in order as one: the union of their lines without those in
/// the (growing, contiguous) deleted range, the range itself, and the last
/// batch's marker, gap and position.
pub fn merge(batches: Vec<LogBatch>) -> Option<LogBatch> {
    let last = batches.last()?.clone();
    let delete = batches.iter().filter_map(|b| b.delete).fold(
        None::<(i64, i64)>,
        |acc, (from, to)| match acc {
            None => Some((from, to)),
            Some((f, t)) => Some((f.min(from), t.max(to))),
        },
    );
    let marker = batches.iter().rev().find_map(|b| b.marker.clone());
    let mut lines = Vec::new();
    for b in batches {
        lines.extend(b.lines);
    }
    if let Some((from, to)) = delete {
        lines.retain(|l| l.seq < from || l.seq >= to);
    }
    Some(LogBatch {
        lines,
        delete,
        marker,
        gap: last.gap,
        last_seq: last.last_seq,
        stored_bytes: last.stored_bytes,
    })
}

#[cfg(test)]
mod tests {
    use app::model::job::{JobState, LogLine, LogStream};
    use chrono::Utc;

    use super::*;

    fn batch(seqs: std::ops::RangeInclusive<i64>, delete: Option<(i64, i64)>) -> LogBatch {
        let last = *seqs.end();
        LogBatch {
            lines: seqs
                .map(|seq| LogLine {
                    seq,
                    stream: LogStream::Stdout,
                    ts: Utc::now(),
                    text: format!("line {seq}"),
                })
                .collect(),
            delete,
            marker: None,
            gap: None,
            last_seq: last,
            stored_bytes: last * 10,
        }
    }

    fn meta() -> Meta {
        Meta {
            job_id: 7,
            dispatch: 1,
            template: "t".into(),
            process: None,
            after_seq: 0,
            ended: None,
        }
    }

    fn seqs(spool: &mut Spool, after: i64) -> Vec<i64> {
        spool
            .batches_after(after)
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect()
    }

    #[test]
    fn batches_wait_until_acknowledged_and_survive_a_restart_without_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::create(dir.path(), meta()).unwrap();
        spool.append(&batch(1..=3, None)).unwrap();
        spool.append(&batch(4..=6, None)).unwrap();
        spool.append(&batch(7..=9, None)).unwrap();
        spool.set_process(4242, 99).unwrap();
        spool.ack(3).unwrap();
        assert_eq!(seqs(&mut spool, 3), [6, 9]);
        assert_eq!(
            seqs(&mut spool, 6),
            [9],
            "resent from the server's position"
        );
        drop(spool);

        // A half-written batch at the end, as a SIGKILL mid-write leaves it.
        let log = dir.path().join("7/log.jsonl");
        let mut f = OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(b"{\"lines\":[{\"seq\":10").unwrap();
        drop(f);

        let mut loaded = Spool::load_all(dir.path()).unwrap();
        assert_eq!(loaded.len(), 1);
        let mut spool = loaded.remove(0);
        assert_eq!(spool.meta.process, Some((4242, 99)));
        assert_eq!(spool.last_seq(), 9);
        // The acknowledgement is the server's to give again after a restart.
        assert_eq!(seqs(&mut spool, 0), [3, 6, 9]);
        spool
            .finish(Ended {
                state: JobState::Succeeded,
                exit_code: Some(0),
                error: None,
                warnings: false,
                failure: None,
            })
            .unwrap();
        spool.ack(9).unwrap();
        assert_eq!(spool.unacked_bytes(), 0);
        drop(spool);

        // Emptied by a full acknowledgement, the spool still knows where
        // the log stands: a restarted agent numbers its next line after it.
        let mut spool = Spool::load_all(dir.path()).unwrap().remove(0);
        assert_eq!((spool.last_seq(), spool.acked()), (9, 9));
        assert_eq!(spool.stored_bytes(), batch(7..=9, None).stored_bytes);
        assert_eq!(seqs(&mut spool, 9), Vec::<i64>::new());
        spool.append(&batch(10..=12, None)).unwrap();
        drop(spool);
        let mut spool = Spool::load_all(dir.path()).unwrap().remove(0);
        assert_eq!(spool.last_seq(), 12);
        assert_eq!(seqs(&mut spool, 9), [12]);
        spool.remove().unwrap();
        assert!(!dir.path().join("7").exists());
    }

    #[test]
    fn compaction_keeps_what_the_server_would_end_with() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::create(dir.path(), meta()).unwrap();
        spool.append(&batch(1..=10, None)).unwrap();
        spool.append(&batch(11..=20, Some((3, 12)))).unwrap();
        spool.append(&batch(21..=30, Some((12, 22)))).unwrap();
        let saved = spool.compact().unwrap();
        assert!(saved > 0);
        let all = spool.batches_after(0).unwrap();
        assert_eq!(all.len(), 1);
        let merged: LogBatch = serde_json::from_str(all[0].1.trim_end()).unwrap();
        let kept: Vec<i64> = merged.lines.iter().map(|l| l.seq).collect();
        let mut want: Vec<i64> = (1..=2).collect();
        want.extend(22..=30);
        assert_eq!(kept, want);
        assert_eq!(merged.delete, Some((3, 22)));
        assert_eq!((merged.last_seq, merged.stored_bytes), (30, 300));
    }
}
