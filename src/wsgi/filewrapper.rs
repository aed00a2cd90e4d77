//! `wsgi.file_wrapper` (PEP 3333 §"Optional Platform-Specific File Handling").

use pyo3::prelude::*;

/// `wsgi.file_wrapper(filelike, blksize=8192)`.
///
/// Returned as the response body, a wrapper around a real file (one with a
/// working `fileno()`) is sent by the server straight from the file in 64 KiB
/// reads with the GIL released, starting at the file's current position.
/// Anything else is iterated with `filelike.read(blksize)`. `close()` closes
/// the file if it has a `close` method.
#[pyclass(frozen, module = "oxfcgi._oxfcgi", name = "FileWrapper")]
pub struct FileWrapper {
    #[pyo3(get)]
    pub filelike: Py<PyAny>,
    #[pyo3(get)]
    pub blksize: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize=8192))]
    fn new(filelike: Py<PyAny>, blksize: usize) -> Self {
        FileWrapper { filelike, blksize: blksize.max(1) }
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let chunk = self.filelike.bind(py).call_method1("read", (self.blksize,))?;
        Ok((chunk.len()? > 0).then_some(chunk))
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        if let Some(close) = self.filelike.bind(py).getattr_opt("close")? {
            close.call0()?;
        }
        Ok(())
    }
}
