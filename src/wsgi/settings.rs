//! The server settings as the engine takes them: one dict, made by
//! `oxfcgi.settings.resolve()` from the settings table
//! (`python/oxfcgi/settings.py`, group `server`), turned into the engine's
//! [`Config`] and the WSGI layer's own settings.
//!
//! Every key of the group must be in the dict and no other may be: a setting
//! added on one side only fails at once, so the table and the engine cannot
//! drift apart (tests/test_settings.py checks it both ways).

use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::protocol::Role;
use crate::server::{Config, Timeouts};

/// The WSGI layer's share of the settings.
pub struct AppSettings {
    pub threads: usize,
    /// `script_name`, without a trailing slash.
    pub script_name: Option<String>,
    pub environ: Option<Py<PyDict>>,
    pub multithread: bool,
    pub multiprocess: bool,
    pub debug: bool,
    /// `request_slowlog_timeout` (None: off).
    pub slowlog: Option<Duration>,
    /// `request_terminate_timeout` (None: off).
    pub terminate: Option<Duration>,
}

/// Takes the settings out of the dict one by one and notices what is
/// missing or left over.
struct Taker<'a, 'py> {
    dict: &'a Bound<'py, PyDict>,
    taken: Vec<&'static str>,
}

impl<'py> Taker<'_, 'py> {
    fn take<T: FromPyObjectOwned<'py>>(&mut self, name: &'static str) -> PyResult<T> {
        self.taken.push(name);
        let value = self.dict.get_item(name)?.ok_or_else(|| {
            PyTypeError::new_err(format!(
                "missing server setting {name:?} (build the settings with oxfcgi.settings.resolve())"
            ))
        })?;
        value.extract::<T>().map_err(|e| {
            let e: PyErr = e.into();
            PyTypeError::new_err(format!("server setting {name}: {e}"))
        })
    }

    fn finish(self) -> PyResult<()> {
        if self.dict.len() == self.taken.len() {
            return Ok(());
        }
        let mut unknown = Vec::new();
        for key in self.dict.keys() {
            let key = key.str()?.to_string();
            if !self.taken.contains(&key.as_str()) {
                unknown.push(key);
            }
        }
        Err(PyTypeError::new_err(format!("unknown server setting(s): {}", unknown.join(", "))))
    }
}

fn seconds(name: &str, value: f64) -> PyResult<Duration> {
    if !(value.is_finite() && (0.0..=1e9).contains(&value)) {
        return Err(PyValueError::new_err(format!("{name} must be a number of seconds >= 0, got {value}")));
    }
    Ok(Duration::from_secs_f64(value))
}

/// A timeout where 0 means off.
fn limit(name: &str, value: f64) -> PyResult<Option<Duration>> {
    Ok(Some(seconds(name, value)?).filter(|d| !d.is_zero()))
}

fn url_path(name: &str, value: Option<String>) -> PyResult<Option<String>> {
    if value.as_ref().is_some_and(|p| !p.starts_with('/')) {
        return Err(PyValueError::new_err(format!("{name} must start with '/', got {value:?}")));
    }
    Ok(value)
}

/// The engine [`Config`] and the WSGI settings from the settings dict.
/// Raises `TypeError` for a missing, unknown or mistyped key and
/// `ValueError` for a value the engine cannot work with.
pub fn from_dict(settings: &Bound<'_, PyDict>) -> PyResult<(Config, AppSettings)> {
    let mut t = Taker { dict: settings, taken: Vec::new() };
    let threads: usize = t.take("threads")?;
    let multiplexed: bool = t.take("multiplexed")?;
    let max_conns: usize = t.take("max_conns")?;
    let max_in_flight: usize = t.take("max_in_flight")?;
    let roles: Vec<u16> = t.take("roles")?;
    let max_params_size: usize = t.take("max_params_size")?;
    let max_params: usize = t.take("max_params")?;
    let graceful_timeout: f64 = t.take("graceful_timeout")?;
    let idle_timeout: f64 = t.take("idle_timeout")?;
    let keepalive_timeout: f64 = t.take("keepalive_timeout")?;
    let read_timeout: f64 = t.take("read_timeout")?;
    let params_timeout: f64 = t.take("params_timeout")?;
    let send_timeout: f64 = t.take("send_timeout")?;
    let script_name: Option<String> = t.take("script_name")?;
    let environ: Option<Py<PyDict>> = t.take("environ")?;
    let multithread: bool = t.take("multithread")?;
    let multiprocess: bool = t.take("multiprocess")?;
    let debug: bool = t.take("debug")?;
    let status_path: Option<String> = t.take("status_path")?;
    let ping_path: Option<String> = t.take("ping_path")?;
    let max_requests: Option<u64> = t.take("max_requests")?;
    let slowlog: f64 = t.take("request_slowlog_timeout")?;
    let terminate: f64 = t.take("request_terminate_timeout")?;
    t.finish()?;

    if !(1..=1024).contains(&threads) {
        return Err(PyValueError::new_err(format!("threads must be between 1 and 1024, got {threads}")));
    }
    for (name, value) in [
        ("max_conns", max_conns),
        ("max_in_flight", max_in_flight),
        ("max_params_size", max_params_size),
        ("max_params", max_params),
    ] {
        if value == 0 {
            return Err(PyValueError::new_err(format!("{name} must be at least 1")));
        }
    }
    if max_requests == Some(0) {
        return Err(PyValueError::new_err("max_requests must be at least 1 (or None for no limit)"));
    }
    if script_name.as_ref().is_some_and(|p| !p.is_empty() && !p.starts_with('/')) {
        return Err(PyValueError::new_err(format!("script_name must be empty or start with '/', got {script_name:?}")));
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
    let config = Config {
        roles,
        multiplexed,
        max_conns,
        max_in_flight,
        max_params_size,
        max_params,
        graceful_timeout: seconds("graceful_timeout", graceful_timeout)?,
        timeouts: Timeouts {
            idle: limit("idle_timeout", idle_timeout)?,
            keepalive: limit("keepalive_timeout", keepalive_timeout)?,
            read: limit("read_timeout", read_timeout)?,
            params: limit("params_timeout", params_timeout)?,
            send: limit("send_timeout", send_timeout)?,
        },
        status_path: url_path("status_path", status_path)?,
        ping_path: url_path("ping_path", ping_path)?,
        max_requests,
        threads,
    };
    let app = AppSettings {
        threads,
        script_name: script_name.map(|p| p.trim_end_matches('/').to_string()),
        environ,
        multithread,
        multiprocess,
        debug,
        slowlog: limit("request_slowlog_timeout", slowlog)?,
        terminate: limit("request_terminate_timeout", terminate)?,
    };
    Ok((config, app))
}

/// The engine's own defaults ([`Config::default`], which its Rust tests
/// use), by setting name, so a test can hold them against the table.
pub fn engine_defaults<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
    let c = Config::default();
    let secs = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64());
    let d = PyDict::new(py);
    d.set_item("multiplexed", c.multiplexed)?;
    d.set_item("max_conns", c.max_conns)?;
    d.set_item("max_params_size", c.max_params_size)?;
    d.set_item("max_params", c.max_params)?;
    d.set_item("graceful_timeout", c.graceful_timeout.as_secs_f64())?;
    d.set_item("idle_timeout", secs(c.timeouts.idle))?;
    d.set_item("keepalive_timeout", secs(c.timeouts.keepalive))?;
    d.set_item("read_timeout", secs(c.timeouts.read))?;
    d.set_item("params_timeout", secs(c.timeouts.params))?;
    d.set_item("send_timeout", secs(c.timeouts.send))?;
    d.set_item("roles", c.roles.iter().map(|r| r.number()).collect::<Vec<_>>())?;
    d.set_item("backlog", crate::server::listener::SocketOptions::default().backlog)?;
    d.set_item("socket_mode", crate::server::listener::SocketOptions::default().mode)?;
    Ok(d)
}
