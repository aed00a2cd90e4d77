//! `tracing` events → Python `logging` (logger `oxfcgi`), without ever taking
//! the GIL inside the runtime (whose driver may be a pool worker that released
//! the GIL to drive it): events are queued and a forwarding thread, running
//! while a server runs, hands them to Python.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use pyo3::prelude::*;
use pyo3::types::PyString;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

struct LogRecord {
    /// A Python logging level; [`REOPEN`] asks to reopen log files instead.
    level: u8,
    message: String,
}

/// Not a level: the record asks the forwarder to reopen log files.
const REOPEN: u8 = 0;

/// Ask the forwarding thread to call `oxfcgi._logsetup.reopen()` (SIGUSR1).
/// Safe from any thread; never takes the GIL.
pub fn request_reopen() {
    if let Some(tx) = QUEUE.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        let _ = tx.send(LogRecord { level: REOPEN, message: String::new() });
    }
}

/// Python logging levels.
const DEBUG: u8 = 10;
const INFO: u8 = 20;
const WARNING: u8 = 30;
const ERROR: u8 = 40;

/// The lowest Python level the `oxfcgi` logger lets through (read at start).
/// Until a server starts, everything goes to Python's `logging`, which filters.
static MIN_LEVEL: AtomicU8 = AtomicU8::new(DEBUG);
static QUEUE: Mutex<Option<Sender<LogRecord>>> = Mutex::new(None);

fn python_level(level: &Level) -> u8 {
    match *level {
        Level::ERROR => ERROR,
        Level::WARN => WARNING,
        Level::INFO => INFO,
        Level::DEBUG | Level::TRACE => DEBUG,
    }
}

#[derive(Default)]
struct MessageVisitor(String);

impl Visit for MessageVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

struct ForwardLayer;

impl<S: Subscriber> Layer<S> for ForwardLayer {
    fn register_callsite(&self, _: &'static tracing::Metadata<'static>) -> tracing::subscriber::Interest {
        // The level can change (it is read from Python when a server
        // starts), so ask `enabled` every time instead of caching a verdict.
        tracing::subscriber::Interest::sometimes()
    }

    fn enabled(&self, metadata: &tracing::Metadata<'_>, _: Context<'_, S>) -> bool {
        python_level(metadata.level()) >= MIN_LEVEL.load(Ordering::Relaxed)
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut visitor = MessageVisitor::default();
        event.record(&mut visitor);
        let record = LogRecord { level: python_level(event.metadata().level()), message: visitor.0 };
        let queue = QUEUE.lock().unwrap_or_else(|e| e.into_inner());
        match queue.as_ref() {
            Some(tx) => {
                let _ = tx.send(record);
            }
            // No server is running (binding, start-up): nothing drives a
            // runtime, so logging directly from this thread is fine.
            None => {
                drop(queue);
                Python::attach(|py| log_now(py, record.level, &record.message));
            }
        }
    }
}

/// Install the global subscriber (once per process; also at module import).
pub fn install_subscriber() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let _ = tracing_subscriber::registry().with(ForwardLayer).try_init();
    });
}

/// Forwards queued events to `logging.getLogger("oxfcgi")` until dropped.
pub struct LogForwarder {
    thread: Option<JoinHandle<()>>,
}

impl LogForwarder {
    /// Start forwarding. Reads the logger's effective level now, so events
    /// below it cost nothing.
    pub fn start(py: Python<'_>) -> PyResult<LogForwarder> {
        install_subscriber();
        let logger = py.import("logging")?.call_method1("getLogger", ("oxfcgi",))?;
        let level: u8 = logger.call_method0("getEffectiveLevel")?.extract::<i64>()?.clamp(0, 255) as u8;
        MIN_LEVEL.store(level.max(DEBUG), Ordering::Relaxed);
        let (tx, rx) = crossbeam_channel::unbounded();
        let logger = logger.unbind();
        let thread = std::thread::Builder::new()
            .name("oxfcgi-log".into())
            .spawn(move || forward(rx, logger))
            .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(format!("cannot start the log thread: {e}")))?;
        *QUEUE.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        Ok(LogForwarder { thread: Some(thread) })
    }

    /// Stop forwarding after every queued event was logged. Call without
    /// holding the GIL (`py.detach`), since the thread needs it to finish.
    pub fn stop(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        QUEUE.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for LogForwarder {
    fn drop(&mut self) {
        if self.thread.is_some() {
            // Dropped without stop(): the caller may hold the GIL, so do not
            // wait for the thread; closing the queue ends it.
            QUEUE.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
    }
}

fn forward(rx: Receiver<LogRecord>, logger: Py<PyAny>) {
    Python::attach(|py| {
        let logger = logger.bind(py);
        while let Ok(record) = py.detach(|| rx.recv()) {
            if record.level == REOPEN {
                if let Err(e) = py.import("oxfcgi._logsetup").and_then(|m| m.call_method0("reopen")) {
                    e.print(py);
                }
                continue;
            }
            let message = PyString::new(py, &record.message);
            if let Err(e) = logger.call_method1("log", (record.level, "%s", message)) {
                e.print(py);
            }
        }
    });
}

/// Log `message` at `level` through the `oxfcgi` logger from a thread that
/// already holds the GIL (application errors, `wsgi.errors`).
pub fn log_now(py: Python<'_>, level: u8, message: &str) {
    let result = py
        .import("logging")
        .and_then(|logging| logging.call_method1("getLogger", ("oxfcgi",)))
        .and_then(|logger| logger.call_method1("log", (level, "%s", message)));
    if let Err(e) = result {
        e.print(py);
    }
}

pub const LEVEL_WARNING: u8 = WARNING;
pub const LEVEL_ERROR: u8 = ERROR;
