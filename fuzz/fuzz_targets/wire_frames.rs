//! Raw bytes through the gateway's frame codec, its frame parser and a live
//! session: never a panic, bounded buffering, every rejection a clean error and
//! every command exactly one response. See
//! `fuzz-model/src/wire_frames.rs` at the repository root.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sharded_router_fuzz_model::wire_frames::run;

fuzz_target!(|data: &[u8]| run(data));
