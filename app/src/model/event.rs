//! The live events opsdeck streams, defined once: one job's stream
//! (`GET /api/jobs/{id}/events`) and the feed of job changes for list pages
//! (`GET /api/events`). Each kind knows its SSE name; [`JobEvent::decode`]
//! and [`FeedEvent::decode`] are the one decoder the browser and the CLI
//! use, and the server's encoder writes the names from the kinds. No event
//! name is written anywhere else.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::agent::AgentInfo;
use crate::model::job::{Gap, Job, LogLine, Progress};
use crate::model::status::TargetStatus;

/// Why an event could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode a `{name}` event: {message}")]
pub struct DecodeError {
    pub name: &'static str,
    pub message: String,
}

fn payload<T: serde::de::DeserializeOwned>(
    name: &'static str,
    data: &str,
) -> Result<T, DecodeError> {
    serde_json::from_str(data).map_err(|e| DecodeError {
        name,
        message: e.to_string(),
    })
}

/// The kinds of event on one job's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobEventKind {
    /// A stored line; the SSE `id` is its seq.
    Log,
    /// The job changed (state, progress, position of its log).
    State,
    /// New progress, at most a few per second.
    Progress,
    /// Lines cut from the middle of an over-long log.
    Gap,
    /// The job has finished and every line was sent; the stream closes.
    End,
}

impl JobEventKind {
    pub const ALL: [JobEventKind; 5] = [
        JobEventKind::Log,
        JobEventKind::State,
        JobEventKind::Progress,
        JobEventKind::Gap,
        JobEventKind::End,
    ];

    /// The SSE event name.
    pub const fn name(self) -> &'static str {
        match self {
            JobEventKind::Log => "log",
            JobEventKind::State => "state",
            JobEventKind::Progress => "progress",
            JobEventKind::Gap => "gap",
            JobEventKind::End => "end",
        }
    }

    pub fn from_name(name: &str) -> Option<JobEventKind> {
        JobEventKind::ALL.into_iter().find(|k| k.name() == name)
    }

    const NAMES: [&'static str; 5] = [
        JobEventKind::Log.name(),
        JobEventKind::State.name(),
        JobEventKind::Progress.name(),
        JobEventKind::Gap.name(),
        JobEventKind::End.name(),
    ];

    /// Every name, for an EventSource's listeners.
    pub fn names() -> &'static [&'static str] {
        &JobEventKind::NAMES
    }
}

/// One event of a job's stream.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEvent {
    Log(LogLine),
    State(Job),
    Progress(Progress),
    Gap(Gap),
    End(Job),
}

impl JobEvent {
    pub fn kind(&self) -> JobEventKind {
        match self {
            JobEvent::Log(_) => JobEventKind::Log,
            JobEvent::State(_) => JobEventKind::State,
            JobEvent::Progress(_) => JobEventKind::Progress,
            JobEvent::Gap(_) => JobEventKind::Gap,
            JobEvent::End(_) => JobEventKind::End,
        }
    }

    /// Decodes the event `name` with `data`; `Ok(None)` for a name this
    /// version does not know (a newer server may send more kinds).
    pub fn decode(name: &str, data: &str) -> Result<Option<JobEvent>, DecodeError> {
        let Some(kind) = JobEventKind::from_name(name) else {
            return Ok(None);
        };
        let n = kind.name();
        Ok(Some(match kind {
            JobEventKind::Log => JobEvent::Log(payload(n, data)?),
            JobEventKind::State => JobEvent::State(payload(n, data)?),
            JobEventKind::Progress => JobEvent::Progress(payload(n, data)?),
            JobEventKind::Gap => JobEvent::Gap(payload(n, data)?),
            JobEventKind::End => JobEvent::End(payload(n, data)?),
        }))
    }
}

/// The kinds of event on the feed of job changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeedEventKind {
    /// A job the caller may see was created or changed.
    Job,
    /// Retention removed a job.
    Deleted,
    /// The caller fell too far behind: reload the list.
    Resync,
    /// An agent connected, went silent or away, or was revoked.
    Agent,
    /// A target's actual state or last error changed (or was probed again).
    Target,
}

impl FeedEventKind {
    pub const ALL: [FeedEventKind; 5] = [
        FeedEventKind::Job,
        FeedEventKind::Deleted,
        FeedEventKind::Resync,
        FeedEventKind::Agent,
        FeedEventKind::Target,
    ];

    /// The SSE event name.
    pub const fn name(self) -> &'static str {
        match self {
            FeedEventKind::Job => "job",
            FeedEventKind::Deleted => "job.deleted",
            FeedEventKind::Resync => "resync",
            FeedEventKind::Agent => "agent",
            FeedEventKind::Target => "target",
        }
    }

    pub fn from_name(name: &str) -> Option<FeedEventKind> {
        FeedEventKind::ALL.into_iter().find(|k| k.name() == name)
    }

    const NAMES: [&'static str; 5] = [
        FeedEventKind::Job.name(),
        FeedEventKind::Deleted.name(),
        FeedEventKind::Resync.name(),
        FeedEventKind::Agent.name(),
        FeedEventKind::Target.name(),
    ];

    /// Every name, for an EventSource's listeners.
    pub fn names() -> &'static [&'static str] {
        &FeedEventKind::NAMES
    }
}

/// The payload of `job.deleted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobId {
    pub id: i64,
}

/// The payload of `resync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Resync {}

/// One change on the feed. The job is shared: the server hands one copy
/// to every subscriber.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedEvent {
    Job(Arc<Job>),
    Deleted(i64),
    Resync,
    Agent(Arc<AgentInfo>),
    Target(Arc<TargetStatus>),
}

impl FeedEvent {
    pub fn kind(&self) -> FeedEventKind {
        match self {
            FeedEvent::Job(_) => FeedEventKind::Job,
            FeedEvent::Deleted(_) => FeedEventKind::Deleted,
            FeedEvent::Resync => FeedEventKind::Resync,
            FeedEvent::Agent(_) => FeedEventKind::Agent,
            FeedEvent::Target(_) => FeedEventKind::Target,
        }
    }

    /// Decodes the event `name` with `data`; `Ok(None)` for a name this
    /// version does not know.
    pub fn decode(name: &str, data: &str) -> Result<Option<FeedEvent>, DecodeError> {
        let Some(kind) = FeedEventKind::from_name(name) else {
            return Ok(None);
        };
        let n = kind.name();
        Ok(Some(match kind {
            FeedEventKind::Job => FeedEvent::Job(Arc::new(payload(n, data)?)),
            FeedEventKind::Deleted => FeedEvent::Deleted(payload::<JobId>(n, data)?.id),
            FeedEventKind::Resync => FeedEvent::Resync,
            FeedEventKind::Agent => FeedEvent::Agent(Arc::new(payload(n, data)?)),
            FeedEventKind::Target => FeedEvent::Target(Arc::new(payload(n, data)?)),
        }))
    }

    /// The JSON `data` of this event.
    pub fn data(&self) -> String {
        let json = match self {
            FeedEvent::Job(job) => serde_json::to_string(&**job),
            FeedEvent::Deleted(id) => serde_json::to_string(&JobId { id: *id }),
            FeedEvent::Resync => serde_json::to_string(&Resync {}),
            FeedEvent::Agent(agent) => serde_json::to_string(&**agent),
            FeedEvent::Target(status) => serde_json::to_string(&**status),
        };
        json.unwrap_or_default()
    }
}

/// The last event of either stream when the credential that opened it
/// stopped being valid (a sign-out, a password change or reset, a disabled
/// user, a revoked token): the server sends it, then ends the stream, and
/// a reconnect with the same credential is refused with 401. The browser
/// stops reconnecting and says why; the CLI ends its follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    /// Why, in a sentence for the user ("signed out: …").
    pub reason: String,
}

impl Revoked {
    /// The SSE event name, on both streams.
    pub const NAME: &'static str = "revoked";

    pub fn decode(data: &str) -> Result<Revoked, DecodeError> {
        payload(Revoked::NAME, data)
    }

    /// The JSON `data` of this event.
    pub fn data(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::job::{JobState, LogStream};

    #[test]
    fn every_name_decodes_to_its_kind_and_unknown_names_are_skipped() {
        for (i, kind) in JobEventKind::ALL.into_iter().enumerate() {
            assert_eq!(JobEventKind::from_name(kind.name()), Some(kind));
            assert_eq!(JobEventKind::names()[i], kind.name());
        }
        for (i, kind) in FeedEventKind::ALL.into_iter().enumerate() {
            assert_eq!(FeedEventKind::from_name(kind.name()), Some(kind));
            assert_eq!(FeedEventKind::names()[i], kind.name());
        }
        assert_eq!(JobEvent::decode("something-new", "{}"), Ok(None));
        assert!(JobEventKind::from_name(Revoked::NAME).is_none());
        assert!(FeedEventKind::from_name(Revoked::NAME).is_none());
        let revoked = Revoked {
            reason: "signed out".into(),
        };
        assert_eq!(Revoked::decode(&revoked.data()), Ok(revoked));
        assert_eq!(FeedEvent::decode("something-new", "{}"), Ok(None));
    }

    #[test]
    fn payloads_decode_into_their_models_and_bad_ones_name_the_event() {
        let line = r#"{"seq":7,"stream":"stderr","ts":"2026-12-05T10:00:00Z","text":"x"}"#;
        match JobEvent::decode("log", line) {
            Ok(Some(JobEvent::Log(l))) => {
                assert_eq!((l.seq, l.stream), (7, LogStream::Stderr));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            JobEvent::decode("gap", r#"{"from":3,"to":9,"bytes":12}"#),
            Ok(Some(JobEvent::Gap(Gap {
                from: 3,
                to: 9,
                bytes: 12
            })))
        );
        let err = JobEvent::decode("gap", r#"{"from":"x"}"#).unwrap_err();
        assert_eq!(err.name, "gap");
        assert_eq!(
            FeedEvent::decode("job.deleted", r#"{"id":42}"#),
            Ok(Some(FeedEvent::Deleted(42)))
        );
        assert_eq!(
            FeedEvent::decode("resync", "{}"),
            Ok(Some(FeedEvent::Resync))
        );
    }

    #[test]
    fn feed_data_round_trips_through_the_decoder() {
        let job = crate::model::job::tests::sample_job(JobState::Queued);
        let ev = FeedEvent::Job(Arc::new(job));
        assert_eq!(FeedEvent::decode("job", &ev.data()), Ok(Some(ev)));
        let ev = FeedEvent::Deleted(5);
        assert_eq!(
            FeedEvent::decode(ev.kind().name(), &ev.data()),
            Ok(Some(ev))
        );
        let ev = FeedEvent::Target(Arc::new(TargetStatus {
            target: "web-1".into(),
            state: Some(crate::model::status::ProbeState::Down),
            message: "nginx is not running".into(),
            checked_at: Some(chrono::Utc::now()),
            changed_at: None,
            last_error: None,
        }));
        assert_eq!(
            FeedEvent::decode(ev.kind().name(), &ev.data()),
            Ok(Some(ev))
        );
    }
}
