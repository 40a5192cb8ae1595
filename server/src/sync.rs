//! Locking that outlives a panic: a thread that panicked while holding a
//! lock leaves the data as it was, which every lock here can live with, so
//! a poisoned lock is taken as it is rather than failing every later user.

use std::sync::{Mutex, MutexGuard};

pub trait Locked<T> {
    /// The lock, poisoned or not.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T> Locked<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|e| e.into_inner())
    }
}
