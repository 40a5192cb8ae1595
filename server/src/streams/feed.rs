//! `GET /api/events`: the feed of job changes for list pages — `job` (the
//! job JSON) whenever a job the caller may see is created or changes state
//! or progress, `job.deleted` (`{"id"}`) when retention removes one, and
//! `resync` when the caller fell too far behind and should reload its list
//! (the names are `FeedEventKind`'s).

use std::sync::Arc;

use app::model::event::FeedEvent;
use bytes::{Bytes, BytesMut};
use tokio::sync::broadcast::{self, error::RecvError};

use crate::streams::{sse, StreamDeps};

/// Which events the subscriber may see (the service decides).
pub type Visible = Arc<dyn Fn(&FeedEvent) -> bool + Send + Sync>;

pub struct FeedStream {
    deps: StreamDeps,
    visible: Visible,
    rx: broadcast::Receiver<FeedEvent>,
    keepalive: tokio::time::Interval,
    opened: bool,
}

impl FeedStream {
    pub fn new(deps: StreamDeps, visible: Visible) -> FeedStream {
        deps.metrics.stream(true);
        FeedStream {
            rx: deps.hub.feed(),
            keepalive: deps.keepalive_timer(),
            deps,
            visible,
            opened: false,
        }
    }

    pub async fn next_chunk(&mut self) -> Option<Bytes> {
        if !self.opened {
            self.opened = true;
            return Some(Bytes::from_static(b"retry: 2000\n\n"));
        }
        loop {
            let event = tokio::select! {
                ev = self.rx.recv() => ev,
                _ = self.keepalive.tick() => return Some(sse::keepalive()),
                _ = self.deps.shutdown.cancelled() => return None,
            };
            let mut out = BytesMut::new();
            self.take(event, &mut out);
            while let Ok(ev) = self.rx.try_recv() {
                self.take(Ok(ev), &mut out);
                if out.len() > 64 * 1024 {
                    break;
                }
            }
            if !out.is_empty() {
                return Some(out.freeze());
            }
        }
    }

    fn take(&self, event: Result<FeedEvent, RecvError>, out: &mut BytesMut) {
        let event = match event {
            Ok(event) if !(self.visible)(&event) => return,
            Ok(event) => event,
            Err(RecvError::Lagged(_)) => FeedEvent::Resync,
            Err(RecvError::Closed) => return,
        };
        out.extend_from_slice(&sse::event_json(event.kind().name(), &event.data()));
    }
}

impl Drop for FeedStream {
    fn drop(&mut self) {
        self.deps.metrics.stream(false);
    }
}
