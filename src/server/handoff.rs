//! The queue between the connections and the worker threads, and which
//! thread drives the I/O: a leader/follower pool that grows on demand up to
//! its maximum and shrinks back when idle.
//!
//! **Leader.** With a [`Driver`], an idle worker does not sleep while nobody
//! drives the runtime: it becomes the leader and drives it (reads, writes,
//! accepts) until a request is ready. When no worker is running a request and
//! requests are fast, that request goes to the leader itself: it leaves the
//! runtime and runs the application on the thread that read the request, then
//! takes the next queued request or leads again. A fast application with one
//! request at a time (Apache mod_fcgid, lighttpd) or a burst of them (nginx's
//! kept connections) is served by one thread with no hand-off and no wake-up
//! of another thread; requests that arrive while it runs one wait in the queue
//! (or in the kernel) for it, as they would wait for the GIL.
//!
//! **Spare.** While the leader runs a request, nobody drives the runtime. If
//! that lasts [`TAKEOVER_AFTER`] (the request is slow), the spare (the serving
//! thread, [`Spare::run`], which never runs Python) drives it, so other
//! connections are served and queued requests reach other workers. A worker
//! that finishes and finds the spare driving takes the runtime back. The
//! spare learns of an undriven runtime from the driver's alarm, so it costs
//! nothing while requests stay fast.
//!
//! **Queue.** While a worker is running a request, a new one waits in a FIFO
//! queue instead of waking a second worker: the running worker takes it when
//! it finishes, without sleeping (and, in the pool, without releasing the
//! GIL). A request that has waited [`SPILL_AFTER`] while no running worker
//! finished anything (they are slow, or blocked in I/O with the GIL released)
//! is handed by the spare to an idle worker, or, when none is idle and fewer
//! than the maximum exist, to a new worker it starts (at most one per
//! [`SPILL_AFTER`]). When jobs themselves run that long (a moving average from
//! hand-out to the worker's next take), waiting for a running worker gains
//! nothing: a request goes to an idle worker at once, and the leader stays the
//! I/O thread rather than running it. So a fast application keeps one thread
//! and a slow or sleeping one gets as many as it needs, like flup's
//! `ThreadPool` (which grows up to `maxThreads`).
//!
//! A worker idle for the channel's idle timeout exits unless it is the last
//! one (php-fpm's `pm = ondemand` with `pm.process_idle_timeout`); the idle
//! stack is LIFO, so the least recently used workers are the ones that
//! expire. A sleeping worker waits on its own condition variable: one futex
//! wake per hand-off, never a broadcast, never a spin.
//!
//! No pyo3 here; the WSGI pool (`wsgi/pool.rs`) decides what runs with the GIL.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::driver::Driver;
pub use super::driver::TAKEOVER_AFTER;

/// How long a request waits for a running worker before an idle one is
/// woken or a new one started.
pub const SPILL_AFTER: Duration = Duration::from_millis(1);

/// After a failed worker start, how long the pool does not try again.
const RETRY_GROWTH_AFTER: Duration = Duration::from_secs(1);

/// Starts a worker thread around a receiver (the pool's thread spawner).
pub type Spawn<T> = Box<dyn Fn(Receiver<T>) -> io::Result<()> + Send + Sync>;

/// What a worker is handed.
pub enum Job<T> {
    Run(T),
    /// The pool is closed and the queue is empty, or this worker was idle
    /// for the idle timeout and is not the last one: exit.
    Close,
}

/// Where a worker receives its next job: asleep on the condition variable,
/// or (the leader) in the runtime, woken through its waker.
struct Slot<T> {
    state: Mutex<SlotState<T>>,
    ready: Condvar,
}

struct SlotState<T> {
    job: Option<Job<T>>,
    /// The leader's future, polled by the runtime.
    waker: Option<Waker>,
}

/// Who drives the runtime between requests.
enum Leader<T> {
    Nobody,
    Worker(Arc<Slot<T>>),
    Spare,
}

struct State<T> {
    queue: VecDeque<(T, Instant)>,
    idle: Vec<Arc<Slot<T>>>,
    leader: Leader<T>,
    /// Workers handed a job and not idle since.
    running: usize,
    /// When a worker last finished a job.
    progress: Instant,
    /// How long a job runs, from hand-out to its worker asking for the next
    /// (a moving average; zero until one has finished).
    service: Duration,
    closed: bool,
    /// Serving is over: [`Spare::run`] returns.
    done: bool,
    /// Which worker ids (`0..max`) are taken; `live` of them are.
    ids: Vec<bool>,
    live: usize,
    /// Of `live`, workers the spare is starting (which may fail).
    starting: usize,
    /// When the spare last started a worker (or last may try again).
    grown: Instant,
    /// The spare's future while the spare drives the runtime.
    spare_waker: Option<Waker>,
}

impl<T> State<T> {
    /// Hand the oldest queued item to the most recently idle worker.
    fn spill_one(&mut self) -> Option<(Arc<Slot<T>>, T)> {
        if self.idle.is_empty() || self.queue.is_empty() {
            return None;
        }
        let (item, _) = self.queue.pop_front()?;
        let slot = self.idle.pop()?;
        self.running += 1;
        Some((slot, item))
    }

    /// The worker leading the runtime, which stops leading.
    fn take_leader(&mut self) -> Option<Arc<Slot<T>>> {
        if !matches!(self.leader, Leader::Worker(_)) {
            return None;
        }
        let Leader::Worker(slot) = std::mem::replace(&mut self.leader, Leader::Nobody) else { return None };
        Some(slot)
    }

    /// Hand the oldest queued item out now, if a worker should take it: the
    /// leader itself while jobs are fast (it is the thread running this),
    /// else the most recently idle worker, else the leader when no other
    /// worker can ever take it (the pool is at its maximum).
    fn hand_out(&mut self, slow: bool, max: usize) -> Option<(Arc<Slot<T>>, T)> {
        if self.queue.is_empty() {
            return None;
        }
        let slot = match (slow, &self.leader) {
            (false, Leader::Worker(_)) => self.take_leader()?,
            _ => match self.idle.pop() {
                Some(slot) => slot,
                None if self.live >= max => self.take_leader()?,
                None => return None,
            },
        };
        let (item, _) = self.queue.pop_front()?;
        self.running += 1;
        Some((slot, item))
    }

    /// Whether jobs run so long that waiting for a running worker costs more
    /// than waking an idle one (or starting one).
    fn slow(&self, spill_after: Duration) -> bool {
        self.service >= spill_after
    }

    /// Take `slot` off the idle stack; false if it was not on it (a sender
    /// has popped it to hand it a job).
    fn leave_idle(&mut self, slot: &Arc<Slot<T>>) -> bool {
        let Some(at) = self.idle.iter().position(|idle| Arc::ptr_eq(idle, slot)) else { return false };
        self.idle.remove(at);
        true
    }

    /// Take the lowest free worker id (the caller checked `live < max`).
    fn take_id(&mut self) -> Option<usize> {
        let id = self.ids.iter().position(|taken| !taken)?;
        self.ids[id] = true;
        self.live += 1;
        Some(id)
    }

    fn free_id(&mut self, id: usize) {
        if let Some(taken) = self.ids.get_mut(id).filter(|taken| **taken) {
            *taken = false;
            self.live -= 1;
        }
    }
}

/// An eventfd the spare waits on: rung when something may need it.
struct Bell(OwnedFd);

impl Bell {
    fn new() -> io::Result<Bell> {
        // SAFETY: eventfd has no memory preconditions; the fd is owned below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor nothing else owns.
        Ok(Bell(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn ring(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a u64; it can only fail when the
        // counter is about to overflow, i.e. when the bell is ringing anyway.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    fn clear(&self) {
        let mut count = 0u64;
        // SAFETY: reads at most 8 bytes into a u64; EAGAIN when silent.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
    }
}

struct Shared<T> {
    state: Mutex<State<T>>,
    max: usize,
    /// [`SPILL_AFTER`] (shorter or longer in unit tests).
    spill_after: Duration,
    idle_timeout: Duration,
    spawn: Spawn<T>,
    epoch: Instant,
    /// The runtime the workers lead (None: they never do; the spare only spills).
    driver: Option<Arc<Driver>>,
    bell: Bell,
}

impl<T> Shared<T> {
    fn new_receiver(self: &Arc<Self>, id: usize, handed: bool) -> Receiver<T> {
        Receiver {
            shared: self.clone(),
            slot: Arc::new(Slot { state: Mutex::new(SlotState { job: None, waker: None }), ready: Condvar::new() }),
            busy: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            id,
            handed,
            since: AtomicU64::new(0),
        }
    }

    /// Tell the spare to look again now: wake its future while it drives,
    /// else its bell.
    fn ring(&self, state: &mut State<T>) {
        match state.spare_waker.take() {
            Some(waker) => waker.wake(),
            None => self.bell.ring(),
        }
    }

    /// Tell the spare to look at the queue by the time its head may spill
    /// ([`SPILL_AFTER`]): the driver's alarm, which wakes nobody if the queue
    /// has moved by then (or the spare's future, free while it drives; or
    /// the bell, without a driver).
    fn look_soon(&self, state: &mut State<T>) {
        match (state.spare_waker.take(), &self.driver) {
            (Some(waker), _) => waker.wake(),
            (None, Some(driver)) if self.spill_after >= TAKEOVER_AFTER => driver.set_alarm(),
            (None, _) => self.bell.ring(),
        }
    }

    /// One step of spilling queued items (see the module documentation).
    /// Returns the guard, when to look again (None: when woken), and whether
    /// it handed something out (then look again at once).
    fn spill_step<'a>(
        self: &'a Arc<Self>,
        mut state: MutexGuard<'a, State<T>>,
        now: Instant,
    ) -> (MutexGuard<'a, State<T>>, Option<Instant>, bool) {
        let can_grow = state.live < self.max;
        let head = state.queue.front().map(|(_, since)| *since);
        let takers = !state.idle.is_empty() || can_grow || matches!(state.leader, Leader::Worker(_));
        let Some(since) = head.filter(|_| takers) else { return (state, None, false) };
        // Spill only when the running workers are stuck (nothing finished for
        // SPILL_AFTER): while they keep finishing requests, another thread
        // would only take turns at the GIL with them. When jobs run long,
        // nothing is gained by waiting. New workers start at most one per
        // SPILL_AFTER either way.
        let mut due = if state.slow(self.spill_after) { since } else { since.max(state.progress) + self.spill_after };
        if state.idle.is_empty() && can_grow {
            due = due.max(state.grown + self.spill_after);
        }
        if due > now {
            return (state, Some(due), false);
        }
        if let Some((slot, item)) = state.spill_one() {
            drop(state);
            hand(&slot, Job::Run(item));
            return (lock(&self.state), None, true);
        }
        if !can_grow {
            // At the maximum with nobody idle: the leader takes it.
            let Some(slot) = state.take_leader() else { return (state, None, false) };
            let Some((item, _)) = state.queue.pop_front() else { return (state, None, false) };
            state.running += 1;
            drop(state);
            hand(&slot, Job::Run(item));
            return (lock(&self.state), None, true);
        }
        let Some(id) = state.take_id() else { return (state, None, false) };
        let Some((item, since)) = state.queue.pop_front() else {
            state.free_id(id);
            return (state, None, false);
        };
        state.running += 1;
        state.starting += 1;
        drop(state);
        // The job is in the new worker's slot before its thread exists: the
        // worker takes it first ([`Receiver::first`]); if the thread cannot
        // start, it is taken back from there.
        let rx = self.new_receiver(id, true);
        let slot = rx.slot.clone();
        lock(&slot.state).job = Some(Job::Run(item));
        // On failure the receiver is gone and its id freed.
        let started = (self.spawn)(rx);
        let unstarted = match started {
            Ok(()) => None,
            Err(e) => lock(&slot.state).job.take().map(|job| (job, e)),
        };
        let mut state = lock(&self.state);
        state.starting -= 1;
        state.grown = Instant::now();
        if let Some((Job::Run(item), e)) = unstarted {
            tracing::warn!(
                "could not start worker thread {} of at most {}: {e}; retrying in {:?}",
                id + 1,
                self.max,
                RETRY_GROWTH_AFTER
            );
            state.queue.push_front((item, since));
            state.running -= 1;
            state.grown += RETRY_GROWTH_AFTER;
        }
        (state, None, true)
    }
}

fn hand<T>(slot: &Slot<T>, job: Job<T>) {
    let waker = {
        let mut state = lock(&slot.state);
        debug_assert!(state.job.is_none(), "a worker was handed a second job");
        state.job = Some(job);
        state.waker.take()
    };
    match waker {
        // The leader, in the runtime (woken for free from its own thread).
        Some(waker) => waker.wake(),
        None => slot.ready.notify_one(),
    }
}

fn lock<U>(m: &Mutex<U>) -> MutexGuard<'_, U> {
    // A panic while holding these locks leaves consistent data (every
    // critical section is a push or a pop), so poisoning is ignored.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The sending side (the connections' handler).
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

/// The spare: the serving thread's part of the pool ([`Spare::run`]).
pub struct Spare<T> {
    shared: Arc<Shared<T>>,
}

/// One worker's receiving side.
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
    slot: Arc<Slot<T>>,
    /// Counted in `running` (handed a job and not idle since); only this
    /// worker's thread touches it (an atomic only so the receiver is `Sync`).
    busy: AtomicBool,
    /// Left the pool after its idle timeout (its id is already free).
    retired: AtomicBool,
    id: usize,
    /// Started by the spare for a job that is handed to it next.
    handed: bool,
    /// When it got its current job, in nanoseconds since `Shared::epoch`.
    since: AtomicU64,
}

/// A queue served by at most `max` workers (at least one), started by `spawn`:
/// one now, the others when requests wait (see the module documentation). A
/// worker idle for `idle_timeout` exits unless it is the last. With `driver`,
/// idle workers lead its runtime. [`Spare::run`] must run (on the serving
/// thread) for requests to spill and the pool to grow.
///
/// Errors: the first worker could not be started, or the spare's eventfd
/// could not be created.
pub fn channel<T: Send + 'static>(
    max: usize,
    idle_timeout: Duration,
    driver: Option<Arc<Driver>>,
    spawn: Spawn<T>,
) -> io::Result<(Sender<T>, Spare<T>)> {
    channel_with(max, SPILL_AFTER, idle_timeout, driver, spawn)
}

fn channel_with<T: Send + 'static>(
    max: usize,
    spill_after: Duration,
    idle_timeout: Duration,
    driver: Option<Arc<Driver>>,
    spawn: Spawn<T>,
) -> io::Result<(Sender<T>, Spare<T>)> {
    let max = max.max(1);
    let state = State {
        queue: VecDeque::new(),
        idle: Vec::new(),
        leader: Leader::Nobody,
        running: 0,
        progress: Instant::now(),
        service: Duration::ZERO,
        closed: false,
        done: false,
        ids: vec![false; max],
        live: 0,
        starting: 0,
        grown: Instant::now(),
        spare_waker: None,
    };
    let shared = Arc::new(Shared {
        state: Mutex::new(state),
        max,
        spill_after,
        idle_timeout,
        spawn,
        epoch: Instant::now(),
        driver,
        bell: Bell::new()?,
    });
    let id = lock(&shared.state).take_id().unwrap_or(0);
    (shared.spawn)(shared.new_receiver(id, false))?;
    Ok((Sender { shared: shared.clone() }, Spare { shared }))
}

impl<T> Sender<T> {
    /// Hand `item` to a worker now when none is running (the leader itself
    /// while jobs are fast) or jobs run for [`SPILL_AFTER`] or longer; else
    /// queue it (for a running worker, or the spare).
    pub fn send(&self, item: T) {
        let mut state = lock(&self.shared.state);
        let was_empty = state.queue.is_empty();
        state.queue.push_back((item, Instant::now()));
        let slow = state.slow(self.shared.spill_after);
        if state.running == 0 || slow {
            if let Some((slot, item)) = state.hand_out(slow, self.shared.max) {
                drop(state);
                hand(&slot, Job::Run(item));
                return;
            }
        }
        let takers = !state.idle.is_empty()
            || state.live < self.shared.max
            || matches!(state.leader, Leader::Worker(_) | Leader::Spare);
        if was_empty && takers {
            self.shared.look_soon(&mut state);
        }
    }

    /// Items waiting for a worker.
    #[cfg(test)]
    fn queued(&self) -> usize {
        lock(&self.shared.state).queue.len()
    }

    /// Workers started and not exited.
    #[cfg(test)]
    fn live(&self) -> usize {
        lock(&self.shared.state).live
    }

    /// Who leads the runtime: "nobody", "worker" or "spare".
    #[cfg(test)]
    fn leader(&self) -> &'static str {
        match lock(&self.shared.state).leader {
            Leader::Nobody => "nobody",
            Leader::Worker(_) => "worker",
            Leader::Spare => "spare",
        }
    }
}

impl<T> Spare<T> {
    /// Spill waiting requests and drive the runtime while a leader is away
    /// too long, until [`Spare::finish`] is called. Run it on the serving
    /// thread, without the GIL.
    pub fn run(&self) {
        let shared = &self.shared;
        let mut state = lock(&shared.state);
        loop {
            if state.done {
                return;
            }
            let now = Instant::now();
            let (guard, spill_due, acted) = shared.spill_step(state, now);
            state = guard;
            if acted {
                continue;
            }
            let mut due = spill_due;
            if let (Some(driver), Leader::Nobody) = (&shared.driver, &state.leader) {
                if let Some(undriven) = driver.undriven_for() {
                    if undriven >= TAKEOVER_AFTER {
                        state.leader = Leader::Spare;
                        drop(state);
                        driver.clear_alarm();
                        driver.block_on(Driving { shared: shared.clone(), sleep: None });
                        state = lock(&shared.state);
                        continue;
                    }
                    let at = now + (TAKEOVER_AFTER - undriven);
                    due = Some(due.map_or(at, |d| d.min(at)));
                }
            }
            drop(state);
            self.sleep(due);
            state = lock(&shared.state);
        }
    }

    /// Wait for the bell, the driver's alarm or `until`.
    fn sleep(&self, until: Option<Instant>) {
        let shared = &self.shared;
        let mut fds = [
            libc::pollfd { fd: shared.bell.0.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: shared.driver.as_ref().map_or(-1, |d| d.alarm_fd()), events: libc::POLLIN, revents: 0 },
        ];
        let timeout = until.map(|at| {
            let left = at.saturating_duration_since(Instant::now());
            libc::timespec { tv_sec: left.as_secs() as libc::time_t, tv_nsec: left.subsec_nanos() as libc::c_long }
        });
        let timeout_ptr = timeout.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: two valid pollfds (a negative fd is ignored) and a valid or
        // null timespec; EINTR just means looking again.
        let ready = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, timeout_ptr, std::ptr::null()) };
        if ready > 0 {
            if fds[0].revents != 0 {
                shared.bell.clear();
            }
            if fds[1].revents != 0 {
                if let Some(driver) = &shared.driver {
                    driver.clear_alarm();
                }
            }
        }
    }

    /// Serving is over: [`Spare::run`] returns (callable from any thread).
    pub fn finish(&self) {
        let mut state = lock(&self.shared.state);
        state.done = true;
        self.shared.ring(&mut state);
    }

    /// A callable for [`Spare::finish`] that keeps the pool alive.
    pub fn finisher(&self) -> Box<dyn Fn() + Send + Sync>
    where
        T: Send + 'static,
    {
        let spare = Spare { shared: self.shared.clone() };
        Box::new(move || spare.finish())
    }

    /// Close the queue: workers take what is still queued, then exit; the
    /// leader leaves the runtime. Idempotent.
    pub fn close(&self) {
        let (handed, idle, leader) = {
            let mut state = lock(&self.shared.state);
            state.closed = true;
            // Queued items are still taken by the workers; wake them all.
            let mut handed = Vec::new();
            while let Some((slot, item)) = state.spill_one() {
                handed.push((slot, item));
            }
            (handed, std::mem::take(&mut state.idle), state.take_leader())
        };
        for (slot, item) in handed {
            hand(&slot, Job::Run(item));
        }
        for slot in idle.into_iter().chain(leader) {
            hand(&slot, Job::Close);
        }
    }
}

/// The spare's future while it drives the runtime: spills what waits, and
/// ends when a worker takes the runtime back or serving is over.
struct Driving<T> {
    shared: Arc<Shared<T>>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> Future for Driving<T> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let shared = self.shared.clone();
        loop {
            let mut state = lock(&shared.state);
            if state.done || !matches!(state.leader, Leader::Spare) {
                state.spare_waker = None;
                return Poll::Ready(());
            }
            let (mut state, due, acted) = shared.spill_step(state, Instant::now());
            if acted {
                continue;
            }
            state.spare_waker = Some(cx.waker().clone());
            drop(state);
            let Some(at) = due else {
                self.sleep = None;
                return Poll::Pending;
            };
            let at = tokio::time::Instant::from_std(at);
            match &mut self.sleep {
                Some(sleep) if sleep.deadline() == at => {}
                _ => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
            }
            if let Some(sleep) = &mut self.sleep {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
        }
    }
}

/// What [`Receiver::try_take`] found.
pub enum Take<T> {
    Job(Job<T>),
    /// Nothing queued: the worker is now on the idle stack and must
    /// [`Receiver::wait`] (which may already have a job).
    Idle,
    /// Nothing queued and nobody drives the runtime: the worker now leads
    /// and must [`Receiver::lead`].
    Lead,
}

/// The leader's future: ready when it is handed a job.
struct Lead<'a, T> {
    slot: &'a Slot<T>,
}

impl<T> Future for Lead<'_, T> {
    type Output = Job<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Job<T>> {
        let mut state = lock(&self.slot.state);
        match state.job.take() {
            Some(job) => {
                state.waker = None;
                Poll::Ready(job)
            }
            None => {
                if !state.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    state.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

impl<T> Receiver<T> {
    /// This worker's number: the lowest not taken by a live worker when it
    /// started, below the channel's maximum.
    pub fn id(&self) -> usize {
        self.id
    }

    /// For a worker the spare started for a request: that request. Call it
    /// before anything else.
    pub fn first(&self) -> Option<Job<T>> {
        if !self.handed {
            return None;
        }
        let job = lock(&self.slot.state).job.take();
        // The spare counted this worker in `running` for it.
        self.busy.store(matches!(job, Some(Job::Run(_))), Relaxed);
        self.mark_started(Instant::now());
        job
    }

    fn mark_started(&self, now: Instant) {
        let nanos = now.saturating_duration_since(self.shared.epoch).as_nanos();
        self.since.store(u64::try_from(nanos).unwrap_or(u64::MAX), Relaxed);
    }

    /// The next queued item without blocking; otherwise lead the runtime if
    /// nobody drives it (or only the spare does, and jobs are fast), else
    /// register as idle.
    pub fn try_take(&self) -> Take<T> {
        let mut state = lock(&self.shared.state);
        let now = Instant::now();
        if self.busy.load(Relaxed) {
            state.progress = now;
            let ran = now.saturating_duration_since(self.shared.epoch + Duration::from_nanos(self.since.load(Relaxed)));
            state.service = match state.service {
                Duration::ZERO => ran,
                before => (before * 7 + ran) / 8,
            };
        }
        if let Some((item, _)) = state.queue.pop_front() {
            if !self.busy.swap(true, Relaxed) {
                state.running += 1;
            }
            self.mark_started(now);
            return Take::Job(Job::Run(item));
        }
        if self.busy.swap(false, Relaxed) {
            state.running -= 1;
        }
        if state.closed {
            return Take::Job(Job::Close);
        }
        if self.shared.driver.is_some() {
            let lead = match state.leader {
                Leader::Nobody => true,
                Leader::Spare => !state.slow(self.shared.spill_after),
                Leader::Worker(_) => false,
            };
            if lead {
                if matches!(state.leader, Leader::Spare) {
                    if let Some(waker) = state.spare_waker.take() {
                        waker.wake();
                    }
                }
                state.leader = Leader::Worker(self.slot.clone());
                return Take::Lead;
            }
        }
        state.idle.push(self.slot.clone());
        Take::Idle
    }

    /// After [`Take::Lead`]: drive the runtime until a job is handed to this
    /// worker (or the pool closes). Call it without the GIL.
    pub fn lead(&self) -> Job<T> {
        let job = match &self.shared.driver {
            Some(driver) => driver.block_on(Lead { slot: &self.slot }),
            None => return self.wait(),
        };
        // The sender counted this worker in `running` when it handed the job.
        self.busy.store(matches!(job, Job::Run(_)), Relaxed);
        self.mark_started(Instant::now());
        job
    }

    /// Block until a sender hands this worker a job (after [`Take::Idle`]),
    /// or until it has been idle for the idle timeout while other workers
    /// exist ([`Job::Close`]: it has left the pool).
    pub fn wait(&self) -> Job<T> {
        let mut slot = lock(&self.slot.state);
        loop {
            if let Some(j) = slot.job.take() {
                // A sender counted this worker in `running` when it handed the job.
                self.busy.store(matches!(j, Job::Run(_)), Relaxed);
                self.mark_started(Instant::now());
                return j;
            }
            let (guard, waited) =
                self.slot.ready.wait_timeout(slot, self.shared.idle_timeout).unwrap_or_else(|e| e.into_inner());
            slot = guard;
            if waited.timed_out() && slot.job.is_none() {
                drop(slot);
                if self.retire() {
                    return Job::Close;
                }
                slot = lock(&self.slot.state);
            }
        }
    }

    /// Leave the pool if this worker is still idle (nobody popped it to hand
    /// it a job), nothing is queued, and it is not the last worker.
    fn retire(&self) -> bool {
        let mut state = lock(&self.shared.state);
        // A worker being started may fail to: it does not count.
        if state.live - state.starting <= 1 || !state.queue.is_empty() {
            return false;
        }
        if !state.leave_idle(&self.slot) {
            return false;
        }
        state.free_id(self.id);
        self.retired.store(true, Relaxed);
        true
    }

    /// [`Receiver::try_take`], then [`Receiver::wait`] or [`Receiver::lead`] if needed.
    #[cfg(test)]
    pub fn take(&self) -> Job<T> {
        match self.try_take() {
            Take::Job(job) => job,
            Take::Idle => self.wait(),
            Take::Lead => self.lead(),
        }
    }
}

impl<T> Drop for Receiver<T> {
    /// A worker leaving for another reason than its idle timeout (the queue
    /// closed, or its thread never started) gives back its place and id.
    fn drop(&mut self) {
        if self.retired.load(Relaxed) {
            return;
        }
        let mut state = lock(&self.shared.state);
        state.leave_idle(&self.slot);
        if matches!(&state.leader, Leader::Worker(slot) if Arc::ptr_eq(slot, &self.slot)) {
            state.leader = Leader::Nobody;
        }
        if self.busy.load(Relaxed) {
            state.running -= 1;
        }
        state.free_id(self.id);
        if !state.queue.is_empty() {
            // Room to start another worker for what waits.
            self.shared.ring(&mut state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;
    use std::thread::JoinHandle;

    fn run(job: Job<u32>) -> Option<u32> {
        match job {
            Job::Run(n) => Some(n),
            Job::Close => None,
        }
    }

    /// A pool whose spare runs on its own thread ("spare") until the pool is
    /// closed (explicitly or when dropped).
    struct Pool {
        tx: Arc<Sender<u32>>,
        spare: Arc<Spare<u32>>,
        thread: Option<JoinHandle<()>>,
    }

    impl Pool {
        fn start(
            max: usize,
            spill_after: Duration,
            idle_timeout: Duration,
            driver: Option<Arc<Driver>>,
            spawn: Spawn<u32>,
        ) -> Pool {
            let (tx, spare) = channel_with(max, spill_after, idle_timeout, driver, spawn).unwrap();
            let spare = Arc::new(spare);
            let running = spare.clone();
            let thread = std::thread::Builder::new().name("spare".into()).spawn(move || running.run()).unwrap();
            Pool { tx: Arc::new(tx), spare, thread: Some(thread) }
        }

        /// Serving is over: stop the spare, then close the queue.
        fn close(&mut self) {
            self.spare.finish();
            if let Some(thread) = self.thread.take() {
                thread.join().unwrap();
            }
            self.spare.close();
        }
    }

    impl Drop for Pool {
        fn drop(&mut self) {
            self.close();
        }
    }

    impl std::ops::Deref for Pool {
        type Target = Sender<u32>;
        fn deref(&self) -> &Sender<u32> {
            &self.tx
        }
    }

    /// A pool whose "threads" are receivers delivered to the test.
    fn pool(max: usize, idle_timeout: Duration) -> (Pool, mpsc::Receiver<Receiver<u32>>) {
        pool_with(max, SPILL_AFTER, idle_timeout)
    }

    fn pool_with(max: usize, spill_after: Duration, idle_timeout: Duration) -> (Pool, mpsc::Receiver<Receiver<u32>>) {
        let (started, workers) = mpsc::channel();
        let spawn: Spawn<u32> = Box::new(move |rx| started.send(rx).map_err(|_| io::Error::other("test over")));
        (Pool::start(max, spill_after, idle_timeout, None, spawn), workers)
    }

    /// The first worker, running 1 while 2 is sent (and waits for it).
    fn run_one_then_queue_two(tx: &Sender<u32>, workers: &mpsc::Receiver<Receiver<u32>>) -> Receiver<u32> {
        let first = workers.recv().unwrap();
        assert!(matches!(first.try_take(), Take::Idle));
        tx.send(1);
        assert_eq!(run(first.wait()), Some(1));
        tx.send(2);
        first
    }

    /// [`run_one_then_queue_two`], and the second worker started for 2.
    /// Returns both, still running 1 and 2.
    fn grow_to_two(tx: &Sender<u32>, workers: &mpsc::Receiver<Receiver<u32>>) -> (Receiver<u32>, Receiver<u32>) {
        let first = run_one_then_queue_two(tx, workers);
        let second = workers.recv_timeout(SOON).expect("no worker was started for the waiting request");
        assert_eq!(second.first().map(run), Some(Some(2)));
        (first, second)
    }

    const LONG: Duration = Duration::from_secs(60);
    const SOON: Duration = Duration::from_secs(10);

    #[test]
    fn items_queue_in_order_while_no_worker_is_idle() {
        let (tx, workers) = pool(1, LONG);
        let a = workers.recv().unwrap();
        tx.send(1);
        tx.send(2);
        assert_eq!(tx.queued(), 2);
        assert_eq!(run(a.take()), Some(1));
        assert_eq!(run(a.take()), Some(2));
    }

    #[test]
    fn a_request_waiting_for_a_stuck_worker_starts_another_up_to_the_maximum() {
        let (tx, workers) = pool(3, LONG);
        let a = workers.recv().unwrap();
        assert_eq!((a.id(), a.first().is_none()), (0, true));
        assert!(matches!(a.try_take(), Take::Idle));
        tx.send(1);
        assert_eq!(run(a.wait()), Some(1));
        assert_eq!(tx.live(), 1, "nothing waited: no second worker");
        // a stays busy (say, blocked in I/O): 2 waits, then gets a new worker.
        let queued_at = Instant::now();
        tx.send(2);
        let b = workers.recv_timeout(SOON).expect("no worker was started for the waiting request");
        assert_eq!((b.id(), b.first().map(run)), (1, Some(Some(2))));
        assert!(queued_at.elapsed() >= SPILL_AFTER, "started before SPILL_AFTER");
        tx.send(3);
        let c = workers.recv_timeout(SOON).expect("no third worker");
        assert_eq!((c.id(), c.first().map(run)), (2, Some(Some(3))));
        // At the maximum: 4 waits for a running worker.
        tx.send(4);
        assert!(workers.recv_timeout(Duration::from_millis(100)).is_err(), "grew beyond the maximum");
        assert_eq!((tx.live(), tx.queued()), (3, 1));
        assert!(matches!(a.try_take(), Take::Job(Job::Run(4))));
    }

    #[test]
    fn the_most_recently_idle_worker_gets_an_item_and_the_next_waits_for_it() {
        // A slow spill, so that nothing spills while the test looks at the queue.
        let (tx, workers) = pool_with(2, Duration::from_millis(300), LONG);
        let (b, a) = grow_to_two(&tx, &workers);
        assert!(matches!(a.try_take(), Take::Idle));
        assert!(matches!(b.try_take(), Take::Idle));
        tx.send(7);
        assert_eq!(run(b.wait()), Some(7), "b went idle last");
        // b is running: 8 waits for it instead of waking a.
        tx.send(8);
        assert_eq!(tx.queued(), 1);
        assert!(matches!(b.try_take(), Take::Job(Job::Run(8))));
        assert!(matches!(b.try_take(), Take::Idle));
        // Nobody is running now: the next item goes to b again, at once.
        tx.send(9);
        assert_eq!(run(b.wait()), Some(9));
        drop(a);
    }

    #[test]
    fn an_item_that_waits_for_a_busy_worker_spills_to_an_idle_one() {
        let (tx, workers) = pool(2, LONG);
        let (b, a) = grow_to_two(&tx, &workers);
        assert!(matches!(a.try_take(), Take::Idle));
        // b is still busy; a is idle: 3 goes to a after SPILL_AFTER.
        assert_eq!(tx.live(), 2);
        let queued_at = Instant::now();
        tx.send(3);
        let (got_tx, got_rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || got_tx.send(run(a.wait())).unwrap());
        let got = got_rx.recv_timeout(SOON).expect("the item never spilled to the idle worker");
        assert_eq!(got, Some(3));
        assert!(queued_at.elapsed() >= SPILL_AFTER, "spilled before SPILL_AFTER");
        waiter.join().unwrap();
        drop(b);
    }

    #[test]
    fn when_jobs_run_longer_than_the_spill_delay_an_idle_worker_gets_the_next_at_once() {
        let spill_after = Duration::from_millis(50);
        let (tx, workers) = pool_with(2, spill_after, LONG);
        let (a, b) = grow_to_two(&tx, &workers);
        std::thread::sleep(spill_after);
        // a's job took longer than spill_after: jobs are slow.
        assert!(matches!(a.try_take(), Take::Idle));
        // b is running, a idle: 3 goes to a without waiting for b.
        tx.send(3);
        assert_eq!(tx.queued(), 0, "queued behind a slow running worker");
        assert_eq!(run(a.wait()), Some(3));
        drop(b);
    }

    #[test]
    fn an_idle_worker_exits_after_the_idle_timeout_but_the_last_one_stays() {
        let (tx, workers) = pool(2, Duration::from_millis(50));
        let (a, b) = grow_to_two(&tx, &workers);
        assert!(matches!(a.try_take(), Take::Idle));
        assert!(matches!(b.try_take(), Take::Idle));
        let (done_tx, done) = mpsc::channel();
        let waiters: Vec<_> = [a, b]
            .into_iter()
            .map(|w| {
                let done_tx = done_tx.clone();
                std::thread::spawn(move || {
                    let job = run(w.wait());
                    done_tx.send((w.id(), job)).unwrap();
                    (w, job)
                })
            })
            .collect();
        let (gone, job) = done.recv_timeout(SOON).expect("no idle worker exited");
        assert_eq!(job, None);
        assert!(done.recv_timeout(Duration::from_millis(300)).is_err(), "the last worker exited too");
        assert_eq!(tx.live(), 1);
        // The one left takes the next request at once...
        tx.send(9);
        let (kept, job) = done.recv_timeout(SOON).unwrap();
        assert_eq!((job, kept == gone), (Some(9), false));
        // ...and while it runs, a waiting request gets a new worker with the freed id.
        tx.send(10);
        let c = workers.recv_timeout(SOON).expect("the pool did not grow again");
        assert_eq!((c.id(), c.first().map(run)), (gone, Some(Some(10))));
        for w in waiters {
            w.join().unwrap();
        }
    }

    #[test]
    fn a_worker_that_cannot_start_leaves_the_request_queued() {
        let (started, workers) = mpsc::channel();
        let attempts = Arc::new(AtomicUsize::new(0));
        let tries = attempts.clone();
        let spawn: Spawn<u32> = Box::new(move |rx| {
            if tries.fetch_add(1, Relaxed) > 0 {
                return Err(io::Error::other("no threads left"));
            }
            started.send(rx).map_err(|_| io::Error::other("test over"))
        });
        let tx = Pool::start(2, SPILL_AFTER, LONG, None, spawn);
        let a = run_one_then_queue_two(&tx, &workers);
        let deadline = Instant::now() + SOON;
        while attempts.load(Relaxed) < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(attempts.load(Relaxed), 2, "no second worker was tried");
        // The spare puts the request back after the attempt returns.
        let deadline = Instant::now() + SOON;
        while (tx.live(), tx.queued()) != (1, 1) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!((tx.live(), tx.queued()), (1, 1));
        assert!(matches!(a.try_take(), Take::Job(Job::Run(2))));
    }

    #[test]
    fn a_request_put_back_by_a_failed_start_during_close_still_runs() {
        let (started, workers) = mpsc::channel();
        let (trying_tx, trying) = mpsc::channel();
        let (go, go_rx) = mpsc::channel::<()>();
        let go_rx = Mutex::new(go_rx);
        let calls = AtomicUsize::new(0);
        let spawn: Spawn<u32> = Box::new(move |rx| {
            if calls.fetch_add(1, Relaxed) == 0 {
                return started.send(rx).map_err(|_| io::Error::other("test over"));
            }
            let _ = trying_tx.send(());
            let _ = lock(&go_rx).recv();
            Err(io::Error::other("no threads left"))
        });
        let mut tx = Pool::start(2, SPILL_AFTER, LONG, None, spawn);
        let a = run_one_then_queue_two(&tx, &workers);
        trying.recv_timeout(SOON).expect("no second worker was tried");
        // 2 is with the worker being started; a goes idle, and the pool closes.
        assert!(matches!(a.try_take(), Take::Idle));
        let closer = std::thread::spawn(move || tx.close());
        std::thread::sleep(Duration::from_millis(50));
        go.send(()).unwrap();
        closer.join().unwrap();
        assert_eq!(run(a.wait()), Some(2), "the request put back was lost at close");
        assert_eq!(run(a.take()), None);
    }

    #[test]
    fn a_sleeping_worker_is_woken_and_close_reaches_every_worker() {
        let (done_tx, done_rx) = mpsc::channel();
        let threads = Arc::new(Mutex::new(Vec::new()));
        let handles = threads.clone();
        let spawn: Spawn<u32> = Box::new(move |r: Receiver<u32>| {
            let done = done_tx.clone();
            let thread = std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut next = r.first();
                while let Some(n) = run(next.take().unwrap_or_else(|| r.take())) {
                    got.push(n);
                    done.send(n).unwrap();
                }
                got
            });
            lock(&handles).push(thread);
            Ok(())
        });
        let mut tx = Pool::start(3, SPILL_AFTER, LONG, None, spawn);
        for n in 0..100 {
            tx.send(n);
        }
        let mut seen: Vec<u32> = (0..100).map(|_| done_rx.recv_timeout(SOON).unwrap()).collect();
        tx.close();
        let threads = std::mem::take(&mut *lock(&threads));
        let total: usize = threads.into_iter().map(|t| t.join().unwrap().len()).sum();
        seen.sort_unstable();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
        assert_eq!(total, 100);
    }

    #[test]
    fn items_queued_before_close_are_still_taken() {
        let (mut tx, workers) = pool(1, LONG);
        let a = workers.recv().unwrap();
        tx.send(5);
        tx.close();
        assert_eq!(run(a.take()), Some(5));
        assert_eq!(run(a.take()), None);
    }

    // ----- Leading the runtime -----

    /// What a worker thread ran: the job and its thread's name.
    type Ran = mpsc::Receiver<(u32, String)>;

    fn thread_name() -> String {
        std::thread::current().name().unwrap_or("?").to_string()
    }

    /// Worker threads ("w0", "w1", …) running the pool's loop as the WSGI
    /// pool does. Job `n` from 1000 to 1999 "runs" (sleeps) `n - 1000` ms;
    /// from 2000, it waits `n - 2000` ms for its connection (driving the
    /// runtime meanwhile, as a thread reading a slow request body does).
    fn workers_that_run(ran: mpsc::Sender<(u32, String)>, driver: Arc<Driver>) -> Spawn<u32> {
        let ran = Mutex::new(ran);
        Box::new(move |rx: Receiver<u32>| {
            let (ran, driver) = (lock(&ran).clone(), driver.clone());
            std::thread::Builder::new().name(format!("w{}", rx.id())).spawn(move || {
                let mut next = rx.first();
                while let Some(n) = run(next.take().unwrap_or_else(|| rx.take())) {
                    let _ = ran.send((n, thread_name()));
                    if (1000..2000).contains(&n) {
                        std::thread::sleep(Duration::from_millis(u64::from(n - 1000)));
                    } else if n >= 2000 {
                        let wait = Duration::from_millis(u64::from(n - 2000));
                        driver.block_on(async move { tokio::time::sleep(wait).await });
                    }
                }
            })?;
            Ok(())
        })
    }

    fn leading_pool(max: usize, spill_after: Duration) -> (Pool, Arc<Driver>, Ran) {
        let driver = Driver::new().unwrap();
        let (ran_tx, ran) = mpsc::channel();
        let spawn = workers_that_run(ran_tx, driver.clone());
        let pool = Pool::start(max, spill_after, LONG, Some(driver.clone()), spawn);
        (pool, driver, ran)
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + SOON;
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Send `items` from a task on the runtime, as a connection does; returns
    /// the name of the thread that ran the task.
    fn send_from_the_runtime(pool: &Pool, driver: &Driver, items: &[u32]) -> mpsc::Receiver<String> {
        let (tx, items, (seen_tx, seen)) = (pool.tx.clone(), items.to_vec(), mpsc::channel());
        driver.spawn(async move {
            let _ = seen_tx.send(thread_name());
            for item in items {
                tx.send(item);
            }
        });
        seen
    }

    #[test]
    fn an_idle_worker_leads_and_runs_a_fast_request_on_the_thread_that_read_it() {
        let (pool, driver, ran) = leading_pool(4, SPILL_AFTER);
        wait_for("the first worker to lead", || pool.leader() == "worker");
        let task_thread = send_from_the_runtime(&pool, &driver, &[1]);
        assert_eq!(task_thread.recv_timeout(SOON).unwrap(), "w0", "the leader drives the runtime");
        assert_eq!(ran.recv_timeout(SOON).unwrap(), (1, "w0".to_string()), "no hand-off to another thread");
        // Three requests ready in one turn: the leader runs them one after another.
        wait_for("the worker to lead again", || pool.leader() == "worker");
        send_from_the_runtime(&pool, &driver, &[2, 3, 4]);
        let got: Vec<_> = (0..3).map(|_| ran.recv_timeout(SOON).unwrap()).collect();
        assert_eq!(got, [2, 3, 4].map(|n| (n, "w0".to_string())));
        assert_eq!(pool.live(), 1, "a fast application needs one thread");
    }

    #[test]
    fn while_a_leader_runs_a_long_request_the_spare_drives_and_the_worker_takes_it_back() {
        // Requests count as fast (spill_after is long): a worker takes the runtime back.
        let (pool, driver, ran) = leading_pool(4, LONG);
        wait_for("the first worker to lead", || pool.leader() == "worker");
        send_from_the_runtime(&pool, &driver, &[1300]);
        assert_eq!(ran.recv_timeout(SOON).unwrap(), (1300, "w0".to_string()));
        // w0 is away for 300 ms; the runtime is driven anyway, by the spare.
        let sent = Instant::now();
        let task_thread = send_from_the_runtime(&pool, &driver, &[]).recv_timeout(SOON).unwrap();
        assert_eq!(task_thread, "spare");
        assert!(sent.elapsed() < Duration::from_millis(250), "the spare took {:?} to drive", sent.elapsed());
        // w0 is back: it leads again.
        wait_for("w0 to take the runtime back", || pool.leader() == "worker");
        assert_eq!(send_from_the_runtime(&pool, &driver, &[2]).recv_timeout(SOON).unwrap(), "w0");
        assert_eq!(ran.recv_timeout(SOON).unwrap(), (2, "w0".to_string()));
    }

    #[test]
    fn with_slow_requests_the_leader_stays_the_io_thread_and_others_run_them() {
        let (pool, driver, ran) = leading_pool(4, SPILL_AFTER);
        wait_for("the first worker to lead", || pool.leader() == "worker");
        // The first request runs on the leader (nothing is known yet) and takes 20 ms.
        send_from_the_runtime(&pool, &driver, &[1020]);
        assert_eq!(ran.recv_timeout(SOON).unwrap(), (1020, "w0".to_string()));
        wait_for("someone to drive again", || pool.leader() != "nobody");
        std::thread::sleep(Duration::from_millis(40));
        // Jobs are slow now: whoever drives hands requests to another thread.
        let driving = send_from_the_runtime(&pool, &driver, &[1001]).recv_timeout(SOON).unwrap();
        let (n, runner) = ran.recv_timeout(SOON).unwrap();
        assert_eq!(n, 1001);
        assert_ne!(runner, driving, "a slow request ran on the thread driving the runtime");
    }

    #[test]
    fn a_request_queued_behind_a_leader_waiting_for_its_body_spills_to_another_worker() {
        let (pool, driver, ran) = leading_pool(4, SPILL_AFTER);
        wait_for("the first worker to lead", || pool.leader() == "worker");
        // Both arrive in one turn: the leader takes the first, which then
        // waits 500 ms for its connection inside the runtime.
        let sent = Instant::now();
        send_from_the_runtime(&pool, &driver, &[2500, 7]);
        assert_eq!(ran.recv_timeout(SOON).unwrap(), (2500, "w0".to_string()));
        let (n, thread) = ran.recv_timeout(SOON).unwrap();
        assert_eq!(n, 7);
        assert_ne!(thread, "w0");
        assert!(sent.elapsed() < Duration::from_millis(250), "waited {:?} behind the leader", sent.elapsed());
    }

    #[test]
    fn close_reaches_the_leader() {
        let (mut pool, _driver, _ran) = leading_pool(2, SPILL_AFTER);
        wait_for("the first worker to lead", || pool.leader() == "worker");
        pool.close();
        wait_for("the leader to exit", || pool.live() == 0);
    }
}
