//! Output hygiene: turning a subprocess's bytes into stored lines.
//!
//! - lines end at `\n` (a `\r\n` ending counts as one);
//! - text before a lone `\r` is dropped, as a terminal would overwrite it
//!   (`10%\r20%\rdone` is stored as `done`), so progress bars store their
//!   final state; a trailing `\r` keeps the text before it;
//! - a line longer than `max_line_bytes` is split (never inside a UTF-8
//!   sequence), so memory stays bounded whatever the program prints;
//! - invalid UTF-8 is replaced with U+FFFD, never fatal, and so is a NUL
//!   byte: PostgreSQL's `text` cannot hold one (the insert of the whole
//!   batch would fail), and no terminal shows it.

/// Splits one stream's bytes into lines; keeps the partial last line.
#[derive(Debug)]
pub struct LineSplitter {
    max_line: usize,
    buf: Vec<u8>,
}

impl LineSplitter {
    pub fn new(max_line: usize) -> LineSplitter {
        LineSplitter {
            max_line: max_line.max(16),
            buf: Vec::new(),
        }
    }

    /// Feeds a chunk; complete lines are appended to `out`.
    pub fn push(&mut self, mut chunk: &[u8], out: &mut Vec<String>) {
        while let Some(nl) = memchr(b'\n', chunk) {
            self.buf.extend_from_slice(&chunk[..nl]);
            chunk = &chunk[nl + 1..];
            let mut line = std::mem::take(&mut self.buf);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            self.emit(&line, out);
        }
        self.buf.extend_from_slice(chunk);
        if self.buf.len() > self.max_line {
            // A very long line, or a `\r` progress bar that never ends its line.
            let kept = last_segment(&self.buf).len();
            self.buf.drain(..self.buf.len() - kept);
            while self.buf.len() > self.max_line {
                let cut = char_boundary(&self.buf, self.max_line);
                let head: Vec<u8> = self.buf.drain(..cut).collect();
                out.push(String::from_utf8_lossy(&head).into_owned());
            }
        }
    }

    /// The stream ended: the partial line, if any, is a line.
    pub fn finish(&mut self, out: &mut Vec<String>) {
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            self.emit(&line, out);
        }
    }

    fn emit(&self, line: &[u8], out: &mut Vec<String>) {
        let mut line = collapse_cr(line);
        while line.len() > self.max_line {
            let cut = char_boundary(line, self.max_line);
            out.push(text(&line[..cut]));
            line = &line[cut..];
        }
        out.push(text(line));
    }
}

/// A line's bytes as stored text: invalid UTF-8 and NUL bytes become U+FFFD.
fn text(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes).into_owned();
    if memchr(0, bytes).is_some() {
        s.replace('\0', "\u{fffd}")
    } else {
        s
    }
}

/// The part of an unfinished line that can still show: from after the last
/// `\r` that text follows, keeping trailing `\r`s (what comes next
/// overwrites from the start).
fn last_segment(line: &[u8]) -> &[u8] {
    let mut end = line.len();
    while end > 0 && line[end - 1] == b'\r' {
        end -= 1;
    }
    match line[..end].iter().rposition(|&b| b == b'\r') {
        Some(i) => &line[i + 1..],
        None => line,
    }
}

/// The text after the last `\r` that something follows, without trailing
/// `\r`s: what a terminal shows once the line ends.
fn collapse_cr(line: &[u8]) -> &[u8] {
    let seg = last_segment(line);
    let end = seg.iter().rposition(|&b| b != b'\r').map_or(0, |i| i + 1);
    &seg[..end]
}

/// The largest cut at or below `max` that does not split a UTF-8 sequence.
fn char_boundary(bytes: &[u8], max: usize) -> usize {
    let mut cut = max.min(bytes.len());
    let floor = cut.saturating_sub(3);
    while cut > floor && cut < bytes.len() && (bytes[cut] & 0b1100_0000) == 0b1000_0000 {
        cut -= 1;
    }
    if cut == floor && cut < bytes.len() && (bytes[cut] & 0b1100_0000) == 0b1000_0000 {
        max.min(bytes.len()) // not UTF-8 anyway: cut where asked
    } else {
        cut.max(1)
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max: usize, chunks: &[&[u8]]) -> Vec<String> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut out);
        }
        s.finish(&mut out);
        out
    }

    #[test]
    fn lines_end_at_newlines_across_chunks() {
        assert_eq!(split(100, &[b"a\nb", b"c\n", b"d"]), ["a", "bc", "d"]);
        assert_eq!(split(100, &[b"x\r\ny\r\n"]), ["x", "y"]);
        assert_eq!(split(100, &[b"\n\n"]), ["", ""]);
    }

    #[test]
    fn carriage_returns_keep_what_a_terminal_would_show() {
        assert_eq!(split(100, &[b"10%\r20%\rdone\n"]), ["done"]);
        assert_eq!(split(100, &[b"50%\r", b"\n"]), ["50%"]);
        assert_eq!(split(100, &[b"copying\r\r\n"]), ["copying"]);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        assert_eq!(
            split(100, &[b"ok \xff\xfe end\n"]),
            ["ok \u{fffd}\u{fffd} end"]
        );
    }

    #[test]
    fn long_lines_are_split_at_the_limit_without_breaking_characters() {
        let line = "é".repeat(10); // 20 bytes
        let out = split(16, &[line.as_bytes(), b"\n"]);
        assert_eq!(out, ["é".repeat(8), "é".repeat(2)]);
        let big = vec![b'x'; 100];
        let out = split(16, &[&big]);
        assert_eq!(out.len(), 7);
        assert!(out.iter().all(|l| l.len() <= 16));
        assert_eq!(out.concat().len(), 100);
    }

    #[test]
    fn a_progress_bar_without_newlines_stays_bounded() {
        let mut s = LineSplitter::new(32);
        let mut out = Vec::new();
        for i in 0..10_000 {
            s.push(format!("progress {i}%\r").as_bytes(), &mut out);
        }
        assert!(s.buf.len() <= 64, "buffer stays small: {}", s.buf.len());
        s.push(b"\n", &mut out);
        assert_eq!(out.last().unwrap(), "progress 9999%");
        assert!(out.len() < 10, "no flood of split lines: {}", out.len());
    }
}
