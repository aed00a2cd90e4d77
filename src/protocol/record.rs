//! Record framing (§3.3): the 8-byte header, content, padding.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{ProtocolError, FCGI_HEADER_LEN, FCGI_MAX_CONTENT_LEN, FCGI_VERSION_1};

/// The fixed 8-byte header that starts every record (`FCGI_Header`, §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub record_type: u8,
    pub request_id: u16,
    pub content_length: u16,
    pub padding_length: u8,
}

impl Header {
    /// Parse the first 8 bytes of `b` (which must hold at least 8 bytes).
    pub fn parse(b: &[u8]) -> Header {
        Header {
            version: b[0],
            record_type: b[1],
            request_id: u16::from_be_bytes([b[2], b[3]]),
            content_length: u16::from_be_bytes([b[4], b[5]]),
            padding_length: b[6],
        }
    }

    /// Bytes of content plus padding that follow the header.
    pub fn body_len(&self) -> usize {
        self.content_length as usize + self.padding_length as usize
    }
}

/// One decoded record: type, request id and content (padding dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub record_type: u8,
    pub request_id: u16,
    pub content: Bytes,
}

/// Take one complete record off the front of `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole record (nothing is
/// consumed), and [`ProtocolError::Version`] for a version other than
/// `FCGI_VERSION_1`. The content is split off without copying.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Record>, ProtocolError> {
    if buf.len() < FCGI_HEADER_LEN {
        return Ok(None);
    }
    let header = Header::parse(&buf[..FCGI_HEADER_LEN]);
    if header.version != FCGI_VERSION_1 {
        return Err(ProtocolError::Version(header.version));
    }
    let total = FCGI_HEADER_LEN + header.body_len();
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    buf.advance(FCGI_HEADER_LEN);
    let content = buf.split_to(header.content_length as usize).freeze();
    buf.advance(header.padding_length as usize);
    Ok(Some(Record { record_type: header.record_type, request_id: header.request_id, content }))
}

/// Padding that brings `content_len` up to a multiple of 8, as §3.3 recommends.
pub fn padding_for(content_len: usize) -> usize {
    (8 - content_len % 8) % 8
}

/// Append one record header for `content_len` bytes of content (at most 65535),
/// with the padding of [`padding_for`].
pub fn put_header(out: &mut BytesMut, record_type: u8, request_id: u16, content_len: usize) {
    put_header_padded(out, record_type, request_id, content_len, padding_for(content_len));
}

/// Append one record header for `content_len` bytes of content (at most 65535)
/// followed by `padding` bytes of padding (at most 255).
fn put_header_padded(out: &mut BytesMut, record_type: u8, request_id: u16, content_len: usize, padding: usize) {
    debug_assert!(content_len <= FCGI_MAX_CONTENT_LEN && padding <= 255);
    out.put_u8(FCGI_VERSION_1);
    out.put_u8(record_type);
    out.put_u16(request_id);
    out.put_u16(content_len as u16);
    out.put_u8(padding as u8);
    out.put_u8(0);
}

/// Append one record with `content` (at most 65535 bytes), padded to 8 bytes.
pub fn put_record(out: &mut BytesMut, record_type: u8, request_id: u16, content: &[u8]) {
    put_header(out, record_type, request_id, content.len());
    out.put_slice(content);
    out.put_bytes(0, padding_for(content.len()));
}

/// Append `data` as a stream of records of at most 65535 content bytes each.
///
/// Writes nothing for empty `data`: the empty record that ends a stream
/// (§3.3, "stream records") is written with [`put_record`] and `&[]`.
pub fn put_stream(out: &mut BytesMut, record_type: u8, request_id: u16, data: &[u8]) {
    out.reserve(data.len() + (data.len() / FCGI_MAX_CONTENT_LEN + 1) * (FCGI_HEADER_LEN + 7));
    for chunk in data.chunks(FCGI_MAX_CONTENT_LEN) {
        put_record(out, record_type, request_id, chunk);
    }
}

/// Largest content of one FCGI_STDERR record we send, in bytes.
pub const STDERR_RECORD_MAX: usize = 8192;

/// Append `data` as FCGI_STDERR records of at most [`STDERR_RECORD_MAX`] content
/// bytes, each padded to a multiple of 8 with 1 to 8 bytes, never 0.
///
/// HAProxy before commit 665703d45 (Sept 2023; Debian 12 ships 2.6.12 without it)
/// swaps its demux buffer with its static trash chunk when one STDERR record's
/// content is all it has read, that is when the record has no padding and ends
/// a read, or is larger than its 16 KiB buffer (`tune.bufsize`); it then frees
/// the trash chunk and crashes (`fcgi_io_cb`). With padding after the content and
/// records well under the buffer size that never happens. The spec allows any
/// padding up to 255 bytes (§3.3); the empty record that ends the stream has
/// nothing to copy and keeps [`put_record`]'s padding.
pub fn put_stderr(out: &mut BytesMut, request_id: u16, data: &[u8]) {
    for chunk in data.chunks(STDERR_RECORD_MAX) {
        let padding = 8 - chunk.len() % 8;
        put_header_padded(out, super::FCGI_STDERR, request_id, chunk.len(), padding);
        out.put_slice(chunk);
        out.put_bytes(0, padding);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::*;
    use proptest::prelude::*;

    fn encoded(record_type: u8, id: u16, content: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        put_record(&mut out, record_type, id, content);
        out
    }

    #[test]
    fn header_layout_matches_spec() {
        let out = encoded(FCGI_STDOUT, 0x0102, b"hello");
        assert_eq!(&out[..8], &[1, 6, 1, 2, 0, 5, 3, 0]);
        assert_eq!(out.len(), 16);
    }

    #[test]
    fn incomplete_input_consumes_nothing() {
        let full = encoded(FCGI_STDIN, 1, b"abcdef");
        for cut in 0..full.len() {
            let mut part = BytesMut::from(&full[..cut]);
            assert_eq!(decode(&mut part), Ok(None), "cut at {cut}");
            assert_eq!(part.len(), cut);
        }
    }

    #[test]
    fn wrong_version_is_an_error() {
        let mut buf = encoded(FCGI_STDIN, 1, b"x");
        buf[0] = 2;
        assert_eq!(decode(&mut buf), Err(ProtocolError::Version(2)));
    }

    #[test]
    fn peer_padding_up_to_255_is_skipped() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[1, FCGI_STDIN, 0, 1, 0, 2, 255, 0]);
        buf.extend_from_slice(b"hi");
        buf.extend_from_slice(&[0xAA; 255]);
        buf.extend_from_slice(&encoded(FCGI_STDIN, 1, b""));
        let first = decode(&mut buf).unwrap().unwrap();
        assert_eq!(&first.content[..], b"hi");
        let second = decode(&mut buf).unwrap().unwrap();
        assert!(second.content.is_empty());
        assert!(buf.is_empty());
    }

    #[test]
    fn stream_splits_at_65535() {
        let data = vec![7u8; 65535 * 2 + 10];
        let mut out = BytesMut::new();
        put_stream(&mut out, FCGI_STDOUT, 1, &data);
        let mut lengths = vec![];
        let mut joined = vec![];
        while let Some(r) = decode(&mut out).unwrap() {
            lengths.push(r.content.len());
            joined.extend_from_slice(&r.content);
        }
        assert_eq!(lengths, vec![65535, 65535, 10]);
        assert_eq!(joined, data);
    }

    #[test]
    fn stderr_records_always_have_padding_and_stay_small() {
        for len in [1, 7, 8, 16, 1800, STDERR_RECORD_MAX, STDERR_RECORD_MAX + 8, 40_000] {
            let data: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let mut buf = BytesMut::new();
            put_stderr(&mut buf, 3, &data);
            let mut joined = Vec::new();
            while !buf.is_empty() {
                let header = Header::parse(&buf[..FCGI_HEADER_LEN]);
                assert_eq!(header.record_type, FCGI_STDERR);
                assert!((1..=8).contains(&header.padding_length), "{len}: padding {}", header.padding_length);
                assert!(header.content_length as usize <= STDERR_RECORD_MAX, "{len}");
                assert_eq!((header.content_length as usize + header.padding_length as usize) % 8, 0);
                joined.extend_from_slice(&decode(&mut buf).unwrap().unwrap().content);
            }
            assert_eq!(joined, data, "{len}");
        }
    }

    proptest! {
        #[test]
        fn round_trip(records in proptest::collection::vec(
            (1u8..=11, any::<u16>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..20)) {
            let mut buf = BytesMut::new();
            for (t, id, c) in &records {
                put_record(&mut buf, *t, *id, c);
                prop_assert_eq!(buf.len() % 8, 0);
            }
            for (t, id, c) in &records {
                let r = decode(&mut buf).unwrap().unwrap();
                prop_assert_eq!(r.record_type, *t);
                prop_assert_eq!(r.request_id, *id);
                prop_assert_eq!(&r.content[..], &c[..]);
            }
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(_)) = decode(&mut buf) {}
        }
    }
}
