//! Name-value pairs (§3.4): the content of the FCGI_PARAMS stream and of
//! FCGI_GET_VALUES / FCGI_GET_VALUES_RESULT.
//!
//! PARAMS is a *stream* (§3.3): a pair may be split across records anywhere,
//! even inside a length (the spec's Appendix B, example 2, does it). So the
//! stream is collected, within a size limit, and decoded once it ends.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};

/// Why a name-value block cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairsError {
    /// Malformed, with what is wrong.
    Malformed(&'static str),
    /// More pairs than the limit allows.
    TooMany,
}

/// Decode a complete name-value pair block. Names and values are slices of
/// `data` (no copies). Errors name what is malformed.
pub fn decode_pairs(data: &Bytes) -> Result<Vec<(Bytes, Bytes)>, &'static str> {
    decode_pairs_limited(data, usize::MAX).map_err(|e| match e {
        PairsError::Malformed(why) => why,
        PairsError::TooMany => "too many pairs",
    })
}

/// [`decode_pairs`], refusing more than `max_pairs` pairs (decoding stops at
/// the first one over, so a hostile stream costs no more than the limit).
pub fn decode_pairs_limited(data: &Bytes, max_pairs: usize) -> Result<Vec<(Bytes, Bytes)>, PairsError> {
    let mut pairs = Vec::with_capacity(32);
    let mut pos = 0usize;
    while pos < data.len() {
        if pairs.len() == max_pairs {
            return Err(PairsError::TooMany);
        }
        let name_len = read_length(data, &mut pos).map_err(PairsError::Malformed)?;
        let value_len = read_length(data, &mut pos).map_err(PairsError::Malformed)?;
        let name_end = pos.checked_add(name_len).ok_or(PairsError::Malformed("length overflow"))?;
        let value_end = name_end.checked_add(value_len).ok_or(PairsError::Malformed("length overflow"))?;
        if value_end > data.len() {
            return Err(PairsError::Malformed("a name or value runs past the end of the stream"));
        }
        pairs.push((data.slice(pos..name_end), data.slice(name_end..value_end)));
        pos = value_end;
    }
    Ok(pairs)
}

fn read_length(data: &[u8], pos: &mut usize) -> Result<usize, &'static str> {
    let first = *data.get(*pos).ok_or("the stream ends inside a length")?;
    if first & 0x80 == 0 {
        *pos += 1;
        return Ok(first as usize);
    }
    let bytes = data.get(*pos..*pos + 4).ok_or("the stream ends inside a 4-byte length")?;
    *pos += 4;
    Ok(u32::from_be_bytes([bytes[0] & 0x7f, bytes[1], bytes[2], bytes[3]]) as usize)
}

fn put_length(out: &mut BytesMut, len: usize) {
    if len < 128 {
        out.put_u8(len as u8);
    } else {
        out.put_u32(len as u32 | 0x8000_0000);
    }
}

/// Append one pair, using 1-byte lengths below 128 and 4-byte lengths otherwise.
pub fn put_pair(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    put_length(out, name.len());
    put_length(out, value.len());
    out.put_slice(name);
    out.put_slice(value);
}

/// A name-value stream grew past its byte limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverLimit {
    pub limit: usize,
}

/// Collects the FCGI_PARAMS stream of one request, enforcing `limit` bytes.
#[derive(Debug)]
pub struct ParamsCollector {
    buf: BytesMut,
    limit: usize,
}

impl ParamsCollector {
    /// A collector that refuses more than `limit` bytes of stream content.
    pub fn new(limit: usize) -> Self {
        ParamsCollector { buf: BytesMut::new(), limit }
    }

    /// Add one record's content; [`OverLimit`] when the total would exceed the limit.
    pub fn push(&mut self, content: &[u8]) -> Result<(), OverLimit> {
        if self.buf.len() + content.len() > self.limit {
            return Err(OverLimit { limit: self.limit });
        }
        self.buf.extend_from_slice(content);
        Ok(())
    }

    /// The stream ended: decode every pair, at most `max_pairs` of them.
    pub fn finish(self, max_pairs: usize) -> Result<Vec<(Bytes, Bytes)>, PairsError> {
        decode_pairs_limited(&self.buf.freeze(), max_pairs)
    }
}

/// Merge repeated names, keeping the position of the first occurrence.
///
/// HTTP header variables (`HTTP_*`) that occur more than once are request
/// header lines the web server did not combine (nginx before 1.23 sends one
/// param per header line): they are joined as RFC 9110 §5.3 combines field
/// lines, with `", "`, except `HTTP_COOKIE`, joined with `"; "` (RFC 6265 §5.4).
/// Any other repeated name is a configuration that sets a variable twice
/// (`include fastcgi_params;` then `fastcgi_param SCRIPT_NAME …;`): the last
/// value wins, as in php-fpm.
pub fn merge_duplicates(pairs: Vec<(Bytes, Bytes)>) -> Vec<(Bytes, Bytes)> {
    if pairs.len() <= LINEAR_MERGE && !repeats_a_fingerprint(&pairs) {
        // No two names alike (the usual case): nothing to merge, nothing to copy.
        return pairs;
    }
    let mut out: Vec<(Bytes, Bytes)> = Vec::with_capacity(pairs.len());
    if pairs.len() <= LINEAR_MERGE {
        // Params are usually few (nginx sends tens): a scan beats hashing. Names are
        // compared by a fingerprint first (most share the prefix `HTTP_`).
        let mut prints: Vec<u64> = Vec::with_capacity(pairs.len());
        for (name, value) in pairs {
            let print = fingerprint(&name);
            match prints.iter().zip(&out).position(|(p, (n, _))| *p == print && *n == name) {
                None => {
                    prints.push(print);
                    out.push((name, value));
                }
                Some(i) => merge_into(&mut out[i], value),
            }
        }
    } else {
        // Many params (a hostile or odd client): stay linear in their number.
        let mut seen: HashMap<Bytes, usize> = HashMap::with_capacity(pairs.len());
        for (name, value) in pairs {
            match seen.get(&name) {
                None => {
                    seen.insert(name.clone(), out.len());
                    out.push((name, value));
                }
                Some(&i) => merge_into(&mut out[i], value),
            }
        }
    }
    out
}

/// Whether two of at most [`LINEAR_MERGE`] names have the same [`fingerprint`]
/// (every repeated name does; a false alarm only costs the full merge): an
/// open-addressing table twice that size, on the stack.
fn repeats_a_fingerprint(pairs: &[(Bytes, Bytes)]) -> bool {
    const SLOTS: usize = LINEAR_MERGE * 2;
    // A print with the top bit set is never 0, the empty slot.
    let mut table = [0u64; SLOTS];
    for (name, _) in pairs {
        let print = fingerprint(name) | 1 << 63;
        let mut slot = (print.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 57) as usize % SLOTS;
        loop {
            match table[slot] {
                0 => {
                    table[slot] = print;
                    break;
                }
                seen if seen == print => return true,
                _ => slot = (slot + 1) % SLOTS,
            }
        }
    }
    false
}

/// The length and the last (up to) eight bytes of a name: equal names have equal prints.
fn fingerprint(name: &[u8]) -> u64 {
    let tail = &name[name.len().saturating_sub(8)..];
    let mut word = [0u8; 8];
    word[..tail.len()].copy_from_slice(tail);
    u64::from_le_bytes(word) ^ ((name.len() as u64) << 56)
}

/// Up to this many pairs, [`merge_duplicates`] compares names pairwise.
const LINEAR_MERGE: usize = 64;

fn merge_into((name, existing): &mut (Bytes, Bytes), value: Bytes) {
    if name.starts_with(b"HTTP_") {
        let sep: &[u8] = if &name[..] == b"HTTP_COOKIE" { b"; " } else { b", " };
        let mut joined = BytesMut::with_capacity(existing.len() + sep.len() + value.len());
        joined.extend_from_slice(existing);
        joined.extend_from_slice(sep);
        joined.extend_from_slice(&value);
        *existing = joined.freeze();
    } else {
        *existing = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = BytesMut::new();
        for (n, v) in pairs {
            put_pair(&mut out, n, v);
        }
        out.to_vec()
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn one_and_four_byte_lengths() {
        let long = vec![b'v'; 200];
        let data = encode(&[(b"A", b"1"), (b"LONG", &long)]);
        assert_eq!(&data[..4], &[1, 1, b'A', b'1']);
        assert_eq!(&data[4..9], &[4, 0x80, 0, 0, 200]);
        let pairs = decode_pairs(&Bytes::from(data)).unwrap();
        assert_eq!(pairs[1].1.len(), 200);
    }

    #[test]
    fn split_at_every_byte_boundary() {
        let long = vec![b'x'; 300];
        let data = encode(&[(b"SCRIPT_NAME", b"/app"), (b"HTTP_X", &long), (b"E", b"")]);
        let expected = decode_pairs(&Bytes::from(data.clone())).unwrap();
        for cut in 0..=data.len() {
            let mut c = ParamsCollector::new(1 << 20);
            c.push(&data[..cut]).unwrap();
            c.push(&data[cut..]).unwrap();
            assert_eq!(c.finish(usize::MAX).unwrap(), expected, "cut at {cut}");
        }
    }

    #[test]
    fn truncated_streams_are_errors() {
        let data = encode(&[(b"NAME", b"value")]);
        for cut in 1..data.len() {
            assert!(decode_pairs(&Bytes::copy_from_slice(&data[..cut])).is_err(), "cut {cut}");
        }
        assert!(decode_pairs(&Bytes::from_static(&[0x80, 0, 0])).is_err());
        assert!(decode_pairs(&Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 1, 0])).is_err());
    }

    #[test]
    fn limit_is_enforced() {
        let mut c = ParamsCollector::new(10);
        assert!(c.push(&[0; 6]).is_ok());
        assert!(c.push(&[0; 4]).is_ok());
        assert!(c.push(&[0; 1]).is_err());
    }

    #[test]
    fn duplicates_merge_like_a_web_server_would() {
        let merged = merge_duplicates(vec![
            (b("HTTP_COOKIE"), b("a=1")),
            (b("SCRIPT_NAME"), b("/x")),
            (b("HTTP_X_FOO"), b("x")),
            (b("HTTP_COOKIE"), b("b=2")),
            (b("HTTP_X_FOO"), b("y")),
            (b("SCRIPT_NAME"), b("")),
        ]);
        assert_eq!(
            merged,
            vec![(b("HTTP_COOKIE"), b("a=1; b=2")), (b("SCRIPT_NAME"), b("")), (b("HTTP_X_FOO"), b("x, y")),]
        );
    }

    /// What merging means, written plainly (no fingerprints, no fast path).
    fn merged_naively(pairs: &[(Bytes, Bytes)]) -> Vec<(Bytes, Bytes)> {
        let mut out: Vec<(Bytes, Bytes)> = Vec::new();
        for (name, value) in pairs {
            match out.iter_mut().find(|(n, _)| n == name) {
                None => out.push((name.clone(), value.clone())),
                Some(entry) => merge_into(entry, value.clone()),
            }
        }
        out
    }

    proptest! {
        /// Names from a tiny alphabet, so that repeats are common (`HTTP_`
        /// ones too, which are joined), with an optional first byte over a
        /// shared tail, so that different names often share a fingerprint.
        #[test]
        fn merging_matches_the_plain_definition(
            names in proptest::collection::vec(("[AB]?", "(HTTP_)?[XY]{0,9}"), 0..80),
        ) {
            let pairs: Vec<(Bytes, Bytes)> = names
                .iter()
                .enumerate()
                .map(|(i, (first, rest))| (Bytes::from(format!("{first}{rest}")), Bytes::from(i.to_string())))
                .collect();
            prop_assert_eq!(merge_duplicates(pairs.clone()), merged_naively(&pairs));
        }

        #[test]
        fn round_trip_any_split(
            pairs in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..200), proptest::collection::vec(any::<u8>(), 0..300)), 0..8),
            cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
            let mut data = BytesMut::new();
            for (n, v) in &pairs { put_pair(&mut data, n, v); }
            let data = data.to_vec();
            let mut points: Vec<usize> = cuts.iter().map(|c| if data.is_empty() { 0 } else { c % data.len() }).collect();
            points.push(0); points.push(data.len()); points.sort();
            let mut c = ParamsCollector::new(1 << 20);
            for w in points.windows(2) { c.push(&data[w[0]..w[1]]).unwrap(); }
            let got = c.finish(usize::MAX).unwrap();
            prop_assert_eq!(got.len(), pairs.len());
            for ((gn, gv), (n, v)) in got.iter().zip(&pairs) {
                prop_assert_eq!(&gn[..], &n[..]);
                prop_assert_eq!(&gv[..], &v[..]);
            }
        }
    }
}
