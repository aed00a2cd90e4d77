//! `Server`: one WSGI application served over FastCGI by the engine.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::context::AppContext;
use super::exception::EngineError;
use super::listener::Listener;
use super::log;
use super::pool::Pool;
use super::scoreboard::Scoreboard;
use super::settings::{self, AppSettings};
use crate::asgi::bridge::{AsgiDispatcher, Bridge, BridgeInner, Serving};
use crate::server::driver::Driver;
use crate::server::shutdown::{StopHandle, StopReason};
use crate::server::{self as engine, Config};

/// A FastCGI server for one WSGI application. Python wrappers
/// (`oxfcgi.run`, `oxfcgi.WSGIServer`, `oxfcgi.make_server`) build it; see
/// their docs and the settings table (`oxfcgi.settings`).
#[pyclass(frozen, module = "oxfcgi._oxfcgi", name = "Server")]
pub struct Server {
    app: Py<PyAny>,
    config: Config,
    settings: AppSettings,
    handle_signals: bool,
    stop: Mutex<StopHandle>,
    running: AtomicBool,
    row: engine::ScoreboardRow,
    /// The context of the current `serve()`, for `running_requests()` and `terminate()`.
    current: Mutex<Option<Arc<AppContext>>>,
}

#[pymethods]
impl Server {
    /// `Server(app, settings, *, handle_signals=True, scoreboard=None, worker_row=0)`.
    ///
    /// - `app`: the WSGI callable.
    /// - `settings`: a dict with every setting of the `server` group of the
    ///   settings table and no other key, as `oxfcgi.settings.resolve(...).group("server")`
    ///   makes it (`max_in_flight` and `multithread` already resolved;
    ///   timeouts in seconds as floats, 0 for off).
    /// - `handle_signals`: install SIGTERM/SIGINT/SIGQUIT/SIGHUP/SIGUSR1
    ///   handlers while serving (restored after).
    /// - `scoreboard`, `worker_row`: the prefork pool's shared counters and
    ///   this worker's row (a pool of one when None).
    ///
    /// Raises `TypeError` for a missing, unknown or mistyped setting and
    /// `ValueError` for a value out of range.
    #[new]
    #[pyo3(signature = (app, settings, *, handle_signals=true, scoreboard=None, worker_row=0))]
    fn new(
        app: Py<PyAny>,
        settings: &Bound<'_, PyDict>,
        handle_signals: bool,
        scoreboard: Option<&Bound<'_, Scoreboard>>,
        worker_row: usize,
    ) -> PyResult<Self> {
        let (config, settings) = settings::from_dict(settings)?;
        let row = match scoreboard {
            Some(b) => engine::ScoreboardRow { board: b.get().board.clone(), index: worker_row },
            None => engine::ScoreboardRow::alone().map_err(EngineError::from)?,
        };
        Ok(Server {
            app,
            config,
            settings,
            handle_signals,
            stop: Mutex::new(StopHandle::new()),
            running: AtomicBool::new(false),
            row,
            current: Mutex::new(None),
        })
    }

    /// Serve connections from `listener` (a `Listener`, which this takes
    /// over) until stopped. Returns True when stopped by SIGHUP or
    /// `stop(reload=True)` (flup's `run()` contract), False otherwise. Raises
    /// `RuntimeError` if already serving or the listener was used up.
    ///
    /// With `bridge` (an `AsgiBridge`), `app` is an ASGI application run on
    /// that bridge's event loop (`oxfcgi/_asgi.py` runs the loop and the
    /// requests): requests go to the bridge instead of the worker threads.
    #[pyo3(signature = (listener, bridge=None))]
    fn serve(
        &self,
        py: Python<'_>,
        listener: &Bound<'_, Listener>,
        bridge: Option<&Bound<'_, Bridge>>,
    ) -> PyResult<bool> {
        if self.running.swap(true, Ordering::AcqRel) {
            return Err(PyRuntimeError::new_err("this server is already serving"));
        }
        let bridge = bridge.map(|b| b.get().inner.clone());
        let result = self.serve_once(py, listener.get(), bridge);
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
    /// `thread_id` as `threading.get_ident()` gives it. Kept only while
    /// `request_slowlog_timeout` or `request_terminate_timeout` is set (the
    /// watchdog reads it); empty otherwise.
    fn running_requests(&self) -> Vec<(f64, String, u64)> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner()).clone();
        current.map(|ctx| ctx.running_requests()).unwrap_or_default()
    }

    /// End the request thread `thread_id` is running, if it has run for at
    /// least `older_than` seconds: the web server gets a `504 Gateway Timeout`
    /// now (or, if the response had started, its end), the application's
    /// further writes fail, and `oxfcgi.RequestTerminated` (a `TimeoutError`)
    /// is raised in that thread at its next Python instruction (php-fpm's
    /// `request_terminate_timeout`; a thread blocked in C code goes on until
    /// it returns to Python). Returns whether such a request was found.
    fn terminate(&self, py: Python<'_>, thread_id: u64, older_than: f64) -> bool {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let older_than = Duration::from_secs_f64(older_than.max(0.0));
        current.is_some_and(|ctx| ctx.terminate(py, thread_id, older_than))
    }

    /// Requests of this process running in the application now.
    fn active(&self) -> u64 {
        self.row.counters().active.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The engine's defaults for the settings it has a Rust default for
    /// (tests hold them against the settings table).
    #[staticmethod]
    fn engine_defaults<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        settings::engine_defaults(py)
    }
}

impl Server {
    fn serve_once(&self, py: Python<'_>, listener: &Listener, bridge: Option<Arc<BridgeInner>>) -> PyResult<bool> {
        let forwarder = log::LogForwarder::start(py)?;
        let result = match bridge {
            Some(bridge) => self.serve_asgi(py, listener, bridge),
            None => self.listen_and_serve(py, listener),
        };
        py.detach(|| forwarder.stop());
        result
    }

    fn options(&self) -> engine::ServeOptions {
        engine::ServeOptions {
            stop: self.stop.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            handle_signals: self.handle_signals,
            hooks: engine::Hooks { reopen_logs: Some(Box::new(log::request_reopen)) },
            row: self.row.clone(),
        }
    }

    /// An ASGI application: requests go to `bridge`'s event loop.
    fn serve_asgi(&self, py: Python<'_>, listener: &Listener, bridge: Arc<BridgeInner>) -> PyResult<bool> {
        let bound = take(listener)?;
        let s = &self.settings;
        tracing::info!(
            "oxfcgi {} serving an ASGI application on {}: one event loop, multiplexing {}, max_conns {}, max_in_flight {}{}",
            env!("CARGO_PKG_VERSION"),
            listener.description(),
            if self.config.multiplexed { "on" } else { "off" },
            self.config.max_conns,
            self.config.max_in_flight,
            s.script_name.as_ref().map(|p| format!(", script_name {p:?}")).unwrap_or_default(),
        );
        bridge.attach(Serving {
            row: self.row.clone(),
            script_name: s.script_name.as_ref().map(|p| p.as_bytes().to_vec()),
        });
        let dispatcher = AsgiDispatcher { bridge };
        let options = self.options();
        let config = self.config.clone();
        let served = py.detach(move || engine::serve(config, bound, Arc::new(dispatcher), options));
        let reason = served.map_err(EngineError::from)?;
        tracing::info!("oxfcgi stopped");
        Ok(reason.is_reload())
    }

    fn listen_and_serve(&self, py: Python<'_>, listener: &Listener) -> PyResult<bool> {
        let bound = take(listener)?;
        let s = &self.settings;
        tracing::info!(
            "oxfcgi {} serving on {}: up to {} thread(s), multiplexing {}, max_conns {}, max_in_flight {}{}",
            env!("CARGO_PKG_VERSION"),
            listener.description(),
            s.threads,
            if self.config.multiplexed { "on" } else { "off" },
            self.config.max_conns,
            self.config.max_in_flight,
            s.script_name.as_ref().map(|p| format!(", script_name {p:?}")).unwrap_or_default(),
        );
        let ctx = Arc::new(AppContext {
            app: self.app.clone_ref(py),
            base_environ: s.environ.as_ref().map(|e| e.clone_ref(py)),
            multithread: s.multithread,
            multiprocess: s.multiprocess,
            debug: s.debug,
            script_name: s.script_name.as_ref().map(|p| p.as_bytes().to_vec()),
            row: self.row.clone(),
            slow_after: s.slowlog,
            watched: s.slowlog.is_some() || s.terminate.is_some(),
            terminates: s.terminate.is_some(),
            running: (0..s.threads).map(|_| Mutex::new(None)).collect(),
        });
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(ctx.clone());
        let driver = Driver::new().map_err(EngineError::from)?;
        let (pool, dispatcher, spare) = Pool::start(ctx, s.threads, driver.clone()).map_err(EngineError::from)?;
        let options = self.options();
        let config = self.config.clone();
        // This thread is the pool's spare: it drives the runtime only while
        // the worker leading it runs a long request (server::handoff).
        let served = py.detach(move || {
            let serving = engine::start(config, bound, Arc::new(dispatcher), options, driver, Some(spare.finisher()));
            if serving.is_ok() {
                spare.run();
            }
            // Idle workers exit now, the leader leaves the runtime; queued
            // requests still run.
            spare.close();
            serving.and_then(|serving| serving.finish())
        });
        self.current.lock().unwrap_or_else(|e| e.into_inner()).take();
        // One still inside the application after graceful_timeout cannot be
        // interrupted; do not wait for it.
        let busy = py.detach(|| pool.join(Duration::from_millis(500)));
        if busy > 0 {
            tracing::warn!("{busy} worker thread(s) still running application code; not waiting for them");
        }
        let reason = served.map_err(EngineError::from)?;
        tracing::info!("oxfcgi stopped");
        Ok(reason.is_reload())
    }
}

fn take(listener: &Listener) -> PyResult<crate::server::listener::Bound> {
    listener
        .take()
        .ok_or_else(|| PyRuntimeError::new_err("this listener was closed or used by another server; create a new one"))
}
