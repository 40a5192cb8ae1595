//! The one live connection a browser shares among its tabs
//! (`GET /api/live`, docs/live.md): the names of the streams it carries,
//! its control events and the bodies of its subscribe and unsubscribe
//! requests. The events of each stream are those of [`crate::model::event`]
//! and are decoded by the same decoders; this module only says how they
//! are tagged on the shared connection.
//!
//! Every event on the connection is one unnamed SSE event of two data
//! lines: a header `<sub> <name> <cursor>` and the event's JSON:
//!
//! ```text
//! data: 3 log 57
//! data: {"seq":57,"stream":"stdout","ts":"…","text":"…"}
//! ```
//!
//! `sub` is the subscription's number, chosen by the client (0 is the
//! connection itself), `name` the inner event's name (a
//! [`crate::model::event::JobEventKind`] or `FeedEventKind` name, or one of
//! the control names below), and `cursor` the seq to resume that
//! subscription after, or `-` when the event moves no cursor.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The subscription number of the connection itself.
pub const CONNECTION: u32 = 0;
/// The most subscriptions one connection carries at once.
pub const MAX_SUBSCRIPTIONS: usize = 256;

/// On sub 0, first: the connection's id, which subscribe and unsubscribe
/// requests name (`POST /api/live/{conn}/…`).
pub const HELLO: &str = "hello";
/// On sub 0: the server dropped a subscription (its job ended, or it was
/// refused); data [`Ended`]. The client forgets it: no resubscription.
pub const ENDED: &str = "ended";
/// On a subscription: the server could not open it (the job is gone or
/// not the caller's); data [`Refused`], then [`ENDED`] on sub 0.
pub const REFUSED: &str = "refused";

/// Data of [`HELLO`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub conn: String,
}

/// Data of [`ENDED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ended {
    pub sub: u32,
}

/// Data of [`REFUSED`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    /// The HTTP status the single-stream endpoint would have answered.
    pub status: u16,
    pub error: String,
}

/// What a subscription follows: `feed` (`GET /api/events`) or `job:<id>`
/// (`GET /api/jobs/{id}/events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Feed,
    Job(i64),
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stream::Feed => f.write_str("feed"),
            Stream::Job(id) => write!(f, "job:{id}"),
        }
    }
}

impl std::str::FromStr for Stream {
    type Err = String;

    fn from_str(s: &str) -> Result<Stream, String> {
        if s == "feed" {
            return Ok(Stream::Feed);
        }
        s.strip_prefix("job:")
            .and_then(|id| id.parse::<i64>().ok())
            .filter(|id| *id > 0)
            .map(Stream::Job)
            .ok_or_else(|| format!("`{s}` is not a stream: `feed` or `job:<id>`"))
    }
}

/// One subscription as the connection's URL names it
/// (`?sub=<sub>:<stream>[:<after>]`, e.g. `sub=1:feed&sub=3:job:12:57`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    pub sub: u32,
    pub stream: Stream,
    /// The seq to resume after (job streams).
    pub after: Option<i64>,
}

impl std::str::FromStr for Subscription {
    type Err = String;

    fn from_str(s: &str) -> Result<Subscription, String> {
        let bad =
            || format!("`{s}` is not a subscription: `<sub>:feed` or `<sub>:job:<id>[:<after>]`");
        let (sub, rest) = s.split_once(':').ok_or_else(bad)?;
        let sub = sub
            .parse::<u32>()
            .ok()
            .filter(|n| *n != CONNECTION)
            .ok_or_else(bad)?;
        let (stream, after) = match rest.strip_prefix("job:") {
            Some(job) => match job.split_once(':') {
                Some((id, after)) => (
                    format!("job:{id}"),
                    Some(after.parse::<i64>().map_err(|_| bad())?),
                ),
                None => (rest.to_string(), None),
            },
            None => (rest.to_string(), None),
        };
        Ok(Subscription {
            sub,
            stream: stream.parse()?,
            after,
        })
    }
}

/// `POST /api/live/{conn}/subscribe`: add (or replace) subscription `sub`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscribe {
    pub sub: u32,
    /// `feed` or `job:<id>`.
    pub stream: String,
    #[serde(default)]
    pub after: Option<i64>,
}

/// `POST /api/live/{conn}/unsubscribe`: drop subscription `sub`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unsubscribe {
    pub sub: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_parse_from_the_url_form_and_bad_ones_say_the_form() {
        assert_eq!(
            "3:job:12:57".parse(),
            Ok(Subscription {
                sub: 3,
                stream: Stream::Job(12),
                after: Some(57)
            })
        );
        assert_eq!(
            "1:feed".parse(),
            Ok(Subscription {
                sub: 1,
                stream: Stream::Feed,
                after: None
            })
        );
        assert_eq!("2:job:9".parse::<Subscription>().map(|s| s.after), Ok(None));
        for bad in [
            "0:feed",
            "x:feed",
            "1:jobs:3",
            "1:job:-2",
            "1:job:3:x",
            "feed",
        ] {
            let err = bad.parse::<Subscription>().unwrap_err();
            assert!(
                err.contains(bad) || err.contains("not a stream"),
                "{bad}: {err}"
            );
        }
        assert_eq!(Stream::Job(12).to_string().parse(), Ok(Stream::Job(12)));
    }
}
