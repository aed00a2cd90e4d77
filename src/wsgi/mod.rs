//! The pyo3 boundary: PEP 3333 on top of the engine. `Server` is what
//! `oxfcgi.run()` and `oxfcgi.WSGIServer` drive.

pub mod environ;
pub mod error;
pub mod errors;
pub mod filewrapper;
pub mod input;
pub mod log;
pub mod pool;
pub mod response;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::protocol::Role;
use crate::server::listener::{self, BindTarget, UnixOptions};
use crate::server::shutdown::{StopHandle, StopReason};
use crate::server::{self as engine, Config};
use error::EngineError;
use pool::{AppContext, Pool};

/// A listening socket, bound when created (so a caller can bind as root,
/// drop privileges, then import the application).
///
/// `Listener(bind, *, socket_mode=0o660, umask=None, socket_owner=None,
/// socket_group=None)`: `bind` is a normalized tuple (see `Server`);
/// `socket_owner`/`socket_group` are a uid/gid for a unix socket file.
/// `FCGI_WEB_SERVER_ADDRS` is read now and applies to TCP. Raises
/// `BindError` (an `OSError`) with the cause and what to do.
#[pyclass(frozen, module = "oxfcgi._oxfcgi", name = "Listener")]
pub struct Listener {
    bound: Mutex<Option<listener::Bound>>,
    description: String,
}

#[pymethods]
impl Listener {
    #[new]
    #[pyo3(signature = (bind, *, socket_mode=0o660, umask=None, socket_owner=None, socket_group=None))]
    fn new(
        bind: &Bound<'_, PyTuple>,
        socket_mode: u32,
        umask: Option<u32>,
        socket_owner: Option<u32>,
        socket_group: Option<u32>,
    ) -> PyResult<Self> {
        if socket_mode > 0o777 {
            return Err(PyValueError::new_err(format!(
                "socket_mode must be permission bits like 0o660, got {socket_mode:#o}"
            )));
        }
        let target = parse_bind(bind)?;
        let allowed = listener::web_server_addrs(std::env::var("FCGI_WEB_SERVER_ADDRS").ok().as_deref())
            .map_err(EngineError::from)?;
        let opts = UnixOptions { mode: socket_mode, umask, owner: socket_owner, group: socket_group };
        let bound = listener::bind(&target, opts, allowed).map_err(EngineError::from)?;
        let mut description = bound.describe();
        if let (listener::Bound::Unix { cleanup: Some(_), .. }, BindTarget::Unix(_)) = (&bound, &target) {
            description.push_str(&format!(" (socket mode {socket_mode:04o})"));
        }
        Ok(Listener { bound: Mutex::new(Some(bound)), description })
    }

    /// Where it listens, e.g. `unix:/run/app.sock (socket mode 0660)` or `tcp:127.0.0.1:9000`.
    #[getter]
    fn address(&self) -> String {
        self.description.clone()
    }

    /// Close the socket (and remove a socket file it created). Idempotent.
    fn close(&self) {
        self.bound.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// In a forked worker: never remove the socket file (the master owns it).
    fn disown(&self) {
        if let Some(listener::Bound::Unix { cleanup, .. }) =
            self.bound.lock().unwrap_or_else(|e| e.into_inner()).as_mut()
        {
            if let Some(file) = cleanup.take() {
                std::mem::forget(file);
            }
        }
    }
}

/// Counters shared by the worker processes of one pool (made by the
/// prefork master before forking; `Scoreboard(slots)`), which the status
/// page reports. `release(slot)` marks a worker gone.
#[pyclass(frozen, module = "oxfcgi._oxfcgi", name = "Scoreboard")]
pub struct Scoreboard {
    board: Arc<engine::scoreboard::Scoreboard>,
}

#[pymethods]
impl Scoreboard {
    #[new]
    fn new(slots: usize) -> PyResult<Self> {
        Ok(Scoreboard { board: Arc::new(engine::scoreboard::Scoreboard::new(slots).map_err(EngineError::from)?) })
    }

    /// Number of worker slots.
    fn __len__(&self) -> usize {
        self.board.len()
    }

    /// Mark slot `slot`'s worker as gone.
    fn release(&self, slot: usize) {
        self.board.release(slot);
    }

    /// Slot `slot`'s counters: pid, requests, active, accepted_conns, rejected, slow.
    fn worker<'py>(&self, py: Python<'py>, slot: usize) -> PyResult<Bound<'py, PyDict>> {
        use std::sync::atomic::Ordering::Relaxed;
        let s = self.board.slot(slot);
        let d = PyDict::new(py);
        d.set_item("pid", s.pid.load(Relaxed))?;
        d.set_item("requests", s.requests.load(Relaxed))?;
        d.set_item("active", s.active.load(Relaxed))?;
        d.set_item("accepted_conns", s.accepted_conns.load(Relaxed))?;
        d.set_item("rejected", s.rejected.load(Relaxed))?;
        d.set_item("slow", s.slow.load(Relaxed))?;
        Ok(d)
    }
}

/// A FastCGI server for one WSGI application. Python wrappers
/// (`oxfcgi.run`, `oxfcgi.WSGIServer`) build it; see their docs.
#[pyclass(frozen, module = "oxfcgi._oxfcgi", name = "Server")]
pub struct Server {
    app: Py<PyAny>,
    config: Config,
    script_name: Option<String>,
    threads: usize,
    base_environ: Option<Py<PyDict>>,
    multithread: bool,
    multiprocess: bool,
    debug: bool,
    handle_signals: bool,
    stop: Mutex<StopHandle>,
    running: AtomicBool,
    seat: engine::PoolSeat,
    slow_after: Option<Duration>,
    /// The context of the current `serve()`, for `running()`.
    current: Mutex<Option<Arc<AppContext>>>,
}

fn parse_bind(bind: &Bound<'_, PyTuple>) -> PyResult<BindTarget> {
    let kind: String = bind.get_item(0)?.extract()?;
    Ok(match kind.as_str() {
        "auto" => BindTarget::Auto,
        "unix" => BindTarget::Unix(PathBuf::from(bind.get_item(1)?.extract::<String>()?)),
        "tcp" => BindTarget::Tcp(bind.get_item(1)?.extract()?, bind.get_item(2)?.extract()?),
        "fd" => BindTarget::Fd(bind.get_item(1)?.extract()?),
        other => return Err(PyValueError::new_err(format!("unknown bind kind {other:?}"))),
    })
}

#[pymethods]
impl Server {
    /// `Server(app, *, threads=4, multiplexed=False,
    /// max_conns=1024, max_reqs=None, roles=[1], max_params_size=1048576,
    /// graceful_timeout=30.0, idle_timeout=10.0, keepalive_timeout=75.0,
    /// read_timeout=60.0, script_name=None, environ=None,
    /// multithread=None, multiprocess=False, debug=False, handle_signals=True)`.
    ///
    /// `max_reqs=None` means
    /// `max(16 * threads, 64)`; `multithread=None` means `threads > 1`.
    /// Timeouts are seconds; 0 turns one off. Raises `ValueError` for
    /// out-of-range settings.
    #[new]
    #[pyo3(signature = (app, *, threads=4, multiplexed=false, max_conns=1024, max_reqs=None, roles=vec![1], max_params_size=1048576, graceful_timeout=30.0, idle_timeout=10.0, keepalive_timeout=75.0, read_timeout=60.0, script_name=None, environ=None, multithread=None, multiprocess=false, debug=false, handle_signals=true, status_path=None, ping_path=None, max_requests=None, request_timeout=0.0, scoreboard=None, worker_slot=0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        app: Py<PyAny>,
        threads: usize,
        multiplexed: bool,
        max_conns: usize,
        max_reqs: Option<usize>,
        roles: Vec<u16>,
        max_params_size: usize,
        graceful_timeout: f64,
        idle_timeout: f64,
        keepalive_timeout: f64,
        read_timeout: f64,
        script_name: Option<String>,
        environ: Option<Py<PyDict>>,
        multithread: Option<bool>,
        multiprocess: bool,
        debug: bool,
        handle_signals: bool,
        status_path: Option<String>,
        ping_path: Option<String>,
        max_requests: Option<u64>,
        request_timeout: f64,
        scoreboard: Option<&Bound<'_, Scoreboard>>,
        worker_slot: usize,
    ) -> PyResult<Self> {
        for (name, path) in [("status_path", &status_path), ("ping_path", &ping_path)] {
            if path.as_ref().is_some_and(|p| !p.starts_with('/')) {
                return Err(PyValueError::new_err(format!("{name} must start with '/', got {path:?}")));
            }
        }
        if max_requests == Some(0) {
            return Err(PyValueError::new_err("max_requests must be at least 1 (or None for no limit)"));
        }
        if !(request_timeout.is_finite() && request_timeout >= 0.0) {
            return Err(PyValueError::new_err(format!(
                "request_timeout must be a number of seconds >= 0, got {request_timeout}"
            )));
        }
        let board = match scoreboard {
            Some(b) => b.get().board.clone(),
            None => Arc::new(engine::scoreboard::Scoreboard::new(1).map_err(EngineError::from)?),
        };
        if threads == 0 || threads > 1024 {
            return Err(PyValueError::new_err(format!("threads must be between 1 and 1024, got {threads}")));
        }
        if max_conns == 0 {
            return Err(PyValueError::new_err("max_conns must be at least 1"));
        }
        if max_reqs == Some(0) {
            return Err(PyValueError::new_err("max_reqs must be at least 1"));
        }
        for (name, value) in [
            ("graceful_timeout", graceful_timeout),
            ("idle_timeout", idle_timeout),
            ("keepalive_timeout", keepalive_timeout),
            ("read_timeout", read_timeout),
        ] {
            if !(value.is_finite() && (0.0..=1e9).contains(&value)) {
                return Err(PyValueError::new_err(format!("{name} must be a number of seconds >= 0, got {value}")));
            }
        }
        let limit = |secs: f64| (secs > 0.0).then(|| Duration::from_secs_f64(secs));
        if let Some(prefix) = &script_name {
            if !prefix.is_empty() && !prefix.starts_with('/') {
                return Err(PyValueError::new_err(format!(
                    "script_name must be empty or start with '/', got {prefix:?}"
                )));
            }
        }
        let roles = roles
            .into_iter()
            .map(|r| {
                Role::from_u16(r).ok_or_else(|| {
                    PyValueError::new_err(format!("unknown FastCGI role {r} (1 RESPONDER, 2 AUTHORIZER, 3 FILTER)"))
                })
            })
            .collect::<PyResult<Vec<_>>>()?;
        if roles.is_empty() {
            return Err(PyValueError::new_err("roles must name at least one role"));
        }
        Ok(Server {
            app,
            script_name: script_name.map(|p| p.trim_end_matches('/').to_string()),
            config: Config {
                roles,
                multiplexed,
                max_conns,
                max_reqs: max_reqs.unwrap_or((16 * threads).max(64)),
                max_params_size,
                graceful_timeout: Duration::from_secs_f64(graceful_timeout),
                timeouts: engine::Timeouts {
                    idle: limit(idle_timeout),
                    keepalive: limit(keepalive_timeout),
                    read: limit(read_timeout),
                },
                status_path,
                ping_path,
                max_requests,
                threads,
            },
            threads,
            base_environ: environ,
            multithread: multithread.unwrap_or(threads > 1),
            multiprocess,
            debug,
            handle_signals,
            stop: Mutex::new(StopHandle::new()),
            running: AtomicBool::new(false),
            seat: engine::PoolSeat { board, slot: worker_slot },
            slow_after: limit(request_timeout),
            current: Mutex::new(None),
        })
    }

    /// Serve connections from `listener` (a `Listener`, which this takes
    /// over) until stopped. Returns True when stopped by SIGHUP or
    /// `stop(reload=True)` (flup's `run()` contract), False otherwise. Raises
    /// `RuntimeError` if already serving or the listener was used up.
    fn serve(&self, py: Python<'_>, listener: &Bound<'_, Listener>) -> PyResult<bool> {
        if self.running.swap(true, Ordering::AcqRel) {
            return Err(PyRuntimeError::new_err("this server is already serving"));
        }
        let result = self.serve_once(py, listener.get());
        *self.stop.lock().unwrap_or_else(|e| e.into_inner()) = StopHandle::new();
        self.running.store(false, Ordering::Release);
        result
    }

    /// Stop serving: the first call stops gracefully (requests in flight
    /// finish within `graceful_timeout`), a second one at once. Safe from any
    /// thread. `reload=True` makes `serve()` return True.
    #[pyo3(signature = (reload=false))]
    fn stop(&self, reload: bool) {
        self.stop.lock().unwrap_or_else(|e| e.into_inner()).stop(StopReason::Requested { reload });
    }

    /// Requests running now: a list of `(seconds, description, thread_id)`,
    /// `thread_id` as `threading.get_ident()` gives it (for the
    /// `request_timeout` watchdog and its stack dumps).
    fn running_requests(&self) -> Vec<(f64, String, u64)> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(ctx) = current else { return Vec::new() };
        ctx.running
            .iter()
            .filter_map(|cell| cell.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .map(|r| (r.started.elapsed().as_secs_f64(), r.what, r.thread_id))
            .collect()
    }

    /// The settings in effect, as a dict (for logs and `oxfcgi` tooling).
    fn settings<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("threads", self.threads)?;
        d.set_item("multiplexed", self.config.multiplexed)?;
        d.set_item("max_conns", self.config.max_conns)?;
        d.set_item("max_reqs", self.config.max_reqs)?;
        d.set_item("max_params_size", self.config.max_params_size)?;
        d.set_item("graceful_timeout", self.config.graceful_timeout.as_secs_f64())?;
        let secs = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64());
        d.set_item("idle_timeout", secs(self.config.timeouts.idle))?;
        d.set_item("keepalive_timeout", secs(self.config.timeouts.keepalive))?;
        d.set_item("read_timeout", secs(self.config.timeouts.read))?;
        d.set_item("roles", self.config.roles.iter().map(|r| r.name()).collect::<Vec<_>>())?;
        d.set_item("script_name", self.script_name.clone())?;
        d.set_item("multithread", self.multithread)?;
        d.set_item("multiprocess", self.multiprocess)?;
        d.set_item("debug", self.debug)?;
        Ok(d)
    }
}

impl Server {
    fn serve_once(&self, py: Python<'_>, listener: &Listener) -> PyResult<bool> {
        let forwarder = log::LogForwarder::start(py)?;
        let result = self.listen_and_serve(py, listener);
        py.detach(|| forwarder.stop());
        result
    }

    fn listen_and_serve(&self, py: Python<'_>, listener: &Listener) -> PyResult<bool> {
        let bound = listener.bound.lock().unwrap_or_else(|e| e.into_inner()).take().ok_or_else(|| {
            PyRuntimeError::new_err("this listener was closed or used by another server; create a new one")
        })?;
        tracing::info!(
            "oxfcgi {} serving on {}: {} thread(s), multiplexing {}, max_conns {}, max_reqs {}{}",
            env!("CARGO_PKG_VERSION"),
            listener.description,
            self.threads,
            if self.config.multiplexed { "on" } else { "off" },
            self.config.max_conns,
            self.config.max_reqs,
            self.script_name.as_ref().map(|p| format!(", script_name {p:?}")).unwrap_or_default(),
        );
        let ctx = Arc::new(AppContext {
            app: self.app.clone_ref(py),
            base_environ: self.base_environ.as_ref().map(|e| e.clone_ref(py)),
            multithread: self.multithread,
            multiprocess: self.multiprocess,
            debug: self.debug,
            script_name: self.script_name.as_ref().map(|p| p.as_bytes().to_vec()),
            seat: self.seat.clone(),
            slow_after: self.slow_after,
            running: (0..self.threads).map(|_| Mutex::new(None)).collect(),
        });
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(ctx.clone());
        let (pool, dispatcher) = Pool::start(ctx, self.threads).map_err(EngineError::from)?;
        let stop = self.stop.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let config = self.config.clone();
        let handle_signals = self.handle_signals;
        let hooks = engine::Hooks { reopen_logs: Some(Box::new(log::request_reopen)) };
        let seat = self.seat.clone();
        let served =
            py.detach(move || engine::serve(config, bound, Arc::new(dispatcher), stop, handle_signals, hooks, seat));
        self.current.lock().unwrap_or_else(|e| e.into_inner()).take();
        // Every dispatcher is gone with the runtime: idle workers exit at
        // once. One still inside the application after graceful_timeout
        // cannot be interrupted; do not wait for it.
        let busy = py.detach(|| pool.join(Duration::from_millis(500)));
        if busy > 0 {
            tracing::warn!("{busy} worker thread(s) still running application code; not waiting for them");
        }
        let reason = served.map_err(EngineError::from)?;
        tracing::info!("oxfcgi stopped");
        Ok(reason.is_reload())
    }
}
