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
    pub fn emit(&self, py: Python<'_>, text: &str, level: u8) {
        if text.is_empty() {
            return;
        }
        let data = Bytes::copy_from_slice(text.as_bytes());
        if let Err(Ok(kind)) = self.sink.try_send(Output::Stderr(data)) {
            let _ = py.detach(|| self.sink.blocking_send(kind));
        }
        log_now(py, level, text.trim_end_matches('\n'));
    }

    /// Send whatever partial line is left (end of request).
    pub fn flush_pending(&self, py: Python<'_>) {
        let rest = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        self.emit(py, &rest, LEVEL_WARNING);
    }
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
