//! A lean Server-Sent Events parser: the client must read up to millions
//! of events a second on one core, so events are handed out as borrowed
//! byte slices, with no allocation per event. Only `\n` line ends are
//! handled (what opsdeck and nchan send).

/// One event; fields absent from it are empty.
pub struct Event<'a> {
    pub event: &'a [u8],
    pub id: &'a [u8],
    pub data: &'a [u8],
}

#[derive(Default)]
pub struct Parser {
    /// The unfinished tail of the previous chunks.
    buf: Vec<u8>,
}

impl Parser {
    /// Feeds a chunk of the body; calls `f` for every complete event.
    pub fn feed(&mut self, chunk: &[u8], mut f: impl FnMut(Event<'_>)) {
        if self.buf.is_empty() {
            // The common case: parse the chunk in place, keep only its tail.
            let used = parse(chunk, &mut f);
            self.buf.extend_from_slice(&chunk[used..]);
        } else {
            self.buf.extend_from_slice(chunk);
            let used = parse(&self.buf, &mut f);
            self.buf.drain(..used);
        }
    }
}

/// Parses the complete events at the start of `text` in one pass; returns
/// how many bytes they took.
fn parse(text: &[u8], f: &mut impl FnMut(Event<'_>)) -> usize {
    let mut used = 0;
    let mut at = 0;
    let mut ev = Event {
        event: b"",
        id: b"",
        data: b"",
    };
    let mut any = false;
    while let Some(i) = text[at..].iter().position(|&b| b == b'\n') {
        let line = &text[at..at + i];
        at += i + 1;
        if line.is_empty() {
            // A blank line ends the event.
            if any {
                f(std::mem::replace(
                    &mut ev,
                    Event {
                        event: b"",
                        id: b"",
                        data: b"",
                    },
                ));
                any = false;
            }
            used = at;
        } else if let Some(v) = field(line, b"data") {
            ev.data = v;
            any = true;
        } else if let Some(v) = field(line, b"event") {
            ev.event = v;
            any = true;
        } else if let Some(v) = field(line, b"id") {
            ev.id = v;
            any = true;
        }
        // Comments (`:`) and `retry:` are not events.
    }
    used
}

/// The value of `name: value` (or `name:value`).
fn field<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let rest = line.strip_prefix(name)?.strip_prefix(b":")?;
    Some(rest.strip_prefix(b" ").unwrap_or(rest))
}

/// Parses a decimal number.
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

/// `<k> <unix nanos>` (the emitter's line) from the start of `text`; the
/// text ends at the first byte that is neither a digit nor the one space.
pub fn parse_stamp(text: &[u8]) -> Option<(u64, u64)> {
    let space = text.iter().position(|&b| b == b' ')?;
    let k = parse_u64(&text[..space])?;
    let rest = &text[space + 1..];
    let end = rest
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(rest.len());
    if end != rest.len() && rest[end] != b'"' {
        return None;
    }
    Some((k, parse_u64(&rest[..end])?))
}

/// The value of the `text` field of opsdeck's log line JSON
/// (`{"seq":…,"stream":…,"ts":…,"text":"…"}`), up to its end; escapes
/// are not decoded (the emitter's text has none).
pub fn json_text(data: &[u8]) -> Option<&[u8]> {
    const KEY: &[u8] = b"\"text\":\"";
    let at = data.windows(KEY.len()).rposition(|w| w == KEY)?;
    Some(&data[at + KEY.len()..])
}
