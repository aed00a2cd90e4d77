//! The queue between the connections and the Python worker threads: most
//! recently idle worker first, handed the request directly, no spinning; the
//! pool grows on demand up to its maximum and shrinks back when idle.
//!
//! A request goes straight to the worker that became idle last (a stack of
//! idle workers): its caches are warm and it is the one most likely not yet
//! asleep. While a worker is already running a request, a new one waits in a
//! FIFO queue instead of waking a second worker: the running worker takes it
//! when it finishes, without sleeping (and, in the pool, without releasing the
//! GIL), so a fast application runs on one hot thread instead of passing the
//! GIL around. A request that has waited [`SPILL_AFTER`] while no running
//! worker finished anything (they are slow, or blocked in I/O with the GIL
//! released) is handed by the spill thread to an idle worker, or, when none is
//! idle and fewer than the maximum exist, to a new worker it starts (at most
//! one per [`SPILL_AFTER`]). When jobs themselves run that long (a moving
//! average from hand-out to the worker's next take), waiting for a running
//! worker gains nothing: a request goes to an idle worker at once, or the
//! spill thread starts one at the pace above. So a fast application keeps one
//! thread and a slow or sleeping one gets as many as it needs, like flup's
//! `ThreadPool` (which grows up to `maxThreads`).
//! A worker idle for the channel's idle timeout exits unless it is the last
//! one (php-fpm's `pm = ondemand` with `pm.process_idle_timeout`); the idle
//! stack is LIFO, so the least recently used workers are the ones that expire.
//! A sleeping worker waits on its own condition variable: one futex wake per
//! hand-off, never a broadcast, never a spin.
//!
//! No pyo3 here; the WSGI pool (`wsgi/pool.rs`) decides what runs with the GIL.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
    /// Every sender is gone and the queue is empty, or this worker was idle
    /// for the idle timeout and is not the last one: exit.
    Close,
}

struct Slot<T> {
    job: Mutex<Option<Job<T>>>,
    ready: Condvar,
}

struct State<T> {
    queue: VecDeque<(T, Instant)>,
    idle: Vec<Arc<Slot<T>>>,
    /// Workers handed a job and not idle since.
    running: usize,
    /// When a worker last finished a job.
    progress: Instant,
    /// How long a job runs, from hand-out to its worker asking for the next
    /// (a moving average; zero until one has finished).
    service: Duration,
    closed: bool,
    /// Which worker ids (`0..max`) are taken; `live` of them are.
    ids: Vec<bool>,
    live: usize,
    /// Of `live`, workers the spill thread is starting (which may fail).
    starting: usize,
    /// When the spill thread last started a worker (or last may try again).
    grown: Instant,
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

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Wakes the spill thread when the queue stops being empty (or closes).
    queued: Condvar,
    max: usize,
    /// [`SPILL_AFTER`] (shorter or longer in unit tests).
    spill_after: Duration,
    idle_timeout: Duration,
    spawn: Spawn<T>,
    epoch: Instant,
}

impl<T> Shared<T> {
    fn new_receiver(self: &Arc<Self>, id: usize, handed: bool) -> Receiver<T> {
        Receiver {
            shared: self.clone(),
            slot: Arc::new(Slot { job: Mutex::new(None), ready: Condvar::new() }),
            busy: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            id,
            handed,
            since: AtomicU64::new(0),
        }
    }
}

fn hand<T>(slot: &Slot<T>, job: Job<T>) {
    let earlier = lock(&slot.job).replace(job);
    debug_assert!(earlier.is_none(), "a worker was handed a second job");
    slot.ready.notify_one();
}

fn lock<U>(m: &Mutex<U>) -> MutexGuard<'_, U> {
    // A panic while holding these locks leaves consistent data (every
    // critical section is a push or a pop), so poisoning is ignored.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The sending side (one per pool; dropping it closes the queue).
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
    spill: Option<JoinHandle<()>>,
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
    /// Started by the spill thread for a job that is handed to it next.
    handed: bool,
    /// When it got its current job, in nanoseconds since `Shared::epoch`.
    since: AtomicU64,
}

/// A queue served by at most `max` workers (at least one), started by `spawn`:
/// one now, the others when requests wait (see the module documentation). A
/// worker idle for `idle_timeout` exits unless it is the last.
///
/// Errors: the first worker or the spill thread could not be started.
pub fn channel<T: Send + 'static>(max: usize, idle_timeout: Duration, spawn: Spawn<T>) -> io::Result<Sender<T>> {
    channel_with(max, SPILL_AFTER, idle_timeout, spawn)
}

fn channel_with<T: Send + 'static>(
    max: usize,
    spill_after: Duration,
    idle_timeout: Duration,
    spawn: Spawn<T>,
) -> io::Result<Sender<T>> {
    let max = max.max(1);
    let state = State {
        queue: VecDeque::new(),
        idle: Vec::new(),
        running: 0,
        progress: Instant::now(),
        service: Duration::ZERO,
        closed: false,
        ids: vec![false; max],
        live: 0,
        starting: 0,
        grown: Instant::now(),
    };
    let shared = Arc::new(Shared {
        state: Mutex::new(state),
        queued: Condvar::new(),
        max,
        spill_after,
        idle_timeout,
        spawn,
        epoch: Instant::now(),
    });
    let id = lock(&shared.state).take_id().unwrap_or(0);
    (shared.spawn)(shared.new_receiver(id, false))?;
    // From here on, dropping the sender (on an error too) closes the queue.
    let mut sender = Sender { shared, spill: None };
    if max > 1 {
        let shared = sender.shared.clone();
        sender.spill = Some(std::thread::Builder::new().name("oxfcgi-spill".into()).spawn(move || spill(&shared))?);
    }
    Ok(sender)
}

/// The spill thread: asleep unless something is queued while a worker is
/// idle or the pool may grow (a worker only goes idle with the queue empty, so
/// that state starts in [`Sender::send`], which wakes it); then it hands each
/// item that has waited [`SPILL_AFTER`] to an idle worker, or to a new one.
/// Exits when the queue is closed.
fn spill<T>(shared: &Arc<Shared<T>>) {
    let mut state = lock(&shared.state);
    loop {
        if state.closed {
            return;
        }
        let can_grow = state.live < shared.max;
        let head = state.queue.front().map(|(_, since)| *since);
        let Some(since) = head.filter(|_| !state.idle.is_empty() || can_grow) else {
            state = shared.queued.wait(state).unwrap_or_else(|e| e.into_inner());
            continue;
        };
        // Spill only when the running workers are stuck (nothing finished for
        // SPILL_AFTER): while they keep finishing requests, another thread
        // would only take turns at the GIL with them. When jobs run long,
        // nothing is gained by waiting. New workers start at most one per
        // SPILL_AFTER either way.
        let mut due =
            if state.slow(shared.spill_after) { since } else { since.max(state.progress) + shared.spill_after };
        if state.idle.is_empty() {
            due = due.max(state.grown + shared.spill_after);
        }
        let now = Instant::now();
        if let Some(left) = due.checked_duration_since(now).filter(|d| !d.is_zero()) {
            state = shared.queued.wait_timeout(state, left).unwrap_or_else(|e| e.into_inner()).0;
            continue;
        }
        if let Some((slot, item)) = state.spill_one() {
            drop(state);
            hand(&slot, Job::Run(item));
            state = lock(&shared.state);
            continue;
        }
        let Some(id) = state.take_id() else { continue };
        let Some((item, since)) = state.queue.pop_front() else {
            state.free_id(id);
            continue;
        };
        state.running += 1;
        state.starting += 1;
        drop(state);
        // The job is in the new worker's slot before its thread exists: the
        // worker takes it first ([`Receiver::first`]); if the thread cannot
        // start, it is taken back from there.
        let rx = shared.new_receiver(id, true);
        let slot = rx.slot.clone();
        *lock(&slot.job) = Some(Job::Run(item));
        // On failure the receiver is gone and its id freed.
        let started = (shared.spawn)(rx);
        let unstarted = match started {
            Ok(()) => None,
            Err(e) => lock(&slot.job).take().map(|job| (job, e)),
        };
        state = lock(&shared.state);
        state.starting -= 1;
        state.grown = Instant::now();
        if let Some((Job::Run(item), e)) = unstarted {
            tracing::warn!(
                "could not start worker thread {} of at most {}: {e}; retrying in {:?}",
                id + 1,
                shared.max,
                RETRY_GROWTH_AFTER
            );
            state.queue.push_front((item, since));
            state.running -= 1;
            state.grown += RETRY_GROWTH_AFTER;
        }
    }
}

impl<T> Sender<T> {
    /// Hand `item` to the most recently idle worker when none is running (or
    /// jobs run for [`SPILL_AFTER`] or longer), else queue it (for a running
    /// worker, or the spill thread).
    pub fn send(&self, item: T) {
        let mut state = lock(&self.shared.state);
        let was_empty = state.queue.is_empty();
        state.queue.push_back((item, Instant::now()));
        if state.running == 0 || state.slow(self.shared.spill_after) {
            // The oldest item (this one unless some are waiting for the spill thread).
            if let Some((slot, item)) = state.spill_one() {
                drop(state);
                hand(&slot, Job::Run(item));
                return;
            }
        }
        if was_empty && (!state.idle.is_empty() || state.live < self.shared.max) {
            self.shared.queued.notify_one();
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
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        lock(&self.shared.state).closed = true;
        self.shared.queued.notify_all();
        // The spill thread exits at once now (it may be starting a worker
        // first); after it has, nothing but this hands out work.
        if let Some(spill) = self.spill.take() {
            let _ = spill.join();
        }
        let (handed, idle) = {
            let mut state = lock(&self.shared.state);
            // Queued items are still taken by the workers; wake them all.
            let mut handed = Vec::new();
            while let Some((slot, item)) = state.spill_one() {
                handed.push((slot, item));
            }
            (handed, std::mem::take(&mut state.idle))
        };
        for (slot, item) in handed {
            hand(&slot, Job::Run(item));
        }
        for slot in idle {
            hand(&slot, Job::Close);
        }
    }
}

/// What [`Receiver::try_take`] found.
pub enum Take<T> {
    Job(Job<T>),
    /// Nothing queued: the worker is now on the idle stack and must
    /// [`Receiver::wait`] (which may already have a job).
    Idle,
}

impl<T> Receiver<T> {
    /// This worker's number: the lowest not taken by a live worker when it
    /// started, below the channel's maximum.
    pub fn id(&self) -> usize {
        self.id
    }

    /// For a worker the spill thread started for a request: that request.
    /// Call it before anything else.
    pub fn first(&self) -> Option<Job<T>> {
        if !self.handed {
            return None;
        }
        let job = lock(&self.slot.job).take();
        // The spill thread counted this worker in `running` for it.
        self.busy.store(matches!(job, Some(Job::Run(_))), Relaxed);
        self.mark_started(Instant::now());
        job
    }

    fn mark_started(&self, now: Instant) {
        let nanos = now.saturating_duration_since(self.shared.epoch).as_nanos();
        self.since.store(u64::try_from(nanos).unwrap_or(u64::MAX), Relaxed);
    }

    /// The next queued item without blocking; otherwise register as idle.
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
        state.idle.push(self.slot.clone());
        Take::Idle
    }

    /// Block until a sender hands this worker a job (after [`Take::Idle`]),
    /// or until it has been idle for the idle timeout while other workers
    /// exist ([`Job::Close`]: it has left the pool).
    pub fn wait(&self) -> Job<T> {
        let mut job = lock(&self.slot.job);
        loop {
            if let Some(j) = job.take() {
                // A sender counted this worker in `running` when it handed the job.
                self.busy.store(matches!(j, Job::Run(_)), Relaxed);
                self.mark_started(Instant::now());
                return j;
            }
            let (guard, waited) =
                self.slot.ready.wait_timeout(job, self.shared.idle_timeout).unwrap_or_else(|e| e.into_inner());
            job = guard;
            if waited.timed_out() && job.is_none() {
                drop(job);
                if self.retire() {
                    return Job::Close;
                }
                job = lock(&self.slot.job);
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

    /// [`Receiver::try_take`], then [`Receiver::wait`] if needed.
    #[cfg(test)]
    pub fn take(&self) -> Job<T> {
        match self.try_take() {
            Take::Job(job) => job,
            Take::Idle => self.wait(),
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
        if self.busy.load(Relaxed) {
            state.running -= 1;
        }
        state.free_id(self.id);
        if !state.queue.is_empty() {
            // Room to start another worker for what waits.
            self.shared.queued.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;

    fn run(job: Job<u32>) -> Option<u32> {
        match job {
            Job::Run(n) => Some(n),
            Job::Close => None,
        }
    }

    /// A channel whose "threads" are receivers delivered to the test.
    fn pool(max: usize, idle_timeout: Duration) -> (Sender<u32>, mpsc::Receiver<Receiver<u32>>) {
        pool_with(max, SPILL_AFTER, idle_timeout)
    }

    fn pool_with(
        max: usize,
        spill_after: Duration,
        idle_timeout: Duration,
    ) -> (Sender<u32>, mpsc::Receiver<Receiver<u32>>) {
        let (started, workers) = mpsc::channel();
        let spawn: Spawn<u32> = Box::new(move |rx| started.send(rx).map_err(|_| io::Error::other("test over")));
        (channel_with(max, spill_after, idle_timeout, spawn).unwrap(), workers)
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
        let tx = channel(2, LONG, spawn).unwrap();
        let a = run_one_then_queue_two(&tx, &workers);
        let deadline = Instant::now() + SOON;
        while attempts.load(Relaxed) < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(attempts.load(Relaxed), 2, "no second worker was tried");
        // The spill thread puts the request back after the attempt returns.
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
        let tx = channel(2, LONG, spawn).unwrap();
        let a = run_one_then_queue_two(&tx, &workers);
        trying.recv_timeout(SOON).expect("no second worker was tried");
        // 2 is with the worker being started; a goes idle, and the pool closes.
        assert!(matches!(a.try_take(), Take::Idle));
        let closer = std::thread::spawn(move || drop(tx));
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
        let tx = channel(3, LONG, spawn).unwrap();
        for n in 0..100 {
            tx.send(n);
        }
        let mut seen: Vec<u32> = (0..100).map(|_| done_rx.recv_timeout(SOON).unwrap()).collect();
        drop(tx);
        let threads = std::mem::take(&mut *lock(&threads));
        let total: usize = threads.into_iter().map(|t| t.join().unwrap().len()).sum();
        seen.sort_unstable();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
        assert_eq!(total, 100);
    }

    #[test]
    fn items_queued_before_close_are_still_taken() {
        let (tx, workers) = pool(1, LONG);
        let a = workers.recv().unwrap();
        tx.send(5);
        drop(tx);
        assert_eq!(run(a.take()), Some(5));
        assert_eq!(run(a.take()), None);
    }
}
