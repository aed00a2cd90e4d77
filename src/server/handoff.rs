//! The queue between the connections and the Python worker threads: most
//! recently idle worker first, handed the request directly, no spinning.
//!
//! A request goes straight to the worker that became idle last (a stack of
//! idle workers): its caches are warm and it is the one most likely not yet
//! asleep. While a worker is already running a request, a new one waits in a
//! FIFO queue instead of waking a second worker: the running worker takes it
//! when it finishes, without sleeping (and, in the pool, without releasing the
//! GIL), so a fast application runs on one hot thread instead of passing the
//! GIL around. A request that has waited [`SPILL_AFTER`] while no running
//! worker finished anything (they are slow, or blocked in I/O with the GIL
//! released) is handed to an idle worker by the spill thread, so a slow
//! application still gets every worker.
//! A sleeping worker waits on its own condition variable: one futex wake per
//! hand-off, never a broadcast, never a spin.
//!
//! No pyo3 here; the WSGI pool (`wsgi/pool.rs`) decides what runs with the GIL.

use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a request waits for a running worker before an idle one is woken.
pub const SPILL_AFTER: Duration = Duration::from_millis(1);

/// What a worker is handed.
pub enum Job<T> {
    Run(T),
    /// Every sender is gone and the queue is empty: exit.
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
    closed: bool,
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
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Wakes the spill thread when the queue stops being empty (or closes).
    queued: Condvar,
}

fn hand<T>(slot: &Slot<T>, job: Job<T>) {
    *lock(&slot.job) = Some(job);
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
}

/// One worker's receiving side.
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
    slot: Arc<Slot<T>>,
    /// Counted in `running` (handed a job and not idle since); only this
    /// worker's thread touches it (an atomic only so the receiver is `Sync`).
    busy: AtomicBool,
}

/// A queue and `workers` receivers; with more than one worker, a spill thread.
pub fn channel<T: Send + 'static>(workers: usize) -> std::io::Result<(Sender<T>, Vec<Receiver<T>>)> {
    let state = State { queue: VecDeque::new(), idle: Vec::new(), running: 0, progress: Instant::now(), closed: false };
    let shared = Arc::new(Shared { state: Mutex::new(state), queued: Condvar::new() });
    if workers > 1 {
        let shared = shared.clone();
        std::thread::Builder::new().name("oxfcgi-spill".into()).spawn(move || spill(&shared))?;
    }
    let receivers = (0..workers)
        .map(|_| Receiver {
            shared: shared.clone(),
            slot: Arc::new(Slot { job: Mutex::new(None), ready: Condvar::new() }),
            busy: AtomicBool::new(false),
        })
        .collect();
    Ok((Sender { shared }, receivers))
}

/// The spill thread: asleep unless something is queued while a worker is
/// idle (a worker only goes idle with the queue empty, so that state starts in
/// [`Sender::send`], which wakes it); then it hands each item that has waited
/// [`SPILL_AFTER`] to an idle worker. Exits when the queue is closed.
fn spill<T>(shared: &Shared<T>) {
    let mut state = lock(&shared.state);
    loop {
        if state.closed {
            return;
        }
        let head = state.queue.front().map(|(_, since)| *since);
        let Some(since) = head.filter(|_| !state.idle.is_empty()) else {
            state = shared.queued.wait(state).unwrap_or_else(|e| e.into_inner());
            continue;
        };
        // Spill only when the running workers are stuck (nothing finished for
        // SPILL_AFTER): while they keep finishing requests, another thread
        // would only take turns at the GIL with them.
        let waited = since.elapsed().min(state.progress.elapsed());
        if waited < SPILL_AFTER {
            state = shared.queued.wait_timeout(state, SPILL_AFTER - waited).unwrap_or_else(|e| e.into_inner()).0;
            continue;
        }
        if let Some((slot, item)) = state.spill_one() {
            drop(state);
            hand(&slot, Job::Run(item));
            state = lock(&shared.state);
        }
    }
}

impl<T> Sender<T> {
    /// Hand `item` to the most recently idle worker when none is running,
    /// else queue it (for a running worker, or the spill thread).
    pub fn send(&self, item: T) {
        let mut state = lock(&self.shared.state);
        if state.running == 0 {
            if let Some(slot) = state.idle.pop() {
                state.running += 1;
                drop(state);
                hand(&slot, Job::Run(item));
                return;
            }
        }
        let was_empty = state.queue.is_empty();
        state.queue.push_back((item, Instant::now()));
        if was_empty && !state.idle.is_empty() {
            self.shared.queued.notify_one();
        }
    }

    /// Items waiting for a worker.
    #[cfg(test)]
    fn queued(&self) -> usize {
        lock(&self.shared.state).queue.len()
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let idle = {
            let mut state = lock(&self.shared.state);
            state.closed = true;
            // Queued items are still taken by the workers; wake them all.
            let mut handed = Vec::new();
            while let Some((slot, item)) = state.spill_one() {
                handed.push((slot, item));
            }
            (handed, std::mem::take(&mut state.idle))
        };
        self.shared.queued.notify_all();
        for (slot, item) in idle.0 {
            hand(&slot, Job::Run(item));
        }
        for slot in idle.1 {
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
    /// The next queued item without blocking; otherwise register as idle.
    pub fn try_take(&self) -> Take<T> {
        let mut state = lock(&self.shared.state);
        if self.busy.load(Relaxed) {
            state.progress = Instant::now();
        }
        if let Some((item, _)) = state.queue.pop_front() {
            if !self.busy.swap(true, Relaxed) {
                state.running += 1;
            }
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

    /// Block until a sender hands this worker a job (after [`Take::Idle`]).
    pub fn wait(&self) -> Job<T> {
        let mut job = lock(&self.slot.job);
        loop {
            if let Some(j) = job.take() {
                // A sender counted this worker in `running` when it handed the job.
                self.busy.store(matches!(j, Job::Run(_)), Relaxed);
                return j;
            }
            job = self.slot.ready.wait(job).unwrap_or_else(|e| e.into_inner());
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    fn run(job: Job<u32>) -> Option<u32> {
        match job {
            Job::Run(n) => Some(n),
            Job::Close => None,
        }
    }

    #[test]
    fn items_queue_in_order_while_no_worker_is_idle() {
        let (tx, rx) = channel::<u32>(1).unwrap();
        tx.send(1);
        tx.send(2);
        assert_eq!(tx.queued(), 2);
        assert_eq!(run(rx[0].take()), Some(1));
        assert_eq!(run(rx[0].take()), Some(2));
    }

    #[test]
    fn the_most_recently_idle_worker_gets_an_item_and_the_next_waits_for_it() {
        let (tx, mut rx) = channel::<u32>(2).unwrap();
        let (b, a) = (rx.pop().unwrap(), rx.pop().unwrap());
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
    }

    #[test]
    fn an_item_that_waits_for_a_busy_worker_spills_to_an_idle_one() {
        let (tx, mut rx) = channel::<u32>(2).unwrap();
        let (b, a) = (rx.pop().unwrap(), rx.pop().unwrap());
        assert!(matches!(a.try_take(), Take::Idle));
        assert!(matches!(b.try_take(), Take::Idle));
        tx.send(1);
        assert_eq!(run(b.wait()), Some(1));
        let queued_at = std::time::Instant::now();
        tx.send(2); // b stays busy (say, blocked in I/O)
        let (got_tx, got_rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || got_tx.send(run(a.wait())).unwrap());
        let got = got_rx.recv_timeout(Duration::from_secs(5)).expect("the item never spilled to the idle worker");
        assert_eq!(got, Some(2));
        assert!(queued_at.elapsed() >= SPILL_AFTER, "spilled before SPILL_AFTER");
        waiter.join().unwrap();
        drop(b);
    }

    #[test]
    fn a_sleeping_worker_is_woken_and_close_reaches_every_idle_worker() {
        let (tx, rx) = channel::<u32>(3).unwrap();
        let (done_tx, done_rx) = mpsc::channel();
        let threads: Vec<_> = rx
            .into_iter()
            .map(|r| {
                let done = done_tx.clone();
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    while let Some(n) = run(r.take()) {
                        got.push(n);
                        done.send(n).unwrap();
                    }
                    got
                })
            })
            .collect();
        for n in 0..100 {
            tx.send(n);
        }
        let mut seen: Vec<u32> = (0..100).map(|_| done_rx.recv_timeout(Duration::from_secs(10)).unwrap()).collect();
        drop(tx);
        let total: usize = threads.into_iter().map(|t| t.join().unwrap().len()).sum();
        seen.sort_unstable();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
        assert_eq!(total, 100);
    }

    #[test]
    fn items_queued_before_close_are_still_taken() {
        let (tx, rx) = channel::<u32>(1).unwrap();
        tx.send(5);
        drop(tx);
        assert_eq!(run(rx[0].take()), Some(5));
        assert_eq!(run(rx[0].take()), None);
    }
}
