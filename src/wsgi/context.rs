//! What every request of one server shares, and the table of requests its
//! threads are running (read by the slowlog/terminate watchdog).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::exception::RequestTerminated;
use crate::server::request::{Output, RequestControl, ResponseSink};
use crate::server::ScoreboardRow;

/// What every request of one server shares.
pub struct AppContext {
    pub app: Py<PyAny>,
    /// The `environ` setting: merged over every request's params (flup).
    pub base_environ: Option<Py<PyDict>>,
    pub multithread: bool,
    pub multiprocess: bool,
    /// Show tracebacks in 500 pages.
    pub debug: bool,
    /// The mount prefix (`script_name` setting), see [`crate::cgi::sanitize`].
    pub script_name: Option<Vec<u8>>,
    /// Pool-wide counters and this process's row.
    pub row: ScoreboardRow,
    /// Requests running longer count as slow (`request_slowlog_timeout`).
    pub slow_after: Option<Duration>,
    /// Whether anything reads [`AppContext::running`] (a slowlog or
    /// terminate timeout is set); otherwise it is not kept up to date.
    pub watched: bool,
    /// Whether `request_terminate_timeout` is set.
    pub terminates: bool,
    /// What each worker thread is running, by thread number.
    pub running: Vec<Mutex<Option<Running>>>,
}

/// A request a worker thread is running.
#[derive(Clone)]
pub struct Running {
    pub started: Instant,
    /// "request 1 (GET /path)".
    pub what: String,
    /// `threading.get_ident()` of the thread (pthread_self).
    pub thread_id: u64,
    /// Where its output goes, to answer it from outside its thread.
    pub sink: ResponseSink,
    pub control: Arc<RequestControl>,
}

impl AppContext {
    /// The running requests: `(seconds, description, thread_id)`.
    pub fn running_requests(&self) -> Vec<(f64, String, u64)> {
        self.running
            .iter()
            .filter_map(|cell| cell.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .map(|r| (r.started.elapsed().as_secs_f64(), r.what, r.thread_id))
            .collect()
    }

    /// End the request thread `thread_id` runs if it has run for at least
    /// `older_than`, as php-fpm's `request_terminate_timeout` does: the
    /// connection answers it with the engine's 504 page, its writes fail from
    /// now on, and `RequestTerminated` is raised in the thread at its next
    /// Python instruction. Returns whether such a request was found.
    ///
    /// The exception is set while holding the thread's running-table cell,
    /// and [`AppContext::finished`] clears any still pending under the same
    /// lock, so it can never reach the thread's next request.
    pub fn terminate(&self, py: Python<'_>, thread_id: u64, older_than: Duration) -> bool {
        let mut sink = None;
        for cell in &self.running {
            let guard = cell.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(r) = guard.as_ref().filter(|r| r.thread_id == thread_id && r.started.elapsed() >= older_than) {
                r.control.abort();
                let exc = py.get_type::<RequestTerminated>();
                // SAFETY: called with the GIL held; the id is a live thread's
                // (its cell is locked, so its request cannot end meanwhile).
                unsafe { ffi::PyThreadState_SetAsyncExc(thread_id as std::os::raw::c_long, exc.as_ptr()) };
                sink = Some(r.sink.clone());
                break;
            }
        }
        let Some(sink) = sink else { return false };
        let _ = py.detach(|| sink.blocking_send(Output::Terminated));
        true
    }

    /// Thread number `n` finished its request: forget it, and (when
    /// `request_terminate_timeout` is on) drop an exception still pending
    /// for the thread. Called with the GIL held.
    pub fn finished(&self, _py: Python<'_>, n: usize) {
        let Some(cell) = self.running.get(n) else { return };
        let mut guard = cell.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = guard.take() {
            if self.terminates {
                // SAFETY: GIL held; NULL clears a pending asynchronous exception.
                unsafe { ffi::PyThreadState_SetAsyncExc(r.thread_id as std::os::raw::c_long, std::ptr::null_mut()) };
            }
        }
    }
}
