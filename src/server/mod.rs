//! Sockets and connections: accept, run one task per connection, stop
//! gracefully. No pyo3 here; requests leave through the [`Handler`] trait.

pub mod admission;
pub mod connection;
pub mod driver;
pub mod evict;
pub mod handoff;
#[cfg(any(test, feature = "harness"))]
pub mod harness;
pub mod listener;
pub mod loglimit;
pub mod notify;
pub mod request;
pub mod scoreboard;
pub mod shutdown;
pub mod status;
pub mod unread;

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::protocol::Role;
use admission::Admission;
use driver::Driver;
use listener::{peer_allowed, Bound};
use loglimit::LogLimit;
pub use request::Handler;
use shutdown::{SignalGuard, StopHandle, StopReason};

/// Engine settings. Each limit is reported by FCGI_GET_VALUES where the spec
/// has a name for it.
#[derive(Debug, Clone)]
pub struct Config {
    /// Roles accepted in FCGI_BEGIN_REQUEST; others get FCGI_UNKNOWN_ROLE (§5.1).
    pub roles: Vec<Role>,
    /// Accept concurrent requests on one connection (`FCGI_MPXS_CONNS`).
    pub multiplexed: bool,
    /// Connections open at once (`FCGI_MAX_CONNS`); more wait in the listen backlog.
    pub max_conns: usize,
    /// Requests in flight at once (the `max_in_flight` setting, reported as
    /// `FCGI_MAX_REQS`), queued or running. Over it a request is refused at
    /// once: FCGI_OVERLOADED on a multiplexed connection, else a 503 with
    /// `Retry-After`.
    pub max_in_flight: usize,
    /// Largest FCGI_PARAMS stream of one request, in bytes; more closes the connection.
    pub max_params_size: usize,
    /// Most name-value pairs in one request's FCGI_PARAMS; more closes the
    /// connection (nginx sends fewer than a thousand).
    pub max_params: usize,
    /// After a stop, how long requests in flight may take before their
    /// connections are closed.
    pub graceful_timeout: Duration,
    /// Connection timeouts.
    pub timeouts: Timeouts,
    /// Request paths the engine answers itself: the pool status
    /// (`?json`, `?full`) and a liveness check answering `pong`.
    pub status_path: Option<String>,
    pub ping_path: Option<String>,
    /// Stop (to be replaced by the prefork master) after this many requests.
    pub max_requests: Option<u64>,
    /// Python threads per worker (for the status page).
    pub threads: usize,
}

/// This process's row on its pool's scoreboard (the counters every worker
/// process of the pool shares).
#[derive(Clone)]
pub struct ScoreboardRow {
    pub board: Arc<scoreboard::Scoreboard>,
    /// Which row is this process's.
    pub index: usize,
}

impl ScoreboardRow {
    /// A pool of one (a single process, or a test).
    pub fn alone() -> io::Result<Self> {
        Ok(ScoreboardRow { board: Arc::new(scoreboard::Scoreboard::new(1)?), index: 0 })
    }

    /// This process's counters.
    pub fn counters(&self) -> &scoreboard::WorkerRow {
        self.board.row(self.index)
    }
}

/// How long a connection may wait on its peer (None: no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// A new connection must start a request within this time.
    pub idle: Option<Duration>,
    /// A kept-open connection (FCGI_KEEP_CONN) may sit idle between
    /// requests this long. Longer than nginx's upstream `keepalive_timeout`
    /// (60 s) by default, so nginx closes first and never reuses a
    /// connection we are closing.
    pub keepalive: Option<Duration>,
    /// While a request's body is incomplete, the web server must send
    /// something within this time (nginx's `client_body_timeout`).
    pub read: Option<Duration>,
    /// A request's head, from FCGI_BEGIN_REQUEST (or the first byte of it)
    /// to the end of its FCGI_PARAMS, must arrive within this time, however
    /// slowly it trickles (nginx's `client_header_timeout`).
    pub params: Option<Duration>,
    /// While output waits, the web server must accept some of it within this
    /// time; else the request is aborted and the connection closed (nginx's
    /// `send_timeout`).
    pub send: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            idle: Some(Duration::from_secs(10)),
            keepalive: Some(Duration::from_secs(75)),
            read: Some(Duration::from_secs(60)),
            params: Some(Duration::from_secs(10)),
            send: Some(Duration::from_secs(60)),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            roles: vec![Role::Responder],
            multiplexed: false,
            max_conns: 1024,
            max_in_flight: 64,
            max_params_size: 1 << 20,
            max_params: 10_000,
            graceful_timeout: Duration::from_secs(30),
            timeouts: Timeouts::default(),
            status_path: None,
            ping_path: None,
            max_requests: None,
            threads: 1,
        }
    }
}

/// What every connection task shares.
pub(crate) struct Shared {
    pub config: Config,
    pub admission: Arc<Admission>,
    pub handler: Arc<dyn Handler>,
    pub row: ScoreboardRow,
    pub stop: StopHandle,
    /// The listening socket, for the status page's listen queue (TCP).
    pub listen_fd: Option<i32>,
    /// Its backlog, when this process set it (the `backlog` setting).
    pub listen_backlog: Option<u32>,
    /// The open connections that hold no request, for making room at `max_conns`.
    pub idle: evict::Registry,
    /// Cancelled when serving is over: connections still open (past
    /// `graceful_timeout`, or an immediate stop) close at once.
    pub kill: CancellationToken,
    keys: AtomicU64,
    dispatched: AtomicU64,
    /// Of the connections lately seen, the share (in thousandths, a moving
    /// average) whose first request asked for FCGI_KEEP_CONN.
    keep_share: AtomicU32,
}

impl Shared {
    /// What the connections of one server share; `listen` is the listening
    /// socket's fd (TCP only) and backlog, for the status page.
    pub(crate) fn new(
        config: Config,
        handler: Arc<dyn Handler>,
        row: ScoreboardRow,
        stop: StopHandle,
        listen: Option<(Option<i32>, Option<u32>)>,
    ) -> Self {
        let admission = Arc::new(Admission::new(config.max_conns, config.max_in_flight, config.multiplexed));
        let (listen_fd, listen_backlog) = listen.unwrap_or((None, None));
        Shared {
            config,
            admission,
            handler,
            row,
            stop,
            listen_fd,
            listen_backlog,
            idle: evict::Registry::default(),
            kill: CancellationToken::new(),
            keys: AtomicU64::new(1),
            dispatched: AtomicU64::new(0),
            keep_share: AtomicU32::new(KEEP_SHARE_ONE),
        }
    }

    /// A process-unique key for a new request, so that output of an old
    /// request can never be mistaken for a new one with the same id.
    pub fn next_key(&self) -> u64 {
        self.keys.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether a connection accepted now counts as kept before its first
    /// request is read ([`ConnTicket`]): unless nearly every connection
    /// lately came without FCGI_KEEP_CONN (about twenty in a row: a new
    /// connection per request). A new server assumes kept-open connections,
    /// so that a burst of them spreads over the workers.
    pub fn counts_unread_as_kept(&self) -> bool {
        self.keep_share.load(Ordering::Relaxed) >= KEEP_SHARE_ONE / 16
    }

    /// A connection's first request arrived, with or without FCGI_KEEP_CONN.
    pub fn note_first_request(&self, keep_conn: bool) {
        let seen = if keep_conn { KEEP_SHARE_ONE } else { 0 };
        let _ =
            self.keep_share.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |share| Some((share * 7 + seen) / 8));
    }

    /// Count a request handed to the application; at `max_requests`, stop
    /// taking new connections so the prefork master replaces this worker.
    pub fn count_dispatch(&self) {
        let n = self.dispatched.fetch_add(1, Ordering::Relaxed) + 1;
        if self.config.max_requests == Some(n) {
            tracing::info!("max_requests ({n}) reached: this worker finishes its requests and exits to be replaced");
            self.stop.stop(StopReason::Recycled);
        }
    }

    /// The status page.
    pub fn status(&self, json: bool, full: bool) -> (&'static str, String) {
        let ctx = status::StatusContext {
            board: &self.row.board,
            threads: self.config.threads,
            max_in_flight: self.config.max_in_flight,
            listen_queue: self.listen_fd.and_then(listen_queue),
            listen_backlog: self.listen_backlog.map_or(0, u64::from),
        };
        status::render(&ctx, json, full)
    }
}

/// Connections waiting in a TCP listening socket's accept queue (Linux
/// reports it as `tcpi_unacked` of TCP_INFO on a listening socket).
fn listen_queue(fd: i32) -> Option<u64> {
    // SAFETY: getsockopt fills at most `len` bytes of a zeroed tcp_info.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        (libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, (&mut info as *mut libc::tcp_info).cast(), &mut len)
            == 0)
            .then_some(info.tcpi_unacked as u64)
    }
}

/// Callbacks the server makes on signals that do not stop it.
#[derive(Default)]
pub struct Hooks {
    /// SIGUSR1: reopen log files (logrotate's `postrotate`).
    pub reopen_logs: Option<Box<dyn Fn() + Send + Sync>>,
}

/// How [`serve`] is run and stopped, besides its settings.
pub struct ServeOptions {
    /// Stops the server (also from another thread).
    pub stop: StopHandle,
    /// Handle SIGTERM/SIGINT/SIGQUIT/SIGHUP/SIGUSR1 while serving.
    pub handle_signals: bool,
    pub hooks: Hooks,
    /// This process's row on the pool's scoreboard.
    pub row: ScoreboardRow,
}

/// Serve connections from `bound` until `options.stop` fires (or, when
/// `handle_signals`, SIGTERM/SIGINT/SIGQUIT/SIGHUP arrive; SIGUSR1 calls
/// `hooks.reopen_logs`), driving a current-thread tokio runtime on the calling
/// thread the whole time. Tells systemd `READY=1` and `STOPPING=1` when it
/// asked (`NOTIFY_SOCKET`).
pub fn serve(config: Config, bound: Bound, handler: Arc<dyn Handler>, options: ServeOptions) -> io::Result<StopReason> {
    let driver = Driver::new()?;
    let serving = start(config, bound, handler, options, driver.clone(), None)?;
    serving.drive_until_done();
    serving.finish()
}

/// A server whose serving task (accepting, signals, the graceful stop) runs
/// on a [`Driver`]'s runtime: it makes progress while some thread drives
/// that runtime ([`Serving::drive_until_done`], or the WSGI pool's threads).
pub struct Serving {
    driver: Arc<Driver>,
    shared: Arc<Shared>,
    done: CancellationToken,
    result: Arc<Mutex<Option<io::Result<StopReason>>>>,
    tracker: TaskTracker,
    /// Restores the previous signal handlers when dropped (after the task ended).
    _signals: Option<SignalGuard>,
}

/// Start serving connections from `bound` on `driver`'s runtime (see
/// [`serve`]); nothing happens until a thread drives the runtime.
/// `on_done` is called (from the thread driving) once the serving task has
/// ended.
///
/// Errors: the signal handlers' pipe could not be created.
pub fn start(
    config: Config,
    bound: Bound,
    handler: Arc<dyn Handler>,
    options: ServeOptions,
    driver: Arc<Driver>,
    on_done: Option<Box<dyn Fn() + Send + Sync>>,
) -> io::Result<Serving> {
    let ServeOptions { stop, handle_signals, hooks, row } = options;
    let signals = if handle_signals { SignalGuard::install()? } else { None };
    if handle_signals && signals.is_none() {
        tracing::warn!("another server in this process handles signals; this one stops only through stop()");
    }
    let graceful_timeout = config.graceful_timeout;
    row.board.claim(row.index, std::process::id());
    let listen = match &bound {
        Bound::Tcp { listener, backlog, .. } => (Some(listener.as_raw_fd()), *backlog),
        Bound::Unix { backlog, .. } => (None, *backlog),
    };
    let shared = Arc::new(Shared::new(config, handler, row, stop.clone(), Some(listen)));
    let done = CancellationToken::new();
    let result = Arc::new(Mutex::new(None));
    let tracker = TaskTracker::new();
    // The task reads its own copy of the pipe: the guard may go first.
    let signal_pipe = signals.as_ref().map(|guard| guard.pipe().try_clone()).transpose()?;
    let task = {
        let (shared, done, result, tracker) = (shared.clone(), done.clone(), result.clone(), tracker.clone());
        async move {
            let forward = async {
                if let Some(fd) = signal_pipe {
                    shutdown::forward_signals(fd, stop.clone(), &hooks).await;
                }
                std::future::pending::<()>().await
            };
            let reason = tokio::select! {
                reason = run(bound, shared, &stop, graceful_timeout, &tracker) => reason,
                _ = forward => unreachable!("forwarding signals never ends"),
                _ = tick() => unreachable!("the tick never ends"),
            };
            *result.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
            done.cancel();
            if let Some(on_done) = on_done {
                on_done();
            }
        }
    };
    driver.spawn(task);
    Ok(Serving { driver, shared, done, result, tracker, _signals: signals })
}

/// A timer that fires every [`TICK`] and does nothing else. tokio's timer
/// wheel wakes its own driver (an eventfd write and one more turn of the
/// loop) whenever a new timer is due before the earliest one it knew of when
/// it last parked; with no timer armed, that is every new connection's first
/// deadline. With this one always due within a second, the connections'
/// deadlines (a second or more, by default) never do. Costs one wake-up a
/// second.
async fn tick() {
    loop {
        tokio::time::sleep(TICK).await;
    }
}

const TICK: Duration = Duration::from_secs(1);

/// How long connections still open when serving ends get to close.
const KILL_WAIT: Duration = Duration::from_secs(1);

impl Serving {
    /// Whether the serving task has ended (stopped, or failed).
    pub fn is_done(&self) -> bool {
        self.done.is_cancelled()
    }

    /// Drive the runtime on this thread until the serving task ends.
    pub fn drive_until_done(&self) {
        self.driver.block_on(self.done.cancelled());
    }

    /// After the serving task ended: close the connections still open (past
    /// `graceful_timeout`, or an immediate stop; their requests are aborted),
    /// driving the runtime until they are gone, and return why serving
    /// stopped. Errors: the listener could not be registered with the runtime.
    pub fn finish(self) -> io::Result<StopReason> {
        self.shared.kill.cancel();
        let tracker = self.tracker.clone();
        self.driver.block_on(async move {
            let _ = tokio::time::timeout(KILL_WAIT, tracker.wait()).await;
        });
        let result = self.result.lock().unwrap_or_else(|e| e.into_inner()).take();
        result.unwrap_or(Ok(StopReason::Requested { reload: false }))
    }
}

async fn run(
    bound: Bound,
    shared: Arc<Shared>,
    stop: &StopHandle,
    graceful_timeout: Duration,
    tracker: &TaskTracker,
) -> io::Result<StopReason> {
    let description = bound.describe();
    if let Err(e) = notify::notify(&format!("READY=1\nSTATUS=serving on {description}")) {
        tracing::warn!("cannot notify systemd (NOTIFY_SOCKET): {e}");
    }
    let draining = CancellationToken::new();
    accept_loop(bound, &shared, tracker, &draining, stop).await?;
    tracing::info!("stopped accepting connections on {description}");
    let _ = notify::notify("STOPPING=1");
    draining.cancel();
    tracker.close();
    let in_flight = shared.admission.requests_in_flight();
    if in_flight > 0 {
        tracing::info!(
            "waiting up to {}s (graceful_timeout) for {in_flight} request(s) in flight",
            graceful_timeout.as_secs_f64()
        );
    }
    tokio::select! {
        _ = tracker.wait() => {},
        _ = tokio::time::sleep(graceful_timeout) => {
            tracing::warn!("graceful_timeout ({}s) passed with {} request(s) still in flight; closing their connections", graceful_timeout.as_secs_f64(), shared.admission.requests_in_flight());
        },
        _ = stop.immediate().cancelled() => {
            tracing::warn!("closing {} connection(s) without waiting", tracker.len());
        },
    }
    Ok(stop.reason().unwrap_or(StopReason::Requested { reload: false }))
}

async fn accept_loop(
    bound: Bound,
    shared: &Arc<Shared>,
    tracker: &TaskTracker,
    draining: &CancellationToken,
    stop: &StopHandle,
) -> io::Result<()> {
    // Keep the socket-file guard alive until we stop accepting.
    let (unix, tcp, _cleanup) = match bound {
        Bound::Unix { listener, cleanup, .. } => (Some(tokio::net::UnixListener::from_std(listener)?), None, cleanup),
        Bound::Tcp { listener, allowed, .. } => {
            (None, Some((tokio::net::TcpListener::from_std(listener)?, allowed)), None)
        }
    };
    let mut count: u64 = 0;
    loop {
        count += 1;
        // Let a less loaded worker take the next connection (bounded wait).
        // First let the connections just accepted run (this runtime has one
        // thread): those whose first request came without FCGI_KEEP_CONN stop
        // counting before the comparison.
        if shared.row.board.should_defer_accept(shared.row.index) {
            tokio::task::yield_now().await;
            let mut deferred = 0;
            while deferred < ACCEPT_DEFER_ROUNDS && shared.row.board.should_defer_accept(shared.row.index) {
                tokio::select! {
                    _ = tokio::time::sleep(ACCEPT_DEFER) => deferred += 1,
                    _ = stop.graceful().cancelled() => return Ok(()),
                }
            }
        }
        let accepted = tokio::select! {
            _ = stop.graceful().cancelled() => return Ok(()),
            accepted = async {
                if let Some(listener) = &unix {
                    let (stream, _) = listener.accept().await?;
                    Ok::<_, io::Error>((Either::Unix(stream), format!("connection {count} (unix)")))
                } else if let Some((listener, allowed)) = &tcp {
                    loop {
                        let (stream, addr) = listener.accept().await?;
                        if peer_allowed(allowed, &addr) {
                            let _ = stream.set_nodelay(true);
                            break Ok((Either::Tcp(stream), format!("connection {count} from {addr}")));
                        }
                        crate::log_limited!(warn, REFUSED, "refused a connection from {addr}: not in FCGI_WEB_SERVER_ADDRS");
                    }
                } else {
                    unreachable!("one listener is always set")
                }
            } => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                let pause =
                    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM));
                crate::log_limited!(error, ACCEPT_FAILED, "accept failed: {e}");
                if pause {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                continue;
            }
        };
        // The connection is accepted first and then waits for a slot, so that
        // at max_conns room is made only when someone is waiting for it.
        let permit = match shared.admission.try_connection() {
            Some(permit) => permit,
            None => {
                let made_room = shared.idle.evict_oldest();
                crate::log_limited!(
                    info,
                    AT_MAX_CONNS,
                    "max_conns ({}) reached: {}",
                    shared.config.max_conns,
                    if made_room {
                        "closing the connection that has held no request longest, to make room"
                    } else {
                        "every connection carries a request; the new one waits for one to end"
                    }
                );
                tokio::select! {
                    permit = shared.admission.connection() => permit,
                    _ = stop.graceful().cancelled() => return Ok(()),
                }
            }
        };
        let ticket = ConnTicket::new(permit, shared.row.clone(), shared.counts_unread_as_kept());
        let (peer, shared, draining) = (peer.into(), shared.clone(), draining.clone());
        match stream {
            Either::Unix(stream) => {
                let (rd, wr) = stream.into_split();
                tracker.spawn(connection::serve_connection(rd, wr, peer, shared, draining, ticket));
            }
            Either::Tcp(stream) => {
                let (rd, wr) = stream.into_split();
                tracker.spawn(connection::serve_connection(rd, wr, peer, shared, draining, ticket));
            }
        }
    }
}

static REFUSED: LogLimit = LogLimit::new(loglimit::WINDOW);
static AT_MAX_CONNS: LogLimit = LogLimit::new(loglimit::WINDOW);
static ACCEPT_FAILED: LogLimit = LogLimit::new(loglimit::WINDOW);

/// [`Shared::note_first_request`]'s share of connections kept: all of them.
const KEEP_SHARE_ONE: u32 = 1000;

/// How long a worker holding more kept connections than another waits before
/// accepting anyway, per round, and how many rounds at most (tokio's timer
/// has a 1 ms resolution: a round lasts about 1 ms). Only connections that
/// may stay open count ([`scoreboard::WorkerRow::kept`]): when every
/// connection counted, a new connection per request (nginx's default,
/// mod_fcgid) made two workers wait here on most accepts (16 clients at a
/// time: 5k req/s against one worker's 13k).
const ACCEPT_DEFER: Duration = Duration::from_micros(200);
const ACCEPT_DEFER_ROUNDS: u32 = 10;

/// An open connection: its `max_conns` slot and its counts on the scoreboard
/// (`open`, and `kept` while it may stay open, see [`WorkerRow::kept`]),
/// given back when the connection ends.
///
/// [`WorkerRow::kept`]: scoreboard::WorkerRow::kept
pub(crate) struct ConnTicket {
    _permit: tokio::sync::OwnedSemaphorePermit,
    row: ScoreboardRow,
    kept: bool,
}

impl ConnTicket {
    /// `unread_kept`: count the connection as kept from now, before its
    /// first request is read ([`Shared::counts_unread_as_kept`]); else from
    /// its first request with FCGI_KEEP_CONN ([`ConnTicket::kept`]).
    pub(crate) fn new(permit: tokio::sync::OwnedSemaphorePermit, row: ScoreboardRow, unread_kept: bool) -> Self {
        let counters = row.counters();
        counters.accepted_conns.fetch_add(1, Ordering::Relaxed);
        counters.open.fetch_add(1, Ordering::Relaxed);
        let mut ticket = ConnTicket { _permit: permit, row, kept: false };
        if unread_kept {
            ticket.kept();
        }
        ticket
    }

    /// A request on this connection came with FCGI_KEEP_CONN: it may stay
    /// open, so accept balancing counts it.
    pub(crate) fn kept(&mut self) {
        if !std::mem::replace(&mut self.kept, true) {
            self.row.counters().kept.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request on this connection came without FCGI_KEEP_CONN: the
    /// connection closes after it, so accept balancing stops counting it.
    pub(crate) fn not_kept(&mut self) {
        if std::mem::take(&mut self.kept) {
            decrement(&self.row.counters().kept);
        }
    }
}

impl Drop for ConnTicket {
    fn drop(&mut self) {
        self.not_kept();
        decrement(&self.row.counters().open);
    }
}

fn decrement(counter: &std::sync::atomic::AtomicU64) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
}

enum Either {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_counts_as_kept_while_it_may_stay_open() {
        let row = ScoreboardRow::alone().unwrap();
        let permits = Arc::new(tokio::sync::Semaphore::new(3));
        let counters = row.counters();
        let counts = || (counters.open.load(Ordering::Relaxed), counters.kept.load(Ordering::Relaxed));
        let mut ticket = ConnTicket::new(permits.clone().try_acquire_owned().unwrap(), row.clone(), true);
        let other = ConnTicket::new(permits.clone().try_acquire_owned().unwrap(), row.clone(), true);
        let mut unread = ConnTicket::new(permits.try_acquire_owned().unwrap(), row.clone(), false);
        assert_eq!(counts(), (3, 2), "one not counted before its first request");
        unread.kept();
        unread.kept();
        assert_eq!(counts(), (3, 3));
        ticket.not_kept();
        ticket.not_kept();
        assert_eq!(counts(), (3, 2));
        drop(ticket);
        assert_eq!(counts(), (2, 2));
        drop((other, unread));
        assert_eq!(counts(), (0, 0));
    }

    #[test]
    fn unread_connections_count_as_kept_while_most_first_requests_ask_to_keep() {
        let shared = Shared::new(
            Config::default(),
            Arc::new(NoHandler),
            ScoreboardRow::alone().unwrap(),
            StopHandle::new(),
            None,
        );
        assert!(shared.counts_unread_as_kept(), "a new server assumes kept-open connections");
        for _ in 0..10 {
            shared.note_first_request(false);
        }
        assert!(shared.counts_unread_as_kept(), "a few requests without FCGI_KEEP_CONN change nothing");
        for _ in 0..20 {
            shared.note_first_request(false);
        }
        assert!(!shared.counts_unread_as_kept(), "a connection per request");
        shared.note_first_request(true);
        assert!(shared.counts_unread_as_kept(), "kept-open connections again");
    }

    struct NoHandler;

    impl Handler for NoHandler {
        fn dispatch(&self, _: request::Request) {}
    }
}
