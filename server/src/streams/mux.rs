//! `GET /api/live`: one SSE connection that carries several streams — the
//! feed and any number of job streams, each a subscription with its own
//! number and resume point — so a browser needs one connection for all its
//! tabs (docs/live.md). Subscriptions are added and dropped beside it by
//! `POST /api/live/{conn}/subscribe` and `…/unsubscribe`, which reach the
//! connection through [`Connections`].
//!
//! N.B.: a subscription *is* a [`JobStream`] or [`FeedStream`], the same
//! state machines the single-stream endpoints serve: replay after `after`,
//! the lag rule (`streams::job::catch`), gaps and the end are theirs. This
//! module only retags their chunks (each SSE event becomes one unnamed
//! event whose first data line is `<sub> <name> <cursor>`, see
//! `app::model::live`) and interleaves them. The whole connection holds one
//! [`super::Lease`] (one slot of the stream limits) and ends with `revoked`
//! on sub 0 when its credential is revoked.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use app::error::AppError;
use app::model::event::Revoked;
use app::model::live::{self as wire, Ended, Hello, Refused, CONNECTION, MAX_SUBSCRIPTIONS};
use bytes::{BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::StreamMap;
use tokio_util::sync::CancellationToken;

use crate::streams::feed::FeedStream;
use crate::streams::job::JobStream;
use crate::sync::Locked;

/// One subscription's events, already tagged for the connection.
pub type SubStream = Pin<Box<dyn Stream<Item = Bytes> + Send>>;

/// Control requests waiting for a connection, at most (a subscribe past
/// them is answered 503: the connection is not being read).
const CONTROL_QUEUE: usize = 64;

/// What a subscribe or unsubscribe request asks of a connection.
pub enum Control {
    /// Add subscription `sub`, replacing one of the same number.
    Add(u32, SubStream),
    Remove(u32),
}

/// The live connections open on this server, by id: where subscribe and
/// unsubscribe requests find theirs. Clones share it.
#[derive(Clone, Default)]
pub struct Connections(Arc<Mutex<HashMap<String, Entry>>>);

struct Entry {
    user: i64,
    tx: mpsc::Sender<Control>,
}

impl Connections {
    /// Registers a new connection of `user`; it is unregistered when the
    /// returned stream is dropped.
    pub fn open(
        &self,
        user: i64,
        keepalive: std::time::Duration,
        shutdown: CancellationToken,
    ) -> MuxStream {
        use rand::RngCore;
        let mut raw = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut raw);
        let id = hex::encode(raw);
        let (tx, rx) = mpsc::channel(CONTROL_QUEUE);
        self.0.locked().insert(id.clone(), Entry { user, tx });
        let mut opening = BytesMut::from(&b"retry: 2000\n\n"[..]);
        opening.extend_from_slice(&frame(
            CONNECTION,
            wire::HELLO,
            None,
            &json(&Hello { conn: id.clone() }),
        ));
        let mut timer =
            tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        MuxStream {
            id,
            connections: self.clone(),
            rx,
            subs: StreamMap::new(),
            keepalive: timer,
            shutdown,
            opening: Some(opening.freeze()),
        }
    }

    /// Hands `control` to connection `conn` of `user`: 404 when this
    /// server has no such connection of theirs (it ended, or another
    /// replica holds it: the client then opens a new one).
    pub fn send(&self, conn: &str, user: i64, control: Control) -> Result<(), AppError> {
        let tx = self
            .0
            .locked()
            .get(conn)
            .filter(|e| e.user == user)
            .map(|e| e.tx.clone())
            .ok_or_else(|| {
                AppError::NotFound(format!(
                    "no live connection `{conn}` of yours on this server: open a new one"
                ))
            })?;
        tx.try_send(control).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => AppError::Unavailable(
                "the live connection is not reading its requests: try again".into(),
            ),
            mpsc::error::TrySendError::Closed(_) => {
                AppError::NotFound(format!("the live connection `{conn}` has ended"))
            }
        })
    }

    /// Live connections open now (`opsdeck_live_connections`).
    pub fn len(&self) -> usize {
        self.0.locked().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One live connection: its subscriptions interleaved, its control
/// requests, its keepalive.
pub struct MuxStream {
    id: String,
    connections: Connections,
    rx: mpsc::Receiver<Control>,
    subs: StreamMap<u32, SubStream>,
    keepalive: tokio::time::Interval,
    shutdown: CancellationToken,
    /// `retry` and `hello`, sent first.
    opening: Option<Bytes>,
}

impl MuxStream {
    /// The connection's id (what `hello` says).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Adds subscription `sub` (replacing one of the same number); past
    /// [`MAX_SUBSCRIPTIONS`] it is refused on the wire.
    pub fn add(&mut self, sub: u32, stream: SubStream) {
        if self.subs.len() >= MAX_SUBSCRIPTIONS && !self.subs.contains_key(&sub) {
            let err = AppError::field(
                "sub",
                format!("a live connection carries at most {MAX_SUBSCRIPTIONS} subscriptions"),
            );
            self.subs.insert(sub, refused(sub, &err));
            return;
        }
        self.subs.insert(sub, stream);
    }

    /// The next chunk to write, or `None` at shutdown.
    pub async fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(opening) = self.opening.take() {
            return Some(opening);
        }
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return None,
                control = self.rx.recv() => match control {
                    Some(Control::Add(sub, stream)) => self.add(sub, stream),
                    Some(Control::Remove(sub)) => {
                        self.subs.remove(&sub);
                    }
                    // N.B.: the registry holds a sender until this stream
                    // is dropped, so this never happens while it runs.
                    None => return None,
                },
                Some((_, chunk)) = self.subs.next(), if !self.subs.is_empty() => {
                    if !chunk.is_empty() {
                        return Some(chunk);
                    }
                }
                _ = self.keepalive.tick() => return Some(super::sse::keepalive()),
            }
        }
    }
}

impl Drop for MuxStream {
    fn drop(&mut self) {
        self.connections.0.locked().remove(&self.id);
    }
}

/// A job stream as subscription `sub`: its events tagged, then `ended`.
pub fn job(sub: u32, stream: JobStream) -> SubStream {
    let events = futures::stream::unfold(stream, |mut s| async move {
        s.next_chunk().await.map(|chunk| (chunk, s))
    });
    tagged(sub, events)
}

/// The feed as subscription `sub`.
pub fn feed(sub: u32, stream: FeedStream) -> SubStream {
    let events = futures::stream::unfold(stream, |mut s| async move {
        s.next_chunk().await.map(|chunk| (chunk, s))
    });
    tagged(sub, events)
}

/// A subscription that could not be opened: `refused` with the error's
/// status and sentence, then `ended`.
pub fn refused(sub: u32, err: &AppError) -> SubStream {
    let data = json(&Refused {
        status: err.status(),
        error: err.to_string(),
    });
    let mut out = BytesMut::from(&frame(sub, wire::REFUSED, None, &data)[..]);
    out.extend_from_slice(&ended(sub));
    Box::pin(futures::stream::once(async move { out.freeze() }))
}

fn tagged<S>(sub: u32, events: S) -> SubStream
where
    S: Stream<Item = Bytes> + Send + 'static,
{
    Box::pin(
        events
            .map(move |chunk| retag(sub, &chunk))
            .chain(futures::stream::once(async move { ended(sub) })),
    )
}

fn ended(sub: u32) -> Bytes {
    frame(CONNECTION, wire::ENDED, None, &json(&Ended { sub }))
}

/// `revoked` on sub 0: the last event of a connection whose credential was
/// revoked.
pub fn revoked_frame(event: &Revoked) -> Bytes {
    frame(CONNECTION, Revoked::NAME, None, &event.data())
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// One event of the connection: `data: <sub> <name> <cursor>` and the
/// payload's data line(s).
fn frame(sub: u32, name: &str, cursor: Option<&str>, data: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + name.len() + 32);
    write_frame(&mut out, sub, name, cursor, data.split('\n'));
    out.freeze()
}

fn write_frame<'a>(
    out: &mut BytesMut,
    sub: u32,
    name: &str,
    cursor: Option<&str>,
    data: impl Iterator<Item = &'a str>,
) {
    out.put_slice(b"data: ");
    out.put_slice(sub.to_string().as_bytes());
    out.put_u8(b' ');
    out.put_slice(name.as_bytes());
    out.put_u8(b' ');
    out.put_slice(cursor.unwrap_or("-").as_bytes());
    out.put_u8(b'\n');
    for line in data {
        out.put_slice(b"data: ");
        out.put_slice(line.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
}

/// Rewrites a chunk of a single stream's SSE (as `streams::sse` writes it)
/// into the connection's events for subscription `sub`: each event's name
/// and id (a log line's seq, its cursor) go into the header line; comments
/// and `retry` are dropped (the connection has its own).
pub fn retag(sub: u32, chunk: &[u8]) -> Bytes {
    let text = String::from_utf8_lossy(chunk);
    let mut out = BytesMut::with_capacity(chunk.len() + 64);
    for event in text.split("\n\n") {
        let (mut name, mut id, mut data) = ("message", None, Vec::new());
        for line in event.lines() {
            if let Some(v) = line.strip_prefix("event: ") {
                name = v;
            } else if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v);
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push(v);
            }
        }
        if !data.is_empty() {
            write_frame(&mut out, sub, name, id, data.into_iter());
        }
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retagging_puts_the_name_and_seq_in_the_header_and_drops_comments() {
        let chunk = b"retry: 2000\n\nevent: state\ndata: {\"id\":4}\n\n: keepalive\n\nevent: log\nid: 7\ndata: {\"seq\":7}\n\n";
        let out = retag(3, chunk);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "data: 3 state -\ndata: {\"id\":4}\n\ndata: 3 log 7\ndata: {\"seq\":7}\n\n"
        );
        assert!(retag(3, b": keepalive\n\n").is_empty());
    }

    #[tokio::test]
    async fn a_connection_says_hello_then_interleaves_its_subscriptions_and_unregisters_when_dropped(
    ) {
        let connections = Connections::default();
        let mut mux = connections.open(
            7,
            std::time::Duration::from_secs(60),
            CancellationToken::new(),
        );
        let id = mux.id().to_string();
        let hello = mux.next_chunk().await.unwrap();
        assert!(std::str::from_utf8(&hello)
            .unwrap()
            .contains(&format!("data: 0 hello -\ndata: {{\"conn\":\"{id}\"}}")));

        let err = connections.send(&id, 8, Control::Remove(1)).err().unwrap();
        assert_eq!(err.status(), 404, "another user's connection is not found");
        let gone = AppError::NotFound("no job 5".into());
        connections
            .send(&id, 7, Control::Add(2, refused(2, &gone)))
            .unwrap();
        let chunk = mux.next_chunk().await.unwrap();
        let text = std::str::from_utf8(&chunk).unwrap();
        assert!(
            text.starts_with("data: 2 refused -\ndata: {\"status\":404"),
            "{text}"
        );
        assert!(
            text.ends_with("data: 0 ended -\ndata: {\"sub\":2}\n\n"),
            "{text}"
        );

        assert_eq!(connections.len(), 1);
        drop(mux);
        assert!(connections.is_empty());
        assert_eq!(
            connections
                .send(&id, 7, Control::Remove(1))
                .err()
                .unwrap()
                .status(),
            404
        );
    }
}
