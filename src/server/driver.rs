//! The runtime every connection task runs on, and which thread drives it.
//!
//! One tokio current-thread runtime serves a process's connections. Any
//! thread may drive it with [`Driver::block_on`]: tokio lets one thread at a
//! time hold the runtime's core (its task queue, I/O and timer drivers); the
//! others wait for the core or for their own future. The WSGI pool's idle
//! worker drives it between requests and leaves it to run a request itself,
//! so a fast application runs on the thread that read its request, with no
//! hand-off to another thread (`handoff` decides who drives).
//!
//! A message for a connection sent from outside the runtime wakes it through
//! an eventfd. A request's last message, produced while nobody drives the
//! runtime (the leader is running requests), is instead parked in the
//! driver's outbox ([`Driver::defer`]); whichever thread drives next sends
//! it from inside, where waking the connection's task costs nothing.
//!
//! While no thread is inside `block_on`, nothing is read, written or
//! accepted. The driver counts the threads inside and, when the last one
//! leaves, sets an alarm (a timerfd) to fire after [`TAKEOVER_AFTER`]. The
//! pool's spare thread waits on the alarm and drives the runtime when it has
//! been left alone that long (a request that a leader took turned out slow),
//! so no connection waits on one request. Entering does not disarm the alarm
//! (one system call fewer per turn): each leave pushes it further, so under
//! load it never fires, and when it does the spare checks before acting.

use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::request::{Output, ResponseSink};

/// How long the runtime may go undriven before the spare thread drives it.
pub const TAKEOVER_AFTER: Duration = Duration::from_millis(1);

/// The runtime and the count of threads driving it.
pub struct Driver {
    runtime: tokio::runtime::Runtime,
    /// Threads inside [`Driver::block_on`] (driving, or waiting for the core).
    inside: AtomicUsize,
    /// When a thread last left `block_on`, in nanoseconds since `epoch`.
    left_at: AtomicU64,
    epoch: Instant,
    /// Fires [`TAKEOVER_AFTER`] after it was last set ([`Driver::set_alarm`],
    /// and the last thread leaving).
    alarm: Alarm,
    /// Messages parked while nobody drives ([`Driver::defer`]).
    outbox: Mutex<Vec<(ResponseSink, Output)>>,
    /// Body bytes those messages carry.
    parked_bytes: AtomicUsize,
}

impl Driver {
    /// A current-thread runtime with I/O and timers, and its alarm.
    ///
    /// Errors: the runtime or the timerfd could not be created.
    pub fn new() -> io::Result<Arc<Driver>> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let epoch = Instant::now();
        Ok(Arc::new(Driver {
            runtime,
            inside: AtomicUsize::new(0),
            left_at: AtomicU64::new(0),
            epoch,
            alarm: Alarm::new(TAKEOVER_AFTER)?,
            outbox: Mutex::new(Vec::new()),
            parked_bytes: AtomicUsize::new(0),
        }))
    }

    /// Drive the runtime on this thread until `future` completes (or, while
    /// another thread holds the runtime, wait for the core or the future).
    /// Must not be called from inside the runtime (a task).
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        let _inside = Inside::enter(self);
        self.runtime.block_on(async {
            self.flush();
            future.await
        })
    }

    /// Send `kind` to its connection, parked in the outbox while nobody
    /// drives the runtime (the next thread to drive sends it, from inside).
    /// Returns what the caller must send itself, at once: `kind` when
    /// somebody drives now, or whatever was parked when a thread entered
    /// while this one parked (it may have looked at the outbox too early).
    #[must_use]
    pub fn defer(&self, sink: ResponseSink, kind: Output) -> Vec<(ResponseSink, Output)> {
        if self.inside.load(Ordering::SeqCst) > 0 {
            return vec![(sink, kind)];
        }
        let bytes = match &kind {
            Output::Last { data, .. } | Output::Stdout(data) | Output::Stderr(data) => data.len(),
            Output::End { .. } | Output::Terminated => 0,
        };
        self.parked_bytes.fetch_add(bytes, Ordering::Relaxed);
        lock(&self.outbox).push((sink, kind));
        // Entering counts before flushing, and parking comes before this
        // look: either the entering thread saw the message, or this one sees
        // the thread and takes the outbox back.
        if self.inside.load(Ordering::SeqCst) > 0 {
            return std::mem::take(&mut *lock(&self.outbox));
        }
        Vec::new()
    }

    /// Send what the outbox holds (from inside `block_on`, where waking a
    /// connection's task is free while this thread holds the core). A
    /// connection whose queue is full gets it from a task that waits for room.
    fn flush(&self) {
        let parked = std::mem::take(&mut *lock(&self.outbox));
        self.parked_bytes.store(0, Ordering::Relaxed);
        for (sink, kind) in parked {
            if let Err(Ok(kind)) = sink.try_send(kind) {
                self.runtime.spawn(async move {
                    let _ = sink.send(kind).await;
                });
            }
        }
    }

    /// Body bytes parked in the outbox (about: it is not locked).
    pub fn parked_bytes(&self) -> usize {
        self.parked_bytes.load(Ordering::Relaxed)
    }

    /// Drive the runtime for one turn: send what the outbox holds, let every
    /// task that can run do so (the connections take the responses into
    /// their own buffers and write what their sockets take), look at the
    /// sockets once without waiting, and leave.
    pub fn drive_once(&self) {
        self.block_on(tokio::task::yield_now());
    }

    /// Run `task` on the runtime (it makes progress while a thread drives).
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        drop(self.runtime.spawn(task));
    }

    /// Threads inside [`Driver::block_on`] now.
    pub fn inside(&self) -> usize {
        self.inside.load(Ordering::SeqCst)
    }

    /// How long nobody has been inside [`Driver::block_on`]; None while
    /// somebody is.
    pub fn undriven_for(&self) -> Option<Duration> {
        if self.inside.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let left = self.epoch + Duration::from_nanos(self.left_at.load(Ordering::SeqCst));
        Some(Instant::now().saturating_duration_since(left))
    }

    /// Make the alarm fire [`TAKEOVER_AFTER`] from now (whoever waits on it
    /// looks again then).
    pub fn set_alarm(&self) {
        self.alarm.set(Some(self.alarm.after));
    }

    /// The alarm's file descriptor: readable once the alarm has fired (read
    /// it to clear it).
    pub fn alarm_fd(&self) -> i32 {
        self.alarm.fd.as_raw_fd()
    }

    /// Read the alarm (clearing it) without blocking.
    pub fn clear_alarm(&self) {
        self.alarm.clear();
    }
}

fn lock<U>(m: &Mutex<U>) -> std::sync::MutexGuard<'_, U> {
    // Pushes and takes only: a panic cannot leave it inconsistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts a thread inside `block_on`; the last one out arms the alarm.
struct Inside<'a>(&'a Driver);

impl<'a> Inside<'a> {
    fn enter(driver: &'a Driver) -> Self {
        driver.inside.fetch_add(1, Ordering::SeqCst);
        Inside(driver)
    }
}

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        let d = self.0;
        // Stored before the count falls, so whoever sees zero sees this time
        // (or a later one).
        let nanos = Instant::now().saturating_duration_since(d.epoch).as_nanos();
        d.left_at.store(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::SeqCst);
        if d.inside.fetch_sub(1, Ordering::SeqCst) == 1 {
            d.set_alarm();
        }
    }
}

/// A one-shot CLOCK_MONOTONIC timerfd.
struct Alarm {
    fd: OwnedFd,
    after: Duration,
}

impl Alarm {
    fn new(after: Duration) -> io::Result<Alarm> {
        // SAFETY: timerfd_create has no memory preconditions; the fd is owned below.
        let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC | libc::TFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor nothing else owns.
        Ok(Alarm { fd: unsafe { OwnedFd::from_raw_fd(fd) }, after })
    }

    /// Fire once after `after`, or never (None).
    fn set(&self, after: Option<Duration>) {
        let after = after.unwrap_or(Duration::ZERO);
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: libc::c_long::from(after.subsec_nanos() as i32),
            },
        };
        // SAFETY: `spec` is a valid itimerspec; a failure (impossible for a
        // valid fd and value) only loses one alarm, which the spare's own
        // timeout covers.
        unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
    }

    fn clear(&self) {
        let mut expirations = 0u64;
        // SAFETY: reads at most 8 bytes into a u64; EAGAIN when not fired.
        unsafe { libc::read(self.fd.as_raw_fd(), (&mut expirations as *mut u64).cast(), 8) };
    }
}

/// The driver this thread uses to wait for the connection (set by pool
/// workers; other threads park instead).
pub mod thread {
    use std::cell::RefCell;
    use std::sync::Arc;

    use super::Driver;

    thread_local! {
        static CURRENT: RefCell<Option<Arc<Driver>>> = const { RefCell::new(None) };
    }

    /// Make this thread drive `driver` while it waits for its connection
    /// (None: park instead).
    pub fn set(driver: Option<Arc<Driver>>) {
        let _ = CURRENT.try_with(|c| *c.borrow_mut() = driver);
    }

    /// This thread's driver, if it drives one while it waits.
    pub fn current() -> Option<Arc<Driver>> {
        CURRENT.try_with(|c| c.borrow().clone()).ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alarm_fired(d: &Driver) -> bool {
        let mut pfd = libc::pollfd { fd: d.alarm_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, 0) == 1 }
    }

    #[test]
    fn the_alarm_fires_after_the_last_thread_leaves_the_runtime() {
        let d = Driver::new().unwrap();
        assert!(d.undriven_for().is_some(), "nobody drives a new runtime");
        let seen_inside = d.block_on(async { d.undriven_for() });
        assert_eq!(seen_inside, None);
        assert!(!alarm_fired(&d), "fired at once");
        std::thread::sleep(TAKEOVER_AFTER * 5);
        assert!(alarm_fired(&d), "left alone for the takeover delay");
        assert!(d.undriven_for().unwrap() >= TAKEOVER_AFTER * 5);
        d.clear_alarm();
        assert!(!alarm_fired(&d));
        // While a thread stays inside, nothing sets it.
        let other = d.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let inside = std::thread::spawn(move || other.block_on(rx));
        while d.undriven_for().is_some() {
            std::thread::yield_now();
        }
        std::thread::sleep(TAKEOVER_AFTER * 5);
        assert!(!alarm_fired(&d));
        assert_eq!(d.undriven_for(), None);
        tx.send(()).unwrap();
        inside.join().unwrap().unwrap();
    }

    #[test]
    fn the_outbox_is_sent_by_the_next_thread_that_drives() {
        let d = Driver::new().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let sink = ResponseSink::new(tx, 7);
        // Nobody drives: parked, nothing to send now.
        assert!(d.defer(sink.clone(), Output::End { app_status: 3 }).is_empty());
        assert!(rx.try_recv().is_err(), "sent while nobody drives");
        d.block_on(async {});
        let got = rx.try_recv().expect("the next driver sends it");
        assert_eq!((got.key, matches!(got.kind, Output::End { app_status: 3 })), (7, true));
        // Somebody drives: the caller sends it itself.
        let other = d.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let inside = std::thread::spawn(move || other.block_on(stopped));
        while d.undriven_for().is_some() {
            std::thread::yield_now();
        }
        assert_eq!(d.defer(sink, Output::End { app_status: 4 }).len(), 1);
        stop.send(()).unwrap();
        inside.join().unwrap().unwrap();
    }

    #[test]
    fn parked_bytes_are_counted_until_one_turn_sends_them() {
        let d = Driver::new().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let sink = ResponseSink::new(tx, 1);
        let data = bytes::Bytes::from(vec![b'x'; 300_000]);
        assert!(d.defer(sink.clone(), Output::Last { data, app_status: 0 }).is_empty());
        assert!(d.defer(sink, Output::End { app_status: 0 }).is_empty());
        assert_eq!(d.parked_bytes(), 300_000);
        d.drive_once();
        assert_eq!(d.parked_bytes(), 0);
        assert!(matches!(rx.try_recv().unwrap().kind, Output::Last { ref data, .. } if data.len() == 300_000));
        assert!(matches!(rx.try_recv().unwrap().kind, Output::End { .. }));
    }
}
