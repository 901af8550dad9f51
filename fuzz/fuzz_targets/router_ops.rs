//! Differential fuzzing of the router: a list of ops runs against a real router
//! and a sequential model; any difference panics. See
//! `fuzz-model/src/router_ops.rs` at the repository root.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sharded_router_fuzz_model::router_ops::{run, Op};

fuzz_target!(|ops: Vec<Op>| run(&ops));
