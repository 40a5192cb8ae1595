//! The SSE wire format: events are written by hand (not one frame per
//! event) so a batch of lines becomes one buffer, encoded once and shared.

use app::model::event::JobEventKind;
use app::model::job::LogLine;
use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use crate::hub::EncodedBatch;

/// `event: log` / `id: <seq>` / `data: <line JSON>` for each line.
pub fn encode_lines(lines: &[LogLine]) -> EncodedBatch {
    let mut buf = BytesMut::with_capacity(lines.len() * 128);
    let mut offsets = Vec::with_capacity(lines.len());
    for line in lines {
        offsets.push((line.seq, buf.len()));
        buf.put_slice(b"event: ");
        buf.put_slice(JobEventKind::Log.name().as_bytes());
        buf.put_slice(b"\nid: ");
        buf.put_slice(line.seq.to_string().as_bytes());
        buf.put_slice(b"\ndata: ");
        // N.B.: JSON never contains a raw newline, so one data line suffices.
        let _ = serde_json::to_writer((&mut buf).writer(), line);
        buf.put_slice(b"\n\n");
    }
    EncodedBatch {
        bytes: buf.freeze(),
        offsets,
    }
}

/// One event named `name` (a kind's `name()`) with a JSON payload.
pub fn event<T: Serialize + ?Sized>(name: &str, data: &T) -> Bytes {
    event_json(name, &serde_json::to_string(data).unwrap_or_default())
}

/// One event named `name` whose payload is already JSON.
pub fn event_json(name: &str, json: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(json.len() + name.len() + 16);
    buf.put_slice(b"event: ");
    buf.put_slice(name.as_bytes());
    buf.put_slice(b"\ndata: ");
    buf.put_slice(json.as_bytes());
    buf.put_slice(b"\n\n");
    buf.freeze()
}

/// A comment line, which keeps proxies and clients from timing out.
pub fn keepalive() -> Bytes {
    Bytes::from_static(b": keepalive\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use app::model::job::LogStream;
    use chrono::Utc;

    #[test]
    fn lines_become_log_events_with_their_seq_as_id() {
        let lines = vec![
            LogLine {
                seq: 7,
                stream: LogStream::Stdout,
                ts: Utc::now(),
                text: "a\nb".into(),
            },
            LogLine {
                seq: 8,
                stream: LogStream::Stderr,
                ts: Utc::now(),
                text: "c".into(),
            },
        ];
        let enc = encode_lines(&lines);
        let text = std::str::from_utf8(&enc.bytes).unwrap();
        let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.len(), 2);
        assert!(events[0].starts_with("event: log\nid: 7\ndata: {"));
        assert!(
            events[0].contains(r#""text":"a\nb""#),
            "escaped newline: {}",
            events[0]
        );
        assert_eq!(enc.offsets[1].1, events[0].len() + 2);
    }
}
