//! Counters every worker process updates and any of them can report: the
//! pool-wide numbers of the status page (php-fpm's `pm.status_path` fields).
//!
//! The memory is an anonymous shared mapping made before the workers are
//! forked, so all processes see the same atomics. A single-process server
//! has a pool of one.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// One worker's counters.
#[repr(C)]
#[derive(Default)]
pub struct WorkerRow {
    pub pid: AtomicU64,
    /// Unix time (ms) the worker started.
    pub started_ms: AtomicU64,
    pub accepted_conns: AtomicU64,
    pub requests: AtomicU64,
    /// Requests running in the application now.
    pub active: AtomicU64,
    pub rejected: AtomicU64,
    pub slow: AtomicU64,
    /// Connections open now.
    pub open: AtomicU64,
    /// Of those, the ones that may stay open between requests: from a
    /// request with FCGI_KEEP_CONN (§5.1), or from accept unless nearly all
    /// connections lately came without it (`Shared::counts_unread_as_kept`),
    /// until a request comes without it. What accept balancing compares.
    pub kept: AtomicU64,
}

#[repr(C)]
struct Header {
    started_ms: AtomicU64,
    /// Requests running now and the most at once, pool-wide.
    active: AtomicU64,
    max_active: AtomicU64,
}

/// The shared counters of a pool of `rows` workers: a header, then one
/// [`WorkerRow`] per worker process.
pub struct Scoreboard {
    base: NonNull<u8>,
    /// Bytes mapped.
    map_len: usize,
    /// Worker rows.
    rows: usize,
}

// SAFETY: the mapping only holds atomics, which are safe to share.
unsafe impl Send for Scoreboard {}
unsafe impl Sync for Scoreboard {}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Scoreboard {
    /// Map a zeroed board for `rows` workers (at least 1), shared with
    /// processes forked after this call.
    pub fn new(rows: usize) -> io::Result<Scoreboard> {
        let rows = rows.max(1);
        let map_len = std::mem::size_of::<Header>() + rows * std::mem::size_of::<WorkerRow>();
        // SAFETY: a fresh anonymous mapping; checked for MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        let board = Scoreboard { base, map_len, rows };
        board.header().started_ms.store(now_ms(), Ordering::Relaxed);
        Ok(board)
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping starts with a Header (zeroed memory is a valid
        // value for atomics) and lives as long as self.
        unsafe { &*self.base.as_ptr().cast::<Header>() }
    }

    /// Number of worker rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Worker `i`'s counters (`i` is taken modulo the row count).
    pub fn row(&self, i: usize) -> &WorkerRow {
        let i = i % self.rows;
        // SAFETY: rows follow the header, `i` is in range, zeroed atomics are valid.
        unsafe { &*self.base.as_ptr().add(std::mem::size_of::<Header>()).cast::<WorkerRow>().add(i) }
    }

    /// Unix time (ms) the pool started.
    pub fn started_ms(&self) -> u64 {
        self.header().started_ms.load(Ordering::Relaxed)
    }

    /// Reset row `i` for a worker starting now.
    pub fn claim(&self, i: usize, pid: u32) {
        self.release(i);
        let s = self.row(i);
        for counter in [&s.accepted_conns, &s.requests, &s.rejected, &s.slow, &s.open, &s.kept] {
            counter.store(0, Ordering::Relaxed);
        }
        s.started_ms.store(now_ms(), Ordering::Relaxed);
        s.pid.store(pid as u64, Ordering::Relaxed);
    }

    /// A request starts running in worker `i`'s application.
    pub fn request_started(&self, i: usize) {
        self.row(i).requests.fetch_add(1, Ordering::Relaxed);
        self.row(i).active.fetch_add(1, Ordering::Relaxed);
        let active = self.header().active.fetch_add(1, Ordering::Relaxed) + 1;
        self.header().max_active.fetch_max(active, Ordering::Relaxed);
    }

    /// A request of worker `i` finished.
    pub fn request_finished(&self, i: usize) {
        if self.row(i).active.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1)).is_ok() {
            let _ = self.header().active.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
        }
    }

    /// Forget a worker that is gone (the master calls this when it reaps
    /// one): its row no longer counts, its running requests neither.
    pub fn release(&self, i: usize) {
        let s = self.row(i);
        s.pid.store(0, Ordering::Relaxed);
        let running = s.active.swap(0, Ordering::Relaxed);
        let _ = self
            .header()
            .active
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(running)));
    }

    /// Whether worker `i` should let the others accept first: it holds at
    /// least two more possibly long-lived connections ([`WorkerRow::kept`])
    /// than the least loaded live worker. (All workers share one listening
    /// socket and are all woken for each connection; without this the first
    /// to wake takes a burst of kept-open connections and the other cores stay
    /// idle. A connection whose request came without FCGI_KEEP_CONN — nginx's
    /// default, mod_fcgid — closes after it and does not count.)
    pub fn should_defer_accept(&self, i: usize) -> bool {
        if self.rows < 2 {
            return false;
        }
        let mine = self.row(i).kept.load(Ordering::Relaxed);
        let least = (0..self.rows)
            .filter(|&j| j != i % self.rows && self.row(j).pid.load(Ordering::Relaxed) != 0)
            .map(|j| self.row(j).kept.load(Ordering::Relaxed))
            .min();
        least.is_some_and(|least| mine >= least + 2)
    }

    /// Most requests running at once, pool-wide, since start.
    pub fn max_active(&self) -> u64 {
        self.header().max_active.load(Ordering::Relaxed)
    }

    /// Sum of one counter over live workers.
    pub fn total(&self, counter: impl Fn(&WorkerRow) -> &AtomicU64) -> u64 {
        (0..self.rows).map(|i| counter(self.row(i)).load(Ordering::Relaxed)).sum()
    }
}

impl Drop for Scoreboard {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping once.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.map_len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_shared_with_a_forked_child() {
        let board = Scoreboard::new(2).unwrap();
        board.claim(1, 42);
        // SAFETY: the child only touches atomics and exits at once.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            board.request_started(1);
            board.row(1).accepted_conns.fetch_add(5, Ordering::Relaxed);
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(board.row(1).requests.load(Ordering::Relaxed), 1);
        assert_eq!(board.total(|s| &s.accepted_conns), 5);
        assert_eq!(board.max_active(), 1);
        board.request_finished(1);
        board.request_finished(1);
        assert_eq!(board.row(1).active.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_worker_with_more_connections_defers() {
        let board = Scoreboard::new(3).unwrap();
        board.claim(0, 1);
        board.claim(1, 2);
        board.row(0).kept.store(3, Ordering::Relaxed);
        board.row(1).kept.store(1, Ordering::Relaxed);
        assert!(board.should_defer_accept(0));
        assert!(!board.should_defer_accept(1));
        board.row(1).pid.store(0, Ordering::Relaxed); // gone: nobody to defer to
        assert!(!board.should_defer_accept(0));
    }
}
