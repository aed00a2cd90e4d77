//! The name-value decoder and the PARAMS collector on arbitrary bytes split
//! anywhere: no panic; the same pairs whatever the split; pairs it decodes
//! encode back to a block that decodes to the same pairs; the limits hold.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use oxfcgi::protocol::params::{
    decode_pairs, decode_pairs_limited, merge_duplicates, put_pair, PairsError, ParamsCollector,
};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, data)) = data.split_first() else { return };
    let whole = Bytes::copy_from_slice(data);
    let decoded = decode_pairs(&whole);
    let cut = (cut as usize).min(data.len());
    let mut collector = ParamsCollector::new(1 << 20);
    collector.push(&data[..cut]).expect("under the limit");
    collector.push(&data[cut..]).expect("under the limit");
    let collected = collector.finish(usize::MAX).map_err(|e| match e {
        PairsError::Malformed(why) => why,
        PairsError::TooMany => unreachable!("no limit"),
    });
    assert_eq!(decoded, collected, "a split changes nothing");
    if let Ok(pairs) = decoded {
        if let Err(PairsError::TooMany) = decode_pairs_limited(&whole, 3) {
            assert!(pairs.len() > 3);
        }
        let mut block = BytesMut::new();
        for (name, value) in &pairs {
            put_pair(&mut block, name, value);
        }
        assert_eq!(decode_pairs(&block.freeze()).as_ref(), Ok(&pairs));
        let merged = merge_duplicates(pairs.clone());
        assert!(merged.len() <= pairs.len());
    }
});
