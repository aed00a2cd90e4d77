//! `Scoreboard`: the prefork pool's shared counters, seen from Python.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::exception::EngineError;
use crate::server as engine;

/// Counters shared by the worker processes of one pool, which the status
/// page reports: `Scoreboard(rows)` (made by the prefork master before
/// forking, one row per worker; `len()` is the number of rows).
/// `release(row)` marks a worker gone, `worker(row)` reads its counters.
#[pyclass(frozen, module = "oxfcgi._oxfcgi", name = "Scoreboard")]
pub struct Scoreboard {
    pub(crate) board: Arc<engine::scoreboard::Scoreboard>,
}

#[pymethods]
impl Scoreboard {
    #[new]
    fn new(rows: usize) -> PyResult<Self> {
        Ok(Scoreboard { board: Arc::new(engine::scoreboard::Scoreboard::new(rows).map_err(EngineError::from)?) })
    }

    /// Number of worker rows.
    fn __len__(&self) -> usize {
        self.board.rows()
    }

    /// Mark row `row`'s worker as gone.
    fn release(&self, row: usize) {
        self.board.release(row);
    }

    /// Row `row`'s counters: pid, requests, active, accepted_conns, rejected, slow.
    fn worker<'py>(&self, py: Python<'py>, row: usize) -> PyResult<Bound<'py, PyDict>> {
        use std::sync::atomic::Ordering::Relaxed;
        let s = self.board.row(row);
        let d = PyDict::new(py);
        d.set_item("pid", s.pid.load(Relaxed))?;
        d.set_item("requests", s.requests.load(Relaxed))?;
        d.set_item("active", s.active.load(Relaxed))?;
        d.set_item("accepted_conns", s.accepted_conns.load(Relaxed))?;
        d.set_item("rejected", s.rejected.load(Relaxed))?;
        d.set_item("slow", s.slow.load(Relaxed))?;
        Ok(d)
    }
}
