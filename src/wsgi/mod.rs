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

/// A FastCGI server for one WSGI application. Python wrappers
/// (`oxfcgi.run`, `oxfcgi.WSGIServer`) build it; see their docs.
#[pyclass(frozen, module = "oxfcgi._oxfcgi", name = "Server")]
pub struct Server {
    app: Py<PyAny>,
    bind: BindTarget,
    unix: UnixOptions,
    config: Config,
    threads: usize,
    base_environ: Option<Py<PyDict>>,
    multithread: bool,
    multiprocess: bool,
    debug: bool,
    handle_signals: bool,
    stop: Mutex<StopHandle>,
    running: AtomicBool,
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
    /// `Server(app, bind, *, threads=4, multiplexed=False, max_conns=1024,
    /// max_reqs=None, roles=(1,), max_params_size=1048576,
    /// graceful_timeout=30.0, socket_mode=0o660, umask=None, environ=None,
    /// multithread=None, multiprocess=False, debug=False, handle_signals=True)`.
    ///
    /// `bind` is a normalized tuple: `("auto",)`, `("unix", path)`,
    /// `("tcp", host, port)` or `("fd", n)`. `max_reqs=None` means
    /// `max(4 * threads, 16)`; `multithread=None` means `threads > 1`.
    /// Raises `ValueError` for out-of-range settings.
    #[new]
    #[pyo3(signature = (app, bind, *, threads=4, multiplexed=false, max_conns=1024, max_reqs=None, roles=vec![1], max_params_size=1048576, graceful_timeout=30.0, socket_mode=0o660, umask=None, environ=None, multithread=None, multiprocess=false, debug=false, handle_signals=true))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        app: Py<PyAny>,
        bind: &Bound<'_, PyTuple>,
        threads: usize,
        multiplexed: bool,
        max_conns: usize,
        max_reqs: Option<usize>,
        roles: Vec<u16>,
        max_params_size: usize,
        graceful_timeout: f64,
        socket_mode: u32,
        umask: Option<u32>,
        environ: Option<Py<PyDict>>,
        multithread: Option<bool>,
        multiprocess: bool,
        debug: bool,
        handle_signals: bool,
    ) -> PyResult<Self> {
        if threads == 0 || threads > 1024 {
            return Err(PyValueError::new_err(format!("threads must be between 1 and 1024, got {threads}")));
        }
        if max_conns == 0 {
            return Err(PyValueError::new_err("max_conns must be at least 1"));
        }
        if max_reqs == Some(0) {
            return Err(PyValueError::new_err("max_reqs must be at least 1"));
        }
        if !(graceful_timeout.is_finite() && graceful_timeout >= 0.0) {
            return Err(PyValueError::new_err(format!("graceful_timeout must be a number of seconds >= 0, got {graceful_timeout}")));
        }
        if socket_mode > 0o777 {
            return Err(PyValueError::new_err(format!("socket_mode must be permission bits like 0o660, got {socket_mode:#o}")));
        }
        let roles = roles
            .into_iter()
            .map(|r| Role::from_u16(r).ok_or_else(|| PyValueError::new_err(format!("unknown FastCGI role {r} (1 RESPONDER, 2 AUTHORIZER, 3 FILTER)"))))
            .collect::<PyResult<Vec<_>>>()?;
        if roles.is_empty() {
            return Err(PyValueError::new_err("roles must name at least one role"));
        }
        Ok(Server {
            app,
            bind: parse_bind(bind)?,
            unix: UnixOptions { mode: socket_mode, umask },
            config: Config {
                roles,
                multiplexed,
                max_conns,
                max_reqs: max_reqs.unwrap_or((4 * threads).max(16)),
                max_params_size,
                graceful_timeout: Duration::from_secs_f64(graceful_timeout),
            },
            threads,
            base_environ: environ,
            multithread: multithread.unwrap_or(threads > 1),
            multiprocess,
            debug,
            handle_signals,
            stop: Mutex::new(StopHandle::new()),
            running: AtomicBool::new(false),
        })
    }

    /// Listen and serve until stopped. Returns True when stopped by SIGHUP
    /// or `stop(reload=True)` (flup's `run()` contract), False otherwise.
    /// Raises `BindError` when it cannot listen, `RuntimeError` if already serving.
    fn serve(&self, py: Python<'_>) -> PyResult<bool> {
        if self.running.swap(true, Ordering::AcqRel) {
            return Err(PyRuntimeError::new_err("this server is already serving"));
        }
        let result = self.serve_once(py);
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

    /// The settings in effect, as a dict (for logs and `oxfcgi` tooling).
    fn settings<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("threads", self.threads)?;
        d.set_item("multiplexed", self.config.multiplexed)?;
        d.set_item("max_conns", self.config.max_conns)?;
        d.set_item("max_reqs", self.config.max_reqs)?;
        d.set_item("max_params_size", self.config.max_params_size)?;
        d.set_item("graceful_timeout", self.config.graceful_timeout.as_secs_f64())?;
        d.set_item("roles", self.config.roles.iter().map(|r| r.name()).collect::<Vec<_>>())?;
        d.set_item("socket_mode", self.unix.mode)?;
        d.set_item("multithread", self.multithread)?;
        d.set_item("multiprocess", self.multiprocess)?;
        d.set_item("debug", self.debug)?;
        Ok(d)
    }
}

impl Server {
    fn serve_once(&self, py: Python<'_>) -> PyResult<bool> {
        let forwarder = log::LogForwarder::start(py)?;
        let result = self.listen_and_serve(py);
        py.detach(|| forwarder.stop());
        result
    }

    fn listen_and_serve(&self, py: Python<'_>) -> PyResult<bool> {
        let allowed = listener::web_server_addrs(std::env::var("FCGI_WEB_SERVER_ADDRS").ok().as_deref()).map_err(EngineError::from)?;
        let bound = listener::bind(&self.bind, self.unix, allowed).map_err(EngineError::from)?;
        let mode = match (&bound, &self.bind) {
            (listener::Bound::Unix { .. }, BindTarget::Unix(p)) if !p.to_string_lossy().starts_with('@') => format!(", socket mode {:04o}", self.unix.mode),
            _ => String::new(),
        };
        tracing::info!(
            "oxfcgi {} serving on {}{mode}: {} thread(s), multiplexing {}, max_conns {}, max_reqs {}",
            env!("CARGO_PKG_VERSION"),
            bound.describe(),
            self.threads,
            if self.config.multiplexed { "on" } else { "off" },
            self.config.max_conns,
            self.config.max_reqs,
        );
        let ctx = Arc::new(AppContext {
            app: self.app.clone_ref(py),
            base_environ: self.base_environ.as_ref().map(|e| e.clone_ref(py)),
            multithread: self.multithread,
            multiprocess: self.multiprocess,
            debug: self.debug,
        });
        let (pool, dispatcher) = Pool::start(ctx, self.threads).map_err(EngineError::from)?;
        let stop = self.stop.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let config = self.config.clone();
        let handle_signals = self.handle_signals;
        let served = py.detach(move || engine::serve(config, bound, Arc::new(dispatcher), stop, handle_signals));
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
