//! oxfcgi-loadgen: a FastCGI load generator.
//!
//! N connections (one tokio task each) send FastCGI RESPONDER requests back to back to a unix
//! or TCP address, either reusing the connection (`FCGI_KEEP_CONN`) or opening a new one per
//! request. Each response is read to `FCGI_END_REQUEST`; a request counts as an error when the
//! connection fails, the `protocolStatus` is not `FCGI_REQUEST_COMPLETE`, or the CGI `Status:`
//! is 500 or more. The request bytes are built once; latencies go into per-task vectors that are
//! merged and sorted at the end (exact percentiles).
//!
//! Only loopback and local sockets are meant as targets; every run is bounded by `--duration`
//! (and optionally `--requests`), and every request by `--timeout`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use clap::{ArgGroup, Parser};
use oxfcgi::protocol::params::put_pair;
use oxfcgi::protocol::record::{decode, put_record, put_stream};
use oxfcgi::protocol::{
    FCGI_BEGIN_REQUEST, FCGI_END_REQUEST, FCGI_KEEP_CONN, FCGI_MAX_CONTENT_LEN, FCGI_PARAMS, FCGI_REQUEST_COMPLETE,
    FCGI_RESPONDER, FCGI_STDERR, FCGI_STDIN, FCGI_STDOUT,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::Instant;

/// The request id every request uses (one request at a time per connection).
const REQUEST_ID: u16 = 1;
/// Header bytes kept to find the CGI `Status:` line.
const MAX_HEADER_SCAN: usize = 16 * 1024;

#[derive(Parser, Debug)]
#[command(name = "oxfcgi-loadgen", version, about = "FastCGI load generator")]
#[command(group(ArgGroup::new("conn_mode").args(["keep_conn", "per_request"])))]
#[command(group(ArgGroup::new("body").args(["body_size", "body_file"])))]
struct Args {
    /// Address: `unix:/path`, `/path` (unix socket) or `host:port` (TCP).
    addr: String,
    /// Concurrent connections (one task each).
    #[arg(short = 'c', long, default_value_t = 16)]
    connections: usize,
    /// Measured seconds (after the warm-up).
    #[arg(short = 'd', long, default_value_t = 10.0)]
    duration: f64,
    /// Keep each connection open across requests (FCGI_KEEP_CONN; the default).
    #[arg(long)]
    keep_conn: bool,
    /// A new connection for every request (FCGI_KEEP_CONN not set).
    #[arg(long)]
    per_request: bool,
    /// Request method (default: GET, or POST when a body is given).
    #[arg(short = 'm', long)]
    method: Option<String>,
    /// Send a request body of this many bytes.
    #[arg(short = 'b', long)]
    body_size: Option<usize>,
    /// Send this file's contents as the request body.
    #[arg(long)]
    body_file: Option<PathBuf>,
    /// Request path, optionally with `?query`.
    #[arg(short = 'p', long, default_value = "/")]
    path: String,
    /// Extra CGI param `NAME=VALUE` (repeatable).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// Seconds of load before measuring starts (not counted).
    #[arg(short = 'w', long, default_value_t = 1.0)]
    warmup: f64,
    /// Stop after this many measured requests in total (still bounded by --duration).
    #[arg(short = 'n', long)]
    requests: Option<u64>,
    /// Per-request timeout in seconds (counted as an error).
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Tokio worker threads for the generator itself.
    #[arg(short = 't', long, default_value_t = 1)]
    threads: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Debug)]
enum Target {
    Unix(PathBuf),
    Tcp(String),
}

impl Target {
    fn parse(s: &str) -> Target {
        if let Some(p) = s.strip_prefix("unix:") {
            Target::Unix(PathBuf::from(p))
        } else if s.starts_with('/') || s.starts_with('.') {
            Target::Unix(PathBuf::from(s))
        } else {
            Target::Tcp(s.strip_prefix("tcp:").unwrap_or(s).to_string())
        }
    }
}

enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

async fn connect(target: &Target, tcp_addr: Option<SocketAddr>) -> std::io::Result<Conn> {
    match target {
        Target::Unix(p) => Ok(Conn::Unix(UnixStream::connect(p).await?)),
        Target::Tcp(s) => {
            let stream = match tcp_addr {
                Some(a) => TcpStream::connect(a).await?,
                None => TcpStream::connect(s.as_str()).await?,
            };
            stream.set_nodelay(true)?;
            Ok(Conn::Tcp(stream))
        }
    }
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Connect,
    Io,
    /// The connection closed before FCGI_END_REQUEST.
    Closed,
    Protocol,
    /// protocolStatus other than FCGI_REQUEST_COMPLETE (e.g. FCGI_OVERLOADED).
    ProtocolStatus,
    /// CGI Status 500 or more.
    Status5xx,
    Timeout,
}

const FAILURE_KINDS: [(Failure, &str); 7] = [
    (Failure::Connect, "connect"),
    (Failure::Io, "io"),
    (Failure::Closed, "closed"),
    (Failure::Protocol, "protocol"),
    (Failure::ProtocolStatus, "protocol_status"),
    (Failure::Status5xx, "status_5xx"),
    (Failure::Timeout, "timeout"),
];

#[derive(Default)]
struct Response {
    status: u16,
    stdout_bytes: u64,
    stderr_bytes: u64,
    wire_bytes: u64,
    protocol_status: u8,
}

/// Read records up to FCGI_END_REQUEST. `Ok(None)`: EOF before any byte (a reused connection
/// the server had closed).
async fn read_response<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    header: &mut Vec<u8>,
) -> Result<Option<Response>, (Failure, String)> {
    let mut resp = Response { status: 0, ..Default::default() };
    let mut header_done = false;
    header.clear();
    let mut got_any = false;
    loop {
        loop {
            let rec = match decode(buf) {
                Ok(Some(rec)) => rec,
                Ok(None) => break,
                Err(e) => return Err((Failure::Protocol, e.to_string())),
            };
            match rec.record_type {
                FCGI_STDOUT => {
                    resp.stdout_bytes += rec.content.len() as u64;
                    if !header_done {
                        let room = MAX_HEADER_SCAN.saturating_sub(header.len());
                        header.extend_from_slice(&rec.content[..rec.content.len().min(room)]);
                        if let Some(status) = parse_status(header) {
                            resp.status = status;
                            header_done = true;
                        } else if header.len() >= MAX_HEADER_SCAN {
                            header_done = true;
                        }
                    }
                }
                FCGI_STDERR => resp.stderr_bytes += rec.content.len() as u64,
                FCGI_END_REQUEST => {
                    if rec.content.len() < 5 {
                        return Err((Failure::Protocol, "short FCGI_END_REQUEST".into()));
                    }
                    resp.protocol_status = rec.content[4];
                    if !header_done {
                        resp.status = parse_status(header).unwrap_or(0);
                    }
                    return Ok(Some(resp));
                }
                other => {
                    return Err((Failure::Protocol, format!("unexpected record type {other}")));
                }
            }
        }
        buf.reserve(64 * 1024);
        let n = match r.read_buf(buf).await {
            Ok(n) => n,
            // A reset before any byte of the answer: the server had closed a reused connection
            // (the caller retries once on a new one).
            Err(e)
                if !got_any
                    && matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe) =>
            {
                return Ok(None)
            }
            Err(e) => return Err((Failure::Io, e.to_string())),
        };
        if n == 0 {
            if !got_any && buf.is_empty() {
                return Ok(None);
            }
            return Err((Failure::Closed, "connection closed before FCGI_END_REQUEST".into()));
        }
        got_any = true;
        resp.wire_bytes += n as u64;
    }
}

/// The CGI status once the header block is complete: `Status: NNN` or 200 without one.
fn parse_status(h: &[u8]) -> Option<u16> {
    let end = find(h, b"\r\n\r\n").or_else(|| find(h, b"\n\n"))?;
    for line in h[..end].split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > 7 && line[..7].eq_ignore_ascii_case(b"status:") {
            let v = std::str::from_utf8(&line[7..]).ok()?.trim_start();
            return v.get(..3).and_then(|c| c.parse().ok()).or(Some(0));
        }
    }
    Some(200)
}

fn find(h: &[u8], needle: &[u8]) -> Option<usize> {
    h.windows(needle.len()).position(|w| w == needle)
}

/// Send the request and read the response at the same time (a large body must not deadlock
/// against a server that answers early).
async fn exchange<R, W>(
    r: &mut R,
    w: &mut W,
    request: &[u8],
    buf: &mut BytesMut,
    header: &mut Vec<u8>,
) -> Result<Option<Response>, (Failure, String)>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    buf.clear();
    let write = async {
        w.write_all(request).await.map_err(|e| (Failure::Io, e.to_string()))?;
        w.flush().await.map_err(|e| (Failure::Io, e.to_string()))
    };
    let read = read_response(r, buf, header);
    tokio::pin!(read);
    tokio::pin!(write);
    // Writing may fail with EPIPE/ECONNRESET when the server closed a reused connection; the
    // read side then reports EOF, which the caller retries on a fresh connection.
    let mut write_result: Option<Result<(), (Failure, String)>> = None;
    loop {
        tokio::select! {
            res = &mut write, if write_result.is_none() => {
                if res.is_err() {
                    write_result = Some(res);
                } else {
                    write_result = Some(Ok(()));
                }
            }
            res = &mut read => {
                return match (res, write_result) {
                    (Ok(None), _) => Ok(None),
                    (Ok(Some(resp)), _) => Ok(Some(resp)),
                    (Err(e), Some(Err(we))) if e.0 == Failure::Closed => Err(we),
                    (Err(e), _) => Err(e),
                };
            }
        }
    }
}

async fn exchange_on(
    conn: &mut Conn,
    request: &[u8],
    buf: &mut BytesMut,
    header: &mut Vec<u8>,
) -> Result<Option<Response>, (Failure, String)> {
    match conn {
        Conn::Unix(s) => {
            let (mut r, mut w) = s.split();
            exchange(&mut r, &mut w, request, buf, header).await
        }
        Conn::Tcp(s) => {
            let (mut r, mut w) = s.split();
            exchange(&mut r, &mut w, request, buf, header).await
        }
    }
}

struct Shared {
    target: Target,
    tcp_addr: Option<SocketAddr>,
    request: Vec<u8>,
    keep_conn: bool,
    measure_start: Instant,
    end: Instant,
    timeout: Duration,
    max_requests: Option<u64>,
    tickets: AtomicU64,
}

#[derive(Default)]
struct TaskStats {
    latencies_us: Vec<u32>,
    ok: u64,
    errors: [u64; FAILURE_KINDS.len()],
    stdout_bytes: u64,
    wire_bytes: u64,
    reconnects: u64,
    first_error: Option<String>,
    statuses: Vec<(u16, u64)>,
}

impl TaskStats {
    fn error(&mut self, kind: Failure, msg: String) {
        let i = FAILURE_KINDS.iter().position(|(k, _)| *k == kind).unwrap();
        self.errors[i] += 1;
        if self.first_error.is_none() {
            self.first_error = Some(msg);
        }
    }
    fn status(&mut self, s: u16) {
        match self.statuses.iter_mut().find(|(k, _)| *k == s) {
            Some((_, n)) => *n += 1,
            None => self.statuses.push((s, 1)),
        }
    }
}

async fn run_connection(sh: Arc<Shared>) -> TaskStats {
    let mut st = TaskStats { latencies_us: Vec::with_capacity(64 * 1024), ..Default::default() };
    let mut buf = BytesMut::with_capacity(128 * 1024);
    let mut header = Vec::with_capacity(1024);
    let mut conn: Option<Conn> = None;
    loop {
        let now = Instant::now();
        if now >= sh.end {
            break;
        }
        let measured = now >= sh.measure_start;
        if measured {
            if let Some(max) = sh.max_requests {
                if sh.tickets.fetch_add(1, Ordering::Relaxed) >= max {
                    break;
                }
            }
        }
        let started = Instant::now();
        let deadline = (started + sh.timeout).min(sh.end);
        let attempt = async {
            let mut retried = false;
            loop {
                let reused = conn.is_some();
                if conn.is_none() {
                    conn = Some(
                        connect(&sh.target, sh.tcp_addr)
                            .await
                            .map_err(|e| (Failure::Connect, format!("connect: {e}")))?,
                    );
                }
                let result = exchange_on(conn.as_mut().unwrap(), &sh.request, &mut buf, &mut header).await;
                match result {
                    Ok(Some(resp)) => return Ok((resp, retried)),
                    Ok(None) if reused && !retried => {
                        // The server closed an idle kept connection: retry once on a new one.
                        conn = None;
                        retried = true;
                    }
                    Ok(None) => return Err((Failure::Closed, "connection closed before any response".into())),
                    Err(e) => return Err(e),
                }
            }
        };
        let outcome = tokio::time::timeout_at(deadline, attempt).await;
        let finished = Instant::now();
        let in_window = measured && finished <= sh.end;
        match outcome {
            Ok(Ok((resp, retried))) => {
                if !sh.keep_conn {
                    conn = None;
                }
                if !in_window {
                    continue;
                }
                if retried {
                    st.reconnects += 1;
                }
                st.wire_bytes += resp.wire_bytes;
                st.stdout_bytes += resp.stdout_bytes;
                st.status(resp.status);
                if resp.protocol_status != FCGI_REQUEST_COMPLETE {
                    st.error(
                        Failure::ProtocolStatus,
                        format!("FCGI_END_REQUEST protocolStatus {}", resp.protocol_status),
                    );
                } else if resp.status >= 500 || resp.status == 0 {
                    st.error(Failure::Status5xx, format!("CGI Status {}", resp.status));
                } else {
                    st.ok += 1;
                    let us = (finished - started).as_micros().min(u32::MAX as u128) as u32;
                    st.latencies_us.push(us);
                }
            }
            Ok(Err((kind, msg))) => {
                conn = None;
                if in_window {
                    st.error(kind, msg);
                }
                // Do not spin on a refused or broken socket.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_elapsed) => {
                conn = None;
                if finished < sh.end && measured {
                    st.error(Failure::Timeout, "request timed out".into());
                }
            }
        }
    }
    st
}

fn build_request(args: &Args, body: &[u8], keep_conn: bool) -> Vec<u8> {
    let method = args
        .method
        .clone()
        .unwrap_or_else(|| if body.is_empty() { "GET".into() } else { "POST".into() })
        .to_ascii_uppercase();
    let (path, query) = match args.path.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (args.path.clone(), String::new()),
    };
    let (server_addr, server_port) = match Target::parse(&args.addr) {
        Target::Tcp(s) => match s.rsplit_once(':') {
            Some((h, p)) => (h.trim_matches(|c| c == '[' || c == ']').to_string(), p.to_string()),
            None => ("127.0.0.1".into(), "80".into()),
        },
        Target::Unix(_) => ("127.0.0.1".into(), "80".into()),
    };
    let content_length = if body.is_empty() && method == "GET" { String::new() } else { body.len().to_string() };
    let content_type = if body.is_empty() { "" } else { "application/octet-stream" };
    // What nginx's fastcgi_params send, with the usual WSGI mapping (SCRIPT_NAME "", PATH_INFO).
    let mut pairs: Vec<(String, String)> = vec![
        ("QUERY_STRING".into(), query),
        ("REQUEST_METHOD".into(), method),
        ("CONTENT_TYPE".into(), content_type.into()),
        ("CONTENT_LENGTH".into(), content_length),
        ("SCRIPT_NAME".into(), String::new()),
        ("PATH_INFO".into(), path.clone()),
        ("REQUEST_URI".into(), args.path.clone()),
        ("DOCUMENT_URI".into(), path),
        ("DOCUMENT_ROOT".into(), "/var/www/html".into()),
        ("SERVER_PROTOCOL".into(), "HTTP/1.1".into()),
        ("REQUEST_SCHEME".into(), "http".into()),
        ("GATEWAY_INTERFACE".into(), "CGI/1.1".into()),
        ("SERVER_SOFTWARE".into(), "nginx/1.22.1".into()),
        ("REMOTE_ADDR".into(), "127.0.0.1".into()),
        ("REMOTE_PORT".into(), "54321".into()),
        ("SERVER_ADDR".into(), server_addr),
        ("SERVER_PORT".into(), server_port),
        ("SERVER_NAME".into(), "localhost".into()),
        ("HTTP_HOST".into(), "localhost".into()),
        ("HTTP_USER_AGENT".into(), "oxfcgi-loadgen".into()),
        ("HTTP_ACCEPT".into(), "*/*".into()),
        ("HTTP_CONNECTION".into(), "keep-alive".into()),
    ];
    for p in &args.params {
        let (n, v) = p.split_once('=').unwrap_or((p.as_str(), ""));
        pairs.retain(|(k, _)| k != n);
        pairs.push((n.to_string(), v.to_string()));
    }
    let mut params = BytesMut::new();
    for (n, v) in &pairs {
        put_pair(&mut params, n.as_bytes(), v.as_bytes());
    }

    let mut out = BytesMut::with_capacity(params.len() + body.len() + body.len() / FCGI_MAX_CONTENT_LEN * 16 + 128);
    let role = FCGI_RESPONDER.to_be_bytes();
    let flags = if keep_conn { FCGI_KEEP_CONN } else { 0 };
    put_record(&mut out, FCGI_BEGIN_REQUEST, REQUEST_ID, &[role[0], role[1], flags, 0, 0, 0, 0, 0]);
    put_stream(&mut out, FCGI_PARAMS, REQUEST_ID, &params);
    put_record(&mut out, FCGI_PARAMS, REQUEST_ID, &[]);
    put_stream(&mut out, FCGI_STDIN, REQUEST_ID, body);
    put_record(&mut out, FCGI_STDIN, REQUEST_ID, &[]);
    out.to_vec()
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn main() {
    let args = Args::parse();
    if args.connections == 0 {
        eprintln!("oxfcgi-loadgen: --connections must be at least 1");
        std::process::exit(2);
    }
    let body: Vec<u8> = if let Some(f) = &args.body_file {
        match std::fs::read(f) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("oxfcgi-loadgen: cannot read {}: {e}", f.display());
                std::process::exit(2);
            }
        }
    } else if let Some(n) = args.body_size {
        (0..n).map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789"[i % 36]).collect()
    } else {
        Vec::new()
    };
    let keep_conn = !args.per_request;
    let request = build_request(&args, &body, keep_conn);
    drop(body);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime");
    let target = Target::parse(&args.addr);
    let report = rt.block_on(async {
        let tcp_addr = match &target {
            Target::Tcp(s) => match tokio::net::lookup_host(s.as_str()).await {
                Ok(mut it) => it.next(),
                Err(e) => {
                    eprintln!("oxfcgi-loadgen: cannot resolve {s}: {e}");
                    std::process::exit(2);
                }
            },
            Target::Unix(_) => None,
        };
        let start = Instant::now();
        let warmup = Duration::from_secs_f64(args.warmup.max(0.0));
        let measure_start = start + warmup;
        let end = measure_start + Duration::from_secs_f64(args.duration.max(0.001));
        let shared = Arc::new(Shared {
            target: target.clone(),
            tcp_addr,
            request,
            keep_conn,
            measure_start,
            end,
            timeout: Duration::from_secs_f64(args.timeout.max(0.001)),
            max_requests: args.requests,
            tickets: AtomicU64::new(0),
        });
        let handles: Vec<_> = (0..args.connections).map(|_| tokio::spawn(run_connection(shared.clone()))).collect();
        let mut all = TaskStats::default();
        let mut last_finish = measure_start;
        for h in handles {
            let st = h.await.expect("connection task panicked");
            all.latencies_us.extend_from_slice(&st.latencies_us);
            all.ok += st.ok;
            for i in 0..FAILURE_KINDS.len() {
                all.errors[i] += st.errors[i];
            }
            all.stdout_bytes += st.stdout_bytes;
            all.wire_bytes += st.wire_bytes;
            all.reconnects += st.reconnects;
            if all.first_error.is_none() {
                all.first_error = st.first_error;
            }
            for (s, n) in st.statuses {
                match all.statuses.iter_mut().find(|(k, _)| *k == s) {
                    Some((_, m)) => *m += n,
                    None => all.statuses.push((s, n)),
                }
            }
        }
        let now = Instant::now();
        if now > last_finish {
            last_finish = now.min(end);
        }
        let elapsed = (last_finish - measure_start).as_secs_f64().max(1e-9);
        (all, elapsed)
    });
    rt.shutdown_timeout(Duration::from_secs(1));

    let (mut all, elapsed) = report;
    all.latencies_us.sort_unstable();
    all.statuses.sort();
    let errors: u64 = all.errors.iter().sum();
    let lat = &all.latencies_us;
    let mean =
        if lat.is_empty() { 0.0 } else { lat.iter().map(|&v| v as f64).sum::<f64>() / lat.len() as f64 / 1000.0 };
    let rps = all.ok as f64 / elapsed;
    let mode = if keep_conn { "keep-conn" } else { "per-request" };
    if args.json {
        let kinds: Vec<String> = FAILURE_KINDS
            .iter()
            .zip(all.errors.iter())
            .filter(|(_, n)| **n > 0)
            .map(|((_, name), n)| format!("{}:{}", json_str(name), n))
            .collect();
        let statuses: Vec<String> = all.statuses.iter().map(|(s, n)| format!("\"{s}\":{n}")).collect();
        println!(
            "{{\"addr\":{},\"connections\":{},\"mode\":\"{}\",\"duration_s\":{:.3},\"requests\":{},\"rps\":{:.1},\"errors\":{},\"error_kinds\":{{{}}},\"first_error\":{},\"statuses\":{{{}}},\"latency_ms\":{{\"mean\":{:.3},\"p50\":{:.3},\"p90\":{:.3},\"p99\":{:.3},\"p999\":{:.3},\"max\":{:.3}}},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3},\"bytes_received\":{},\"stdout_bytes\":{},\"reconnects\":{}}}",
            json_str(&args.addr),
            args.connections,
            mode,
            elapsed,
            all.ok,
            rps,
            errors,
            kinds.join(","),
            all.first_error.as_deref().map(json_str).unwrap_or_else(|| "null".into()),
            statuses.join(","),
            mean,
            percentile(lat, 50.0),
            percentile(lat, 90.0),
            percentile(lat, 99.0),
            percentile(lat, 99.9),
            lat.last().map(|&v| v as f64 / 1000.0).unwrap_or(0.0),
            percentile(lat, 50.0),
            percentile(lat, 99.0),
            lat.last().map(|&v| v as f64 / 1000.0).unwrap_or(0.0),
            all.wire_bytes,
            all.stdout_bytes,
            all.reconnects,
        );
    } else {
        println!(
            "oxfcgi-loadgen {} | {} connections, {}, {:.1} s measured",
            args.addr, args.connections, mode, elapsed
        );
        println!("  requests   {} ok, {:.1} req/s", all.ok, rps);
        println!(
            "  latency ms mean {:.3}  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            mean,
            percentile(lat, 50.0),
            percentile(lat, 90.0),
            percentile(lat, 99.0),
            percentile(lat, 99.9),
            lat.last().map(|&v| v as f64 / 1000.0).unwrap_or(0.0)
        );
        let kinds: Vec<String> = FAILURE_KINDS
            .iter()
            .zip(all.errors.iter())
            .filter(|(_, n)| **n > 0)
            .map(|((_, name), n)| format!("{name} {n}"))
            .collect();
        println!(
            "  errors     {}{}",
            errors,
            if kinds.is_empty() { String::new() } else { format!(" ({})", kinds.join(", ")) }
        );
        if let Some(e) = &all.first_error {
            println!("  first error: {e}");
        }
        let statuses: Vec<String> = all.statuses.iter().map(|(s, n)| format!("{s}: {n}")).collect();
        println!("  statuses   {}", statuses.join(", "));
        println!(
            "  received   {:.2} MB on the wire, {:.2} MB stdout ({:.2} MB/s); {} reconnects",
            all.wire_bytes as f64 / 1e6,
            all.stdout_bytes as f64 / 1e6,
            all.stdout_bytes as f64 / 1e6 / elapsed,
            all.reconnects
        );
    }
    if all.ok == 0 {
        std::process::exit(1);
    }
}
