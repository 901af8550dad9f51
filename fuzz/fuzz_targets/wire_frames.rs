//! Raw bytes through the gateway's frame codec, its frame parser and a live
//! session: never a panic, bounded buffering, every rejection a clean error and
//! every command exactly one response. See `src/wire_frames.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sharded_router_fuzz::wire_frames::run;

fuzz_target!(|data: &[u8]| run(data));
