//! The one place where engine errors become Python exceptions.

use pyo3::create_exception;
use pyo3::exceptions::{PyOSError, PyTimeoutError};
use pyo3::PyErr;

use crate::server::listener::BindError as EngineBindError;

create_exception!(
    _oxfcgi,
    BindError,
    PyOSError,
    "The server could not listen where it was told to (the message says why and what to do)."
);

create_exception!(
    _oxfcgi,
    RequestTerminated,
    PyTimeoutError,
    "Raised inside a request's thread when it ran past request_terminate_timeout: the web server \
     has been answered (504) already, and the application should unwind."
);

/// Engine failures that reach Python.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Bind(#[from] EngineBindError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<EngineError> for PyErr {
    fn from(e: EngineError) -> PyErr {
        match e {
            EngineError::Bind(e) => BindError::new_err(e.to_string()),
            EngineError::Io(e) => PyErr::from(e),
        }
    }
}
