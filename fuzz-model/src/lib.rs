//! Checking code for the `sharded-router` fuzz targets.
//!
//! One module per target. A module holds the input type, its decoding, the model
//! and the driver, and depends only on `std`, `arbitrary`, the crate (with its
//! `server` feature) and the crate's own dependencies (`bytes`, `tokio-util`,
//! `serde_json`). Two users: the cargo-fuzz targets in `fuzz/` (nightly,
//! libFuzzer), and the corpus replay test at the repository root
//! (`tests/fuzz_corpus.rs`, stable), so a committed input is checked by the same
//! code in both. Not published.

#![forbid(unsafe_code)]

pub mod router_ops;
pub mod wire_frames;
