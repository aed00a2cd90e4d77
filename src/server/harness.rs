//! One connection task fed arbitrary bytes, for the fuzzer (`fuzz/`) and for
//! regression tests: a paused clock (every timeout passes in virtual time,
//! so a run that does not end is a hang, not a slow test), and a dummy
//! application that answers, streams, stops early or stalls, chosen by
//! request id.
//!
//! [`run_connection`] panics when the server misbehaves: it writes something
//! that is not whole FastCGI records, or the connection is still open a
//! virtual hour after the peer finished sending and closed its side.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::request::{Handler, Output, Request};
use super::shutdown::StopHandle;
use super::{Config, ConnTicket, ScoreboardRow, Shared};
use crate::protocol::record;

/// What the dummy application does with a request, by `request_id % 4`.
struct Dummy;

impl Handler for Dummy {
    fn dispatch(&self, mut request: Request) {
        tokio::spawn(async move {
            if !request.control.start() {
                return;
            }
            let sink = request.sink.clone();
            let head = Output::Stdout(Bytes::from_static(b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n"));
            match request.request_id % 4 {
                // Echo the body.
                0 => {
                    let _ = sink.send(head).await;
                    while let Ok(Some(chunk)) = request.stdin.next().await {
                        if sink.send(Output::Stdout(chunk)).await.is_err() {
                            break;
                        }
                    }
                }
                // Stream without reading the body, a little at a time.
                1 => {
                    let _ = sink.send(head).await;
                    for _ in 0..20 {
                        if request.control.is_aborted() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let _ = sink.send(Output::Stdout(Bytes::from(vec![b'x'; 40_000]))).await;
                        let _ = sink.send(Output::Stderr(Bytes::from_static(b"a line for the error log\n"))).await;
                    }
                }
                // Answer at once, without reading the body.
                2 => {
                    let _ = sink.send(head).await;
                }
                // Stall for a while (virtual time), then answer.
                _ => {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    let _ = sink.send(head).await;
                }
            }
            let _ = sink.send(Output::End { app_status: 0 }).await;
            drop(request.permit);
        });
    }
}

/// A configuration with small limits, so that the fuzzer reaches them.
pub fn small_config(multiplexed: bool) -> Config {
    Config {
        multiplexed,
        max_in_flight: 4,
        max_params_size: 4096,
        max_params: 64,
        roles: vec![crate::protocol::Role::Responder, crate::protocol::Role::Filter],
        ..Config::default()
    }
}

/// Feed `input` to one connection task (split into writes at the byte
/// values of `cuts`, so record boundaries fall anywhere), then close the
/// peer's sending side and read everything the server writes until it
/// closes. Returns the bytes written. Panics as the module says.
pub fn run_connection(config: Config, input: &[u8], cuts: &[u8]) -> Vec<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let row = ScoreboardRow::alone().expect("an anonymous mapping");
        let shared = Arc::new(Shared::new(config, Arc::new(Dummy), row, StopHandle::new(), None));
        let permit =
            Arc::new(tokio::sync::Semaphore::new(1)).try_acquire_owned().expect("a fresh semaphore has a permit");
        let ticket = ConnTicket::new(permit, shared.row.clone(), true);
        let (rd, wr) = tokio::io::split(theirs);
        let task = tokio::spawn(super::connection::serve_connection(
            rd,
            wr,
            "fuzz".into(),
            shared,
            CancellationToken::new(),
            ticket,
        ));
        let (mut peer_rd, mut peer_wr) = tokio::io::split(ours);
        let input = input.to_vec();
        let cuts = cuts.to_vec();
        let writer = async move {
            let mut rest = &input[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = cuts.get(i).map_or(rest.len(), |&c| (c as usize + 1).min(rest.len()));
                i += 1;
                if peer_wr.write_all(&rest[..n]).await.is_err() {
                    return;
                }
                rest = &rest[n..];
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let _ = peer_wr.shutdown().await;
        };
        let reader = async move {
            let mut out = Vec::new();
            let _ = peer_rd.read_to_end(&mut out).await;
            out
        };
        let run = async { tokio::join!(writer, reader, task).1 };
        let out = match tokio::time::timeout(Duration::from_secs(3600), run).await {
            Ok(out) => out,
            Err(_) => panic!("the connection was still open an hour (virtual) after the peer closed its side"),
        };
        let mut buf = BytesMut::from(&out[..]);
        loop {
            match record::decode(&mut buf) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => panic!("the server wrote something that is not a FastCGI record: {e}"),
            }
        }
        assert!(buf.is_empty(), "the server's output ends inside a record ({} bytes left)", buf.len());
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::params::put_pair;
    use crate::protocol::record::{put_record, put_stream};
    use crate::protocol::*;

    fn request(id: u16, flags: u8, body: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        put_record(&mut out, FCGI_BEGIN_REQUEST, id, &[0, 1, flags, 0, 0, 0, 0, 0]);
        let mut p = BytesMut::new();
        put_pair(&mut p, b"REQUEST_METHOD", b"POST");
        put_pair(&mut p, b"REQUEST_URI", b"/x");
        put_stream(&mut out, FCGI_PARAMS, id, &p);
        put_record(&mut out, FCGI_PARAMS, id, &[]);
        put_stream(&mut out, FCGI_STDIN, id, body);
        put_record(&mut out, FCGI_STDIN, id, &[]);
        out
    }

    #[test]
    fn every_behaviour_of_the_dummy_ends() {
        for id in 1..=4u16 {
            let out = run_connection(small_config(false), &request(id, 0, b"hello"), &[3, 200, 7]);
            assert!(!out.is_empty(), "request {id} got an answer");
        }
    }

    #[test]
    fn kept_open_and_multiplexed_requests_end() {
        let mut input = request(1, FCGI_KEEP_CONN, b"a");
        input.extend_from_slice(&request(2, FCGI_KEEP_CONN, b"b"));
        input.extend_from_slice(&request(3, 0, b""));
        run_connection(small_config(false), &input, &[]);
        run_connection(small_config(true), &input, &[1, 1, 1, 1]);
    }

    #[test]
    fn the_reproducers_of_the_deadline_issue_end() {
        // STDIN before the end of PARAMS, then EOF.
        let mut input = BytesMut::new();
        put_record(&mut input, FCGI_BEGIN_REQUEST, 1, &[0, 1, 0, 0, 0, 0, 0, 0]);
        let mut p = BytesMut::new();
        put_pair(&mut p, b"A", b"b");
        put_record(&mut input, FCGI_PARAMS, 1, &p);
        for _ in 0..9 {
            put_record(&mut input, FCGI_STDIN, 1, b"x");
        }
        assert!(run_connection(small_config(false), &input, &[]).is_empty());
        // A head that never ends.
        let mut input = BytesMut::new();
        put_record(&mut input, FCGI_BEGIN_REQUEST, 1, &[0, 1, 1, 0, 0, 0, 0, 0]);
        run_connection(small_config(false), &input[..5], &[]);
    }
}
