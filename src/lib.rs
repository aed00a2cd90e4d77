//! oxfcgi: a FastCGI 1.0 server for Python WSGI applications.
//!
//! - [`protocol`]: the wire format (no I/O, no pyo3).
//! - [`server`]: sockets, connections, admission, shutdown (no pyo3).
//! - [`cgi`]: CGI/1.1 variable fix-ups (no pyo3).
//! - `wsgi` (feature `python`): PEP 3333 and the Python module `oxfcgi._oxfcgi`.
//! - `asgi` (feature `python`): ASGI 3.0 through the same engine.

pub mod cgi;
pub mod protocol;
pub mod server;

#[cfg(feature = "python")]
mod asgi;
#[cfg(feature = "python")]
mod wsgi;

#[cfg(feature = "python")]
#[pyo3::pymodule]
mod _oxfcgi {
    #[pymodule_export]
    use crate::asgi::bridge::Bridge;
    #[pymodule_export]
    use crate::asgi::handle::{ClientDisconnected, Done, RequestHandle};
    #[pymodule_export]
    use crate::wsgi::errors::ErrorStream;
    #[pymodule_export]
    use crate::wsgi::exception::{BindError, RequestTerminated};
    #[pymodule_export]
    use crate::wsgi::filewrapper::FileWrapper;
    #[pymodule_export]
    use crate::wsgi::input::InputStream;
    #[pymodule_export]
    use crate::wsgi::listener::Listener;
    #[pymodule_export]
    use crate::wsgi::response::{StartResponse, Write};
    #[pymodule_export]
    use crate::wsgi::scoreboard::Scoreboard;
    #[pymodule_export]
    use crate::wsgi::server::Server;

    #[pymodule_init]
    fn init(m: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
        use pyo3::types::{PyAnyMethods, PyModuleMethods};
        // Shown in tracebacks as oxfcgi.BindError, where users import it from.
        m.py().get_type::<BindError>().setattr("__module__", "oxfcgi")?;
        m.py().get_type::<RequestTerminated>().setattr("__module__", "oxfcgi")?;
        m.py().get_type::<ClientDisconnected>().setattr("__module__", "oxfcgi")?;
        crate::wsgi::log::install_subscriber();
        m.add("build_info", build_info(m.py())?)?;
        m.add("__version__", env!("CARGO_PKG_VERSION"))
    }

    /// `oxfcgi --version`'s details: `{"version", "git", "rustc", "pyo3", "features",
    /// "profile"}`, all `str` (build.rs records them at compile time).
    fn build_info(py: pyo3::Python<'_>) -> pyo3::PyResult<pyo3::Bound<'_, pyo3::types::PyDict>> {
        use pyo3::types::PyDictMethods;
        let info = pyo3::types::PyDict::new(py);
        info.set_item("version", env!("CARGO_PKG_VERSION"))?;
        info.set_item("git", env!("OXFCGI_GIT_REV"))?;
        info.set_item("rustc", env!("OXFCGI_RUSTC"))?;
        info.set_item("pyo3", concat!(env!("OXFCGI_PYO3"), " (abi3, Python >= 3.10)"))?;
        let features: Vec<&str> = [("python", cfg!(feature = "python")), ("harness", cfg!(feature = "harness"))]
            .into_iter()
            .filter_map(|(name, on)| on.then_some(name))
            .collect();
        info.set_item("features", features.join(","))?;
        info.set_item("profile", if cfg!(debug_assertions) { "debug" } else { "release" })?;
        Ok(info)
    }
}
