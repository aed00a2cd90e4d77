//! `wsgi.input` (PEP 3333 §"Input and Error Streams"): the request body as a
//! binary stream with `io` semantics, fed record by record from FCGI_STDIN.
//! Nothing is buffered beyond what the application asks for; while it waits
//! for bytes, the GIL is released.

use std::sync::Mutex;

use bytes::{Buf, BytesMut};
use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::server::request::{InputError, InputQueue};

struct State {
    records: InputQueue,
    buf: BytesMut,
    eof: bool,
}

/// The request body (`wsgi.input`), or the FILTER role's FCGI_DATA stream.
///
/// Methods follow `io.BufferedReader`: `read(size=-1)`, `read1`,
/// `readline(size=-1)`, `readlines(hint=-1)`, `readinto(b)` and iteration
/// over lines. `read(n)` returns exactly `n` bytes unless the body ends first.
/// Reading past the end returns `b""`. If the web server aborts the request
/// (FCGI_ABORT_REQUEST or a closed connection) before the body ends, reads
/// raise `OSError`. Not for concurrent use from several threads
/// (`RuntimeError`).
#[pyclass(frozen, module = "oxfcgi._oxfcgi", name = "InputStream")]
pub struct InputStream {
    state: Mutex<State>,
}

impl InputStream {
    pub fn new(records: InputQueue) -> Self {
        InputStream { state: Mutex::new(State { records, buf: BytesMut::new(), eof: false }) }
    }

    fn with_state<R>(&self, f: impl FnOnce(&mut State) -> PyResult<R>) -> PyResult<R> {
        let mut guard = self
            .state
            .try_lock()
            .map_err(|_| PyRuntimeError::new_err("wsgi.input is being read by another thread at the same time"))?;
        f(&mut guard)
    }
}

impl State {
    /// Append the next record to `buf`. `Ok(false)` at the end of the body.
    fn fill(&mut self, py: Python<'_>) -> PyResult<bool> {
        if self.eof {
            return Ok(false);
        }
        let next = match self.records.try_next() {
            Some(result) => result,
            None => py.detach(|| self.records.blocking_next()),
        };
        match next {
            Ok(Some(chunk)) => {
                if self.buf.is_empty() {
                    self.buf = BytesMut::from(chunk);
                } else {
                    self.buf.extend_from_slice(&chunk);
                }
                Ok(true)
            }
            Ok(None) => {
                self.eof = true;
                Ok(false)
            }
            Err(e @ InputError::Aborted) => Err(PyOSError::new_err(e.to_string())),
        }
    }

    fn take<'py>(&mut self, py: Python<'py>, n: usize) -> Bound<'py, PyBytes> {
        let n = n.min(self.buf.len());
        let out = PyBytes::new(py, &self.buf[..n]);
        self.buf.advance(n);
        out
    }

    fn read<'py>(&mut self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        match size {
            Some(n) if n >= 0 => {
                let n = n as usize;
                while self.buf.len() < n && self.fill(py)? {}
                Ok(self.take(py, n))
            }
            _ => {
                while self.fill(py)? {}
                Ok(self.take(py, self.buf.len()))
            }
        }
    }

    fn readline<'py>(&mut self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let limit = size.filter(|n| *n >= 0).map(|n| n as usize);
        let mut searched = 0;
        loop {
            if let Some(pos) = self.buf[searched..].iter().position(|&b| b == b'\n') {
                let end = searched + pos + 1;
                return Ok(self.take(py, limit.map_or(end, |l| l.min(end))));
            }
            searched = self.buf.len();
            if limit.is_some_and(|l| self.buf.len() >= l) || !self.fill(py)? {
                return Ok(self.take(py, limit.unwrap_or(usize::MAX)));
            }
        }
    }
}

#[pymethods]
impl InputStream {
    /// Read up to `size` bytes (all that is left if `size` is negative or None).
    #[pyo3(signature = (size=-1), text_signature = "($self, size=-1)")]
    fn read<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        self.with_state(|s| s.read(py, size))
    }

    /// Read what is available, waiting only if nothing is (at most `size` bytes).
    #[pyo3(signature = (size=-1), text_signature = "($self, size=-1)")]
    fn read1<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        self.with_state(|s| {
            if s.buf.is_empty() {
                s.fill(py)?;
            }
            let n = size.filter(|n| *n >= 0).map_or(s.buf.len(), |n| n as usize);
            Ok(s.take(py, n))
        })
    }

    /// Read one line, including its `b"\n"`, or at most `size` bytes of it.
    #[pyo3(signature = (size=-1), text_signature = "($self, size=-1)")]
    fn readline<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        self.with_state(|s| s.readline(py, size))
    }

    /// Read lines until the end, or until they total at least `hint` bytes.
    #[pyo3(signature = (hint=-1), text_signature = "($self, hint=-1)")]
    fn readlines<'py>(&self, py: Python<'py>, hint: Option<isize>) -> PyResult<Bound<'py, PyList>> {
        self.with_state(|s| {
            let lines = PyList::empty(py);
            let mut total = 0usize;
            loop {
                let line = s.readline(py, None)?;
                let len = line.as_bytes().len();
                if len == 0 {
                    break;
                }
                lines.append(line)?;
                total += len;
                if hint.is_some_and(|h| h > 0 && total >= h as usize) {
                    break;
                }
            }
            Ok(lines)
        })
    }

    /// Read into a writable buffer; returns the number of bytes read.
    fn readinto(&self, py: Python<'_>, buffer: &Bound<'_, PyAny>) -> PyResult<usize> {
        let view = pyo3::types::PyMemoryView::from(buffer)?;
        let n: usize = view.len()?;
        let data = self.with_state(|s| s.read(py, Some(n as isize)))?;
        let len = data.as_bytes().len();
        view.set_item(pyo3::types::PySlice::new(py, 0, len as isize, 1), data)?;
        Ok(len)
    }

    fn readable(&self) -> bool {
        true
    }

    fn seekable(&self) -> bool {
        false
    }

    fn writable(&self) -> bool {
        false
    }

    fn close(&self) {}

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.with_state(|s| s.readline(py, None))?;
        Ok((!line.as_bytes().is_empty()).then_some(line))
    }
}
