//! Limits on what the server takes on at once: connections and in-flight requests.
//!
//! Both are named settings (`max_conns`, `max_in_flight`) and are what
//! FCGI_GET_VALUES reports as `FCGI_MAX_CONNS` and `FCGI_MAX_REQS` (§4.1).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::protocol::management::Capabilities;

/// Counting limits shared by the accept loop and every connection.
#[derive(Debug)]
pub struct Admission {
    conns: Arc<Semaphore>,
    reqs: Arc<Semaphore>,
    caps: Capabilities,
    /// Requests refused over the limit since the last log line (the
    /// status page's count is on the scoreboard).
    unlogged: AtomicU64,
    last_log: Mutex<Option<Instant>>,
}

/// At most one "over the limit" log line per this interval.
const REJECT_LOG_INTERVAL: Duration = Duration::from_secs(5);

impl Admission {
    /// Limits of `max_conns` connections and `max_in_flight` requests in flight
    /// (both at least 1); `multiplexed` is reported as `FCGI_MPXS_CONNS`.
    pub fn new(max_conns: usize, max_in_flight: usize, multiplexed: bool) -> Self {
        let max_conns = max_conns.clamp(1, Semaphore::MAX_PERMITS);
        let max_reqs = max_in_flight.clamp(1, Semaphore::MAX_PERMITS);
        Admission {
            conns: Arc::new(Semaphore::new(max_conns)),
            reqs: Arc::new(Semaphore::new(max_reqs)),
            caps: Capabilities { max_conns, max_reqs, mpxs_conns: multiplexed },
            unlogged: AtomicU64::new(0),
            last_log: Mutex::new(None),
        }
    }

    /// What FCGI_GET_VALUES answers.
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// Wait for a connection slot (the accept loop calls this before `accept`).
    pub async fn connection(&self) -> OwnedSemaphorePermit {
        // The semaphore is never closed, so acquiring cannot fail.
        match self.conns.clone().acquire_owned().await {
            Ok(permit) => permit,
            Err(_) => unreachable!("the connection semaphore is never closed"),
        }
    }

    /// A connection slot if one is free now.
    pub fn try_connection(&self) -> Option<OwnedSemaphorePermit> {
        self.conns.clone().try_acquire_owned().ok()
    }

    /// A request slot if one is free now.
    pub fn try_request(&self) -> Option<OwnedSemaphorePermit> {
        self.reqs.clone().try_acquire_owned().ok()
    }

    /// Count a request refused over the limit, and log it (at most one
    /// line per few seconds, with the count, so overload does not flood).
    pub fn note_rejected(&self, peer: &str, multiplexed: bool) {
        let unlogged = self.unlogged.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last_log.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < REJECT_LOG_INTERVAL) {
            return;
        }
        *last = Some(Instant::now());
        self.unlogged.store(0, Ordering::Relaxed);
        let answer = if multiplexed { "FCGI_OVERLOADED" } else { "503 Service Unavailable (Retry-After: 1)" };
        tracing::warn!(
            "{peer}: {} request(s) in flight, the max_in_flight limit: refused {unlogged} request(s) with {answer} since the last report; raise threads/max_in_flight or add workers",
            self.caps.max_reqs
        );
    }

    /// Requests in flight right now.
    pub fn requests_in_flight(&self) -> usize {
        self.caps.max_reqs - self.reqs.available_permits()
    }
}
