//! Locking a mutex that a panicking thread may have poisoned. Status, event and log buffers are
//! plain data that stay usable after a panic elsewhere, so every such lock goes through here
//! rather than unwrapping.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, recovering the data if a panicking thread poisoned it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
