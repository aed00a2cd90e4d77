//! Rate-limited log lines: a kind of message is logged at most once per
//! window, and the next line that goes out says how many were left out
//! ("... (812 more like this in the last 10 s)"), as nginx and journald
//! limit repeats, so that hostile traffic cannot fill the disk.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One kind of message and its window.
pub struct LogLimit {
    window: Duration,
    state: Mutex<State>,
}

struct State {
    last: Option<Instant>,
    suppressed: u64,
}

/// Windows of the engine's limited messages.
pub const WINDOW: Duration = Duration::from_secs(10);

impl LogLimit {
    pub const fn new(window: Duration) -> Self {
        LogLimit { window, state: Mutex::new(State { last: None, suppressed: 0 }) }
    }

    /// Whether a line of this kind may go out now; if so, the text to add to
    /// it about the lines left out since the last one ("" when none were).
    pub fn check(&self) -> Option<String> {
        self.check_at(Instant::now())
    }

    fn check_at(&self, now: Instant) -> Option<String> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.last.is_some_and(|last| now.saturating_duration_since(last) < self.window) {
            state.suppressed += 1;
            return None;
        }
        state.last = Some(now);
        let left_out = std::mem::take(&mut state.suppressed);
        Some(if left_out == 0 {
            String::new()
        } else {
            format!(" ({left_out} more like this in the last {} s)", self.window.as_secs())
        })
    }
}

/// Log `$level!(...)` through a `static` [`LogLimit`] `$limit`, with the
/// count of left-out lines appended.
#[macro_export]
macro_rules! log_limited {
    ($level:ident, $limit:expr, $($arg:tt)+) => {
        if let Some(more) = $limit.check() {
            tracing::$level!("{}{}", format_args!($($arg)+), more);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_window_then_the_count() {
        let limit = LogLimit::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limit.check_at(t0).as_deref(), Some(""));
        for i in 1..=812u64 {
            assert!(limit.check_at(t0 + Duration::from_millis(i)).is_none());
        }
        let next = limit.check_at(t0 + Duration::from_secs(11)).unwrap();
        assert_eq!(next, " (812 more like this in the last 10 s)");
        assert_eq!(limit.check_at(t0 + Duration::from_secs(22)).as_deref(), Some(""));
    }
}
