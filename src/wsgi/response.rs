//! The response side of PEP 3333: `start_response`, the `write()` callable,
//! iterating the body, `close()`, and what happens when the application fails.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use pyo3::exceptions::{PyAssertionError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyList, PyMemoryView, PyString, PyTuple};

use super::errors::ErrorStream;
use super::filewrapper::FileWrapper;
use super::log::{log_now, LEVEL_ERROR, LEVEL_WARNING};
use crate::server::request::{Gone, Output, RequestControl, ResponseSink};

/// How a response ended early.
pub enum Failure {
    /// The application (or a check on what it returned) raised.
    App(PyErr),
    /// The web server closed the connection.
    Gone,
    /// The web server sent FCGI_ABORT_REQUEST.
    Aborted,
}

impl From<PyErr> for Failure {
    fn from(e: PyErr) -> Self {
        Failure::App(e)
    }
}

/// Status line and headers given to `start_response`, as a CGI header block.
struct Head {
    /// `Status: …\r\n` and one `Name: value\r\n` per header, without the blank line.
    block: Vec<u8>,
    has_content_length: bool,
    /// The longest header line, in bytes.
    longest_line: usize,
}

/// nginx reads the whole header block into one `fastcgi_buffer_size` buffer (4 KiB on
/// x86-64 by default): more is "upstream sent too big header" and a 502.
const NGINX_HEADER_BUFFER: usize = 4096;
/// Apache reads each CGI header line into 8 KiB (MAX_STRING_LEN): longer lines are
/// "End of script output before headers" / AH01070 and a 500.
const APACHE_HEADER_LINE: usize = 8190;

/// Routes already warned about (bounded: header names and paths come from the app and clients).
static WARNED_ROUTES: Mutex<Vec<String>> = Mutex::new(Vec::new());
const WARNED_ROUTES_LIMIT: usize = 256;

/// Warn, once per route, when response headers are larger than a web server takes.
fn warn_big_headers(py: Python<'_>, head: &Head, route: &str) {
    let (total, line) = (head.block.len() + 2, head.longest_line);
    if total <= NGINX_HEADER_BUFFER && line <= APACHE_HEADER_LINE {
        return;
    }
    {
        let mut warned = WARNED_ROUTES.lock().unwrap_or_else(|e| e.into_inner());
        if warned.iter().any(|r| r == route) || warned.len() >= WARNED_ROUTES_LIMIT {
            return;
        }
        warned.push(route.to_string());
    }
    let mut rejected_by = Vec::new();
    if total > NGINX_HEADER_BUFFER {
        rejected_by.push(format!(
            "nginx (the block is {total} bytes; its fastcgi_buffer_size is 4 KiB by default: \"upstream sent too big \
             header\", 502; raise fastcgi_buffer_size and fastcgi_buffers, e.g. fastcgi_buffer_size 32k;)"
        ));
    }
    if line > APACHE_HEADER_LINE {
        rejected_by.push(format!(
            "Apache (a line of {line} bytes; it takes 8190 per line: \"End of script output before headers\" / \
             AH01070, 500; only a shorter header helps, e.g. fewer or smaller cookies)"
        ));
    }
    log_now(
        py,
        LEVEL_WARNING,
        &format!("the response headers of {route} are larger than {} accepts", rejected_by.join(" and ")),
    );
}

#[derive(Default)]
struct State {
    head: Option<Head>,
    sent: bool,
}

/// One request's response: the header state and where the bytes go.
pub struct Responder {
    sink: ResponseSink,
    control: Arc<RequestControl>,
    state: Mutex<State>,
    /// The last framed chunk of an in-memory body, held back to go out with
    /// FCGI_END_REQUEST once `close()` has run ([`Output::Last`]).
    tail: Mutex<Option<Bytes>>,
    /// The request's path (SCRIPT_NAME + PATH_INFO), for warnings about its response.
    route: (Option<Bytes>, Option<Bytes>),
}

impl Responder {
    pub fn new(sink: ResponseSink, control: Arc<RequestControl>, route: (Option<Bytes>, Option<Bytes>)) -> Self {
        Responder { sink, control, state: Mutex::new(State::default()), tail: Mutex::new(None), route }
    }

    /// Frame the body's last bytes and keep them for [`Output::Last`].
    fn hold(&self, py: Python<'_>, data: &[u8], content_length: Option<usize>) -> Result<(), Failure> {
        if self.control.is_aborted() {
            return Err(Failure::Aborted);
        }
        let framed = self.frame(data, content_length)?;
        let earlier = self.tail.lock().unwrap_or_else(|e| e.into_inner()).replace(framed);
        match earlier {
            Some(earlier) => self.deliver(py, earlier),
            None => Ok(()),
        }
    }

    /// The held last bytes, if any (sent with the end of the request).
    pub fn take_tail(&self) -> Option<Bytes> {
        self.tail.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn route(&self) -> String {
        let text = |b: &Option<Bytes>| b.as_deref().map(String::from_utf8_lossy).unwrap_or_default().into_owned();
        text(&self.route.0) + &text(&self.route.1)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the header block has gone out.
    pub fn headers_sent(&self) -> bool {
        self.state().sent
    }

    /// `data` ready for FCGI_STDOUT: the header block goes first if it has
    /// not been sent (with `Content-Length: content_length` added when given
    /// and the application set none).
    fn frame(&self, data: &[u8], content_length: Option<usize>) -> Result<Bytes, Failure> {
        let mut state = self.state();
        if state.sent {
            return Ok(Bytes::copy_from_slice(data));
        }
        let Some(head) = &state.head else {
            return Err(Failure::App(PyAssertionError::new_err(
                "the application produced body data before calling start_response()",
            )));
        };
        let mut out = BytesMut::with_capacity(head.block.len() + 32 + data.len());
        out.put_slice(&head.block);
        if let (Some(len), false) = (content_length, head.has_content_length) {
            out.put_slice(format!("Content-Length: {len}\r\n").as_bytes());
        }
        out.put_slice(b"\r\n");
        out.put_slice(data);
        state.sent = true;
        Ok(out.freeze())
    }

    /// Send body bytes (headers first if needed), waiting with the GIL
    /// released while the connection's queue is full.
    pub fn send(&self, py: Python<'_>, data: &[u8], content_length: Option<usize>) -> Result<(), Failure> {
        let framed = self.frame(data, content_length)?;
        self.deliver(py, framed)
    }

    fn deliver(&self, py: Python<'_>, framed: Bytes) -> Result<(), Failure> {
        if self.control.is_aborted() {
            return Err(Failure::Aborted);
        }
        match self.sink.try_send(Output::Stdout(framed)) {
            Ok(()) => Ok(()),
            Err(Ok(kind)) => py.detach(|| self.sink.blocking_send(kind)).map_err(|Gone| Failure::Gone),
            Err(Err(Gone)) => Err(Failure::Gone),
        }
    }

    /// Like [`Responder::send`], for a thread that does not hold the GIL.
    fn send_detached(&self, data: &[u8]) -> Result<(), Failure> {
        if self.control.is_aborted() {
            return Err(Failure::Aborted);
        }
        let framed = self.frame(data, None)?;
        self.sink.blocking_send(Output::Stdout(framed)).map_err(|Gone| Failure::Gone)
    }

    /// At the end of the body: send the header block if nothing was sent.
    pub fn finish(&self, py: Python<'_>, content_length: Option<usize>) -> Result<(), Failure> {
        if self.headers_sent() {
            return Ok(());
        }
        if self.state().head.is_none() {
            return Err(Failure::App(PyAssertionError::new_err(
                "the application returned without calling start_response()",
            )));
        }
        self.hold(py, b"", content_length)
    }

    /// Replace whatever was set with a complete response (error pages).
    fn send_whole(&self, py: Python<'_>, response: Bytes) -> Result<(), Failure> {
        self.state().sent = true;
        self.deliver(py, response)
    }
}

fn latin1_bytes(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<u8>> {
    if let Ok(s) = value.cast::<PyString>() {
        let text = s.to_cow()?;
        if text.is_ascii() {
            return Ok(text.as_bytes().to_vec());
        }
        text.chars()
            .map(|c| {
                u8::try_from(c as u32).map_err(|_| {
                    PyValueError::new_err(format!(
                        "{what} {text:?} contains {c:?}, which is not latin-1 (PEP 3333 requires latin-1 strings)"
                    ))
                })
            })
            .collect()
    } else if let Ok(b) = value.cast::<PyBytes>() {
        Ok(b.as_bytes().to_vec())
    } else {
        Err(PyTypeError::new_err(format!("{what} must be a str, not {}", value.get_type().name()?)))
    }
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A response header as RFC 9110 allows it: a token name (§5.1), no CR, LF
/// or NUL in the value (the CGI header block is line-based). `ValueError` otherwise.
pub(crate) fn check_header(name: &[u8], value: &[u8]) -> PyResult<()> {
    if name.is_empty() || !name.iter().copied().all(is_token_char) {
        return Err(PyValueError::new_err(format!(
            "invalid header name {:?}: only token characters are allowed (RFC 9110 §5.1)",
            String::from_utf8_lossy(name)
        )));
    }
    if value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(PyValueError::new_err(format!(
            "header {} has a CR, LF or NUL in its value {:?}",
            String::from_utf8_lossy(name),
            String::from_utf8_lossy(value)
        )));
    }
    Ok(())
}

/// Check `status` and `headers` as PEP 3333 and RFC 9110 require, always
/// (flup used `assert`, which `python -O` removes), and build the header block.
fn build_head(status: &Bound<'_, PyAny>, headers: &Bound<'_, PyAny>) -> PyResult<Head> {
    // PEP 3333 says str; flup also took bytes.
    let status = latin1_bytes(status, "status")?;
    let valid =
        status.len() >= 4 && status[..3].iter().all(u8::is_ascii_digit) && status[0] != b'0' && status[3] == b' ';
    if !valid || status.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(PyValueError::new_err(format!(
            "status {:?} is not a 3-digit code, a space and a reason phrase such as '200 OK' (PEP 3333)",
            String::from_utf8_lossy(&status)
        )));
    }
    if !(headers.is_instance_of::<PyList>() || headers.is_instance_of::<PyTuple>()) {
        return Err(PyTypeError::new_err(format!(
            "response_headers must be a list of (name, value) tuples, not {}",
            headers.get_type().name()?
        )));
    }
    let mut block = Vec::with_capacity(64 + status.len());
    block.extend_from_slice(b"Status: ");
    block.extend_from_slice(&status);
    block.extend_from_slice(b"\r\n");
    let mut has_content_length = false;
    let mut longest_line = block.len();
    for item in headers.try_iter()? {
        let item = item?;
        let pair = item.cast::<PyTuple>().ok().filter(|t| t.len() == 2).ok_or_else(|| {
            PyTypeError::new_err(format!(
                "each response header must be a (name, value) tuple, got {}",
                item.repr().map(|r| r.to_string()).unwrap_or_default()
            ))
        })?;
        let name = latin1_bytes(&pair.get_item(0)?, "header name")?;
        let value = latin1_bytes(&pair.get_item(1)?, "header value")?;
        check_header(&name, &value)?;
        if name.eq_ignore_ascii_case(b"status") {
            return Err(PyValueError::new_err(
                "a 'Status' response header is not allowed: pass the status as start_response()'s first argument",
            ));
        }
        has_content_length |= name.eq_ignore_ascii_case(b"content-length");
        longest_line = longest_line.max(name.len() + 2 + value.len() + 2);
        block.extend_from_slice(&name);
        block.extend_from_slice(b": ");
        block.extend_from_slice(&value);
        block.extend_from_slice(b"\r\n");
    }
    Ok(Head { block, has_content_length, longest_line })
}

/// The `start_response` callable passed to the application.
#[pyclass(frozen, module = "oxfcgi._oxfcgi", name = "StartResponse")]
pub struct StartResponse {
    responder: Arc<Responder>,
}

#[pymethods]
impl StartResponse {
    /// `start_response(status, response_headers, exc_info=None) -> write`.
    ///
    /// A second call needs `exc_info`; before the headers are sent it
    /// replaces them, after that it re-raises `exc_info` (PEP 3333).
    /// Raises `TypeError`/`ValueError` for an invalid status or headers and
    /// `AssertionError` for a second call without `exc_info`.
    #[pyo3(signature = (status, response_headers, exc_info=None))]
    fn __call__(
        &self,
        py: Python<'_>,
        status: &Bound<'_, PyAny>,
        response_headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Write> {
        let exc_info = exc_info.filter(|e| !e.is_none());
        if let Some(exc_info) = exc_info {
            if self.responder.headers_sent() {
                let value = exc_info.get_item(1)?;
                let err = PyErr::from_value(value);
                if let Ok(tb) = exc_info.get_item(2) {
                    if let Ok(tb) = tb.cast_into::<pyo3::types::PyTraceback>() {
                        err.set_traceback(py, Some(tb));
                    }
                }
                return Err(err);
            }
        } else if self.responder.state().head.is_some() {
            return Err(PyAssertionError::new_err("start_response() called a second time without exc_info (PEP 3333)"));
        }
        let head = build_head(status, response_headers)?;
        warn_big_headers(py, &head, &self.responder.route());
        self.responder.state().head = Some(head);
        Ok(Write { responder: self.responder.clone() })
    }
}

/// The `write(data)` callable `start_response` returns (PEP 3333's
/// imperative output for legacy applications). Sends at once.
#[pyclass(frozen, module = "oxfcgi._oxfcgi", name = "Write")]
pub struct Write {
    responder: Arc<Responder>,
}

#[pymethods]
impl Write {
    fn __call__(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let chunk = body_bytes(data)?;
        if chunk.as_ref().is_empty() {
            return Ok(());
        }
        match self.responder.send(py, chunk.as_ref(), None) {
            Ok(()) => Ok(()),
            Err(Failure::App(e)) => Err(e),
            Err(Failure::Gone) => {
                Err(pyo3::exceptions::PyConnectionResetError::new_err("the web server closed the connection"))
            }
            Err(Failure::Aborted) => {
                Err(pyo3::exceptions::PyConnectionAbortedError::new_err("the web server aborted the request"))
            }
        }
    }
}

/// Bytes of one body chunk.
enum Chunk<'py> {
    Borrowed(Bound<'py, PyBytes>),
    Owned(Vec<u8>),
}

impl AsRef<[u8]> for Chunk<'_> {
    fn as_ref(&self) -> &[u8] {
        match self {
            Chunk::Borrowed(b) => b.as_bytes(),
            Chunk::Owned(v) => v,
        }
    }
}

static WARNED_STR_BODY: AtomicBool = AtomicBool::new(false);

/// A body item as bytes: `bytes`, `bytearray`, `memoryview`, or (flup's
/// leniency, with a one-time warning) a latin-1 `str`.
fn body_bytes<'py>(item: &Bound<'py, PyAny>) -> PyResult<Chunk<'py>> {
    if let Ok(b) = item.cast::<PyBytes>() {
        return Ok(Chunk::Borrowed(b.clone()));
    }
    if let Ok(b) = item.cast::<PyByteArray>() {
        return Ok(Chunk::Owned(b.to_vec()));
    }
    if let Ok(view) = item.cast::<PyMemoryView>() {
        return Ok(Chunk::Owned(view.call_method0("tobytes")?.cast_into::<PyBytes>()?.as_bytes().to_vec()));
    }
    if item.is_instance_of::<PyString>() {
        if !WARNED_STR_BODY.swap(true, Ordering::Relaxed) {
            log_now(
                item.py(),
                LEVEL_WARNING,
                "the application yields str body chunks; PEP 3333 requires bytes (encoding them as latin-1, like flup)",
            );
        }
        return Ok(Chunk::Owned(latin1_bytes(item, "body chunk")?));
    }
    Err(PyTypeError::new_err(format!("response body items must be bytes, not {} (PEP 3333)", item.get_type().name()?)))
}

/// Bytes sent per read when a `wsgi.file_wrapper` body is a real file.
const FILE_CHUNK: usize = 64 * 1024;
/// List bodies are joined into messages of about this size.
const COALESCE: usize = 64 * 1024;

/// Send the body the application returned.
fn send_body(py: Python<'_>, result: &Bound<'_, PyAny>, responder: &Responder) -> Result<(), Failure> {
    if let Ok(wrapper) = result.cast::<FileWrapper>() {
        if let Some(fd) = real_file(py, wrapper.get()) {
            return send_file(py, fd, wrapper.get(), responder);
        }
    }
    let in_memory = result.is_instance_of::<PyList>() || result.is_instance_of::<PyTuple>();
    // flup's rule: a body of exactly one item gets a Content-Length.
    let single = in_memory && result.len()? == 1;
    let mut pending = BytesMut::new();
    for item in result.try_iter()? {
        let item = item?;
        if responder.control.is_aborted() {
            return Err(Failure::Aborted);
        }
        let chunk = body_bytes(&item)?;
        let data = chunk.as_ref();
        if single {
            return responder.hold(py, data, Some(data.len()));
        }
        if data.is_empty() {
            continue;
        }
        if in_memory {
            // Everything is in memory already: join small items.
            pending.extend_from_slice(data);
            if pending.len() >= COALESCE {
                responder.send(py, &pending, None)?;
                pending.clear();
            }
        } else {
            responder.send(py, data, None)?;
        }
    }
    if !pending.is_empty() {
        return responder.hold(py, &pending, None);
    }
    responder.finish(py, None)
}

/// The descriptor and start offset of a `FileWrapper` around a regular file.
fn real_file(py: Python<'_>, wrapper: &FileWrapper) -> Option<(i32, i64)> {
    let filelike = wrapper.filelike.bind(py);
    let fd: i32 = filelike.call_method0("fileno").ok()?.extract().ok()?;
    // SAFETY: fstat on a descriptor the file object owns, into a local struct.
    let regular = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFREG
    };
    if !regular {
        return None;
    }
    // The file object's logical position (its buffer may be ahead of the fd's).
    let offset: i64 = filelike.call_method0("tell").ok()?.extract().ok()?;
    Some((fd, offset))
}

fn send_file(
    py: Python<'_>,
    (fd, mut offset): (i32, i64),
    wrapper: &FileWrapper,
    responder: &Responder,
) -> Result<(), Failure> {
    // Keep the file object alive (and its fd open) while we read without the GIL.
    let _keep = wrapper.filelike.clone_ref(py);
    let result = py.detach(|| {
        let mut buf = vec![0u8; FILE_CHUNK];
        loop {
            // SAFETY: pread into our own buffer from a descriptor kept open above.
            let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), offset) };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Ok(err));
            }
            if n == 0 {
                return Ok(());
            }
            offset += n as i64;
            responder.send_detached(&buf[..n as usize]).map_err(Err)?;
        }
    });
    match result {
        Ok(()) => responder.finish(py, None),
        Err(Ok(io)) => Err(Failure::App(PyErr::from(io))),
        Err(Err(failure)) => Err(failure),
    }
}

/// Call `result.close()` if it has one (PEP 3333: on every path).
fn close_body(result: &Bound<'_, PyAny>) -> PyResult<()> {
    // The common bodies have no close(): skip the failed lookup (an
    // AttributeError made and cleared per request).
    if result.is_exact_instance_of::<pyo3::types::PyList>() || result.is_exact_instance_of::<pyo3::types::PyTuple>() {
        return Ok(());
    }
    if let Some(close) = result.getattr_opt("close")? {
        close.call0()?;
    }
    Ok(())
}

/// Run the application for one request. Returns the `appStatus` for
/// FCGI_END_REQUEST: 0 when the application completed, 1 when it raised.
pub fn run_app(
    py: Python<'_>,
    app: &Bound<'_, PyAny>,
    environ: Bound<'_, pyo3::types::PyDict>,
    responder: Arc<Responder>,
    errors: &Bound<'_, ErrorStream>,
    debug: bool,
    what: &dyn std::fmt::Display,
) -> u32 {
    let start_response = match Bound::new(py, StartResponse { responder: responder.clone() }) {
        Ok(s) => s,
        Err(e) => return report(py, e, &responder, errors, debug, what),
    };
    let outcome = match app.call1((environ, start_response)) {
        Ok(result) => {
            let sent = send_body(py, &result, &responder);
            let closed = close_body(&result);
            match (sent, closed) {
                (Ok(()), Err(e)) => Err(Failure::App(e)),
                (sent, Err(e)) => {
                    log_now(py, LEVEL_ERROR, &format!("{what}: the response's close() raised: {e}"));
                    sent
                }
                (sent, Ok(())) => sent,
            }
        }
        Err(e) => Err(Failure::App(e)),
    };
    match outcome {
        Ok(()) => 0,
        Err(Failure::Gone) => {
            tracing::debug!("{what}: the web server closed the connection during the response");
            0
        }
        Err(Failure::Aborted) => {
            tracing::debug!("{what}: response stopped: the web server aborted the request");
            0
        }
        Err(Failure::App(e)) => report(py, e, &responder, errors, debug, what),
    }
}

/// The application failed: traceback to FCGI_STDERR and the log; a 500
/// page if no header went out yet, else the response is cut short.
fn report(
    py: Python<'_>,
    err: PyErr,
    responder: &Responder,
    errors: &Bound<'_, ErrorStream>,
    debug: bool,
    what: &dyn std::fmt::Display,
) -> u32 {
    let traceback = format_traceback(py, &err);
    let headers_sent = responder.headers_sent();
    let note = if headers_sent { " (after the response started; it is cut short)" } else { "" };
    // The summary first: web servers cut long error-log lines.
    errors.get().emit(py, &format!("Error in the WSGI application for {what}{note}: {err}\n{traceback}"), LEVEL_ERROR);
    if !headers_sent {
        let page = error_page(py, debug.then_some(&traceback));
        let _ = responder.send_whole(py, page);
    }
    1
}

pub(crate) fn format_traceback(py: Python<'_>, err: &PyErr) -> String {
    let formatted = py.import("traceback").and_then(|tb| {
        let lines = tb.call_method1("format_exception", (err.get_type(py), err.value(py), err.traceback(py)))?;
        PyString::new(py, "").call_method1("join", (lines,))?.extract::<String>()
    });
    formatted.unwrap_or_else(|_| format!("{err}\n"))
}

/// The 500 response: a short page, or with `debug` the traceback (HTML-escaped).
pub(crate) fn error_page(py: Python<'_>, traceback: Option<&String>) -> Bytes {
    let body = match traceback {
        Some(tb) => {
            let escaped = py
                .import("html")
                .and_then(|html| html.call_method1("escape", (tb.as_str(),)))
                .and_then(|s| s.extract::<String>())
                .unwrap_or_else(|_| "(traceback unavailable)".into());
            format!(
                "<!DOCTYPE html>\n<html><head><title>500 Internal Server Error</title></head><body>\n\
                 <h1>Internal Server Error</h1>\n<p>Unhandled exception in the application (shown because debug is on):</p>\n\
                 <pre>{escaped}</pre>\n</body></html>\n"
            )
        }
        None => "<!DOCTYPE html>\n<html><head><title>500 Internal Server Error</title></head><body>\n\
                 <h1>Internal Server Error</h1>\n<p>The server could not complete the request. The error was logged.</p>\n\
                 </body></html>\n"
            .to_string(),
    };
    let head = format!(
        "Status: 500 Internal Server Error\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut out = BytesMut::with_capacity(head.len() + body.len());
    out.put_slice(head.as_bytes());
    out.put_slice(body.as_bytes());
    out.freeze()
}
