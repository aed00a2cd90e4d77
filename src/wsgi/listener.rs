//! `Listener`: the listening socket, bound before the application is
//! imported (bind as root, drop privileges, then import).

use std::path::PathBuf;
use std::sync::Mutex;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::exception::EngineError;
use crate::server::listener::{self, BindTarget, SocketOptions};

/// A listening socket, bound when created (so a caller can bind as root,
/// drop privileges, then import the application).
///
/// `Listener(bind, *, backlog=1024, socket_mode=0o660, umask=None,
/// socket_owner=None, socket_group=None)`:
///
/// - `bind`: a normalized tuple, as `oxfcgi._bind.parse_bind` makes it:
///   `("auto",)`, `("unix", path)`, `("tcp", host, port)`, `("fd", n)`;
/// - `backlog`: the listen queue (php-fpm's `listen.backlog`), for a socket
///   bound here;
/// - `socket_mode` (permission bits), `umask` (applied around `bind()`, as
///   flup does), `socket_owner`/`socket_group` (a uid/gid): for a unix
///   socket file.
///
/// `FCGI_WEB_SERVER_ADDRS` (spec §3.2) is read now and applies to TCP.
/// Raises `BindError` (an `OSError`) with the cause and what to do, and
/// `ValueError` for a bad mode or bind tuple.
#[pyclass(frozen, module = "oxfcgi._oxfcgi", name = "Listener")]
pub struct Listener {
    bound: Mutex<Option<listener::Bound>>,
    description: String,
}

#[pymethods]
impl Listener {
    #[new]
    #[pyo3(signature = (bind, *, backlog=1024, socket_mode=0o660, umask=None, socket_owner=None, socket_group=None))]
    fn new(
        bind: &Bound<'_, PyTuple>,
        backlog: u32,
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
        let opts = SocketOptions { backlog, mode: socket_mode, umask, owner: socket_owner, group: socket_group };
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

impl Listener {
    /// Take the bound socket out (a server serves it); None if used up or closed.
    pub(crate) fn take(&self) -> Option<listener::Bound> {
        self.bound.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    pub(crate) fn description(&self) -> &str {
        &self.description
    }
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
