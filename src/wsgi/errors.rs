//! `wsgi.errors` (PEP 3333): a text stream whose lines go to FCGI_STDERR
//! (the web server's error log for this request) and to the `oxfcgi` logger.

use std::sync::Mutex;

use bytes::Bytes;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use super::log::{log_now, LEVEL_WARNING};
use crate::server::request::{Output, ResponseSink};

/// `wsgi.errors`: `write(str)`, `writelines(lines)`, `flush()`.
///
/// Complete lines are sent as they are written; a partial line waits for its
/// newline, `flush()`, or the end of the request. Each line is also logged at
/// WARNING by the `oxfcgi` logger. `bytes` are accepted too (decoded as UTF-8
/// with replacement), as flup's FastCGI-mode stream did.
#[pyclass(frozen, module = "oxfcgi._oxfcgi", name = "ErrorStream")]
pub struct ErrorStream {
    sink: ResponseSink,
    pending: Mutex<String>,
}

impl ErrorStream {
    pub fn new(sink: ResponseSink) -> Self {
        ErrorStream { sink, pending: Mutex::new(String::new()) }
    }

    /// Send `text` to FCGI_STDERR and log it at `level`.
    ///
    /// Web servers log each FCGI_STDERR record as one line and cut long ones
    /// (nginx at about 2 KiB), so the text goes out in records of at most
    /// [`STDERR_PIECE`] bytes, split after a newline where possible.
    pub fn emit(&self, py: Python<'_>, text: &str, level: u8) {
        if text.is_empty() {
            return;
        }
        for piece in pieces(text, STDERR_PIECE) {
            let data = Bytes::copy_from_slice(piece.as_bytes());
            match self.sink.try_send(Output::Stderr(data)) {
                Err(Ok(kind)) => {
                    if py.detach(|| self.sink.blocking_send(kind)).is_err() {
                        break;
                    }
                }
                Err(Err(_)) => break,
                Ok(()) => {}
            }
        }
        log_now(py, level, text.trim_end_matches('\n'));
    }

    /// Send whatever partial line is left (end of request).
    pub fn flush_pending(&self, py: Python<'_>) {
        let rest = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        self.emit(py, &rest, LEVEL_WARNING);
    }
}

/// Largest FCGI_STDERR record we send, in bytes.
const STDERR_PIECE: usize = 1800;

/// Split `text` into pieces of at most `max` bytes, after a newline where
/// there is one, never inside a UTF-8 character.
fn pieces(text: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while rest.len() > max {
        let mut cut = max;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if let Some(nl) = rest[..cut].rfind('\n') {
            cut = nl + 1;
        }
        out.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

#[pymethods]
impl ErrorStream {
    /// Write text; returns the number of characters written.
    fn write(&self, py: Python<'_>, text: &Bound<'_, PyAny>) -> PyResult<usize> {
        let text: String = if let Ok(s) = text.cast::<PyString>() {
            s.to_cow()?.into_owned()
        } else if let Ok(b) = text.cast::<PyBytes>() {
            String::from_utf8_lossy(b.as_bytes()).into_owned()
        } else {
            return Err(PyTypeError::new_err(format!(
                "wsgi.errors.write() takes str, not {}",
                text.get_type().name()?
            )));
        };
        let count = text.chars().count();
        let complete = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.push_str(&text);
            match pending.rfind('\n') {
                Some(pos) => {
                    let rest = pending.split_off(pos + 1);
                    std::mem::replace(&mut *pending, rest)
                }
                None => String::new(),
            }
        };
        self.emit(py, &complete, LEVEL_WARNING);
        Ok(count)
    }

    /// Write each string of an iterable.
    fn writelines(&self, py: Python<'_>, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for line in lines.try_iter()? {
            self.write(py, &line?)?;
        }
        Ok(())
    }

    /// Send a pending partial line now.
    fn flush(&self, py: Python<'_>) {
        self.flush_pending(py);
    }

    fn writable(&self) -> bool {
        true
    }
}
