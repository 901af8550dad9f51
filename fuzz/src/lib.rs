//! Checking code for the `sharded-router` fuzz targets.
//!
//! One module per target. A module holds the input type, its decoding, the model
//! and the driver, and depends only on `std`, `arbitrary`, the crate and the
//! crate's own dependencies (`bytes`, `tokio-util`, `serde_json`), so the
//! repository root can replay the committed corpus on stable by including the
//! same file with `#[path]` (see `tests/fuzz_corpus.rs`).

#![forbid(unsafe_code)]

pub mod router_ops;
pub mod wire_frames;
