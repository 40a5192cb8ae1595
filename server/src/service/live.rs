//! The shared live connection (`/api/live`, `streams::mux`): opening it
//! with its first subscriptions, and adding or dropping one beside it.
//! Each subscription is opened by the same use case as its single-stream
//! endpoint ([`jobs::stream`], [`jobs::feed`]), so the policy and the
//! resume cursor's validation are theirs.

use app::backend::Caller;
use app::error::AppError;
use app::model::live::{Stream, Subscribe, Subscription};

use crate::auth::policy;
use crate::service::jobs;
use crate::state::AppState;
use crate::streams::mux::{self, Control, MuxStream, SubStream};

/// A new connection of the caller carrying `subs` from the start (a
/// reconnect names every subscription with its cursor). A subscription
/// the caller may not open is refused on the wire, not the connection.
pub async fn open(
    state: &AppState,
    caller: &Caller,
    subs: &[Subscription],
) -> Result<MuxStream, AppError> {
    let user = policy::require_user(caller)?.id;
    let mut conn = state.live.open(
        user,
        state.config.server.stream_keepalive,
        state.shutdown.clone(),
    );
    for s in subs {
        let stream = match subscription(state, caller, s).await {
            Ok(stream) => stream,
            Err(e) => mux::refused(s.sub, &e),
        };
        conn.add(s.sub, stream);
    }
    Ok(conn)
}

/// `POST /api/live/{conn}/subscribe`.
pub async fn subscribe(
    state: &AppState,
    caller: &Caller,
    conn: &str,
    req: Subscribe,
) -> Result<(), AppError> {
    let user = policy::require_user(caller)?.id;
    if req.sub == app::model::live::CONNECTION {
        return Err(AppError::field(
            "sub",
            "`sub` is 1 or more (0 is the connection)",
        ));
    }
    let stream = req
        .stream
        .parse::<Stream>()
        .map_err(|e| AppError::field("stream", e))?;
    let sub = Subscription {
        sub: req.sub,
        stream,
        after: req.after,
    };
    let opened = subscription(state, caller, &sub).await?;
    state.live.send(conn, user, Control::Add(sub.sub, opened))
}

/// `POST /api/live/{conn}/unsubscribe`.
pub fn unsubscribe(
    state: &AppState,
    caller: &Caller,
    conn: &str,
    sub: u32,
) -> Result<(), AppError> {
    let user = policy::require_user(caller)?.id;
    state.live.send(conn, user, Control::Remove(sub))
}

async fn subscription(
    state: &AppState,
    caller: &Caller,
    s: &Subscription,
) -> Result<SubStream, AppError> {
    Ok(match s.stream {
        Stream::Feed => mux::feed(s.sub, jobs::feed(state, caller)?),
        Stream::Job(id) => mux::job(s.sub, jobs::stream(state, caller, id, s.after, None).await?),
    })
}
