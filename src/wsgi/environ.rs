//! FastCGI params → the WSGI `environ` dict (PEP 3333 §"environ Variables").

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
use pyo3::{ffi, intern};

use super::context::AppContext;
use super::errors::ErrorStream;
use super::input::InputStream;
use super::log::{log_now, LEVEL_WARNING};
use crate::cgi;
use crate::protocol::Role;

/// A latin-1 `str` of `bytes` (PEP 3333: environ strings are the raw bytes
/// decoded as ISO-8859-1).
pub fn latin1<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyString>> {
    // SAFETY: PyUnicode_DecodeLatin1 reads exactly `len` bytes from `ptr`
    // and returns a new reference or NULL with an exception set.
    unsafe {
        let ptr = ffi::PyUnicode_DecodeLatin1(bytes.as_ptr().cast(), bytes.len() as ffi::Py_ssize_t, std::ptr::null());
        Bound::from_owned_ptr_or_err(py, ptr).map(|o| o.cast_into_unchecked())
    }
}

/// Names cached per worker thread, at most this many (header names come
/// from clients, so the cache must not grow without bound).
const KEY_CACHE_LIMIT: usize = 256;

/// FNV-1a: the key cache hashes a handful of short, server-chosen names per
/// request; SipHash's flooding resistance buys nothing there (the cache is
/// bounded) and costs more than the lookup itself.
#[derive(Default)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type FnvMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<Fnv>>;

/// A param name and its environ key.
type KeySlot = (Box<[u8]>, Py<PyString>);

thread_local! {
    static KEYS: RefCell<FnvMap<Box<[u8]>, Py<PyString>>> = RefCell::new(FnvMap::default());
    /// The name and key last seen at each position of the params.
    static BY_POSITION: RefCell<Vec<KeySlot>> = const { RefCell::new(Vec::new()) };
    /// The keys every environ of this thread starts with (see [`template`]).
    static TEMPLATE: RefCell<Option<Py<PyDict>>> = const { RefCell::new(None) };
    /// The value last made at each position of the params (see [`value`]).
    static VALUES: RefCell<Vec<Option<ValueSlot>>> = const { RefCell::new(Vec::new()) };
}

/// A param value's bytes and the string made of them.
struct ValueSlot {
    bytes: Box<[u8]>,
    string: Py<PyString>,
    /// Requests in a row whose value here was different.
    misses: u32,
}

/// Values longer than this are made afresh every time (cookies, long URLs).
const VALUE_CACHE_MAX: usize = 256;

/// Drop this thread's caches (call with the GIL held before the thread
/// exits): the strings and the template are released now rather than by
/// thread-local destructors that run without the GIL.
pub fn forget_thread_caches(_py: Python<'_>) {
    // try_with: nothing to drop if the thread is already tearing them down.
    let _ = KEYS.try_with(|keys| keys.take());
    let _ = BY_POSITION.try_with(|slots| slots.take());
    let _ = TEMPLATE.try_with(|t| t.take());
    let _ = VALUES.try_with(|slots| slots.take());
}

/// The `wsgi.*` keys that are the same for every request of this server: a
/// dict each environ starts as a copy of (one presized copy instead of a
/// growing dict and eight insertions). A worker thread serves one server, so
/// the template is kept per thread.
fn template<'py>(py: Python<'py>, ctx: &AppContext) -> PyResult<Bound<'py, PyDict>> {
    if let Some(t) = TEMPLATE.with(|t| t.borrow().as_ref().map(|t| t.bind(py).clone())) {
        return Ok(t);
    }
    let t = PyDict::new(py);
    set_constant_keys(py, ctx, &t)?;
    TEMPLATE.with(|cell| *cell.borrow_mut() = Some(t.clone().unbind()));
    Ok(t)
}

fn set_constant_keys(py: Python<'_>, ctx: &AppContext, environ: &Bound<'_, PyDict>) -> PyResult<()> {
    environ.set_item(intern!(py, "wsgi.version"), PyTuple::new(py, [1, 0])?)?;
    environ.set_item(intern!(py, "wsgi.multithread"), ctx.multithread)?;
    environ.set_item(intern!(py, "wsgi.multiprocess"), ctx.multiprocess)?;
    environ.set_item(intern!(py, "wsgi.run_once"), false)?;
    environ.set_item(intern!(py, "wsgi.input_terminated"), true)?;
    environ.set_item(intern!(py, "wsgi.file_wrapper"), py.get_type::<super::filewrapper::FileWrapper>())?;
    Ok(())
}

/// The environ key for a param name. Names repeat on every request, so each
/// worker thread keeps their interned strings: no new string, no rehash. A web
/// server sends its params in the same order every time, so the name last seen
/// at this position is tried first (one comparison), then the map.
fn key<'py>(py: Python<'py>, position: usize, name: &[u8]) -> PyResult<Bound<'py, PyString>> {
    let by_position = BY_POSITION
        .with(|slots| slots.borrow().get(position).and_then(|(n, k)| (**n == *name).then(|| k.bind(py).clone())));
    if let Some(hit) = by_position {
        return Ok(hit);
    }
    let found = key_from_map(py, name)?;
    if position < KEY_CACHE_LIMIT {
        BY_POSITION.with(|slots| {
            let mut slots = slots.borrow_mut();
            let entry = (Box::<[u8]>::from(name), found.clone().unbind());
            if position < slots.len() {
                slots[position] = entry;
            } else if position == slots.len() {
                slots.push(entry);
            }
        });
    }
    Ok(found)
}

fn key_from_map<'py>(py: Python<'py>, name: &[u8]) -> PyResult<Bound<'py, PyString>> {
    if let Some(hit) = KEYS.with(|keys| keys.borrow().get(name).map(|k| k.bind(py).clone())) {
        return Ok(hit);
    }
    let made = match std::str::from_utf8(name) {
        Ok(s) if s.is_ascii() => PyString::intern(py, s),
        _ => latin1(py, name)?,
    };
    KEYS.with(|keys| {
        let mut keys = keys.borrow_mut();
        if keys.len() < KEY_CACHE_LIMIT {
            keys.insert(name.into(), made.clone().unbind());
        }
    });
    Ok(made)
}

/// The environ value (a latin-1 `str`, see [`latin1`]) for the param at
/// `position`. Most values are the same on every request (the server's name,
/// port and protocol, the client's Host and User-Agent), and a `str` is
/// immutable: each worker thread keeps the string last made at each position
/// and gives it again while the bytes are the same. A position whose value
/// keeps changing (REMOTE_PORT, REQUEST_URI) is refreshed after 1, 2, 4, 8, …
/// misses in a row, so it costs a comparison, not a copy.
fn value<'py>(py: Python<'py>, position: usize, bytes: &[u8]) -> PyResult<Bound<'py, PyString>> {
    if position >= KEY_CACHE_LIMIT || bytes.len() > VALUE_CACHE_MAX {
        return latin1(py, bytes);
    }
    VALUES.with(|cell| {
        let mut slots = cell.borrow_mut();
        if slots.len() <= position {
            slots.resize_with(position + 1, || None);
        }
        let misses = match &mut slots[position] {
            Some(slot) if *slot.bytes == *bytes => {
                slot.misses = 0;
                return Ok(slot.string.bind(py).clone());
            }
            Some(slot) => {
                slot.misses = slot.misses.saturating_add(1);
                if !slot.misses.is_power_of_two() {
                    return latin1(py, bytes);
                }
                slot.misses
            }
            None => 0,
        };
        let made = latin1(py, bytes)?;
        slots[position] = Some(ValueSlot { bytes: bytes.into(), string: made.clone().unbind(), misses });
        Ok(made)
    })
}

/// Log the configuration warnings of [`cgi::sanitize`] (each kind once per process).
pub(crate) fn log_warnings(py: Python<'_>, warnings: Vec<cgi::Warning>) {
    for warning in warnings {
        if warning.once.is_none_or(first_time) {
            log_now(py, LEVEL_WARNING, &warning.message);
        }
    }
}

/// Whether a once-per-process warning of this kind is new.
fn first_time(kind: cgi::WarningKind) -> bool {
    static SEEN: Mutex<Vec<cgi::WarningKind>> = Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if seen.contains(&kind) {
        return false;
    }
    seen.push(kind);
    true
}

/// The pieces of one request the environ refers to.
pub struct RequestStreams<'py> {
    pub input: Bound<'py, InputStream>,
    pub data: Option<Bound<'py, InputStream>>,
    pub errors: &'py Bound<'py, ErrorStream>,
    pub role: Role,
}

/// Build the environ: params (after flup's fix-ups, see [`cgi::sanitize`]),
/// then the server's `environ` setting (which overrides params, as in flup),
/// then the `wsgi.*` keys. Warnings about missing params go to `wsgi.errors`.
pub fn build<'py>(
    py: Python<'py>,
    ctx: &AppContext,
    mut params: Vec<(Bytes, Bytes)>,
    streams: RequestStreams<'py>,
) -> PyResult<Bound<'py, PyDict>> {
    let warnings = cgi::sanitize(&mut params, ctx.script_name.as_deref());
    let scheme = cgi::url_scheme(&params);
    let environ = template(py, ctx)?.copy()?;
    let mut shadowed = false;
    for (position, (name, value)) in params.iter().enumerate() {
        shadowed |= name.starts_with(b"wsgi.") || name.starts_with(b"fcgi.");
        environ.set_item(key(py, position, name)?, self::value(py, position, value)?)?;
    }
    if let Some(base) = &ctx.base_environ {
        environ.update(base.bind(py).as_mapping())?;
        shadowed = true;
    }
    if shadowed {
        // The server's own keys win over params and the `environ` setting.
        set_constant_keys(py, ctx, &environ)?;
    }
    environ.set_item(intern!(py, "wsgi.url_scheme"), PyString::intern(py, scheme))?;
    environ.set_item(intern!(py, "wsgi.input"), streams.input)?;
    environ.set_item(intern!(py, "wsgi.errors"), streams.errors)?;
    environ.set_item(intern!(py, "fcgi.role"), PyString::intern(py, streams.role.name()))?;
    if let Some(data) = streams.data {
        environ.set_item(intern!(py, "fcgi.data"), data)?;
    }
    // Configuration warnings go to the server's log, not to this request's FCGI_STDERR:
    // that stream is the application's (wsgi.errors, tracebacks).
    log_warnings(py, warnings);
    Ok(environ)
}
