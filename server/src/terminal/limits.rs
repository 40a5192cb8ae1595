//! What a browser may send on a terminal socket: messages up to
//! `[terminal].max_frame_bytes` (a larger one closes the socket with 1009,
//! "message too big"), at most `[terminal].max_frames_per_second` on
//! average with a burst of one second's worth (faster closes it with 1008,
//! "policy violation"). The shell itself is not touched: it waits for its
//! user to reconnect, as after any dropped socket. Each refusal is counted
//! in `/metrics`.
//!
//! N.B.: the size limit is enforced by tungstenite while it reads
//! (`WebSocketUpgrade::max_message_size` and `max_frame_size`), so an
//! oversized message is refused from its header, before its payload is
//! buffered; [`is_too_big`] recognises that refusal.

use std::time::{Duration, Instant};

use axum::extract::ws::close_code;
use tokio_tungstenite::tungstenite;

/// 1009: the message was too big to process.
pub const TOO_BIG: u16 = close_code::SIZE;
/// 1008: the peer broke the policy (here: the input rate).
pub const POLICY: u16 = close_code::POLICY;

/// A token bucket of input frames: `per_second` tokens a second, holding at
/// most `per_second` (one second's burst).
#[derive(Debug)]
pub struct InputRate {
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl InputRate {
    pub fn new(per_second: u32, now: Instant) -> InputRate {
        let per_second = f64::from(per_second.max(1));
        InputRate {
            per_second,
            tokens: per_second,
            last: now,
        }
    }

    /// Whether one more frame, arriving at `now`, is within the rate.
    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.per_second);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Whether a socket error is tungstenite refusing a message over the size
/// limit.
pub fn is_too_big(e: &axum::Error) -> bool {
    // axum::Error's source is the error it wraps.
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<tungstenite::Error>())
        .is_some_and(|t| matches!(t, tungstenite::Error::Capacity(_)))
}

/// How long the server waits for the browser's reply to its close frame
/// before it drops the connection.
pub const CLOSE_WAIT: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_one_second_passes_and_then_the_rate_holds() {
        let t0 = Instant::now();
        let mut rate = InputRate::new(10, t0);
        assert!((0..10).all(|_| rate.allow(t0)), "a second's worth at once");
        assert!(!rate.allow(t0), "the eleventh at once is refused");
        // A tenth of a second earns one more frame.
        assert!(rate.allow(t0 + Duration::from_millis(100)));
        assert!(!rate.allow(t0 + Duration::from_millis(100)));
        // Idle time never saves up more than one second's burst.
        let later = t0 + Duration::from_secs(60);
        assert!((0..10).all(|_| rate.allow(later)));
        assert!(!rate.allow(later));
    }

    #[test]
    fn typing_at_a_steady_rate_below_the_limit_is_never_refused() {
        let t0 = Instant::now();
        let mut rate = InputRate::new(200, t0);
        // 150 frames a second for a minute.
        for i in 0..9_000u64 {
            let at = t0 + Duration::from_micros(i * 1_000_000 / 150);
            assert!(rate.allow(at), "frame {i} refused");
        }
    }
}
