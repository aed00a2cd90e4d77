//! The whole connection state machine fed arbitrary bytes, in arbitrary
//! pieces, with a paused clock and a dummy application that answers,
//! streams, stops early and stalls (oxfcgi::server::harness): no panic, only
//! whole FastCGI records written, and the connection always ends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oxfcgi::server::harness::{run_connection, small_config};

fuzz_target!(|data: &[u8]| {
    // First byte: multiplexing and how many cut points follow; then the cuts.
    let Some((&mode, rest)) = data.split_first() else { return };
    let ncuts = (mode >> 1) as usize % 16;
    let (cuts, input) = rest.split_at(ncuts.min(rest.len()));
    run_connection(small_config(mode & 1 == 1), input, cuts);
});
