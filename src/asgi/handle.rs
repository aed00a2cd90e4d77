//! One ASGI request on the loop's side: its scope, `receive`, `send`, and
//! the end of it. The Python runner (`oxfcgi/_asgi.py`) calls
//! `app(handle.scope(state), handle.receive, handle.send)` in a task and then
//! `await handle.finish(traceback)`.
//!
//! `receive()` and `send()` return awaitables that complete at once when they
//! can (a body chunk already queued, room in the connection's output queue)
//! and otherwise an asyncio future resolved through the [bridge](super::bridge).
//! Nothing here blocks the loop's thread.

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use pyo3::{create_exception, intern};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::bridge::{BridgeInner, OpFuture, OpResult};
use crate::server::request::{InputError, InputQueue, Output, Request, RequestControl, ResponseSink};
use crate::wsgi::errors::ErrorStream;
use crate::wsgi::log::LEVEL_ERROR;

create_exception!(
    _oxfcgi,
    ClientDisconnected,
    PyOSError,
    "The web server closed the request (FCGI_ABORT_REQUEST, or its connection): `send()` after that raises this (ASGI HTTP spec: an OSError subclass)."
);

/// Body chunks taken from the input queue in one `receive()` at most (bytes):
/// chunks already queued are joined up to this, so a 64 KiB read loop in the
/// app does not pay one event per FastCGI record.
const RECEIVE_COALESCE: usize = 256 * 1024;

/// Bytes read from a file per FCGI_STDOUT message (`http.response.pathsend`).
const FILE_CHUNK: usize = 64 * 1024;

/// The request body between the input queue and `receive()`. A waiting
/// `receive()` moves what it reads into `ready` (under the queue's async
/// lock) and its event takes it out; when the app cancelled that `receive()`,
/// the bytes stay for the next one, in order.
#[derive(Default)]
struct Input {
    /// Read from the queue, not yet given to the app.
    ready: BytesMut,
    /// The empty FCGI_STDIN record was read from the queue.
    ended: bool,
    /// ... and the `more_body: False` event for it was given to the app.
    end_reported: bool,
    /// The request was aborted while a `receive()` waited.
    aborted: bool,
}

impl Input {
    /// The event for what is ready, if anything is: `(body, more_body)`.
    fn take_event(&mut self) -> Option<(Bytes, bool)> {
        if !self.ready.is_empty() || (self.ended && !self.end_reported) {
            self.end_reported = self.ended;
            return Some((self.ready.split().freeze(), !self.ended));
        }
        None
    }
}

#[derive(Default)]
struct Response {
    /// The CGI header block, held until the first body bytes (one write).
    head: Option<Vec<u8>>,
    started: bool,
    /// The app sent its last message (or the request was ended for it).
    finished: bool,
    /// The message that ends the request (`Output::Last`/`End`/`Terminated`)
    /// went to the connection; until then `finish()` must send one.
    end_sent: bool,
}

/// An ASGI request in progress (made by `AsgiBridge.drain()`).
#[pyclass(frozen, module = "oxfcgi._oxfcgi", name = "RequestHandle")]
pub struct RequestHandle {
    request_id: u16,
    bridge: Arc<BridgeInner>,
    event_loop: Py<PyAny>,
    sink: ResponseSink,
    control: Arc<RequestControl>,
    params: Mutex<Option<Vec<(Bytes, Bytes)>>>,
    input: Arc<Mutex<Input>>,
    /// The body's queue; a waiting `receive()` holds its lock while it reads.
    queue: Arc<tokio::sync::Mutex<InputQueue>>,
    response: Mutex<Response>,
    permit: Mutex<Option<OwnedSemaphorePermit>>,
    errors: ErrorStream,
    /// The request counts as running on the scoreboard.
    counted: Mutex<bool>,
    /// Cancelled by `finish()`/`terminate()`: a `receive()` waiting for a
    /// disconnect after the body then gets it, so its wait ends.
    over: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An awaitable that is already done: awaiting it returns its value without
/// suspending (cheaper than a completed asyncio future).
#[pyclass(frozen, module = "oxfcgi._oxfcgi", name = "Done")]
pub struct Done {
    value: Mutex<Option<Py<PyAny>>>,
}

#[pymethods]
impl Done {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let value = lock(&self.value).take().unwrap_or_else(|| py.None());
        Err(pyo3::exceptions::PyStopIteration::new_err((value,)))
    }
}

fn done(py: Python<'_>, value: Py<PyAny>) -> PyResult<Py<PyAny>> {
    Ok(Bound::new(py, Done { value: Mutex::new(Some(value)) })?.into_any().unbind())
}

fn disconnect(py: Python<'_>) -> PyResult<Py<PyAny>> {
    let event = PyDict::new(py);
    event.set_item(intern!(py, "type"), intern!(py, "http.disconnect"))?;
    Ok(event.into_any().unbind())
}

fn request_event(py: Python<'_>, body: &[u8], more: bool) -> PyResult<Py<PyAny>> {
    let event = PyDict::new(py);
    event.set_item(intern!(py, "type"), intern!(py, "http.request"))?;
    event.set_item(intern!(py, "body"), PyBytes::new(py, body))?;
    event.set_item(intern!(py, "more_body"), more)?;
    Ok(event.into_any().unbind())
}

/// The standard reason phrase for `code` (RFC 9110), or `Unknown`.
fn reason(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        101 => "Switching Protocols",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        423 => "Locked",
        424 => "Failed Dependency",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

fn bytes_of(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<u8>> {
    if let Ok(b) = value.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    if let Ok(b) = value.cast::<pyo3::types::PyByteArray>() {
        return Ok(b.to_vec());
    }
    if let Ok(m) = value.call_method0("tobytes") {
        return m.extract::<Vec<u8>>();
    }
    Err(PyTypeError::new_err(format!("{what} must be bytes, not {}", value.get_type().name()?)))
}

/// The CGI header block for `http.response.start`.
fn head(message: &Bound<'_, PyDict>) -> PyResult<Vec<u8>> {
    let py = message.py();
    let status: u16 = match message.get_item(intern!(py, "status"))? {
        Some(s) => s.extract().map_err(|_| PyTypeError::new_err("http.response.start: status must be an int"))?,
        None => return Err(PyValueError::new_err("http.response.start needs a status")),
    };
    if !(100..=999).contains(&status) {
        return Err(PyValueError::new_err(format!("http.response.start: status {status} is not a 3-digit code")));
    }
    if message.get_item(intern!(py, "trailers"))?.is_some_and(|t| t.is_truthy().unwrap_or(false)) {
        return Err(PyRuntimeError::new_err(
            "http.response.start: trailers=True, but FastCGI cannot carry trailers (the server does not \
             offer the http.response.trailers extension)",
        ));
    }
    let mut block = format!("Status: {status} {}\r\n", reason(status)).into_bytes();
    if let Some(headers) = message.get_item(intern!(py, "headers"))? {
        for pair in headers.try_iter()? {
            let pair = pair?;
            let mut items = pair.try_iter()?;
            let (Some(name), Some(value), None) = (items.next(), items.next(), items.next()) else {
                return Err(PyValueError::new_err("http.response.start: each header must be a [name, value] pair"));
            };
            let name = bytes_of(&name?, "a header name")?;
            let value = bytes_of(&value?, "a header value")?;
            crate::wsgi::response::check_header(&name, &value)?;
            if name.eq_ignore_ascii_case(b"status") {
                return Err(PyValueError::new_err("http.response.start: a 'status' header is not allowed"));
            }
            block.extend_from_slice(&name);
            block.extend_from_slice(b": ");
            block.extend_from_slice(&value);
            block.extend_from_slice(b"\r\n");
        }
    }
    block.extend_from_slice(b"\r\n");
    Ok(block)
}

impl RequestHandle {
    pub fn new(request: Request, bridge: Arc<BridgeInner>, event_loop: Py<PyAny>) -> Self {
        let Request { request_id, params, stdin, sink, control, permit, .. } = request;
        RequestHandle {
            request_id,
            bridge,
            event_loop,
            errors: ErrorStream::new(sink.clone()),
            sink,
            control,
            params: Mutex::new(Some(params)),
            input: Arc::new(Mutex::new(Input::default())),
            queue: Arc::new(tokio::sync::Mutex::new(stdin)),
            response: Mutex::new(Response::default()),
            permit: Mutex::new(Some(permit)),
            counted: Mutex::new(false),
            over: CancellationToken::new(),
        }
    }

    /// Hand `kind` to the connection: at once when there is room, else a wait.
    fn output(&self, py: Python<'_>, kind: Output) -> PyResult<Py<PyAny>> {
        match self.sink.try_send(kind) {
            Ok(()) => done(py, py.None()),
            Err(Err(_)) => Err(ClientDisconnected::new_err("the web server closed the connection")),
            Err(Ok(kind)) => {
                let sink = self.sink.clone();
                let future: OpFuture = Box::pin(async move {
                    let sent = sink.send(kind).await;
                    Box::new(move |py: Python<'_>| match sent {
                        Ok(()) => Ok(py.None()),
                        Err(_) => Err(ClientDisconnected::new_err("the web server closed the connection")),
                    }) as OpResult
                });
                self.wait(py, future)
            }
        }
    }

    /// Register `future` with the bridge; the awaitable for it.
    fn wait(&self, py: Python<'_>, future: OpFuture) -> PyResult<Py<PyAny>> {
        match self.bridge.begin(py, self.event_loop.bind(py), future)? {
            Ok(value) => done(py, value),
            Err(waiter) => Ok(waiter),
        }
    }

    fn release(&self) {
        lock(&self.permit).take();
        if std::mem::take(&mut *lock(&self.counted)) {
            if let Some(row) = self.bridge.row() {
                row.board.request_finished(row.index);
            }
        }
    }

    /// Mark the request running; false when it was aborted while queued (the
    /// connection has answered it: do not run it).
    pub fn start(&self) -> bool {
        if !self.control.start() {
            return false;
        }
        if let Some(row) = self.bridge.row() {
            row.board.request_started(row.index);
            *lock(&self.counted) = true;
        }
        true
    }
}

#[pymethods]
impl RequestHandle {
    /// The FastCGI request id (for log lines).
    #[getter]
    fn request_id(&self) -> u16 {
        self.request_id
    }

    /// The connection scope (see `oxfcgi._oxfcgi` scope docs): built once;
    /// `state` is the lifespan state dict (shallow-copied in) or None.
    /// `RuntimeError` when called twice.
    #[pyo3(signature = (state=None))]
    fn scope<'py>(&self, py: Python<'py>, state: Option<&Bound<'py, PyDict>>) -> PyResult<Bound<'py, PyDict>> {
        let params = lock(&self.params).take().ok_or_else(|| PyRuntimeError::new_err("the scope was already built"))?;
        let script_name = self.bridge.script_name();
        let built = super::scope::build(py, params, script_name.as_deref(), state)?;
        crate::wsgi::environ::log_warnings(py, built.warnings);
        Ok(built.scope)
    }

    /// ASGI `receive()`: the next `http.request` event (the body in chunks as
    /// the web server sends them, `more_body` False on the last), then, once
    /// the body is complete or the response finished, `http.disconnect` when
    /// the web server aborts the request or closes the connection.
    fn receive(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if self.control.is_aborted() || lock(&self.response).finished {
            return done(py, disconnect(py)?);
        }
        {
            let mut input = lock(&self.input);
            if input.end_reported && input.ready.is_empty() {
                drop(input);
                // After the body: wait for an abort, or the end of the request.
                let (control, over) = (self.control.clone(), self.over.clone());
                let future: OpFuture = Box::pin(async move {
                    tokio::select! {
                        _ = control.until_aborted() => {},
                        _ = over.cancelled() => {},
                    }
                    Box::new(disconnect) as OpResult
                });
                return self.wait(py, future);
            }
            // Without waiting: what is ready plus what the queue holds, unless a
            // cancelled receive() still waits on the queue.
            if let Ok(mut queue) = self.queue.try_lock() {
                while input.ready.len() < RECEIVE_COALESCE && !input.ended {
                    match queue.try_next() {
                        Some(Ok(Some(chunk))) => input.ready.extend_from_slice(&chunk),
                        Some(Ok(None)) => input.ended = true,
                        Some(Err(InputError::Aborted)) => {
                            input.aborted = true;
                            break;
                        }
                        None => break,
                    }
                }
            }
            if let Some((body, more)) = input.take_event() {
                return done(py, request_event(py, &body, more)?);
            }
            if input.aborted {
                return done(py, disconnect(py)?);
            }
        }
        let (shared, queue) = (self.input.clone(), self.queue.clone());
        let future: OpFuture = Box::pin(async move {
            let mut queue = queue.lock().await;
            let waiting = {
                let input = lock(&shared);
                input.ready.is_empty() && !input.ended && !input.aborted
            };
            if waiting {
                let next = queue.next().await;
                let mut input = lock(&shared);
                match next {
                    Ok(Some(chunk)) => input.ready.extend_from_slice(&chunk),
                    Ok(None) => input.ended = true,
                    Err(InputError::Aborted) => input.aborted = true,
                }
            }
            drop(queue);
            Box::new(move |py: Python<'_>| {
                let mut input = lock(&shared);
                match input.take_event() {
                    Some((body, more)) => request_event(py, &body, more),
                    None => disconnect(py),
                }
            }) as OpResult
        });
        self.wait(py, future)
    }

    /// ASGI `send(message)`: `http.response.start`, `http.response.body`
    /// (streamed; the headers go out with the first body bytes), or the
    /// `http.response.pathsend` extension (the file is read and sent by the
    /// engine, not the loop). `RuntimeError` for a message out of order or of
    /// an unknown type (`http.response.trailers`: FastCGI has none);
    /// `ValueError`/`TypeError` for a malformed one; `ClientDisconnected`
    /// (an `OSError`) once the web server has gone.
    fn send(&self, py: Python<'_>, message: &Bound<'_, PyDict>) -> PyResult<Py<PyAny>> {
        let kind: String = match message.get_item(intern!(py, "type"))? {
            Some(t) => t.extract()?,
            None => return Err(PyValueError::new_err("an ASGI message needs a 'type'")),
        };
        match kind.as_str() {
            "http.response.start" => {
                let block = head(message)?;
                let mut response = lock(&self.response);
                if response.started {
                    return Err(PyRuntimeError::new_err("http.response.start sent twice"));
                }
                response.started = true;
                response.head = Some(block);
                done(py, py.None())
            }
            "http.response.body" => {
                let body = match message.get_item(intern!(py, "body"))? {
                    Some(b) => bytes_of(&b, "http.response.body: body")?,
                    None => Vec::new(),
                };
                let more = match message.get_item(intern!(py, "more_body"))? {
                    Some(m) => m.is_truthy()?,
                    None => false,
                };
                let data = {
                    let mut response = lock(&self.response);
                    if !response.started {
                        return Err(PyRuntimeError::new_err("http.response.body before http.response.start"));
                    }
                    if response.finished {
                        return Err(PyRuntimeError::new_err("http.response.body after the response was complete"));
                    }
                    response.finished = !more;
                    match response.head.take() {
                        Some(mut head) => {
                            head.extend_from_slice(&body);
                            Bytes::from(head)
                        }
                        None => Bytes::from(body),
                    }
                };
                if self.control.is_aborted() {
                    // finish() sends the END_REQUEST the connection waits for.
                    return Err(ClientDisconnected::new_err("the web server aborted the request"));
                }
                if more {
                    if data.is_empty() {
                        return done(py, py.None());
                    }
                    return self.output(py, Output::Stdout(data));
                }
                let result = self.output(py, Output::Last { data, app_status: 0 });
                lock(&self.response).end_sent = true; // handed over, or the connection is gone
                self.over.cancel(); // a receive() waiting now gets http.disconnect (ASGI HTTP 2.4)
                self.release();
                result
            }
            "http.response.pathsend" => {
                let path: String = match message.get_item(intern!(py, "path"))? {
                    Some(p) => p.extract()?,
                    None => return Err(PyValueError::new_err("http.response.pathsend needs a 'path'")),
                };
                {
                    let response = lock(&self.response);
                    if !response.started || response.finished {
                        return Err(PyRuntimeError::new_err(
                            "http.response.pathsend must follow http.response.start and end the response",
                        ));
                    }
                }
                // Opened before anything is marked: a missing file is the app's
                // error before its response went out (finish() answers 500).
                let file = std::fs::File::open(&path)
                    .map_err(|e| PyOSError::new_err(format!("http.response.pathsend: cannot open {path}: {e}")))?;
                let head = {
                    let mut response = lock(&self.response);
                    response.finished = true;
                    response.end_sent = true; // the sending thread ends the request
                    response.head.take().unwrap_or_default()
                };
                self.over.cancel();
                let sink = self.sink.clone();
                let (tx, rx) = tokio::sync::oneshot::channel();
                std::thread::Builder::new()
                    .name("oxfcgi-pathsend".into())
                    .spawn(move || {
                        let _ = tx.send(send_file(&sink, head, file));
                    })
                    .map_err(|e| PyOSError::new_err(format!("http.response.pathsend: {e}")))?;
                self.release();
                let future: OpFuture = Box::pin(async move {
                    let outcome = rx.await.unwrap_or_else(|_| Err("the sending thread stopped".into()));
                    Box::new(move |py: Python<'_>| match outcome {
                        Ok(()) => Ok(py.None()),
                        Err(e) => Err(PyOSError::new_err(format!("http.response.pathsend: {e}"))),
                    }) as OpResult
                });
                self.wait(py, future)
            }
            other => Err(PyRuntimeError::new_err(format!(
                "unsupported ASGI message type {other:?} for an HTTP request over FastCGI \
                 (http.response.start, http.response.body, http.response.pathsend)"
            ))),
        }
    }

    /// End the request by `request_terminate_timeout`: the engine answers 504 when
    /// no response byte went out yet (else the response is cut short) and logs
    /// it; later `send()`s fail. Returns an awaitable (php-fpm's
    /// `request_terminate_timeout` answers the same way).
    fn terminate(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.over.cancel();
        let end_sent = {
            let mut response = lock(&self.response);
            response.finished = true;
            std::mem::replace(&mut response.end_sent, true)
        };
        if end_sent {
            return done(py, py.None());
        }
        self.release();
        match self.output(py, Output::Terminated) {
            Err(e) if e.is_instance_of::<ClientDisconnected>(py) => done(py, py.None()),
            other => other,
        }
    }

    /// End the request after the application returned (`traceback` None) or
    /// raised (`traceback`: the formatted exception). A failure before the
    /// response started gets a 500 (with the traceback when `debug`); after,
    /// the response is cut short. Either way the traceback goes to FCGI_STDERR
    /// and the `oxfcgi` logger. Returns an awaitable.
    #[pyo3(signature = (traceback=None, debug=false))]
    fn finish(&self, py: Python<'_>, traceback: Option<String>, debug: bool) -> PyResult<Py<PyAny>> {
        self.over.cancel();
        let (out, finished, end_sent) = {
            let mut response = lock(&self.response);
            // Headers held back until the first body bytes never went out.
            let out = response.started && response.head.is_none();
            let state = (out, response.finished, response.end_sent);
            response.head = None;
            response.finished = true;
            response.end_sent = true;
            state
        };
        let aborted = self.control.is_aborted();
        let what = format!("request {}", self.request_id);
        let kind = match (&traceback, out, finished) {
            (Some(tb), _, _) if end_sent || finished => {
                // The response was complete (or the engine ends it): log only.
                self.errors.emit(
                    py,
                    &format!("Error in the ASGI application for {what} after its response: {tb}"),
                    LEVEL_ERROR,
                );
                (!end_sent).then_some(Output::End { app_status: 1 })
            }
            _ if end_sent => None,
            (Some(tb), false, _) => {
                self.errors.emit(py, &format!("Error in the ASGI application for {what}: {tb}"), LEVEL_ERROR);
                Some(page(py, debug.then_some(tb)))
            }
            (Some(tb), true, _) => {
                let note = "(after the response started; it is cut short)";
                self.errors.emit(py, &format!("Error in the ASGI application for {what} {note}: {tb}"), LEVEL_ERROR);
                Some(Output::End { app_status: 1 })
            }
            (None, false, _) if !aborted => {
                self.errors.emit(
                    py,
                    &format!("the ASGI application returned without sending a response for {what}\n"),
                    LEVEL_ERROR,
                );
                Some(page(py, None))
            }
            (None, true, false) if !aborted => {
                self.errors.emit(
                    py,
                    &format!("the ASGI application returned before its response was complete for {what}\n"),
                    LEVEL_ERROR,
                );
                Some(Output::End { app_status: 1 })
            }
            // Aborted, or a last body the connection refused: END_REQUEST all the same.
            _ => Some(Output::End { app_status: 0 }),
        };
        self.release();
        match kind {
            None => done(py, py.None()),
            Some(kind) => match self.output(py, kind) {
                Err(e) if e.is_instance_of::<ClientDisconnected>(py) => done(py, py.None()),
                other => other,
            },
        }
    }
}

/// The 500 page as a last message.
fn page(py: Python<'_>, traceback: Option<&String>) -> Output {
    Output::Last { data: crate::wsgi::response::error_page(py, traceback), app_status: 1 }
}

/// `http.response.pathsend`: the header block, the file in chunks, the end.
fn send_file(sink: &ResponseSink, head: Vec<u8>, file: std::fs::File) -> Result<(), String> {
    use std::io::Read;
    let mut file = file;
    let mut first = Some(head);
    loop {
        let mut chunk = vec![0u8; FILE_CHUNK];
        let n = loop {
            match file.read(&mut chunk) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = sink.blocking_send(Output::End { app_status: 1 });
                    return Err(e.to_string());
                }
            }
        };
        chunk.truncate(n);
        let data = match first.take() {
            Some(mut head) => {
                head.extend_from_slice(&chunk);
                head
            }
            None => chunk,
        };
        if n == 0 {
            return sink
                .blocking_send(Output::Last { data: Bytes::from(data), app_status: 0 })
                .map_err(|e| e.to_string());
        }
        sink.blocking_send(Output::Stdout(Bytes::from(data))).map_err(|e| e.to_string())?;
    }
}
