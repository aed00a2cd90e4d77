//! What a connection hands to the application side for one request, and the
//! channels the two sides talk through. No pyo3 here: the WSGI layer consumes
//! [`Request`] through the [`Handler`] trait.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use crate::protocol::Role;

/// Something that runs requests, e.g. the pool of Python threads.
pub trait Handler: Send + Sync + 'static {
    /// Take ownership of a request whose FCGI_PARAMS stream is complete.
    /// Must not block: queue the request and return.
    fn dispatch(&self, request: Request);
}

/// The few params the engine itself reads (log lines, the body's announced
/// length), found in one pass over the params.
#[derive(Debug, Clone, Default)]
pub struct RequestLine {
    pub method: Option<Bytes>,
    pub uri: Option<Bytes>,
    pub script_name: Option<Bytes>,
    pub path_info: Option<Bytes>,
    /// `CONTENT_LENGTH`, when it is a number.
    pub content_length: Option<u64>,
}

impl RequestLine {
    /// `REQUEST_METHOD`, `REQUEST_URI`, `SCRIPT_NAME`, `PATH_INFO` and
    /// `CONTENT_LENGTH` of `params` (references to their bytes, not copies).
    pub fn of(params: &[(Bytes, Bytes)]) -> RequestLine {
        let mut line = RequestLine::default();
        for (name, value) in params {
            let slot = match &name[..] {
                b"REQUEST_METHOD" => &mut line.method,
                b"REQUEST_URI" => &mut line.uri,
                b"SCRIPT_NAME" => &mut line.script_name,
                b"PATH_INFO" => &mut line.path_info,
                b"CONTENT_LENGTH" => {
                    line.content_length = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
                    continue;
                }
                _ => continue,
            };
            *slot = Some(value.clone());
        }
        line
    }

    /// The request's target for log lines: `REQUEST_URI`, else
    /// `SCRIPT_NAME` + `PATH_INFO`.
    pub fn target(&self) -> String {
        let text = |b: &Option<Bytes>| b.as_deref().map(String::from_utf8_lossy).unwrap_or_default().into_owned();
        match &self.uri {
            Some(_) => text(&self.uri),
            None => text(&self.script_name) + &text(&self.path_info),
        }
    }

    /// `REQUEST_METHOD` for log lines (`?` when absent).
    pub fn method_text(&self) -> String {
        self.method.as_deref().map_or_else(|| "?".into(), |m| String::from_utf8_lossy(m).into_owned())
    }
}

/// One request whose params are complete, ready to run.
pub struct Request {
    /// The request id the web server chose (for log lines).
    pub request_id: u16,
    pub role: Role,
    /// Name-value pairs from FCGI_PARAMS, duplicates already merged.
    pub params: Vec<(Bytes, Bytes)>,
    /// What the engine read of them.
    pub line: RequestLine,
    /// The FCGI_STDIN stream (empty and already ended for AUTHORIZER).
    pub stdin: InputQueue,
    /// The FCGI_DATA stream, for the FILTER role only.
    pub data: Option<InputQueue>,
    /// Where the response goes.
    pub sink: ResponseSink,
    /// Abort state shared with the connection.
    pub control: Arc<RequestControl>,
    /// The in-flight slot this request holds (admission); released on drop.
    pub permit: OwnedSemaphorePermit,
}

const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const ABORTED_QUEUED: u8 = 2;
const ABORTED_RUNNING: u8 = 3;

/// Lifecycle of a dispatched request as both sides see it.
///
/// A request aborted (FCGI_ABORT_REQUEST, or the connection closed) before the
/// application started it never starts, and the connection answers at once; a
/// running one is told to stop at its next chance and answers itself (§5.4: the
/// END_REQUEST "is truly a response from the application").
#[derive(Debug, Default)]
pub struct RequestControl {
    state: AtomicU8,
    /// Woken when the request is aborted (for code that waits for that, such
    /// as an ASGI app awaiting `http.disconnect`).
    aborted: tokio::sync::Notify,
}

impl RequestControl {
    pub fn new() -> Self {
        Self::default()
    }

    /// Called by the application side before it runs the request. `false`:
    /// the request was aborted while queued and must not run.
    pub fn start(&self) -> bool {
        self.state.compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Mark the request aborted. Returns `true` when it had not started yet
    /// (so nobody else will answer it).
    pub fn abort(&self) -> bool {
        let unstarted = match self.state.compare_exchange(QUEUED, ABORTED_QUEUED, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => true,
            Err(_) => {
                let _ = self.state.compare_exchange(RUNNING, ABORTED_RUNNING, Ordering::AcqRel, Ordering::Acquire);
                false
            }
        };
        self.aborted.notify_waiters();
        unstarted
    }

    /// Wait until the request is aborted (at once if it is already).
    pub async fn until_aborted(&self) {
        loop {
            let notified = self.aborted.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_aborted() {
                return;
            }
            notified.await;
        }
    }

    /// Whether the web server no longer wants the response.
    pub fn is_aborted(&self) -> bool {
        matches!(self.state.load(Ordering::Acquire), ABORTED_QUEUED | ABORTED_RUNNING)
    }
}

/// Why reading a request stream failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// The stream stopped before its end record: FCGI_ABORT_REQUEST, or the
    /// web server closed the connection.
    #[error("the request was aborted by the web server before its body ended")]
    Aborted,
}

/// Records of one input stream (FCGI_STDIN or FCGI_DATA), in order. An empty
/// chunk marks the end record; the channel closing without it means abort.
/// The channel is bounded, which is the back-pressure on the web server.
pub struct InputQueue {
    rx: mpsc::Receiver<Bytes>,
    ended: bool,
}

/// Sending side of an [`InputQueue`], kept by the connection.
pub type InputSender = mpsc::Sender<Bytes>;

/// Records buffered per input stream before the connection stops reading
/// the socket (each at most 65535 bytes).
pub const INPUT_QUEUE_RECORDS: usize = 8;

impl InputQueue {
    /// A stream and the sender that feeds it.
    pub fn channel() -> (InputSender, InputQueue) {
        let (tx, rx) = mpsc::channel(INPUT_QUEUE_RECORDS);
        (tx, InputQueue { rx, ended: false })
    }

    /// An input stream that is already at its end (AUTHORIZER has no stdin).
    pub fn empty() -> InputQueue {
        let (_, rx) = mpsc::channel(1);
        InputQueue { rx, ended: true }
    }

    /// The next chunk without waiting: `Some(Ok(Some(bytes)))`, `Some(Ok(None))`
    /// at the end, `Some(Err(_))` when aborted, `None` when nothing is there yet.
    pub fn try_next(&mut self) -> Option<Result<Option<Bytes>, InputError>> {
        if self.ended {
            return Some(Ok(None));
        }
        match self.rx.try_recv() {
            Ok(chunk) => Some(Ok(self.accept(chunk))),
            Err(mpsc::error::TryRecvError::Empty) => None,
            Err(mpsc::error::TryRecvError::Disconnected) => Some(Err(InputError::Aborted)),
        }
    }

    /// The next chunk, from async code. `Ok(None)` at the end of the stream.
    pub async fn next(&mut self) -> Result<Option<Bytes>, InputError> {
        if self.ended {
            return Ok(None);
        }
        match self.rx.recv().await {
            Some(chunk) => Ok(self.accept(chunk)),
            None => Err(InputError::Aborted),
        }
    }

    /// The next chunk, blocking the calling (non-async) thread until it
    /// arrives; a thread with a driver ([`super::driver::thread`]) drives
    /// the runtime meanwhile. `Ok(None)` at the end of the stream.
    pub fn blocking_next(&mut self) -> Result<Option<Bytes>, InputError> {
        if self.ended {
            return Ok(None);
        }
        let received = match super::driver::thread::current() {
            Some(driver) => driver.block_on(self.rx.recv()),
            None => self.rx.blocking_recv(),
        };
        match received {
            Some(chunk) => Ok(self.accept(chunk)),
            None => Err(InputError::Aborted),
        }
    }

    fn accept(&mut self, chunk: Bytes) -> Option<Bytes> {
        if chunk.is_empty() {
            self.ended = true;
            None
        } else {
            Some(chunk)
        }
    }
}

/// One piece of response, tagged with the request it belongs to.
#[derive(Debug)]
pub struct OutMessage {
    pub key: u64,
    pub kind: Output,
}

/// What the application side sends back.
#[derive(Debug)]
pub enum Output {
    /// Bytes for FCGI_STDOUT (the CGI header block, then the body).
    Stdout(Bytes),
    /// Bytes for FCGI_STDERR (the web server's error log).
    Stderr(Bytes),
    /// The request is over: close the streams and send FCGI_END_REQUEST with
    /// this `appStatus`.
    End { app_status: u32 },
    /// The last FCGI_STDOUT bytes and the end, together, so that they go out
    /// in one write: a client that reuses the connection as soon as the body
    /// is complete (HAProxy's `option keep-conn`) finds END_REQUEST with it.
    Last { data: Bytes, app_status: u32 },
    /// The request ran past `request_terminate_timeout`: the connection
    /// answers it now (a 504 if no header went out, else the response is cut
    /// short) and ignores whatever the application still sends for it.
    Terminated,
}

/// Messages buffered per connection between the application and the socket.
pub const OUTPUT_QUEUE_MESSAGES: usize = 16;

/// The connection went away; nobody will read more output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the web server closed the connection")]
pub struct Gone;

/// Where one request's output goes: the connection's bounded output channel.
#[derive(Clone)]
pub struct ResponseSink {
    tx: mpsc::Sender<OutMessage>,
    key: u64,
}

impl ResponseSink {
    pub(crate) fn new(tx: mpsc::Sender<OutMessage>, key: u64) -> Self {
        ResponseSink { tx, key }
    }

    /// Queue `kind` without waiting. `Err(Ok(kind))` when the queue is full
    /// (call [`ResponseSink::blocking_send`]), `Err(Err(Gone))` when the
    /// connection is gone.
    pub fn try_send(&self, kind: Output) -> Result<(), Result<Output, Gone>> {
        match self.tx.try_send(OutMessage { key: self.key, kind }) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(m)) => Err(Ok(m.kind)),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Err(Gone)),
        }
    }

    /// Queue `kind` from async code, waiting while the queue is full.
    pub async fn send(&self, kind: Output) -> Result<(), Gone> {
        self.tx.send(OutMessage { key: self.key, kind }).await.map_err(|_| Gone)
    }

    /// Queue `kind`, blocking the calling (non-async) thread while the queue
    /// is full; a thread with a driver ([`super::driver::thread`]) drives the
    /// runtime meanwhile.
    pub fn blocking_send(&self, kind: Output) -> Result<(), Gone> {
        let message = OutMessage { key: self.key, kind };
        match super::driver::thread::current() {
            Some(driver) => driver.block_on(self.tx.send(message)),
            None => self.tx.blocking_send(message),
        }
        .map_err(|_| Gone)
    }
}
