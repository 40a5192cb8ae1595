//! A running job's log before it is committed: every line numbered
//! (`db::logs::Seqs`), and the byte cap kept. No I/O: the log writer
//! commits what [`CappedLog::flush`] hands it.
//!
//! Past `max_log_bytes` the head stays; one `system` marker line follows
//! it, then only the last `tail_lines` lines (and never more than the cap
//! again) are kept: older tail lines are deleted from the database as new
//! ones arrive, or never written if they are pushed out before their
//! commit. The omitted range (between the marker and the tail) is the
//! job's gap; at the last commit the marker gets its final text with the
//! count and size of what was omitted.

use std::collections::VecDeque;

use app::model::job::{human_bytes, Gap, LogLine, LogStream};
use chrono::{DateTime, Utc};

use crate::db::logs::Seqs;

/// The cut made when the log outgrew its cap.
#[derive(Debug)]
struct Cut {
    /// The marker line's seq.
    marker: i64,
    /// Seqs below this (and above the marker) are omitted.
    tail_start: i64,
    /// Deleted from the database up to here (exclusive).
    deleted_to: i64,
    /// (seq, bytes) of the lines kept after the marker, oldest first.
    tail: VecDeque<(i64, u64)>,
    tail_bytes: u64,
    omitted_bytes: u64,
    omitted_lines: u64,
}

/// What one commit writes.
#[derive(Debug, Default, PartialEq)]
pub struct Flush {
    /// New lines to insert (those already pushed out of the tail left out).
    pub lines: Vec<LogLine>,
    /// Seqs `[from, to)` to delete: stored tail lines pushed out since.
    pub delete: Option<(i64, i64)>,
    /// The marker's final text (the last flush of a cut log).
    pub marker: Option<(i64, String)>,
    /// The omitted range so far, once anything was omitted.
    pub gap: Option<Gap>,
    /// The last seq handed out.
    pub last_seq: i64,
    /// Bytes stored once this is committed (head, marker and tail).
    pub stored_bytes: i64,
}

/// One job's log as its writer holds it.
#[derive(Debug)]
pub struct CappedLog {
    seqs: Seqs,
    max_bytes: u64,
    tail_lines: usize,
    /// Bytes of the head and marker.
    bytes: u64,
    pending: Vec<LogLine>,
    cut: Option<Cut>,
}

impl CappedLog {
    /// The log of a job whose last stored seq is `last_seq`.
    pub fn new(last_seq: i64, max_bytes: u64, tail_lines: usize) -> CappedLog {
        CappedLog {
            seqs: Seqs::after(last_seq),
            max_bytes,
            tail_lines: tail_lines.max(1),
            bytes: 0,
            pending: Vec::new(),
            cut: None,
        }
    }

    /// Lines waiting for the next flush.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Whether the cap was reached (the last flush then rewrites the marker).
    pub fn is_cut(&self) -> bool {
        self.cut.is_some()
    }

    /// Numbers a line and keeps it within the cap.
    pub fn push(&mut self, stream: LogStream, text: String, ts: DateTime<Utc>) {
        let len = text.len() as u64;
        if self.cut.is_none() && self.bytes + len > self.max_bytes {
            let note = self.marker_text(0, 0);
            self.bytes += note.len() as u64;
            let marker = self.seqs.line(LogStream::System, note, ts);
            let seq = marker.seq;
            self.pending.push(marker);
            self.cut = Some(Cut {
                marker: seq,
                tail_start: seq + 1,
                deleted_to: seq + 1,
                tail: VecDeque::new(),
                tail_bytes: 0,
                omitted_bytes: 0,
                omitted_lines: 0,
            });
        }
        let line = self.seqs.line(stream, text, ts);
        if let Some(cut) = &mut self.cut {
            cut.tail.push_back((line.seq, len));
            cut.tail_bytes += len;
            // Keep the last `tail_lines`, and never more than the cap again.
            while cut.tail.len() > self.tail_lines || cut.tail_bytes > self.max_bytes {
                let Some((old_seq, old_len)) = cut.tail.pop_front() else {
                    break;
                };
                cut.tail_bytes -= old_len;
                cut.omitted_bytes += old_len;
                cut.omitted_lines += 1;
                cut.tail_start = old_seq + 1;
            }
        } else {
            self.bytes += len;
        }
        self.pending.push(line);
    }

    fn marker_text(&self, lines: u64, bytes: u64) -> String {
        let cap = human_bytes(self.max_bytes);
        if lines == 0 {
            format!(
                "output reached the log limit of {cap} (max_log_bytes): from here only the last {} lines are kept",
                self.tail_lines
            )
        } else {
            format!(
                "output reached the log limit of {cap} (max_log_bytes): {lines} lines ({}) omitted here; the last {} lines follow",
                human_bytes(bytes),
                self.tail_lines
            )
        }
    }

    /// Takes what the next commit writes; `last`: the job has ended. Call
    /// [`CappedLog::flushed`] once it is committed.
    pub fn flush(&mut self, last: bool) -> Flush {
        let mut lines = std::mem::take(&mut self.pending);
        // Lines already pushed out of the tail need not be written at all.
        if let Some(cut) = &self.cut {
            let (marker, tail_start) = (cut.marker, cut.tail_start);
            lines.retain(|l| l.seq <= marker || l.seq >= tail_start);
        }
        let cut = self.cut.as_ref();
        Flush {
            lines,
            delete: cut
                .filter(|c| c.tail_start > c.deleted_to)
                .map(|c| (c.deleted_to, c.tail_start)),
            marker: cut
                .filter(|c| last && c.omitted_lines > 0)
                .map(|c| (c.marker, self.marker_text(c.omitted_lines, c.omitted_bytes))),
            gap: cut.filter(|c| c.omitted_lines > 0).map(|c| Gap {
                from: c.marker + 1,
                to: c.tail_start - 1,
                bytes: c.omitted_bytes as i64,
            }),
            last_seq: self.seqs.last(),
            stored_bytes: (self.bytes + cut.map_or(0, |c| c.tail_bytes)) as i64,
        }
    }

    /// The last flush was committed: its deletions are done.
    pub fn flushed(&mut self) {
        if let Some(cut) = &mut self.cut {
            cut.deleted_to = cut.tail_start;
        }
    }

    /// The last seq handed out.
    pub fn last_seq(&self) -> i64 {
        self.seqs.last()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(log: &mut CappedLog, text: &str) {
        log.push(LogStream::Stdout, text.to_string(), Utc::now());
    }

    fn seqs(f: &Flush) -> Vec<i64> {
        f.lines.iter().map(|l| l.seq).collect()
    }

    #[test]
    fn under_the_cap_every_line_is_numbered_after_the_stored_ones_and_kept() {
        let mut log = CappedLog::new(7, 1000, 10);
        for t in ["a", "bb", "ccc"] {
            push(&mut log, t);
        }
        let f = log.flush(false);
        assert_eq!(seqs(&f), [8, 9, 10]);
        assert_eq!((f.last_seq, f.stored_bytes), (10, 6));
        assert_eq!((f.delete, f.gap, f.marker), (None, None, None));
        assert!(!log.is_cut());
    }

    #[test]
    fn past_the_cap_the_head_stays_a_marker_follows_and_only_the_tail_is_kept() {
        // Cap 10 bytes, tail of 2 lines; each line 4 bytes.
        let mut log = CappedLog::new(0, 10, 2);
        for i in 0..6 {
            push(&mut log, &format!("l{i}xx"));
        }
        // 1, 2: head (8 bytes); 3: marker; 4..=8: the six pushed after;
        // seqs: l0=1 l1=2 marker=3 l2=4 l3=5 l4=6 l5=7.
        let f = log.flush(false);
        assert_eq!(
            seqs(&f),
            [1, 2, 3, 6, 7],
            "4 and 5 were pushed out before their commit"
        );
        assert_eq!(f.lines[2].stream, LogStream::System);
        assert!(f.lines[2].text.contains("only the last 2 lines are kept"));
        assert_eq!(
            f.gap,
            Some(Gap {
                from: 4,
                to: 5,
                bytes: 8
            })
        );
        assert_eq!(
            f.delete,
            Some((4, 6)),
            "never written, so deleting them is harmless"
        );
        assert_eq!(f.last_seq, 7);
        assert_eq!(f.marker, None, "the final text comes with the last flush");
        let marker_len = f.lines[2].text.len() as i64;
        assert_eq!(f.stored_bytes, 8 + marker_len + 8);
        log.flushed();

        // Two more: 6 and 7, committed, are pushed out and deleted.
        push(&mut log, "l6xx");
        push(&mut log, "l7xx");
        let f = log.flush(true);
        assert_eq!(seqs(&f), [8, 9]);
        assert_eq!(f.delete, Some((6, 8)));
        assert_eq!(
            f.gap,
            Some(Gap {
                from: 4,
                to: 7,
                bytes: 16
            })
        );
        let (seq, text) = f.marker.clone().unwrap();
        assert_eq!(seq, 3);
        assert!(
            text.contains("4 lines (16 B) omitted here; the last 2 lines follow"),
            "{text}"
        );
    }

    #[test]
    fn a_single_line_over_the_cap_never_stays_in_the_tail() {
        let mut log = CappedLog::new(0, 10, 100);
        push(&mut log, "short");
        push(&mut log, &"x".repeat(50));
        push(&mut log, "end");
        let f = log.flush(true);
        // 1 head, 2 marker, 3 (50 bytes, over the cap alone) omitted, 4 kept.
        assert_eq!(seqs(&f), [1, 2, 4]);
        assert_eq!(
            f.gap,
            Some(Gap {
                from: 3,
                to: 3,
                bytes: 50
            })
        );
        assert_eq!(f.last_seq, 4);
    }

    #[test]
    fn nothing_pending_flushes_nothing_but_the_position() {
        let mut log = CappedLog::new(41, 100, 10);
        let f = log.flush(true);
        assert_eq!(
            f,
            Flush {
                last_seq: 41,
                ..Flush::default()
            }
        );
    }
}
