//! Pure pieces of the terminal's output path: whole UTF-8 characters out of
//! arbitrary reads, and the ring of recent output replayed on reattach.

use std::collections::VecDeque;

/// Turns a stream of byte chunks into text without ever splitting a
/// character: an incomplete sequence at the end of a chunk waits for the
/// next one; bytes that can never be UTF-8 become U+FFFD.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    carry: Vec<u8>,
}

impl Utf8Stream {
    /// The text of `chunk` (with what was carried over), minus an incomplete
    /// trailing sequence, which is kept for the next call.
    pub fn push(&mut self, chunk: &[u8]) -> String {
        let mut bytes = std::mem::take(&mut self.carry);
        bytes.extend_from_slice(chunk);
        let mut out = String::with_capacity(bytes.len());
        let mut rest = &bytes[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // SAFETY-free: `valid` is UTF-8 by from_utf8's word.
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            rest = &after[bad..];
                        }
                        None => {
                            // An incomplete sequence at the very end.
                            self.carry = after.to_vec();
                            break;
                        }
                    }
                }
            }
        }
        out
    }

    /// What is left at the end of the stream (an unfinished character).
    pub fn finish(&mut self) -> String {
        if self.carry.is_empty() {
            String::new()
        } else {
            self.carry.clear();
            "\u{FFFD}".into()
        }
    }
}

/// The most recent output, at most `cap` bytes, kept in whole chunks (each
/// whole UTF-8 text), replayed to a browser that reattaches.
#[derive(Debug)]
pub struct Ring {
    chunks: VecDeque<String>,
    bytes: usize,
    cap: usize,
}

impl Ring {
    pub fn new(cap: usize) -> Ring {
        Ring {
            chunks: VecDeque::new(),
            bytes: 0,
            cap,
        }
    }

    pub fn push(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        let text = if text.len() > self.cap {
            // Only the tail fits: cut at a character boundary.
            let mut start = text.len() - self.cap;
            while !text.is_char_boundary(start) {
                start += 1;
            }
            &text[start..]
        } else {
            text
        };
        self.bytes += text.len();
        self.chunks.push_back(text.to_string());
        while self.bytes > self.cap {
            if let Some(old) = self.chunks.pop_front() {
                self.bytes -= old.len();
            }
        }
    }

    /// Everything kept, oldest first.
    pub fn contents(&self) -> String {
        let mut s = String::with_capacity(self.bytes);
        for c in &self.chunks {
            s.push_str(c);
        }
        s
    }

    pub fn len(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_split_across_reads_arrives_whole() {
        let text = "héllo → wörld 🦀";
        let bytes = text.as_bytes();
        for cut in 0..=bytes.len() {
            let mut s = Utf8Stream::default();
            let mut out = s.push(&bytes[..cut]);
            out.push_str(&s.push(&bytes[cut..]));
            assert_eq!(out, text, "cut at {cut}");
        }
        // One byte at a time.
        let mut s = Utf8Stream::default();
        let out: String = bytes.iter().map(|b| s.push(&[*b])).collect();
        assert_eq!(out, text);
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut s = Utf8Stream::default();
        assert_eq!(s.push(b"a\xffb\xc3"), "a\u{FFFD}b");
        assert_eq!(s.push(b"("), "\u{FFFD}(");
        assert_eq!(s.push(b"\xe2\x82"), "");
        assert_eq!(s.finish(), "\u{FFFD}");
    }

    #[test]
    fn the_ring_keeps_the_most_recent_bytes_in_whole_characters() {
        let mut r = Ring::new(10);
        r.push("abcdef");
        r.push("ghij");
        assert_eq!(r.contents(), "abcdefghij");
        r.push("k");
        assert_eq!(r.contents(), "ghijk");
        r.push("ééééééééé"); // 18 bytes: only the tail fits
        assert!(r.len() <= 10);
        assert!(r.contents().chars().all(|c| c == 'é'));
    }
}
