//! `GET /api/events`: the feed of job changes for list pages — `job` (the
//! job JSON) whenever a job the caller may see is created or changes state
//! or progress, `job.deleted` (`{"id"}`) when retention removes one, and
//! `resync` when the caller fell too far behind and should reload its list.

use app::model::user::CurrentUser;
use bytes::{Bytes, BytesMut};
use tokio::sync::broadcast::{self, error::RecvError};

use crate::auth::policy;
use crate::hub::FeedEvent;
use crate::state::AppState;
use crate::streams::sse;

pub struct FeedStream {
    state: AppState,
    user: CurrentUser,
    rx: broadcast::Receiver<FeedEvent>,
    keepalive: tokio::time::Interval,
    opened: bool,
}

impl FeedStream {
    pub fn new(state: AppState, user: CurrentUser) -> FeedStream {
        let every = state.config.server.stream_keepalive;
        let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        state.metrics.stream(true);
        FeedStream {
            rx: state.hub.feed(),
            state,
            user,
            keepalive,
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
                _ = self.state.shutdown.cancelled() => return None,
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
        match event {
            Ok(FeedEvent::Job(job)) => {
                if policy::may_see(&self.user, &job.owner, &job.target, &self.state.config) {
                    out.extend_from_slice(&sse::event("job", &*job));
                }
            }
            Ok(FeedEvent::Deleted(id)) => {
                out.extend_from_slice(&sse::event("job.deleted", &serde_json::json!({ "id": id })))
            }
            Err(RecvError::Lagged(_)) => {
                out.extend_from_slice(&sse::event("resync", &serde_json::json!({})))
            }
            Err(RecvError::Closed) => {}
        }
    }
}

impl Drop for FeedStream {
    fn drop(&mut self) {
        self.state.metrics.stream(false);
    }
}
