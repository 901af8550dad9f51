//! Loom models of `sharded-router`. The models live in `tests/`; run them with
//! `RUSTFLAGS="--cfg loom" cargo test --release` (see `.ci/loom` at the repo root).
