//! The pyo3 boundary for ASGI applications (ASGI 3.0, HTTP spec 2.4): the same
//! engine as WSGI, a second application interface. One asyncio event loop per
//! process, on its own thread, run by `oxfcgi/_asgi.py`; the engine hands it
//! requests through [`bridge`] without taking the GIL.
//!
//! - [`bridge`]: the queue and eventfd between the engine and the loop, and the
//!   waits (`receive()` for a body not yet here, `send()` into a full output
//!   queue) as Rust futures resolving asyncio futures.
//! - [`handle`]: one request: `scope()`, `receive()`, `send()`, `finish()`.
//! - [`scope`]: the params → the `http` scope.
//!
//! WebSocket cannot exist over FastCGI (no upgrade): a `websocket` scope is
//! never made.

pub mod bridge;
pub mod handle;
pub mod scope;
