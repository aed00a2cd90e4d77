//! Fixed-layout bodies: FCGI_BEGIN_REQUEST (§5.1), FCGI_END_REQUEST (§5.5),
//! FCGI_UNKNOWN_TYPE (§4.2) and the FCGI_GET_VALUES exchange (§4.1).

use bytes::{Bytes, BytesMut};

use super::params::{decode_pairs, put_pair};
use super::record::put_record;
use super::*;

/// The body of FCGI_BEGIN_REQUEST: the role asked for and the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BeginRequest {
    pub role: u16,
    pub flags: u8,
}

impl BeginRequest {
    /// Parse an 8-byte `FCGI_BeginRequestBody`.
    pub fn parse(content: &[u8]) -> Result<BeginRequest, ProtocolError> {
        if content.len() != 8 {
            return Err(ProtocolError::BodyLength { record_type: FCGI_BEGIN_REQUEST, len: content.len(), expected: 8 });
        }
        Ok(BeginRequest { role: u16::from_be_bytes([content[0], content[1]]), flags: content[2] })
    }

    /// Whether the web server asked to keep the connection open (`FCGI_KEEP_CONN`).
    pub fn keep_conn(&self) -> bool {
        self.flags & FCGI_KEEP_CONN != 0
    }
}

/// Append an FCGI_END_REQUEST record (`appStatus`, `protocolStatus`).
pub fn put_end_request(out: &mut BytesMut, request_id: u16, app_status: u32, protocol_status: u8) {
    let mut body = [0u8; 8];
    body[..4].copy_from_slice(&app_status.to_be_bytes());
    body[4] = protocol_status;
    put_record(out, FCGI_END_REQUEST, request_id, &body);
}

/// Append an FCGI_UNKNOWN_TYPE record naming `unknown_type` (request id 0).
pub fn put_unknown_type(out: &mut BytesMut, unknown_type: u8) {
    put_record(out, FCGI_UNKNOWN_TYPE, FCGI_NULL_REQUEST_ID, &[unknown_type, 0, 0, 0, 0, 0, 0, 0]);
}

/// The values this application reports through FCGI_GET_VALUES.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// `FCGI_MAX_CONNS`: connections accepted at once.
    pub max_conns: usize,
    /// `FCGI_MAX_REQS`: requests in flight at once.
    pub max_reqs: usize,
    /// `FCGI_MPXS_CONNS`: whether one connection may carry concurrent requests.
    pub mpxs_conns: bool,
}

/// Answer an FCGI_GET_VALUES query: a GET_VALUES_RESULT record with the
/// variables asked for that this application knows, each once, in the order
/// first asked; unknown names and repeats are left out (§4.1). The reply is
/// three short pairs at most, so it always fits one record whole.
pub fn put_get_values_result(out: &mut BytesMut, query: &Bytes, caps: &Capabilities) -> Result<(), ProtocolError> {
    let names = decode_pairs(query).map_err(|reason| ProtocolError::Params { stream: "FCGI_GET_VALUES", reason })?;
    let mut body = BytesMut::new();
    let mut answered = [false; 3];
    for (name, _) in names {
        let (i, value) = match &name[..] {
            n if n == FCGI_MAX_CONNS.as_bytes() => (0, caps.max_conns.to_string()),
            n if n == FCGI_MAX_REQS.as_bytes() => (1, caps.max_reqs.to_string()),
            n if n == FCGI_MPXS_CONNS.as_bytes() => (2, (caps.mpxs_conns as u8).to_string()),
            _ => continue,
        };
        if !std::mem::replace(&mut answered[i], true) {
            put_pair(&mut body, &name, value.as_bytes());
        }
    }
    debug_assert!(body.len() <= FCGI_MAX_CONTENT_LEN);
    put_record(out, FCGI_GET_VALUES_RESULT, FCGI_NULL_REQUEST_ID, &body);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::record::decode;

    #[test]
    fn get_values_answers_known_names_only() {
        let mut q = BytesMut::new();
        for n in [FCGI_MAX_CONNS, "FOO", FCGI_MAX_REQS, FCGI_MPXS_CONNS] {
            put_pair(&mut q, n.as_bytes(), b"");
        }
        let caps = Capabilities { max_conns: 1024, max_reqs: 16, mpxs_conns: true };
        let mut out = BytesMut::new();
        put_get_values_result(&mut out, &q.freeze(), &caps).unwrap();
        let rec = decode(&mut out).unwrap().unwrap();
        assert_eq!((rec.record_type, rec.request_id), (FCGI_GET_VALUES_RESULT, 0));
        let pairs = decode_pairs(&rec.content).unwrap();
        let pairs: Vec<(&[u8], &[u8])> = pairs.iter().map(|(n, v)| (&n[..], &v[..])).collect();
        assert_eq!(
            pairs,
            vec![
                (&b"FCGI_MAX_CONNS"[..], &b"1024"[..]),
                (&b"FCGI_MAX_REQS"[..], &b"16"[..]),
                (&b"FCGI_MPXS_CONNS"[..], &b"1"[..])
            ]
        );
    }

    #[test]
    fn repeated_names_are_answered_once_and_the_reply_is_whole() {
        let mut q = BytesMut::new();
        for _ in 0..4000 {
            put_pair(&mut q, FCGI_MAX_CONNS.as_bytes(), b"");
            put_pair(&mut q, FCGI_MAX_REQS.as_bytes(), b"");
        }
        let caps = Capabilities { max_conns: 1024, max_reqs: 16, mpxs_conns: false };
        let mut out = BytesMut::new();
        put_get_values_result(&mut out, &q.freeze(), &caps).unwrap();
        let rec = decode(&mut out).unwrap().unwrap();
        let pairs = decode_pairs(&rec.content).unwrap();
        assert_eq!(pairs.len(), 2, "each known name once");
        assert!(out.is_empty(), "one record");
    }

    #[test]
    fn begin_request_body() {
        let b = BeginRequest::parse(&[0, 1, 1, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!(b.role, FCGI_RESPONDER);
        assert!(b.keep_conn());
        assert!(BeginRequest::parse(&[0, 1, 1]).is_err());
    }

    #[test]
    fn end_request_and_unknown_type_layout() {
        let mut out = BytesMut::new();
        put_end_request(&mut out, 1, 938, FCGI_REQUEST_COMPLETE);
        assert_eq!(&out[..], &[1, 3, 0, 1, 0, 8, 0, 0, 0, 0, 3, 0xaa, 0, 0, 0, 0]);
        let mut out = BytesMut::new();
        put_unknown_type(&mut out, 42);
        assert_eq!(&out[8..10], &[42, 0]);
        assert_eq!(&out[..4], &[1, 11, 0, 0]);
    }
}
