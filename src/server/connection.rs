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

use super::loglimit::{self, LogLimit};
use super::request::{
    InputQueue, InputSender, OutMessage, Output, Request, RequestControl, RequestLine, ResponseSink,
    OUTPUT_QUEUE_MESSAGES,
};
use super::unread::{consume_peeked, read_after_peek, Unread};
use super::Shared;
use crate::protocol::management::{put_end_request, put_get_values_result, put_unknown_type, BeginRequest};
use crate::protocol::params::{merge_duplicates, PairsError, ParamsCollector};
use crate::protocol::record::{self, put_record, put_stderr, put_stream, Record};
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
    /// When its FCGI_BEGIN_REQUEST arrived (for `params_timeout`).
    began: Instant,
    /// The method and target (log lines) and `CONTENT_LENGTH`, once its
    /// params are complete; with the FCGI_STDIN bytes received, a mismatch
    /// with the announced length is noticed.
    line: Option<RequestLine>,
    stdin_bytes: u64,
}

impl ActiveRequest {
    /// Whether the application is running it.
    fn running(&self) -> bool {
        matches!(self.phase, Phase::Running)
    }

    /// Whether its params or body (FCGI_STDIN, FCGI_DATA) are still arriving.
    fn expects_input(&self) -> bool {
        matches!(self.phase, Phase::Params(_)) || self.stdin_tx.is_some() || self.data_tx.is_some()
    }

    /// "request 1 (GET /path)".
    fn describe(&self) -> String {
        match &self.line {
            Some(line) if line.method.is_some() => {
                format!("request {} ({} {})", self.request_id, line.method_text(), line.target())
            }
            _ => format!("request {}", self.request_id),
        }
    }
}

/// Which timeout closes a connection (the message is made only when it fires).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    Stopping,
    Idle,
    KeepAlive,
    Params,
    Read,
    Send,
}

impl Expiry {
    fn describe(self, t: &super::Timeouts) -> String {
        let secs = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64());
        match self {
            Expiry::Stopping => "no request arrived on a connection accepted just before the stop".into(),
            Expiry::Idle => format!("no request within {}s (idle_timeout)", secs(t.idle)),
            Expiry::KeepAlive => format!("kept-open connection idle for {}s (keepalive_timeout)", secs(t.keepalive)),
            Expiry::Params => {
                format!(
                    "a request's head (BEGIN_REQUEST to the end of PARAMS) took over {}s (params_timeout)",
                    secs(t.params)
                )
            }
            Expiry::Read => {
                format!("no request bytes for {}s while a request was incomplete (read_timeout)", secs(t.read))
            }
            Expiry::Send => format!("the web server accepted no output for {}s (send_timeout)", secs(t.send)),
        }
    }
}

static PROTOCOL_ERRORS: LogLimit = LogLimit::new(loglimit::WINDOW);
static TIMEOUTS: LogLimit = LogLimit::new(loglimit::WINDOW);
static SEND_TIMEOUTS: LogLimit = LogLimit::new(loglimit::WINDOW);
static LENGTH_MISMATCHES: LogLimit = LogLimit::new(loglimit::WINDOW);

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
    /// The next record is a FCGI_BEGIN_REQUEST that waits for the current
    /// request to end (see `next_begin_must_wait`); nothing more is read.
    held: bool,
    /// A request ended before all of its input arrived (the peer may still
    /// be sending it): closing must wait for the peer (lingering close).
    input_left: bool,
    /// The server is shutting down: close once nothing is active.
    draining: bool,
    /// When bytes last arrived (for `read_timeout`).
    last_read: Instant,
    /// Since when the connection waits for its next request: accepted, or
    /// its last request ended (for `idle_timeout`/`keepalive_timeout`; bytes
    /// that trickle in do not move it).
    head_since: Instant,
    /// While no request is active: when the first byte of an incomplete
    /// record arrived (a head on its way, for `params_timeout`).
    partial_since: Option<Instant>,
    /// Since when output waits unwritten without the web server taking any
    /// (for `send_timeout`); None while the write buffer is empty.
    write_stalled_since: Option<Instant>,
    /// How many of the first bytes in `rbuf` are still in the socket: a
    /// fresh connection's request is looked at (`MSG_PEEK`) and consumed
    /// only once answered, so that consuming it does not wake the web
    /// server before the answer does (see `unread.rs`).
    peeked: usize,
    /// Requests this connection has carried.
    served: u64,
    /// A FCGI_BEGIN_REQUEST has arrived on it.
    begun: bool,
    /// This connection's entry for making room at `max_conns`, and whether
    /// it was last marked as holding no request.
    evictable: Arc<super::evict::Evictable>,
    marked_idle: bool,
    /// Its `max_conns` slot and scoreboard counts.
    ticket: super::ConnTicket,
}

/// Serve one accepted connection until it closes.
pub(crate) async fn serve_connection<R, W>(
    mut rd: R,
    mut wr: W,
    peer: Arc<str>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    ticket: super::ConnTicket,
) where
    R: AsyncRead + Unread + Unpin,
    W: AsyncWrite + Unpin,
{
    let (out_tx, mut out_rx) = mpsc::channel(OUTPUT_QUEUE_MESSAGES);
    let now = Instant::now();
    let evictable = shared.idle.register();
    let evict = evictable.token.clone();
    let kill = shared.kill.clone();
    let mut conn = Conn {
        shared,
        peer,
        requests: Vec::new(),
        rbuf: BytesMut::with_capacity(16 * 1024),
        wbuf: BytesMut::with_capacity(16 * 1024),
        out_tx,
        pending: None,
        last_read: now,
        head_since: now,
        partial_since: None,
        write_stalled_since: None,
        evictable,
        marked_idle: true,
        peeked: 0,
        served: 0,
        begun: false,
        close_when_idle: false,
        read_closed: false,
        held: false,
        input_left: false,
        draining: false,
        ticket,
    };
    tracing::debug!("{}: connection accepted", conn.peer);
    // One timer for the connection's life, moved only when the deadline moves
    // (a new timer per turn of the loop cost a timer-wheel insert and removal
    // per record).
    let timer = sleep_until(now);
    tokio::pin!(timer);
    let mut timer_at: Option<Instant> = None;
    // Likewise one waiter per token for the connection's life (a new one per
    // turn joined and left each token's waiter list: 1.1k instructions per
    // request). Each is polled no more once it has fired.
    let stopping = shutdown.cancelled();
    let killed = kill.cancelled();
    let evicted = evict.cancelled();
    tokio::pin!(stopping, killed, evicted);
    // A fresh socket: the runtime learns that it is readable only from its
    // next turn, but the request is usually there already (web servers
    // write it right after connecting). Look at it now, as uWSGI reads it,
    // and consume it once answered (`peeked`).
    let opened = match rd.peek_now(&mut conn.rbuf) {
        Some(Ok(0)) => {
            conn.on_eof();
            Ok(())
        }
        Some(Ok(n)) => {
            conn.peeked = n;
            conn.process_records()
        }
        Some(Err(e)) if e.kind() != std::io::ErrorKind::WouldBlock => {
            tracing::debug!("{}: read error: {e}", conn.peer);
            conn.on_eof();
            Ok(())
        }
        _ => Ok(()),
    };
    let graceful = if let Err(e) = opened {
        conn.protocol_error(e);
        false
    } else {
        loop {
            // The current request ended: take the one that waited.
            if conn.held && conn.requests.is_empty() {
                conn.held = false;
                if let Err(e) = conn.process_records() {
                    conn.protocol_error(e);
                    break false;
                }
            }
            if !conn.holds_peek() {
                if let Err(e) = consume_peeked(&rd, &mut conn.peeked) {
                    tracing::debug!("{}: read error: {e}", conn.peer);
                    break false;
                }
            }
            if conn.requests.is_empty()
                && conn.wbuf.is_empty()
                && (conn.close_when_idle || conn.read_closed || conn.drained())
            {
                break true;
            }
            conn.note_state();
            let reading = !(conn.read_closed || conn.close_when_idle && conn.requests.is_empty())
                && conn.pending.is_none()
                && !conn.held;
            let pending_tx = conn.pending.as_ref().and_then(|p| conn.sender(p.key, p.stream));
            let deadline = conn.deadline();
            if let Some((at, _)) = deadline {
                if timer_at != Some(at) {
                    timer.as_mut().reset(at);
                    timer_at = Some(at);
                }
            }
            tokio::select! {
                biased;
                written = wr.write(&conn.wbuf), if !conn.wbuf.is_empty() => match written {
                    Ok(0) | Err(_) => {
                        tracing::debug!("{}: the web server closed the connection while we were writing", conn.peer);
                        break false;
                    }
                    Ok(n) => {
                        conn.wbuf.advance(n);
                        conn.write_stalled_since = Some(Instant::now());
                    }
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
                _ = &mut timer, if deadline.is_some() => {
                    if let Some((_, why)) = deadline {
                        conn.expired(why);
                    }
                    break false;
                },
                read = read_after_peek(&mut rd, &mut conn.rbuf, &mut conn.peeked), if reading => match read {
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
                _ = &mut stopping, if !conn.draining => conn.draining = true,
                _ = &mut killed => {
                    tracing::debug!("{}: closed: the server has stopped", conn.peer);
                    break false;
                },
                _ = &mut evicted, if conn.marked_idle => {
                    // Nothing of ours is in flight on it: close at once (no
                    // lingering half-close), so its slot is free now.
                    tracing::debug!("{}: closed to make room for a new connection (max_conns)", conn.peer);
                    break false;
                },
            }
        }
    };
    let _ = consume_peeked(&rd, &mut conn.peeked);
    conn.abort_all();
    // Closing with unread input in our receive buffer turns the close into a
    // reset, which can destroy the response before the peer reads it. When
    // every request's input arrived whole and nothing more is buffered (the
    // web server sends nothing after a request without FCGI_KEEP_CONN), the
    // close is a plain FIN: close at once, as uWSGI does, rather than wait for
    // the peer's EOF (one more wake-up per connection).
    let nothing_unread = !conn.input_left && conn.peeked == 0 && conn.rbuf.is_empty() && rd.nothing_unread();
    if graceful && !conn.read_closed && !nothing_unread {
        // Half-close, then wait briefly for the peer's EOF (php-fpm and flup
        // do the same).
        let _ = wr.shutdown().await;
        let wait = if conn.draining { CLOSE_DRAIN_SHUTDOWN } else { CLOSE_DRAIN };
        let sink = &mut conn.rbuf;
        let drain = tokio::time::timeout(wait, async {
            loop {
                sink.clear();
                sink.reserve(8192);
                match rd.read_buf(sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        });
        // A stop that begins meanwhile cuts the wait short: a lingering
        // connection must not delay the exit.
        tokio::select! {
            _ = drain => {},
            _ = async { shutdown.cancelled().await; tokio::time::sleep(CLOSE_DRAIN_SHUTDOWN).await } => {},
        }
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
        crate::log_limited!(
            warn,
            PROTOCOL_ERRORS,
            "{}: FastCGI protocol error: {e}; closing the connection",
            self.peer
        );
    }

    /// Keep the times the deadlines count from, and this connection's entry
    /// for making room at `max_conns`, up to date (once per loop turn).
    fn note_state(&mut self) {
        let now = Instant::now();
        if self.wbuf.is_empty() {
            self.write_stalled_since = None;
        } else if self.write_stalled_since.is_none() {
            self.write_stalled_since = Some(now);
        }
        if self.requests.is_empty() && !self.rbuf.is_empty() {
            self.partial_since.get_or_insert(now);
        } else {
            self.partial_since = None;
        }
        let idle = self.wbuf.is_empty() && !self.requests.iter().any(ActiveRequest::running);
        if idle != self.marked_idle {
            self.marked_idle = idle;
            self.evictable.set_idle(&self.shared.idle, idle.then_some(self.head_since.min(now).into_std()));
        }
    }

    /// When the connection times out, and why (the earliest that applies):
    /// - `send_timeout` while output waits and the web server takes none;
    /// - `idle_timeout` before a first request, `keepalive_timeout` between
    ///   requests, counted from accept or the last request's end;
    /// - `params_timeout` for a request head, from its BEGIN_REQUEST (or its
    ///   first byte) to the end of its PARAMS, however slowly it trickles;
    /// - `read_timeout` between bytes of a request's params or body (not
    ///   while its input queue is full: then the application is the one
    ///   that waits).
    ///
    /// None only while the application is working on every active request.
    fn deadline(&self) -> Option<(Instant, Expiry)> {
        let t = &self.shared.config.timeouts;
        let mut earliest: Option<(Instant, Expiry)> = None;
        let mut consider = |since: Instant, limit: Option<Duration>, why: Expiry| {
            if let Some(limit) = limit {
                let at = since + limit;
                if earliest.is_none_or(|(e, _)| at < e) {
                    earliest = Some((at, why));
                }
            }
        };
        if let Some(since) = self.write_stalled_since {
            consider(since, t.send, Expiry::Send);
        }
        if self.requests.is_empty() {
            if self.draining && self.served == 0 {
                consider(self.head_since, Some(FRESH_GRACE), Expiry::Stopping);
            }
            if self.served == 0 {
                consider(self.head_since, t.idle, Expiry::Idle);
            } else {
                consider(self.head_since, t.keepalive, Expiry::KeepAlive);
            }
            if let Some(since) = self.partial_since {
                consider(since, t.params, Expiry::Params);
            }
        } else {
            for req in &self.requests {
                if matches!(req.phase, Phase::Params(_)) {
                    consider(req.began, t.params, Expiry::Params);
                }
            }
            if self.pending.is_none() && self.requests.iter().any(ActiveRequest::expects_input) {
                consider(self.last_read, t.read, Expiry::Read);
            }
        }
        earliest
    }

    /// A deadline passed: say what it means for the requests on the connection.
    fn expired(&self, why: Expiry) {
        let what = why.describe(&self.shared.config.timeouts);
        let running: Vec<String> = self.requests.iter().filter(|r| r.running()).map(ActiveRequest::describe).collect();
        if why == Expiry::Send {
            crate::log_limited!(
                warn,
                SEND_TIMEOUTS,
                "{}: {what}; aborting {} and closing the connection",
                self.peer,
                if running.is_empty() { "nothing".to_string() } else { running.join(", ") }
            );
        } else if running.is_empty() {
            crate::log_limited!(info, TIMEOUTS, "{}: {what}; closing the connection", self.peer);
        } else {
            crate::log_limited!(
                warn,
                TIMEOUTS,
                "{}: {what}; aborting {} and closing the connection",
                self.peer,
                running.join(", ")
            );
        }
    }

    /// Whether the peeked bytes stay in the socket for now: while no request
    /// expects more input and a request runs or its answer waits to be
    /// written. Consuming them then would wake the web server before the
    /// answer does; anything else (input still to read, nothing running or
    /// unwritten) consumes them first. Never while input is expected: the
    /// peeked bytes may be all the room the peer has to send it.
    fn holds_peek(&self) -> bool {
        !self.requests.iter().any(|r| r.expects_input()) && (!self.requests.is_empty() || !self.wbuf.is_empty())
    }

    /// Whether the server's stop may close this connection now: a kept-open
    /// connection between requests closes at once, but only when no part of
    /// a next request has arrived (that one is served first); one accepted
    /// just before the stop first gets a moment to send its request (it was
    /// accepted, so no other worker can serve it).
    fn drained(&self) -> bool {
        self.draining && self.rbuf.is_empty() && (self.served > 0 || self.head_since.elapsed() >= FRESH_GRACE)
    }

    /// Decode and handle every complete record in the read buffer, unless an
    /// input queue is full.
    fn process_records(&mut self) -> Result<(), ProtocolError> {
        while self.pending.is_none() && !(self.close_when_idle && self.requests.is_empty()) {
            if self.next_begin_must_wait() {
                self.held = true;
                break;
            }
            match record::decode(&mut self.rbuf)? {
                Some(rec) => self.on_record(rec)?,
                None => break,
            }
        }
        self.settle_eof();
        Ok(())
    }

    /// php-fpm serialises: a FCGI_BEGIN_REQUEST that arrives on a busy
    /// connection that is not multiplexed waits (unread, with everything
    /// after it) until the current request ends. HAProxy's `option
    /// keep-conn` sends the next request as soon as a response's body is
    /// complete, before its FCGI_END_REQUEST, and ignores FCGI_CANT_MPX_CONN.
    /// Only when every active request is running with its input complete; a
    /// BEGIN_REQUEST beside one still receiving input is a concurrent request
    /// and gets FCGI_CANT_MPX_CONN.
    fn next_begin_must_wait(&self) -> bool {
        if self.shared.config.multiplexed || self.requests.is_empty() || self.rbuf.len() < FCGI_HEADER_LEN {
            return false;
        }
        let header = record::Header::parse(&self.rbuf);
        header.record_type == FCGI_BEGIN_REQUEST
            && header.request_id != FCGI_NULL_REQUEST_ID
            && self.requests.iter().all(|r| r.running() && !r.expects_input())
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
            (FCGI_STDIN, _) => self.on_input(id, Stream::Stdin, rec.content)?,
            (FCGI_DATA, _) => self.on_input(id, Stream::Data, rec.content)?,
            (t @ (FCGI_STDOUT | FCGI_STDERR | FCGI_END_REQUEST | FCGI_GET_VALUES_RESULT | FCGI_UNKNOWN_TYPE), _) => {
                return Err(ProtocolError::WrongDirection(t));
            }
            (t, _) => tracing::warn!("{}: ignoring a record of unknown type {t} for request {id}", self.peer),
        }
        Ok(())
    }

    fn on_begin(&mut self, id: u16, content: &[u8]) -> Result<(), ProtocolError> {
        let begin = BeginRequest::parse(content)?;
        if !std::mem::replace(&mut self.begun, true) {
            self.shared.note_first_request(begin.keep_conn());
        }
        if begin.keep_conn() {
            self.ticket.kept();
        } else {
            self.ticket.not_kept();
        }
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
            began: self.partial_since.unwrap_or_else(Instant::now),
            line: None,
            stdin_bytes: 0,
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
        let max_params = self.shared.config.max_params;
        let params = collector.finish(max_params).map_err(|e| match e {
            PairsError::Malformed(reason) => ProtocolError::Params { stream: "FCGI_PARAMS", reason },
            PairsError::TooMany => ProtocolError::TooManyParams { request_id: id, limit: max_params },
        })?;
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
        req.line = Some(RequestLine::of(&params));
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
            line: req.line.clone().unwrap_or_default(),
            stdin,
            data: req.data.take(),
            sink: ResponseSink::new(self.out_tx.clone(), key),
            control: req.control.clone(),
            permit,
        };
        self.shared.count_dispatch();
        self.shared.handler.dispatch(request);
    }

    fn on_input(&mut self, id: u16, stream: Stream, content: Bytes) -> Result<(), ProtocolError> {
        let Some(i) = self.index(id) else { return Ok(()) };
        let req = &mut self.requests[i];
        if matches!(req.phase, Phase::Params(_)) {
            // Nothing may be queued for a request that is not running yet:
            // it could wait for a reader that never comes.
            let record_type = if stream == Stream::Stdin { FCGI_STDIN } else { FCGI_DATA };
            return Err(ProtocolError::InputBeforeParams { record_type, request_id: id });
        }
        if stream == Stream::Stdin && req.stdin_tx.is_some() {
            req.stdin_bytes += content.len() as u64;
            let announced = req.line.as_ref().and_then(|line| line.content_length);
            if content.is_empty() && announced.is_some_and(|n| n != req.stdin_bytes) {
                crate::log_limited!(
                    warn,
                    LENGTH_MISMATCHES,
                    "{}: {}: CONTENT_LENGTH says {} bytes, but the body (FCGI_STDIN) had {}",
                    self.peer,
                    req.describe(),
                    announced.unwrap_or_default(),
                    req.stdin_bytes
                );
            }
        }
        let tx = match stream {
            Stream::Stdin => &mut req.stdin_tx,
            Stream::Data => &mut req.data_tx,
        };
        let Some(sender) = tx.as_ref() else {
            // After the end record, for a role without this stream, or aborted.
            tracing::debug!("{}: ignoring {stream:?} record for request {id}", self.peer);
            return Ok(());
        };
        let end = content.is_empty();
        match sender.try_send(content) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(chunk)) => {
                self.pending = Some(Pending { key: req.key, stream, chunk });
                return Ok(());
            }
        }
        if end {
            *tx = None;
        }
        Ok(())
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
                put_stderr(&mut self.wbuf, req.request_id, &data);
                req.stderr_sent |= !data.is_empty();
            }
            Output::Stdout(_) | Output::Stderr(_) => {}
            Output::End { app_status } => self.finish(i, app_status),
            Output::Last { data, app_status } => {
                if !aborted {
                    put_stream(&mut self.wbuf, FCGI_STDOUT, req.request_id, &data);
                    req.stdout_sent |= !data.is_empty();
                }
                self.finish(i, app_status);
            }
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
        self.input_left |= req.expects_input();
        if self.requests.is_empty() {
            self.head_since = Instant::now();
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

    /// Answers with `len` bytes of body in 16 KiB messages, from a tokio task (so a paused
    /// clock governs everything); says on `done` whether it was stopped (connection gone
    /// or request aborted) before the end.
    struct Flood {
        len: usize,
        done: std::sync::mpsc::Sender<bool>,
    }

    impl Handler for Flood {
        fn dispatch(&self, request: Request) {
            let (len, done) = (self.len, self.done.clone());
            tokio::spawn(async move {
                assert!(request.control.start());
                let head = Bytes::from_static(b"Status: 200 OK\r\n\r\n");
                let mut stopped = request.sink.send(Output::Stdout(head)).await.is_err();
                let mut sent = 0;
                while !stopped && sent < len {
                    let chunk = Bytes::from(vec![b'x'; 16 * 1024]);
                    stopped = request.control.is_aborted() || request.sink.send(Output::Stdout(chunk)).await.is_err();
                    sent += 16 * 1024;
                }
                let _ = request.sink.send(Output::End { app_status: 0 }).await;
                let _ = done.send(stopped);
            });
        }
    }

    fn start(config: Config) -> (WriteHalf<DuplexStream>, ReadHalf<DuplexStream>) {
        start_with(config, Arc::new(Echo), 1 << 20)
    }

    /// A connection task served by `handler`, over a duplex pipe of `buffer` bytes each way.
    fn start_with(
        config: Config,
        handler: Arc<dyn Handler>,
        buffer: usize,
    ) -> (WriteHalf<DuplexStream>, ReadHalf<DuplexStream>) {
        let (ours, theirs) = duplex(buffer);
        let shared = Arc::new(Shared::new(config, handler, ScoreboardRow::alone().unwrap(), StopHandle::new(), None));
        // A connection permit of its own (the accept loop's job in production).
        let conn_permit =
            Arc::new(tokio::sync::Semaphore::new(1)).try_acquire_owned().expect("a fresh semaphore has a permit");
        let ticket = crate::server::ConnTicket::new(conn_permit, shared.row.clone(), true);
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
    async fn read_records(rd: &mut ReadHalf<DuplexStream>, mut stop: impl FnMut(&Record) -> bool) -> Vec<Record> {
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

    #[tokio::test]
    async fn stdin_before_the_end_of_params_is_a_protocol_error() {
        // Nine STDIN records would fill the input queue of a request that
        // never runs; the connection would wait for a reader forever.
        let (mut wr, mut rd) = start(Config::default());
        let mut out = BytesMut::new();
        begin(&mut out, 1, FCGI_RESPONDER, 0);
        let mut p = BytesMut::new();
        put_pair(&mut p, b"A", b"b");
        put_record(&mut out, FCGI_PARAMS, 1, &p);
        for _ in 0..9 {
            put_record(&mut out, FCGI_STDIN, 1, b"x");
        }
        wr.write_all(&out).await.unwrap();
        assert!(read_records(&mut rd, |_| false).await.is_empty(), "closed without an answer");
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_that_trickles_is_cut_at_params_timeout() {
        let timeouts = super::super::Timeouts { params: Some(Duration::from_secs(3)), ..Default::default() };
        let (mut wr, mut rd) = start(Config { timeouts, ..Config::default() });
        let mut head = BytesMut::new();
        begin(&mut head, 1, FCGI_RESPONDER, 0);
        params(&mut head, 1, &[("REQUEST_METHOD", "GET")]);
        let started = Instant::now();
        let closed = async { read_records(&mut rd, |_| false).await };
        let trickle = async {
            for byte in head.iter() {
                // One byte a second: every read is within read_timeout and idle_timeout.
                if wr.write_all(&[*byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            std::future::pending::<()>().await
        };
        tokio::select! {
            records = closed => assert!(records.is_empty()),
            _ = trickle => unreachable!(),
        }
        let took = started.elapsed();
        assert!(took >= Duration::from_secs(3) && took < Duration::from_secs(5), "closed after {took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_counts_from_accept_not_from_the_last_byte() {
        let timeouts = super::super::Timeouts {
            idle: Some(Duration::from_secs(2)),
            params: Some(Duration::from_secs(60)),
            ..Default::default()
        };
        let (mut wr, mut rd) = start(Config { timeouts, ..Config::default() });
        let started = Instant::now();
        // Half a record header, then nothing whole: not a request yet.
        wr.write_all(&[1, FCGI_BEGIN_REQUEST]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        wr.write_all(&[0]).await.unwrap();
        assert!(read_records(&mut rd, |_| false).await.is_empty());
        let took = started.elapsed();
        assert!(took >= Duration::from_secs(2) && took < Duration::from_millis(2500), "closed after {took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn output_nobody_reads_is_aborted_at_send_timeout() {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let timeouts = super::super::Timeouts { send: Some(Duration::from_secs(5)), ..Default::default() };
        let handler = Arc::new(Flood { len: 64 << 20, done: done_tx });
        let (mut wr, _rd) = start_with(Config { timeouts, ..Config::default() }, handler, 4096);
        let mut out = BytesMut::new();
        begin(&mut out, 1, FCGI_RESPONDER, 0);
        params(&mut out, 1, &[("REQUEST_METHOD", "GET"), ("REQUEST_URI", "/big")]);
        put_record(&mut out, FCGI_STDIN, 1, &[]);
        wr.write_all(&out).await.unwrap();
        // The test never reads: the application must be stopped, not held.
        let started = Instant::now();
        let mut stopped = Err(std::sync::mpsc::TryRecvError::Empty);
        while stopped.is_err() && started.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            stopped = done_rx.try_recv();
        }
        let took = started.elapsed();
        assert!(took >= Duration::from_secs(5) && took < Duration::from_secs(7), "stopped after {took:?}");
        assert_eq!(stopped, Ok(true), "the application was told to stop writing");
    }

    #[test]
    fn a_hundred_thousand_params_are_merged_in_linear_time() {
        let pairs: Vec<(Bytes, Bytes)> =
            (0..100_000).map(|i| (Bytes::from(format!("HTTP_X_{i}")), Bytes::from_static(b"v"))).collect();
        let started = std::time::Instant::now();
        let merged = merge_duplicates(pairs);
        assert_eq!(merged.len(), 100_000);
        assert!(started.elapsed() < std::time::Duration::from_millis(500), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn more_params_than_max_params_close_the_connection() {
        let (mut wr, mut rd) = start(Config { max_params: 100, ..Config::default() });
        let mut out = BytesMut::new();
        begin(&mut out, 1, FCGI_RESPONDER, 0);
        let names: Vec<String> = (0..101).map(|i| format!("HTTP_X_{i}")).collect();
        let pairs: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
        params(&mut out, 1, &pairs);
        wr.write_all(&out).await.unwrap();
        assert!(read_records(&mut rd, |_| false).await.is_empty());
    }

    #[tokio::test]
    async fn an_early_begin_request_waits_for_the_current_request() {
        // HAProxy's keep-conn: the next request follows the previous one's body at once.
        let (mut wr, mut rd) = start(Config::default());
        let mut out = BytesMut::new();
        for id in [1u16, 2] {
            begin(&mut out, id, FCGI_RESPONDER, FCGI_KEEP_CONN);
            params(&mut out, id, &[("REQUEST_METHOD", "POST")]);
            put_stream(&mut out, FCGI_STDIN, id, if id == 1 { b"first" } else { b"second" });
            put_record(&mut out, FCGI_STDIN, id, &[]);
        }
        wr.write_all(&out).await.unwrap();
        let mut ends = 0;
        let recs = read_records(&mut rd, |r| {
            ends += is_end(r) as usize;
            ends == 2
        })
        .await;
        let ends: Vec<(u16, u8)> = recs.iter().filter(|r| is_end(r)).map(|r| (r.request_id, r.content[4])).collect();
        assert_eq!(ends, vec![(1, FCGI_REQUEST_COMPLETE), (2, FCGI_REQUEST_COMPLETE)], "no FCGI_CANT_MPX_CONN");
        let body = |id: u16| -> Vec<u8> {
            recs.iter()
                .filter(|r| r.record_type == FCGI_STDOUT && r.request_id == id)
                .flat_map(|r| r.content.to_vec())
                .collect()
        };
        assert!(body(1).ends_with(b"first") && body(2).ends_with(b"second"));
    }

    /// Answers with one `Output::Last` (the in-memory body's tail and the end together).
    struct Whole;

    impl Handler for Whole {
        fn dispatch(&self, request: Request) {
            tokio::spawn(async move {
                assert!(request.control.start());
                let data = Bytes::from_static(b"Status: 200 OK\r\nContent-Length: 2\r\n\r\nok");
                let _ = request.sink.send(Output::Last { data, app_status: 0 }).await;
            });
        }
    }

    #[tokio::test]
    async fn the_last_stdout_and_end_request_arrive_in_one_read() {
        let (mut wr, mut rd) = start_with(Config::default(), Arc::new(Whole), 1 << 20);
        let mut out = BytesMut::new();
        begin(&mut out, 1, FCGI_RESPONDER, FCGI_KEEP_CONN);
        params(&mut out, 1, &[("REQUEST_METHOD", "GET")]);
        put_record(&mut out, FCGI_STDIN, 1, &[]);
        wr.write_all(&out).await.unwrap();
        let mut buf = BytesMut::with_capacity(64 * 1024);
        rd.read_buf(&mut buf).await.unwrap();
        let mut kinds = Vec::new();
        while let Some(rec) = record::decode(&mut buf).unwrap() {
            kinds.push(rec.record_type);
        }
        assert_eq!(kinds, vec![FCGI_STDOUT, FCGI_STDOUT, FCGI_END_REQUEST], "body, end of stream and end in one write");
    }
}
