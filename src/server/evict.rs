//! Making room at `max_conns`: the connections that hold no request (idle
//! kept-open ones, and ones whose request head has not arrived whole) can be
//! closed, the one waiting longest first, so that a new connection is served
//! instead of queued behind them. A connection that carries a request the
//! application is running is never closed for this.
//!
//! Each connection keeps its state in an atomic (no lock per request); the
//! registry is locked only when a connection opens and when room is made.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

/// One connection's entry.
pub struct Evictable {
    /// Milliseconds since the registry's epoch when the connection started
    /// holding no request, plus one; 0 while it holds one.
    idle_since: AtomicU64,
    /// Cancelled to ask the connection to close.
    pub token: CancellationToken,
}

impl Evictable {
    /// Whether the connection holds no request, and since when.
    pub fn set_idle(&self, registry: &Registry, since: Option<Instant>) {
        let value = since.map_or(0, |at| registry.millis(at) + 1);
        self.idle_since.store(value, Ordering::Relaxed);
    }
}

/// The open connections of one server.
pub struct Registry {
    epoch: Instant,
    entries: Mutex<Entries>,
}

struct Entries {
    list: Vec<Weak<Evictable>>,
    /// Prune dead entries when the list grows past this (amortized O(1)).
    prune_at: usize,
}

impl Default for Registry {
    fn default() -> Self {
        Registry { epoch: Instant::now(), entries: Mutex::new(Entries { list: Vec::new(), prune_at: 64 }) }
    }
}

impl Registry {
    fn millis(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// A new connection, holding no request since now.
    pub fn register(&self) -> Arc<Evictable> {
        let entry = Arc::new(Evictable { idle_since: AtomicU64::new(0), token: CancellationToken::new() });
        entry.set_idle(self, Some(Instant::now()));
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.list.len() >= entries.prune_at {
            entries.list.retain(|w| w.strong_count() > 0);
            entries.prune_at = (entries.list.len() * 2).max(64);
        }
        entries.list.push(Arc::downgrade(&entry));
        entry
    }

    /// Ask the connection that has held no request longest to close.
    /// Returns whether there was one.
    pub fn evict_oldest(&self) -> bool {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let oldest = entries
            .list
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|e| !e.token.is_cancelled())
            .filter_map(|e| {
                let since = e.idle_since.load(Ordering::Relaxed);
                (since != 0).then_some((since, e))
            })
            .min_by_key(|(since, _)| *since);
        match oldest {
            Some((_, entry)) => {
                entry.token.cancel();
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_oldest_idle_connection_goes_first_and_busy_ones_never() {
        let registry = Registry::default();
        let now = Instant::now();
        let busy = registry.register();
        busy.set_idle(&registry, None);
        let newer = registry.register();
        newer.set_idle(&registry, Some(now + Duration::from_millis(50)));
        let older = registry.register();
        older.set_idle(&registry, Some(now + Duration::from_millis(10)));
        assert!(registry.evict_oldest());
        assert!(older.token.is_cancelled() && !newer.token.is_cancelled());
        assert!(registry.evict_oldest());
        assert!(newer.token.is_cancelled());
        assert!(!registry.evict_oldest(), "only a busy connection is left");
        assert!(!busy.token.is_cancelled());
        drop(older);
        drop(newer);
        for _ in 0..200 {
            drop(registry.register());
        }
        assert!(registry.entries.lock().unwrap().list.len() < 150, "dead entries are pruned");
    }
}
