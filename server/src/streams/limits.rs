//! How many event streams one user, and one client address, may hold open
//! on this server: `[server].max_streams_per_user` and
//! `[server].max_streams_per_address`. A stream takes a [`Slot`] before it
//! starts and gives it back when it is dropped (the client left, the job
//! ended, the credential was revoked, shutdown). Past either limit the
//! request is refused with 429 and a sentence naming the limit, counted in
//! `/metrics` as `opsdeck_limit_refusals_total{limit="streams_per_user"}`
//! or `{limit="streams_per_address"}`.
//!
//! The counts are this server's: with several replicas each counts its own
//! (a proxy's stickiness or its own limits bound the sum).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use app::error::AppError;

use crate::metrics::{Limit, Refusals};
use crate::sync::Locked;

/// The open streams of this server, by user and by address.
#[derive(Clone)]
pub struct StreamSlots {
    inner: Arc<Inner>,
}

struct Inner {
    per_user: usize,
    per_address: usize,
    refusals: Arc<Refusals>,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    users: HashMap<i64, usize>,
    addresses: HashMap<String, usize>,
}

/// One open stream's place in the counts; given back on drop.
pub struct Slot {
    owner: Arc<Inner>,
    user: i64,
    address: Option<String>,
}

impl StreamSlots {
    pub fn new(per_user: usize, per_address: usize, refusals: Arc<Refusals>) -> StreamSlots {
        StreamSlots {
            inner: Arc::new(Inner {
                per_user,
                per_address,
                refusals,
                open: Mutex::default(),
            }),
        }
    }

    /// A slot for one more stream of `user` from `address`, or 429.
    pub fn acquire(&self, user: i64, address: Option<&str>) -> Result<Slot, AppError> {
        let inner = &self.inner;
        let mut open = inner.open.locked();
        let of_user = open.users.get(&user).copied().unwrap_or(0);
        if of_user >= inner.per_user {
            drop(open);
            inner.refusals.count(Limit::StreamsPerUser);
            return Err(AppError::LimitReached(format!(
                "you have {of_user} live streams open, the most one user may (server.max_streams_per_user): close some tabs or scripts that follow jobs, then try again"
            )));
        }
        let of_address = address.map_or(0, |a| open.addresses.get(a).copied().unwrap_or(0));
        if of_address >= inner.per_address {
            drop(open);
            inner.refusals.count(Limit::StreamsPerAddress);
            return Err(AppError::LimitReached(format!(
                "{of_address} live streams are open from your address, the most one address may (server.max_streams_per_address): close some, then try again"
            )));
        }
        *open.users.entry(user).or_default() += 1;
        if let Some(a) = address {
            *open.addresses.entry(a.to_string()).or_default() += 1;
        }
        Ok(Slot {
            owner: inner.clone(),
            user,
            address: address.map(str::to_string),
        })
    }

    /// Open streams of `user` (tests, diagnostics).
    pub fn of_user(&self, user: i64) -> usize {
        self.inner
            .open
            .locked()
            .users
            .get(&user)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.owner.open.locked();
        if let Some(n) = open.users.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                open.users.remove(&self.user);
            }
        }
        if let Some(a) = &self.address {
            if let Some(n) = open.addresses.get_mut(a) {
                *n -= 1;
                if *n == 0 {
                    open.addresses.remove(a);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_limit_refuses_one_more_and_counts_it_and_a_drop_frees_a_place() {
        let refusals = Arc::new(Refusals::default());
        let slots = StreamSlots::new(2, 3, refusals.clone());
        let a = slots.acquire(1, Some("10.0.0.1")).unwrap();
        let _b = slots.acquire(1, Some("10.0.0.1")).unwrap();
        let err = slots.acquire(1, Some("10.0.0.2")).err().unwrap();
        assert_eq!(err.status(), 429);
        assert!(
            err.to_string().contains("server.max_streams_per_user"),
            "{err}"
        );
        assert_eq!(refusals.get(Limit::StreamsPerUser), 1);

        let _c = slots.acquire(2, Some("10.0.0.1")).unwrap();
        let err = slots.acquire(3, Some("10.0.0.1")).err().unwrap();
        assert!(
            err.to_string().contains("server.max_streams_per_address"),
            "{err}"
        );
        assert_eq!(refusals.get(Limit::StreamsPerAddress), 1);

        drop(a);
        assert_eq!(slots.of_user(1), 1);
        assert!(slots.acquire(3, Some("10.0.0.1")).is_ok());
    }
}
