//! The record decoder on arbitrary bytes: it never panics, never reads past
//! what it was given, and a record it decodes encodes back to the same bytes
//! (up to padding, which the encoder chooses itself).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use oxfcgi::protocol::record::{decode, put_record};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(rec)) = decode(&mut buf) {
        assert!(rec.content.len() <= oxfcgi::protocol::FCGI_MAX_CONTENT_LEN);
        let mut again = BytesMut::new();
        put_record(&mut again, rec.record_type, rec.request_id, &rec.content);
        let back = decode(&mut again).expect("our own record decodes").expect("a whole record");
        assert_eq!(
            (back.record_type, back.request_id, &back.content[..]),
            (rec.record_type, rec.request_id, &rec.content[..])
        );
    }
});
