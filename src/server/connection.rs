//! One task per connection: decode records, demultiplex them by request id,
//! feed request streams, write responses, keep or close the connection.
//!
//! Reading and writing happen in one `select!` loop, so a peer that sends a
//! long body while the application already streams its response never
//! deadlocks against us. Back-pressure: a full input queue stops reading the
//! socket; a large unwritten output buffer stops taking application output.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{sleep_until, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

use super::request::{
    InputQueue, InputSender, OutMessage, Output, Request, RequestControl, ResponseSink, OUTPUT_QUEUE_MESSAGES,
};
use super::Shared;
use crate::protocol::management::{put_end_request, put_get_values_result, put_unknown_type, BeginRequest};
use crate::protocol::params::{merge_duplicates, ParamsCollector};
use crate::protocol::record::{self, put_record, put_stream, Record};
use crate::protocol::*;

/// Unwritten output above which the connection stops taking application output.
const WRITE_HIGH_WATER: usize = 256 * 1024;
/// During a stop, how long a connection accepted but still silent may take
/// to send its first request.
const FRESH_GRACE: Duration = Duration::from_secs(2);
/// How long a closing connection waits for the peer's EOF before closing anyway.
const CLOSE_DRAIN: Duration = Duration::from_secs(2);
/// The same wait while the server shuts down (idle kept-open connections
/// must not delay the exit).
const CLOSE_DRAIN_SHUTDOWN: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdin,
    Data,
}

enum Phase {
    /// Collecting FCGI_PARAMS.
    Params(ParamsCollector),
    /// Params complete, about to be dispatched.
    Ready(Vec<(Bytes, Bytes)>),
    /// Handed to the application.
    Running,
}

struct ActiveRequest {
    request_id: u16,
    key: u64,
    role: Role,
    keep_conn: bool,
    phase: Phase,
    stdin: Option<InputQueue>,
    data: Option<InputQueue>,
    stdin_tx: Option<InputSender>,
    data_tx: Option<InputSender>,
    control: Arc<RequestControl>,
    stdout_sent: bool,
    stderr_sent: bool,
}

impl ActiveRequest {
    /// Whether the request still waits for bytes from the web server.
    fn expects_input(&self) -> bool {
        matches!(self.phase, Phase::Params(_)) || self.stdin_tx.is_some() || self.data_tx.is_some()
    }
}

/// Which timeout closes a connection (the message is made only when it fires).
#[derive(Debug, Clone, Copy)]
enum Expiry {
    Stopping,
    Idle,
    KeepAlive,
    Read,
}

impl Expiry {
    fn describe(self, t: &super::Timeouts) -> String {
        let secs = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64());
        match self {
            Expiry::Stopping => "no request arrived on a connection accepted just before the stop".into(),
            Expiry::Idle => format!("no request within {}s (idle_timeout)", secs(t.idle)),
            Expiry::KeepAlive => format!("kept-open connection idle for {}s (keepalive_timeout)", secs(t.keepalive)),
            Expiry::Read => {
                format!("no request bytes for {}s while a request was incomplete (read_timeout)", secs(t.read))
            }
        }
    }
}

/// What a request over the in-flight limit gets on a connection that is not
/// multiplexed (where FCGI_OVERLOADED would turn into a bare 502).
const OVERLOADED_RESPONSE: &[u8] = b"Status: 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain\r\nContent-Length: 45\r\n\r\nThe server is busy; please retry in a moment.";

/// What a request ended by `request_terminate_timeout` gets when the
/// application had not started its response.
const TERMINATED_RESPONSE: &[u8] = b"Status: 504 Gateway Timeout\r\nContent-Type: text/plain\r\nContent-Length: 56\r\n\r\nThe application took too long to answer; it was stopped.";

/// An input chunk waiting for room in its request's queue.
struct Pending {
    key: u64,
    stream: Stream,
    chunk: Bytes,
}

struct Conn {
    shared: Arc<Shared>,
    peer: Arc<str>,
    requests: Vec<ActiveRequest>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    out_tx: mpsc::Sender<OutMessage>,
    pending: Option<Pending>,
    /// A request without FCGI_KEEP_CONN ended: close once nothing is active.
    close_when_idle: bool,
    /// The peer closed its sending side.
    read_closed: bool,
    /// The server is shutting down: close once nothing is active.
    draining: bool,
    /// When bytes last arrived (for the timeouts).
    last_read: Instant,
    /// Requests this connection has carried.
    served: u64,
}

/// Serve one accepted connection until it closes.
pub(crate) async fn serve_connection<R, W>(
    mut rd: R,
    mut wr: W,
    peer: Arc<str>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    _ticket: super::ConnTicket,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (out_tx, mut out_rx) = mpsc::channel(OUTPUT_QUEUE_MESSAGES);
    let mut conn = Conn {
        shared,
        peer,
        requests: Vec::new(),
        rbuf: BytesMut::with_capacity(16 * 1024),
        wbuf: BytesMut::with_capacity(16 * 1024),
        out_tx,
        pending: None,
        last_read: Instant::now(),
        served: 0,
        close_when_idle: false,
        read_closed: false,
        draining: false,
    };
    tracing::debug!("{}: connection accepted", conn.peer);
    let graceful = loop {
        if conn.requests.is_empty()
            && conn.wbuf.is_empty()
            && (conn.close_when_idle || conn.read_closed || conn.drained())
        {
            break true;
        }
        let reading = !(conn.read_closed || conn.close_when_idle && conn.requests.is_empty()) && conn.pending.is_none();
        let pending_tx = conn.pending.as_ref().and_then(|p| conn.sender(p.key, p.stream));
        let deadline = conn.deadline();
        tokio::select! {
            biased;
            written = wr.write(&conn.wbuf), if !conn.wbuf.is_empty() => match written {
                Ok(0) | Err(_) => {
                    tracing::debug!("{}: the web server closed the connection while we were writing", conn.peer);
                    break false;
                }
                Ok(n) => conn.wbuf.advance(n),
            },
            message = out_rx.recv(), if conn.wbuf.len() < WRITE_HIGH_WATER => {
                // `conn` holds a sender, so the channel never reports closed.
                if let Some(message) = message {
                    conn.on_output(message);
                    while conn.wbuf.len() < WRITE_HIGH_WATER {
                        match out_rx.try_recv() {
                            Ok(message) => conn.on_output(message),
                            Err(_) => break,
                        }
                    }
                }
            },
            room = async { pending_tx.expect("guarded").reserve_owned().await }, if pending_tx.is_some() => {
                if let Some(p) = conn.pending.take() {
                    if let Ok(permit) = room {
                        let end = p.chunk.is_empty();
                        permit.send(p.chunk);
                        if end {
                            conn.close_stream(p.key, p.stream);
                        }
                    }
                }
                if let Err(e) = conn.process_records() {
                    conn.protocol_error(e);
                    break false;
                }
            },
            _ = sleep_until(deadline.map_or_else(Instant::now, |(at, _)| at)), if deadline.is_some() => {
                if let Some((_, why)) = deadline {
                    tracing::info!("{}: {}; closing the connection", conn.peer, why.describe(&conn.shared.config.timeouts));
                }
                break false;
            },
            read = rd.read_buf(&mut conn.rbuf), if reading => match read {
                Ok(0) => conn.on_eof(),
                Ok(_) => if let Err(e) = { conn.last_read = Instant::now(); conn.process_records() } {
                    conn.protocol_error(e);
                    break false;
                },
                Err(e) => {
                    tracing::debug!("{}: read error: {e}", conn.peer);
                    conn.on_eof();
                }
            },
            _ = shutdown.cancelled(), if !conn.draining => conn.draining = true,
        }
    };
    conn.abort_all();
    if graceful && !conn.read_closed {
        // Half-close, then wait briefly for the peer's EOF, so that unread
        // input in our receive buffer does not turn our close into a reset
        // that could destroy the response before the peer reads it.
        let _ = wr.shutdown().await;
        let mut sink = [0u8; 8192];
        let wait = if conn.draining { CLOSE_DRAIN_SHUTDOWN } else { CLOSE_DRAIN };
        let _ = tokio::time::timeout(wait, async {
            while let Ok(n) = rd.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }
    tracing::debug!("{}: connection closed", conn.peer);
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.abort_all();
    }
}

impl Conn {
    fn index(&self, request_id: u16) -> Option<usize> {
        self.requests.iter().position(|s| s.request_id == request_id)
    }

    fn index_by_key(&self, key: u64) -> Option<usize> {
        self.requests.iter().position(|s| s.key == key)
    }

    fn sender(&self, key: u64, stream: Stream) -> Option<InputSender> {
        let req = &self.requests[self.index_by_key(key)?];
        match stream {
            Stream::Stdin => req.stdin_tx.clone(),
            Stream::Data => req.data_tx.clone(),
        }
    }

    fn close_stream(&mut self, key: u64, stream: Stream) {
        if let Some(i) = self.index_by_key(key) {
            match stream {
                Stream::Stdin => self.requests[i].stdin_tx = None,
                Stream::Data => self.requests[i].data_tx = None,
            }
        }
    }

    fn protocol_error(&self, e: ProtocolError) {
        tracing::warn!("{}: FastCGI protocol error: {e}; closing the connection", self.peer);
    }

    /// When the connection times out, and why: `idle_timeout` before a first
    /// request, `keepalive_timeout` between requests, `read_timeout` while a
    /// request's params or body are incomplete. None while only the
    /// application is working (or waiting for room to write).
    fn deadline(&self) -> Option<(Instant, Expiry)> {
        if self.draining && self.requests.is_empty() && self.served == 0 {
            return Some((self.last_read + FRESH_GRACE, Expiry::Stopping));
        }
        let t = &self.shared.config.timeouts;
        let (limit, why) = if self.requests.is_empty() {
            if self.served == 0 {
                (t.idle, Expiry::Idle)
            } else {
                (t.keepalive, Expiry::KeepAlive)
            }
        } else if self.pending.is_none() && self.requests.iter().any(ActiveRequest::expects_input) {
            (t.read, Expiry::Read)
        } else {
            return None;
        };
        Some((self.last_read + limit?, why))
    }

    /// Whether the server's stop may close this connection now: a kept-open
    /// connection between requests closes at once; one accepted just before
    /// the stop first gets a moment to send its request (it was accepted, so
    /// no other worker can serve it).
    fn drained(&self) -> bool {
        self.draining && (self.served > 0 || self.last_read.elapsed() >= FRESH_GRACE)
    }

    /// Decode and handle every complete record in the read buffer, unless an
    /// input queue is full.
    fn process_records(&mut self) -> Result<(), ProtocolError> {
        while self.pending.is_none() && !(self.close_when_idle && self.requests.is_empty()) {
            match record::decode(&mut self.rbuf)? {
                Some(rec) => self.on_record(rec)?,
                None => break,
            }
        }
        self.settle_eof();
        Ok(())
    }

    fn on_record(&mut self, rec: Record) -> Result<(), ProtocolError> {
        let id = rec.request_id;
        match (rec.record_type, id) {
            (FCGI_GET_VALUES, FCGI_NULL_REQUEST_ID) => {
                put_get_values_result(&mut self.wbuf, &rec.content, self.shared.admission.capabilities())?;
            }
            (FCGI_BEGIN_REQUEST | FCGI_ABORT_REQUEST | FCGI_PARAMS | FCGI_STDIN | FCGI_DATA, FCGI_NULL_REQUEST_ID) => {
                return Err(ProtocolError::NullRequestId(rec.record_type));
            }
            (t, FCGI_NULL_REQUEST_ID) => {
                tracing::info!("{}: answering FCGI_UNKNOWN_TYPE to management record type {t}", self.peer);
                put_unknown_type(&mut self.wbuf, t);
            }
            (FCGI_BEGIN_REQUEST, _) => self.on_begin(id, &rec.content)?,
            (FCGI_ABORT_REQUEST, _) => self.on_abort(id),
            (FCGI_PARAMS, _) => self.on_params(id, rec.content)?,
            (FCGI_STDIN, _) => self.on_input(id, Stream::Stdin, rec.content),
            (FCGI_DATA, _) => self.on_input(id, Stream::Data, rec.content),
            (t @ (FCGI_STDOUT | FCGI_STDERR | FCGI_END_REQUEST | FCGI_GET_VALUES_RESULT | FCGI_UNKNOWN_TYPE), _) => {
                return Err(ProtocolError::WrongDirection(t));
            }
            (t, _) => tracing::warn!("{}: ignoring a record of unknown type {t} for request {id}", self.peer),
        }
        Ok(())
    }

    fn on_begin(&mut self, id: u16, content: &[u8]) -> Result<(), ProtocolError> {
        let begin = BeginRequest::parse(content)?;
        if self.index(id).is_some() {
            return Err(ProtocolError::DuplicateRequest(id));
        }
        let config = &self.shared.config;
        if !config.multiplexed && !self.requests.is_empty() {
            tracing::warn!(
                "{}: FCGI_BEGIN_REQUEST {id} while request {} is active and multiplexing is off: FCGI_CANT_MPX_CONN",
                self.peer,
                self.requests[0].request_id
            );
            put_end_request(&mut self.wbuf, id, 0, FCGI_CANT_MPX_CONN);
            return Ok(());
        }
        if self.draining {
            // Accepted before the stop: serve it, then close.
            self.close_when_idle = true;
        }
        let Some(role) = Role::from_u16(begin.role).filter(|r| config.roles.contains(r)) else {
            tracing::warn!(
                "{}: request {id} asks for role {}, which this server does not take (roles setting); FCGI_UNKNOWN_ROLE",
                self.peer,
                begin.role
            );
            put_end_request(&mut self.wbuf, id, 0, FCGI_UNKNOWN_ROLE);
            if !begin.keep_conn() {
                self.close_when_idle = true;
            }
            return Ok(());
        };
        let (stdin_tx, stdin) = InputQueue::channel();
        let (data_tx, data) = if role == Role::Filter {
            let (tx, rx) = InputQueue::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let (stdin_tx, stdin) =
            if role == Role::Authorizer { (None, InputQueue::empty()) } else { (Some(stdin_tx), stdin) };
        self.requests.push(ActiveRequest {
            request_id: id,
            key: self.shared.next_key(),
            role,
            keep_conn: begin.keep_conn(),
            phase: Phase::Params(ParamsCollector::new(config.max_params_size)),
            stdin: Some(stdin),
            data,
            stdin_tx,
            data_tx,
            control: Arc::new(RequestControl::new()),
            stdout_sent: false,
            stderr_sent: false,
        });
        Ok(())
    }

    fn on_abort(&mut self, id: u16) {
        let Some(i) = self.index(id) else { return };
        let req = &mut self.requests[i];
        tracing::info!("{}: request {id} aborted by the web server (FCGI_ABORT_REQUEST)", self.peer);
        let unstarted = match req.phase {
            Phase::Params(_) | Phase::Ready(_) => true,
            Phase::Running => req.control.abort(),
        };
        if unstarted {
            self.finish(i, 0);
        } else {
            // The application is running it: readers now see the stream
            // end early, writers are told to stop; the application answers.
            req.stdin_tx = None;
            req.data_tx = None;
            if self.pending.as_ref().is_some_and(|p| p.key == req.key) {
                self.pending = None;
            }
        }
    }

    fn on_params(&mut self, id: u16, content: Bytes) -> Result<(), ProtocolError> {
        let Some(i) = self.index(id) else { return Ok(()) };
        let req = &mut self.requests[i];
        let Phase::Params(collector) = &mut req.phase else {
            tracing::warn!("{}: ignoring FCGI_PARAMS after the end of request {id}'s params", self.peer);
            return Ok(());
        };
        if !content.is_empty() {
            return collector
                .push(&content)
                .map_err(|over| ProtocolError::ParamsTooLarge { request_id: id, limit: over.limit });
        }
        let Phase::Params(collector) = std::mem::replace(&mut req.phase, Phase::Running) else { unreachable!() };
        let params = collector.finish().map_err(|reason| ProtocolError::Params { stream: "FCGI_PARAMS", reason })?;
        let params = merge_duplicates(params);
        if let Some(page) = self.engine_page(&params) {
            let req = self.requests.remove(i);
            put_stream(&mut self.wbuf, FCGI_STDOUT, req.request_id, &page);
            put_record(&mut self.wbuf, FCGI_STDOUT, req.request_id, &[]);
            put_end_request(&mut self.wbuf, req.request_id, 0, FCGI_REQUEST_COMPLETE);
            self.after_end(&req);
            self.served += 1;
            return Ok(());
        }
        let req = &mut self.requests[i];
        req.phase = Phase::Ready(params);
        let key = req.key;
        self.served += 1;
        if let Some(permit) = self.shared.admission.try_request() {
            self.dispatch(key, permit);
        } else {
            // Over the in-flight limit: refuse at once rather than queue
            // without bound. The web server can retry elsewhere.
            req.control.abort();
            let multiplexed = self.shared.config.multiplexed;
            self.shared.admission.note_rejected(&self.peer, multiplexed);
            self.shared.row.counters().rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if multiplexed {
                self.end_unstarted(i, FCGI_OVERLOADED);
            } else {
                let req = self.requests.remove(i);
                put_stream(&mut self.wbuf, FCGI_STDOUT, req.request_id, OVERLOADED_RESPONSE);
                put_record(&mut self.wbuf, FCGI_STDOUT, req.request_id, &[]);
                put_end_request(&mut self.wbuf, req.request_id, 0, FCGI_REQUEST_COMPLETE);
                self.after_end(&req);
            }
        }
        Ok(())
    }

    /// The status or ping page, if the request is for one (answered here,
    /// without entering Python).
    fn engine_page(&self, params: &[(Bytes, Bytes)]) -> Option<Vec<u8>> {
        let config = &self.shared.config;
        if config.status_path.is_none() && config.ping_path.is_none() {
            return None;
        }
        let get = |name: &str| params.iter().find(|(n, _)| n == name.as_bytes()).map(|(_, v)| v.clone());
        let (path, query) = match get("REQUEST_URI") {
            Some(uri) => match uri.iter().position(|&b| b == b'?') {
                Some(q) => (uri.slice(..q).to_vec(), uri.slice(q + 1..).to_vec()),
                None => (uri.to_vec(), get("QUERY_STRING").map(|q| q.to_vec()).unwrap_or_default()),
            },
            None => (
                [get("SCRIPT_NAME").unwrap_or_default(), get("PATH_INFO").unwrap_or_default()].concat(),
                get("QUERY_STRING").map(|q| q.to_vec()).unwrap_or_default(),
            ),
        };
        if config.ping_path.as_ref().is_some_and(|p| p.as_bytes() == path) {
            return Some(super::status::response("200 OK", "text/plain", "pong\n"));
        }
        if config.status_path.as_ref().is_some_and(|p| p.as_bytes() == path) {
            let has =
                |word: &[u8]| query.split(|&b| b == b'&').any(|part| part.split(|&b| b == b'=').next() == Some(word));
            let (content_type, body) = self.shared.status(has(b"json"), has(b"full"));
            return Some(super::status::response("200 OK", content_type, &body));
        }
        None
    }

    fn dispatch(&mut self, key: u64, permit: OwnedSemaphorePermit) {
        let Some(i) = self.index_by_key(key) else { return };
        let req = &mut self.requests[i];
        let Phase::Ready(params) = std::mem::replace(&mut req.phase, Phase::Running) else { return };
        let Some(stdin) = req.stdin.take() else { return };
        let request = Request {
            request_id: req.request_id,
            role: req.role,
            params,
            stdin,
            data: req.data.take(),
            sink: ResponseSink::new(self.out_tx.clone(), key),
            control: req.control.clone(),
            permit,
        };
        self.shared.count_dispatch();
        self.shared.handler.dispatch(request);
    }

    fn on_input(&mut self, id: u16, stream: Stream, content: Bytes) {
        let Some(i) = self.index(id) else { return };
        let req = &mut self.requests[i];
        let tx = match stream {
            Stream::Stdin => &mut req.stdin_tx,
            Stream::Data => &mut req.data_tx,
        };
        let Some(sender) = tx.as_ref() else {
            // After the end record, for a role without this stream, or aborted.
            tracing::debug!("{}: ignoring {stream:?} record for request {id}", self.peer);
            return;
        };
        let end = content.is_empty();
        match sender.try_send(content) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(chunk)) => {
                self.pending = Some(Pending { key: req.key, stream, chunk });
                return;
            }
        }
        if end {
            *tx = None;
        }
    }

    fn on_output(&mut self, message: OutMessage) {
        // Output of a request that was answered already (aborted before it
        // started) or that belongs to an earlier request with the same id.
        let Some(i) = self.index_by_key(message.key) else { return };
        let req = &mut self.requests[i];
        let aborted = req.control.is_aborted();
        match message.kind {
            Output::Stdout(data) if !aborted => {
                put_stream(&mut self.wbuf, FCGI_STDOUT, req.request_id, &data);
                req.stdout_sent |= !data.is_empty();
            }
            Output::Stderr(data) if !aborted => {
                put_stream(&mut self.wbuf, FCGI_STDERR, req.request_id, &data);
                req.stderr_sent |= !data.is_empty();
            }
            Output::Stdout(_) | Output::Stderr(_) => {}
            Output::End { app_status } => self.finish(i, app_status),
            Output::Terminated => {
                let req = &self.requests[i];
                tracing::warn!(
                    "{}: request {} ended by request_terminate_timeout{}",
                    self.peer,
                    req.request_id,
                    if req.stdout_sent { " (its response is cut short)" } else { ": answered with 504" }
                );
                if !req.stdout_sent {
                    put_stream(&mut self.wbuf, FCGI_STDOUT, req.request_id, TERMINATED_RESPONSE);
                    self.requests[i].stdout_sent = true;
                }
                self.finish(i, 1);
            }
        }
    }

    /// Answer a request the application never saw.
    fn end_unstarted(&mut self, i: usize, protocol_status: u8) {
        let req = self.requests.remove(i);
        put_end_request(&mut self.wbuf, req.request_id, 0, protocol_status);
        self.after_end(&req);
    }

    /// Close the output streams and send FCGI_END_REQUEST (§5.5).
    fn finish(&mut self, i: usize, app_status: u32) {
        let req = self.requests.remove(i);
        if req.stdout_sent {
            put_record(&mut self.wbuf, FCGI_STDOUT, req.request_id, &[]);
        }
        if req.stderr_sent {
            put_record(&mut self.wbuf, FCGI_STDERR, req.request_id, &[]);
        }
        put_end_request(&mut self.wbuf, req.request_id, app_status, FCGI_REQUEST_COMPLETE);
        self.after_end(&req);
    }

    fn after_end(&mut self, req: &ActiveRequest) {
        if self.pending.as_ref().is_some_and(|p| p.key == req.key) {
            self.pending = None;
        }
        if !req.keep_conn {
            self.close_when_idle = true;
        }
    }

    /// The peer closed its side.
    fn on_eof(&mut self) {
        self.read_closed = true;
        self.settle_eof();
    }

    /// Once the peer closed its side and every buffered record is handled:
    /// report a partial record, abort requests that still expect input
    /// (those whose input is complete may still send their response).
    fn settle_eof(&mut self) {
        if !self.read_closed || self.pending.is_some() {
            return;
        }
        if !self.rbuf.is_empty() {
            let want = if self.rbuf.len() >= FCGI_HEADER_LEN {
                FCGI_HEADER_LEN + record::Header::parse(&self.rbuf).body_len()
            } else {
                FCGI_HEADER_LEN
            };
            self.protocol_error(ProtocolError::Truncated { have: self.rbuf.len(), want });
            self.rbuf.clear();
        }
        let mut i = 0;
        while i < self.requests.len() {
            let req = &mut self.requests[i];
            let running = matches!(req.phase, Phase::Running);
            let input_open = req.stdin_tx.is_some() || req.data_tx.is_some();
            if !running || (input_open && req.control.abort()) {
                // Never started: nobody is left to answer.
                self.requests.remove(i);
                continue;
            }
            if input_open {
                tracing::info!(
                    "{}: the web server closed the connection before request {}'s body ended",
                    self.peer,
                    req.request_id
                );
                req.stdin_tx = None;
                req.data_tx = None;
            }
            i += 1;
        }
    }

    fn abort_all(&mut self) {
        for req in self.requests.drain(..) {
            req.control.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;
    use tokio::io::{duplex, split, DuplexStream, ReadHalf, WriteHalf};

    use super::*;
    use crate::protocol::params::put_pair;
    use crate::server::request::Handler;
    use crate::server::shutdown::StopHandle;
    use crate::server::{Config, ScoreboardRow, Shared};

    /// Answers every request with its stdin, from a plain thread.
    struct Echo;

    impl Handler for Echo {
        fn dispatch(&self, mut request: Request) {
            std::thread::spawn(move || {
                assert!(request.control.start());
                let mut body = Vec::new();
                while let Ok(Some(chunk)) = request.stdin.blocking_next() {
                    body.extend_from_slice(&chunk);
                }
                let mut out = b"Status: 200 OK\r\n\r\n".to_vec();
                out.extend_from_slice(&body);
                let _ = request.sink.blocking_send(Output::Stdout(Bytes::from(out)));
                let _ = request.sink.blocking_send(Output::End { app_status: 0 });
            });
        }
    }

    fn start(config: Config) -> (WriteHalf<DuplexStream>, ReadHalf<DuplexStream>) {
        let (ours, theirs) = duplex(1 << 20);
        let shared =
            Arc::new(Shared::new(config, Arc::new(Echo), ScoreboardRow::alone().unwrap(), StopHandle::new(), None));
        // A connection permit of its own (the accept loop's job in production).
        let conn_permit =
            Arc::new(tokio::sync::Semaphore::new(1)).try_acquire_owned().expect("a fresh semaphore has a permit");
        let ticket = crate::server::ConnTicket::new(conn_permit, shared.row.clone());
        let (rd, wr) = split(theirs);
        tokio::spawn(serve_connection(rd, wr, "test".into(), shared, CancellationToken::new(), ticket));
        let (rd, wr) = split(ours);
        (wr, rd)
    }

    fn begin(out: &mut BytesMut, id: u16, role: u16, flags: u8) {
        let mut body = [0u8; 8];
        body[..2].copy_from_slice(&role.to_be_bytes());
        body[2] = flags;
        put_record(out, FCGI_BEGIN_REQUEST, id, &body);
    }

    fn params(out: &mut BytesMut, id: u16, pairs: &[(&str, &str)]) {
        let mut p = BytesMut::new();
        for (n, v) in pairs {
            put_pair(&mut p, n.as_bytes(), v.as_bytes());
        }
        put_stream(out, FCGI_PARAMS, id, &p);
        put_record(out, FCGI_PARAMS, id, &[]);
    }

    /// Read records until EOF or until `stop` says so.
    async fn read_records(rd: &mut ReadHalf<DuplexStream>, stop: impl Fn(&Record) -> bool) -> Vec<Record> {
        let mut buf = BytesMut::new();
        let mut records = Vec::new();
        loop {
            while let Some(rec) = record::decode(&mut buf).unwrap() {
                let done = stop(&rec);
                records.push(rec);
                if done {
                    return records;
                }
            }
            if rd.read_buf(&mut buf).await.unwrap() == 0 {
                return records;
            }
        }
    }

    fn is_end(rec: &Record) -> bool {
        rec.record_type == FCGI_END_REQUEST
    }

    #[tokio::test]
    async fn echo_with_keep_conn_then_close() {
        let (mut wr, mut rd) = start(Config::default());
        for round in 0..2u8 {
            let mut out = BytesMut::new();
            begin(&mut out, 1, FCGI_RESPONDER, if round == 0 { FCGI_KEEP_CONN } else { 0 });
            params(&mut out, 1, &[("REQUEST_METHOD", "POST")]);
            put_stream(&mut out, FCGI_STDIN, 1, b"hello");
            put_record(&mut out, FCGI_STDIN, 1, &[]);
            wr.write_all(&out).await.unwrap();
            let recs = read_records(&mut rd, is_end).await;
            let stdout: Vec<u8> =
                recs.iter().filter(|r| r.record_type == FCGI_STDOUT).flat_map(|r| r.content.to_vec()).collect();
            assert_eq!(stdout, b"Status: 200 OK\r\n\r\nhello");
            assert_eq!(recs.last().unwrap().content[4], FCGI_REQUEST_COMPLETE);
        }
        // The second request had no FCGI_KEEP_CONN: the connection closes.
        assert!(read_records(&mut rd, |_| false).await.is_empty());
    }

    #[tokio::test]
    async fn management_records_and_refusals() {
        let (mut wr, mut rd) = start(Config { max_in_flight: 7, ..Config::default() });
        let mut out = BytesMut::new();
        let mut q = BytesMut::new();
        put_pair(&mut q, b"FCGI_MAX_REQS", b"");
        put_record(&mut out, FCGI_GET_VALUES, 0, &q);
        put_record(&mut out, 42, 0, &[]);
        begin(&mut out, 1, FCGI_FILTER, FCGI_KEEP_CONN); // not in roles
        begin(&mut out, 2, FCGI_RESPONDER, FCGI_KEEP_CONN);
        begin(&mut out, 3, FCGI_RESPONDER, FCGI_KEEP_CONN); // while 2 is active, no multiplexing
        put_record(&mut out, FCGI_ABORT_REQUEST, 2, &[]); // before its params: answered at once
        wr.write_all(&out).await.unwrap();
        let recs = read_records(&mut rd, |r| is_end(r) && r.request_id == 2).await;
        let kinds: Vec<(u8, u16)> = recs.iter().map(|r| (r.record_type, r.request_id)).collect();
        assert_eq!(
            kinds,
            vec![
                (FCGI_GET_VALUES_RESULT, 0),
                (FCGI_UNKNOWN_TYPE, 0),
                (FCGI_END_REQUEST, 1),
                (FCGI_END_REQUEST, 3),
                (FCGI_END_REQUEST, 2)
            ]
        );
        assert!(recs[0].content.ends_with(b"FCGI_MAX_REQS7"));
        assert_eq!(recs[1].content[0], 42);
        assert_eq!(recs[2].content[4], FCGI_UNKNOWN_ROLE);
        assert_eq!(recs[3].content[4], FCGI_CANT_MPX_CONN);
        assert_eq!(recs[4].content[4], FCGI_REQUEST_COMPLETE);
    }

    #[tokio::test]
    async fn protocol_errors_close_the_connection() {
        for bad in [
            {
                let mut out = BytesMut::new();
                begin(&mut out, 0, FCGI_RESPONDER, 0);
                out
            },
            BytesMut::from(&[2u8, 1, 0, 1, 0, 0, 0, 0][..]),
            {
                let mut out = BytesMut::new();
                begin(&mut out, 1, FCGI_RESPONDER, 0);
                put_record(&mut out, FCGI_STDOUT, 1, b"x");
                out
            },
        ] {
            let (mut wr, mut rd) = start(Config::default());
            wr.write_all(&bad).await.unwrap();
            assert!(read_records(&mut rd, |_| false).await.is_empty());
        }
    }

    #[tokio::test]
    async fn params_over_the_limit_close_the_connection() {
        let (mut wr, mut rd) = start(Config { max_params_size: 100, ..Config::default() });
        let mut out = BytesMut::new();
        begin(&mut out, 1, FCGI_RESPONDER, 0);
        params(&mut out, 1, &[("HTTP_X", &"v".repeat(200))]);
        out.put_u8(0);
        wr.write_all(&out).await.unwrap();
        assert!(read_records(&mut rd, |_| false).await.is_empty());
    }
}
