//! The status and ping pages, answered by the engine without entering
//! Python (php-fpm's `pm.status_path` and `ping.path`).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use super::scoreboard::{now_ms, Scoreboard};

/// What the status page reports beyond the scoreboard.
pub struct StatusContext<'a> {
    pub board: &'a Scoreboard,
    /// Python threads per worker.
    pub threads: usize,
    /// The in-flight limit per worker (`max_in_flight`).
    pub max_in_flight: usize,
    /// Connections waiting in the listen queue, if known (TCP only).
    pub listen_queue: Option<u64>,
    pub listen_backlog: u64,
}

fn secs_since(ms: u64) -> u64 {
    now_ms().saturating_sub(ms) / 1000
}

fn rfc3339(ms: u64) -> String {
    // Civil-from-days (Howard Hinnant), UTC.
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The status page: `(content type, body)`, plain text or (`json`) JSON,
/// with one entry per worker when `full`.
pub fn render(ctx: &StatusContext<'_>, json: bool, full: bool) -> (&'static str, String) {
    let b = ctx.board;
    let workers: Vec<_> = (0..b.rows()).map(|i| b.row(i)).filter(|s| s.pid.load(Ordering::Relaxed) != 0).collect();
    let active_requests: u64 = workers.iter().map(|s| s.active.load(Ordering::Relaxed)).sum();
    let active_workers = workers.iter().filter(|s| s.active.load(Ordering::Relaxed) > 0).count();
    let fields: Vec<(&str, String)> = vec![
        ("pool", "oxfcgi".into()),
        ("process manager", if b.rows() > 1 { "static".into() } else { "single".into() }),
        ("start time", rfc3339(b.started_ms())),
        ("start since", secs_since(b.started_ms()).to_string()),
        ("accepted conn", b.total(|s| &s.accepted_conns).to_string()),
        ("requests", b.total(|s| &s.requests).to_string()),
        ("listen queue", ctx.listen_queue.unwrap_or(0).to_string()),
        ("listen queue len", ctx.listen_backlog.to_string()),
        ("idle processes", (workers.len() - active_workers).to_string()),
        ("active processes", active_workers.to_string()),
        ("total processes", workers.len().to_string()),
        ("threads per process", ctx.threads.to_string()),
        ("active requests", active_requests.to_string()),
        ("idle threads", (workers.len() * ctx.threads).saturating_sub(active_requests as usize).to_string()),
        ("max active requests", b.max_active().to_string()),
        ("max in flight per process", ctx.max_in_flight.to_string()),
        ("max children reached", b.total(|s| &s.rejected).to_string()),
        ("slow requests", b.total(|s| &s.slow).to_string()),
    ];
    let numeric = |k: &str| !matches!(k, "pool" | "process manager" | "start time");
    let mut out = String::new();
    if json {
        out.push('{');
        for (i, (k, v)) in fields.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            if numeric(k) {
                let _ = write!(out, "{sep}\"{k}\":{v}");
            } else {
                let _ = write!(out, "{sep}\"{k}\":\"{v}\"");
            }
        }
        if full {
            out.push_str(",\"processes\":[");
            for (i, s) in workers.iter().enumerate() {
                let _ = write!(
                    out,
                    "{}{{\"pid\":{},\"start since\":{},\"requests\":{},\"active requests\":{},\"accepted conn\":{}}}",
                    if i == 0 { "" } else { "," },
                    s.pid.load(Ordering::Relaxed),
                    secs_since(s.started_ms.load(Ordering::Relaxed)),
                    s.requests.load(Ordering::Relaxed),
                    s.active.load(Ordering::Relaxed),
                    s.accepted_conns.load(Ordering::Relaxed)
                );
            }
            out.push(']');
        }
        out.push_str("}\n");
        ("application/json", out)
    } else {
        for (k, v) in &fields {
            let _ = writeln!(out, "{:<22}{v}", format!("{k}:"));
        }
        if full {
            for s in &workers {
                let _ = write!(
                    out,
                    "\n************************\npid:                  {}\nstart since:          {}\nrequests:             {}\nactive requests:      {}\naccepted conn:        {}\n",
                    s.pid.load(Ordering::Relaxed),
                    secs_since(s.started_ms.load(Ordering::Relaxed)),
                    s.requests.load(Ordering::Relaxed),
                    s.active.load(Ordering::Relaxed),
                    s.accepted_conns.load(Ordering::Relaxed)
                );
            }
        }
        ("text/plain", out)
    }
}

/// A whole CGI response (header block and body) for the engine to send.
pub fn response(status: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!("Status: {status}\r\nContent-Type: {content_type}\r\nCache-Control: no-store\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_fields() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_305_600_000), "2026-11-22T00:00:00Z");
        let board = Scoreboard::new(2).unwrap();
        board.claim(0, 7);
        board.request_started(0);
        let ctx =
            StatusContext { board: &board, threads: 4, max_in_flight: 16, listen_queue: None, listen_backlog: 1024 };
        let (ct, text) = render(&ctx, false, true);
        assert_eq!(ct, "text/plain");
        assert!(text.contains("active requests:      1"), "{text}");
        assert!(text.contains("total processes:      1"));
        assert!(text.contains("pid:                  7"));
        let (ct, json) = render(&ctx, true, false);
        assert_eq!(ct, "application/json");
        assert!(json.contains("\"requests\":1") && json.contains("\"pool\":\"oxfcgi\""), "{json}");
    }
}
