//! Between the engine (tokio, no GIL) and the event loop (asyncio, its own
//! thread): requests and finished waits cross through one queue and one
//! eventfd, and nobody takes the GIL on the engine's side.
//!
//! - A connection hands a request over with [`AsgiDispatcher::dispatch`]: it is
//!   queued, and the eventfd is written only when the queue was empty and the
//!   loop not already woken (one wake-up for a burst of requests).
//! - A `receive()` or `send()` that has to wait (no body yet, the connection's
//!   output queue full) becomes an [`Op`]: a Rust future registered here with
//!   the asyncio future the application awaits. Its waker, called by whoever
//!   makes progress possible (usually the engine's thread), queues the op's id
//!   and writes the eventfd the same way.
//! - The loop watches the eventfd (`loop.add_reader`) and calls
//!   [`Bridge::drain`]: with the GIL, it polls the woken ops, resolves their
//!   asyncio futures, and returns the new requests for the loop to start.

use std::collections::HashMap;
use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::PyList;

use super::handle::RequestHandle;
use crate::server::request::Request;
use crate::server::{Handler, ScoreboardRow};

/// What a finished wait gives the application: a Python value, or an
/// exception to raise from the `await`.
pub type OpResult = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

/// A wait in progress: polled on the loop's thread until it completes.
pub type OpFuture = Pin<Box<dyn Future<Output = OpResult> + Send>>;

struct Pending {
    future: OpFuture,
    /// The asyncio future the application awaits.
    waiter: Py<PyAny>,
}

#[derive(Default)]
struct Queue {
    requests: Vec<Request>,
    ready: Vec<u64>,
    /// The eventfd holds a wake-up the loop has not read yet.
    signalled: bool,
    /// The engine stopped: no more requests.
    closed: bool,
}

pub struct BridgeInner {
    event: OwnedFd,
    queue: Mutex<Queue>,
    pending: Mutex<HashMap<u64, Pending>>,
    next_id: AtomicU64,
    /// Set by the server that serves through this bridge.
    serving: Mutex<Option<Serving>>,
}

/// What the requests of the current `serve()` share.
#[derive(Clone)]
pub struct Serving {
    pub row: ScoreboardRow,
    /// The `script_name` setting.
    pub script_name: Option<Vec<u8>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl BridgeInner {
    /// Attach to a `serve()`: its scoreboard row and `script_name`; reopens
    /// the bridge for requests.
    pub fn attach(&self, serving: Serving) {
        *lock(&self.serving) = Some(serving);
        lock(&self.queue).closed = false;
    }

    pub fn row(&self) -> Option<ScoreboardRow> {
        lock(&self.serving).as_ref().map(|s| s.row.clone())
    }

    pub fn script_name(&self) -> Option<Vec<u8>> {
        lock(&self.serving).as_ref().and_then(|s| s.script_name.clone())
    }

    fn signal(&self, mut queue: MutexGuard<'_, Queue>) {
        if queue.signalled {
            return;
        }
        queue.signalled = true;
        drop(queue);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our own eventfd. EAGAIN
        // (counter full) cannot lose a wake-up: the loop has one pending then.
        unsafe { libc::write(self.event.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    fn push_request(&self, request: Request) {
        let mut queue = lock(&self.queue);
        if queue.closed {
            return; // dropped: the connection answers it as aborted
        }
        queue.requests.push(request);
        self.signal(queue);
    }

    fn wake(&self, id: u64) {
        let mut queue = lock(&self.queue);
        queue.ready.push(id);
        self.signal(queue);
    }

    /// Poll `future` once on behalf of op `id`; `Ready` if it completed.
    fn poll(self: &Arc<Self>, id: u64, future: &mut OpFuture) -> Poll<OpResult> {
        let waker = Waker::from(Arc::new(OpWaker { bridge: Arc::downgrade(self), id }));
        future.as_mut().poll(&mut Context::from_waker(&waker))
    }

    /// Start a wait: poll it once; if it is not done, register it with a new
    /// asyncio future of `event_loop` and return that future.
    pub fn begin(
        self: &Arc<Self>,
        py: Python<'_>,
        event_loop: &Bound<'_, PyAny>,
        mut future: OpFuture,
    ) -> PyResult<Result<Py<PyAny>, Py<PyAny>>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        match self.poll(id, &mut future) {
            Poll::Ready(result) => Ok(Ok(result(py)?)),
            Poll::Pending => {
                let waiter = event_loop.call_method0("create_future")?.unbind();
                lock(&self.pending).insert(id, Pending { future, waiter: waiter.clone_ref(py) });
                Ok(Err(waiter))
            }
        }
    }
}

struct OpWaker {
    bridge: std::sync::Weak<BridgeInner>,
    id: u64,
}

impl Wake for OpWaker {
    fn wake(self: Arc<Self>) {
        if let Some(bridge) = self.bridge.upgrade() {
            bridge.wake(self.id);
        }
    }
}

/// The bridge as Python sees it: `fileno()` for `loop.add_reader`, and
/// `drain()` for the reader callback.
#[pyclass(frozen, module = "oxfcgi._oxfcgi", name = "AsgiBridge")]
pub struct Bridge {
    pub inner: Arc<BridgeInner>,
    /// The event loop the requests run on.
    event_loop: Py<PyAny>,
}

#[pymethods]
impl Bridge {
    /// `AsgiBridge(loop)`: `loop` is the asyncio event loop that will serve the
    /// requests (its `create_future()` makes the futures waits resolve).
    /// Raises `OSError` if no eventfd can be made.
    #[new]
    fn new(event_loop: Py<PyAny>) -> PyResult<Self> {
        // SAFETY: eventfd has no memory preconditions; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(PyOSError::new_err(format!("eventfd: {}", std::io::Error::last_os_error())));
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let event = unsafe { OwnedFd::from_raw_fd(fd) };
        let inner = BridgeInner {
            event,
            queue: Mutex::new(Queue::default()),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            serving: Mutex::new(None),
        };
        Ok(Bridge { inner: Arc::new(inner), event_loop })
    }

    /// The eventfd the loop watches (readable when `drain()` has work).
    fn fileno(&self) -> i32 {
        self.inner.event.as_raw_fd()
    }

    /// Resolve the waits that can make progress and return the requests that
    /// arrived (a list of `RequestHandle`), in order. Called on the loop's
    /// thread when `fileno()` is readable; cheap when there is nothing.
    fn drain<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let mut count = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a local buffer from our eventfd.
        unsafe { libc::read(self.inner.event.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
        let (requests, ready) = {
            let mut queue = lock(&self.inner.queue);
            queue.signalled = false;
            (std::mem::take(&mut queue.requests), std::mem::take(&mut queue.ready))
        };
        for id in ready {
            let Some(mut pending) = lock(&self.inner.pending).remove(&id) else { continue };
            match self.inner.poll(id, &mut pending.future) {
                Poll::Pending => {
                    lock(&self.inner.pending).insert(id, pending);
                }
                Poll::Ready(result) => resolve(py, pending.waiter.bind(py), result)?,
            }
        }
        let handles = PyList::empty(py);
        for request in requests {
            let handle = RequestHandle::new(request, self.inner.clone(), self.event_loop.clone_ref(py));
            // Aborted while queued: the connection has answered it already.
            if handle.start() {
                handles.append(Bound::new(py, handle)?)?;
            }
        }
        Ok(handles)
    }

    /// Waits registered and not finished (for tests and the status of a stop).
    fn pending(&self) -> usize {
        lock(&self.inner.pending).len()
    }
}

/// Set the asyncio future's result (or exception), unless the application
/// stopped waiting for it (cancelled).
fn resolve(py: Python<'_>, waiter: &Bound<'_, PyAny>, result: OpResult) -> PyResult<()> {
    if waiter.call_method0("done")?.is_truthy()? {
        return Ok(());
    }
    match result(py) {
        Ok(value) => waiter.call_method1("set_result", (value,))?,
        Err(e) => waiter.call_method1("set_exception", (e.value(py),))?,
    };
    Ok(())
}

/// The [`Handler`] the engine calls for an ASGI application.
pub struct AsgiDispatcher {
    pub bridge: Arc<BridgeInner>,
}

impl Handler for AsgiDispatcher {
    fn dispatch(&self, request: Request) {
        self.bridge.push_request(request);
    }
}

impl Drop for AsgiDispatcher {
    fn drop(&mut self) {
        // The engine is gone: requests it has not handed over never will be.
        let mut queue = lock(&self.bridge.queue);
        queue.closed = true;
    }
}
