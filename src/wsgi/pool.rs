//! Python worker threads fed through [`crate::server::handoff`], started on
//! demand up to the `threads` setting and ended after [`IDLE_TIMEOUT`] idle
//! (one always stays). Each thread attaches to the interpreter once; it keeps
//! the GIL from one queued request to the next and releases it only to drive
//! the runtime (as the pool's leader, or while it waits for its connection)
//! or to sleep. Tokio tasks never touch the GIL: a thread leaves the runtime
//! before it runs Python.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use super::context::{AppContext, Running};
use super::environ::{self, RequestStreams};
use super::errors::ErrorStream;
use super::input::InputStream;
use super::response::{run_app, Responder};
use crate::server::driver::{self, Driver};
use crate::server::handoff::{self, Job, Receiver, Sender, Spare, Take};
use crate::server::request::{Output, Request, RequestLine, ResponseSink};
use crate::server::Handler;

/// How long a worker thread beyond the first stays idle before it exits:
/// php-fpm's `pm.process_idle_timeout` default (10 s), for threads.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// The [`Handler`] the server module calls: queue the request for a thread.
pub struct Dispatcher {
    tx: Sender<Request>,
}

impl Handler for Dispatcher {
    fn dispatch(&self, request: Request) {
        self.tx.send(request);
    }
}

/// The worker threads started so far (exited ones are joined as new ones start).
pub struct Pool {
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Pool {
    /// Start the first worker thread; the returned dispatcher feeds the pool,
    /// which grows to at most `threads` (see [`handoff`]); idle workers lead
    /// `driver`'s runtime. The spare must run on the serving thread
    /// ([`Spare::run`]); the workers exit once it closes the pool and the
    /// queue is empty.
    ///
    /// Errors: the first worker could not be started.
    pub fn start(
        ctx: Arc<AppContext>,
        threads: usize,
        driver: Arc<Driver>,
    ) -> std::io::Result<(Pool, Dispatcher, Spare<Request>)> {
        let handles: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let started = handles.clone();
        let runtime = driver.clone();
        let spawn: handoff::Spawn<Request> = Box::new(move |rx: Receiver<Request>| {
            let (ctx, driver) = (ctx.clone(), runtime.clone());
            let n = rx.id();
            let thread = std::thread::Builder::new()
                .name(format!("oxfcgi-worker-{n}"))
                .spawn(move || worker(ctx, rx, n, driver))?;
            let mut threads = started.lock().unwrap_or_else(|e| e.into_inner());
            let (done, running): (Vec<_>, Vec<_>) = threads.drain(..).partition(|t| t.is_finished());
            *threads = running;
            threads.push(thread);
            for t in done {
                let _ = t.join();
            }
            Ok(())
        });
        let (tx, spare) = handoff::channel(threads.max(1), IDLE_TIMEOUT, Some(driver), spawn)?;
        Ok((Pool { threads: handles }, Dispatcher { tx }, spare))
    }

    /// Wait for the workers to finish (call without holding the GIL, after
    /// the spare has closed the pool, so no thread starts any more), at most
    /// `timeout`. Returns how many were still busy.
    pub fn join(self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        let mut busy = 0;
        for thread in threads {
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if thread.is_finished() {
                let _ = thread.join();
            } else {
                busy += 1;
            }
        }
        busy
    }
}

/// Parked response bytes above which a worker writes them out before it runs
/// the next queued request (the connection's own high-water mark).
const FLUSH_PARKED_AT: usize = 256 * 1024;

fn worker(ctx: Arc<AppContext>, rx: Receiver<Request>, n: usize, runtime: Arc<Driver>) {
    // SAFETY: pthread_self has no preconditions.
    let thread_id = unsafe { libc::pthread_self() } as u64;
    // Waiting for its connection (input, room for output), it drives the runtime.
    driver::thread::set(Some(runtime.clone()));
    // A thread started for a waiting request gets it before attaching.
    let mut first = rx.first();
    Python::attach(|py| {
        // The last request's end, sent once this thread has taken its next
        // step (it may have become the leader, so nobody drives: see `send_end`).
        let mut end: Option<EndGuard> = None;
        loop {
            // A request already queued is taken with the GIL held; an idle
            // worker releases it to lead the runtime or to sleep.
            let job = match first.take() {
                Some(job) => job,
                None => match rx.try_take() {
                    Take::Job(job) => {
                        send_end(py, end.take());
                        // Responses parked while this thread runs queued
                        // requests wait for it to drive the runtime again;
                        // big ones are written out first, so that a batch
                        // never holds many of them (glibc hands such heap
                        // back to the kernel and faults it in again: 1 MB
                        // responses cost 440 -> 515 us each).
                        if runtime.parked_bytes() >= FLUSH_PARKED_AT {
                            py.detach(|| runtime.drive_once());
                        }
                        job
                    }
                    Take::Lead => {
                        send_end(py, end.take());
                        py.detach(|| rx.lead())
                    }
                    Take::Idle => {
                        send_end(py, end.take());
                        py.detach(|| rx.wait())
                    }
                },
            };
            let Job::Run(request) = job else { break };
            let id = request.request_id;
            match std::panic::catch_unwind(AssertUnwindSafe(|| handle(py, &ctx, request, n, thread_id))) {
                Ok(last) => end = last,
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned());
                    tracing::error!("internal error while serving request {id}: {}", what.unwrap_or_default());
                }
            }
        }
        send_end(py, end.take());
        environ::forget_thread_caches(py);
    });
    driver::thread::set(None);
}

/// Send a request's end: parked in the driver's outbox while nobody drives
/// the runtime (the next thread to drive sends it, without waking anyone);
/// else at once, without releasing the GIL when the connection has room, or
/// releasing it while the end waits.
fn send_end(py: Python<'_>, end: Option<EndGuard>) {
    let Some(mut end) = end else { return };
    let Some(driver) = driver::thread::current() else {
        if let Some(waiting) = end.try_finish() {
            py.detach(move || drop(waiting));
        }
        return;
    };
    let kind = end.end();
    end.sent = true;
    for (sink, kind) in driver.defer(end.sink.clone(), kind) {
        if let Err(Ok(kind)) = sink.try_send(kind) {
            py.detach(|| {
                let _ = sink.blocking_send(kind);
            });
        }
    }
}

/// Sends FCGI_END_REQUEST when dropped, so that no path (not even a panic)
/// leaves a request without one.
struct EndGuard {
    sink: ResponseSink,
    app_status: u32,
    /// The body's last bytes, to go out with the end.
    tail: Option<bytes::Bytes>,
    /// The end is queued (or the connection is gone): nothing left to send.
    sent: bool,
}

impl EndGuard {
    fn end(&mut self) -> Output {
        let app_status = self.app_status;
        match self.tail.take() {
            Some(data) => Output::Last { data, app_status },
            None => Output::End { app_status },
        }
    }

    /// Queue the end without waiting. When the connection's queue is full the
    /// guard comes back, to be dropped (which waits for room) without the GIL.
    fn try_finish(mut self) -> Option<EndGuard> {
        let end = self.end();
        match self.sink.try_send(end) {
            Ok(()) | Err(Err(_)) => {
                self.sent = true;
                None
            }
            Err(Ok(kind)) => {
                if let Output::Last { data, .. } = kind {
                    self.tail = Some(data);
                }
                Some(self)
            }
        }
    }
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        if self.sent {
            return;
        }
        let end = self.end();
        if let Err(Ok(kind)) = self.sink.try_send(end) {
            let _ = self.sink.blocking_send(kind);
        }
    }
}

/// "request 1 (GET /path)", for log lines; formatted only when used.
pub struct Label {
    id: u16,
    line: RequestLine,
}

impl Label {
    /// SCRIPT_NAME and PATH_INFO, as the web server sent them.
    fn route(&self) -> (Option<bytes::Bytes>, Option<bytes::Bytes>) {
        (self.line.script_name.clone(), self.line.path_info.clone())
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "request {} ({} {})", self.id, self.line.method_text(), self.line.target())
    }
}

/// Marks a request running (scoreboard, running table) until dropped.
struct Activity<'a, 'py> {
    py: Python<'py>,
    ctx: &'a AppContext,
    n: usize,
    started: Instant,
}

impl<'a, 'py> Activity<'a, 'py> {
    fn start(py: Python<'py>, ctx: &'a AppContext, n: usize, running: impl FnOnce(Instant) -> Running) -> Self {
        let started = Instant::now();
        ctx.row.board.request_started(ctx.row.index);
        // The running table is read by the slowlog/terminate watchdog only.
        if ctx.watched {
            if let Some(cell) = ctx.running.get(n) {
                *cell.lock().unwrap_or_else(|e| e.into_inner()) = Some(running(started));
            }
        }
        Activity { py, ctx, n, started }
    }
}

impl Drop for Activity<'_, '_> {
    fn drop(&mut self) {
        if self.ctx.watched {
            self.ctx.finished(self.py, self.n);
        }
        let row = &self.ctx.row;
        row.board.request_finished(row.index);
        if self.ctx.slow_after.is_some_and(|limit| self.started.elapsed() > limit) {
            row.counters().slow.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Run one request. Returns its end (FCGI_END_REQUEST, with the body's last
/// bytes), not yet sent: the caller sends it. None when it never started.
fn handle(py: Python<'_>, ctx: &AppContext, request: Request, n: usize, thread_id: u64) -> Option<EndGuard> {
    let Request { request_id, role, params, line, stdin, data, sink, control, permit } = request;
    if !control.start() {
        // Aborted while queued: the connection has answered already.
        return None;
    }
    let mut end = EndGuard { sink: sink.clone(), app_status: 1, tail: None, sent: false };
    let what = Label { id: request_id, line };
    let activity = Activity::start(py, ctx, n, |started| Running {
        started,
        what: what.to_string(),
        thread_id,
        sink: sink.clone(),
        control: control.clone(),
    });
    let errors = match Bound::new(py, ErrorStream::new(sink.clone())) {
        Ok(errors) => errors,
        Err(e) => {
            e.print(py);
            return Some(end);
        }
    };
    let responder = Arc::new(Responder::new(sink, control, what.route()));
    let streams = (|| {
        Ok::<_, PyErr>(RequestStreams {
            input: Bound::new(py, InputStream::new(stdin))?,
            data: data.map(|d| Bound::new(py, InputStream::new(d))).transpose()?,
            errors: &errors,
            role,
        })
    })();
    let environ = streams.and_then(|streams| environ::build(py, ctx, params, streams));
    end.app_status = match environ {
        Ok(environ) => run_app(py, ctx.app.bind(py), environ, responder.clone(), &errors, ctx.debug, &what),
        Err(e) => {
            e.print(py);
            1
        }
    };
    errors.get().flush_pending(py);
    end.tail = responder.take_tail();
    drop(activity);
    // Free the in-flight slot first: once END_REQUEST is out, the web server
    // may send the next request at once and must find the slot free.
    drop(permit);
    Some(end)
}
