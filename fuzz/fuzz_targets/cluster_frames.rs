//! Raw bytes through the cluster's frame decoder (`sharded_router::cluster::wire`):
//! never a panic, and whatever decodes encodes back to exactly the same bytes
//! (every field has one encoding), so no two inputs mean the same frame.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sharded_router::cluster::wire::{decode, encode};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = decode(data) {
        assert_eq!(encode(&frame.header, &frame.body), data, "decode then encode changed the frame");
    }
});
