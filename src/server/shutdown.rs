//! Stopping the server: signals and programmatic stops.
//!
//! Signal handlers are installed with `sigaction` for the duration of
//! [`super::serve`] and the previous dispositions are restored afterwards, so
//! `run()` works from any thread and leaves Python's own handling as it was.
//! A handler only writes the signal number to a pipe (async-signal-safe); the
//! runtime reads the pipe.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// Why the server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// SIGTERM, SIGINT or SIGQUIT: stop for good (`run()` returns False, like flup).
    Terminate(i32),
    /// SIGHUP: stop so the caller can reload (`run()` returns True, like flup).
    Reload,
    /// A programmatic stop (`Server.stop()`).
    Requested { reload: bool },
    /// `max_requests` reached: the worker exits to be replaced.
    Recycled,
}

impl StopReason {
    /// Whether the caller should start again (flup's `run()` return value).
    pub fn is_reload(&self) -> bool {
        matches!(self, StopReason::Reload | StopReason::Requested { reload: true })
    }
}

/// Stops a running server from any thread. The first stop is graceful; a
/// second one stops at once without waiting for requests in flight.
#[derive(Debug, Clone, Default)]
pub struct StopHandle {
    inner: Arc<StopInner>,
}

#[derive(Debug, Default)]
struct StopInner {
    graceful: CancellationToken,
    immediate: CancellationToken,
    reason: Mutex<Option<StopReason>>,
}

impl StopHandle {
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask the server to stop.
    pub fn stop(&self, reason: StopReason) {
        let mut current = self.inner.reason.lock().unwrap_or_else(|e| e.into_inner());
        if current.is_none() {
            *current = Some(reason);
            self.inner.graceful.cancel();
        } else {
            self.inner.immediate.cancel();
        }
    }

    /// The first stop's reason, if any.
    pub fn reason(&self) -> Option<StopReason> {
        *self.inner.reason.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn graceful(&self) -> &CancellationToken {
        &self.inner.graceful
    }

    pub(crate) fn immediate(&self) -> &CancellationToken {
        &self.inner.immediate
    }
}

/// Signals the server handles: the first four stop it, SIGUSR1 reopens logs.
pub const HANDLED_SIGNALS: [libc::c_int; 5] = [libc::SIGTERM, libc::SIGINT, libc::SIGQUIT, libc::SIGHUP, libc::SIGUSR1];

/// What a signal number means for the server.
pub fn reason_for(signal: libc::c_int) -> StopReason {
    if signal == libc::SIGHUP {
        StopReason::Reload
    } else {
        StopReason::Terminate(signal)
    }
}

static PIPE_WRITE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signal: libc::c_int) {
    // SAFETY: only async-signal-safe calls: errno access and write(2).
    unsafe {
        let errno = *libc::__errno_location();
        let fd = PIPE_WRITE_FD.load(Ordering::Relaxed);
        if fd >= 0 {
            let byte = signal as u8;
            libc::write(fd, (&byte as *const u8).cast(), 1);
        }
        *libc::__errno_location() = errno;
    }
}

/// Our handlers for [`HANDLED_SIGNALS`]; dropping it restores the old ones.
pub struct SignalGuard {
    old: Vec<(libc::c_int, libc::sigaction)>,
    read: OwnedFd,
    _write: OwnedFd,
}

impl SignalGuard {
    /// Install the handlers. `Ok(None)` if another server in this process
    /// already owns them.
    pub fn install() -> io::Result<Option<SignalGuard>> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 fills the two-element array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 just returned these two new descriptors.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        if PIPE_WRITE_FD.compare_exchange(-1, write.as_raw_fd(), Ordering::AcqRel, Ordering::Acquire).is_err() {
            return Ok(None);
        }
        let mut old = Vec::new();
        for signal in HANDLED_SIGNALS {
            // SAFETY: a zeroed sigaction is a valid starting point; we set the
            // handler, an empty mask and SA_RESTART before passing it.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
                action.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                let mut previous: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(signal, &action, &mut previous) == 0 {
                    old.push((signal, previous));
                }
            }
        }
        // Dispositions are inherited across exec: a process manager may have
        // left any of these blocked; unblock them for this thread.
        // SAFETY: plain signal-mask manipulation with a local set.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for signal in HANDLED_SIGNALS {
                libc::sigaddset(&mut set, signal);
            }
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        }
        Ok(Some(SignalGuard { old, read, _write: write }))
    }

    /// The read end of the pipe the handlers write signal numbers to.
    pub fn pipe(&self) -> &OwnedFd {
        &self.read
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        for (signal, previous) in &self.old {
            // SAFETY: restoring the disposition sigaction gave us earlier.
            unsafe {
                libc::sigaction(*signal, previous, std::ptr::null_mut());
            }
        }
        PIPE_WRITE_FD.store(-1, Ordering::Release);
    }
}

/// Turn signals arriving on a [`SignalGuard`]'s pipe (`pipe`, a duplicate of
/// it this future owns) into stops of `handle`, until the handle's immediate
/// stop fires.
pub(crate) async fn forward_signals(pipe: OwnedFd, handle: StopHandle, hooks: &super::Hooks) {
    // SAFETY: this future owns `pipe`, declared before `fd`, so it is closed
    // only after the AsyncFd is gone.
    let Ok(fd) = (unsafe { tokio::io::unix::AsyncFd::register(pipe.as_raw_fd()) }) else { return };
    loop {
        let Ok(mut ready) = fd.readable().await else { return };
        let mut buf = [0u8; 16];
        // SAFETY: reading into a local buffer from the non-blocking pipe.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            ready.clear_ready();
            continue;
        }
        for &signal in &buf[..n as usize] {
            let signal = signal as libc::c_int;
            if signal == libc::SIGUSR1 {
                tracing::info!("SIGUSR1 received: reopening log files");
                if let Some(reopen) = &hooks.reopen_logs {
                    reopen();
                }
                continue;
            }
            let name = match signal {
                libc::SIGTERM => "SIGTERM",
                libc::SIGINT => "SIGINT",
                libc::SIGQUIT => "SIGQUIT",
                libc::SIGHUP => "SIGHUP",
                _ => "signal",
            };
            if handle.reason().is_none() {
                tracing::info!("{name} received: stopping (no new connections; requests in flight may finish)");
            } else {
                tracing::warn!("{name} received again: stopping now");
            }
            handle.stop(reason_for(signal));
        }
    }
}
