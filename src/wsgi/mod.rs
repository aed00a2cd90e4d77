//! The pyo3 boundary: PEP 3333 on top of the engine. One file per Python
//! class or concept; `Server` is what `oxfcgi.run()` and
//! `oxfcgi.WSGIServer` drive.

pub mod context;
pub mod environ;
pub mod errors;
pub mod exception;
pub mod filewrapper;
pub mod input;
pub mod listener;
pub mod log;
pub mod pool;
pub mod response;
pub mod scoreboard;
pub mod server;
pub mod settings;
