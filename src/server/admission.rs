//! Limits on what the server takes on at once: connections and in-flight requests.
//!
//! Both are named settings (`max_conns`, `max_reqs`) and are what
//! FCGI_GET_VALUES reports as `FCGI_MAX_CONNS` and `FCGI_MAX_REQS` (§4.1).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::protocol::management::Capabilities;

/// Counting limits shared by the accept loop and every connection.
#[derive(Debug)]
pub struct Admission {
    conns: Arc<Semaphore>,
    reqs: Arc<Semaphore>,
    caps: Capabilities,
}

impl Admission {
    /// Limits of `max_conns` connections and `max_reqs` requests in flight
    /// (both at least 1); `multiplexed` is reported as `FCGI_MPXS_CONNS`.
    pub fn new(max_conns: usize, max_reqs: usize, multiplexed: bool) -> Self {
        let max_conns = max_conns.clamp(1, Semaphore::MAX_PERMITS);
        let max_reqs = max_reqs.clamp(1, Semaphore::MAX_PERMITS);
        Admission {
            conns: Arc::new(Semaphore::new(max_conns)),
            reqs: Arc::new(Semaphore::new(max_reqs)),
            caps: Capabilities { max_conns, max_reqs, mpxs_conns: multiplexed },
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

    /// A request slot if one is free now.
    pub fn try_request(&self) -> Option<OwnedSemaphorePermit> {
        match self.reqs.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => None,
        }
    }

    /// Wait for a request slot.
    pub async fn request(self: Arc<Self>) -> OwnedSemaphorePermit {
        match self.reqs.clone().acquire_owned().await {
            Ok(permit) => permit,
            Err(_) => unreachable!("the request semaphore is never closed"),
        }
    }

    /// Requests in flight right now.
    pub fn requests_in_flight(&self) -> usize {
        self.caps.max_reqs - self.reqs.available_permits()
    }
}
