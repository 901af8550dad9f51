//! Replays the committed `router_ops` fuzz corpus through the same model and
//! checks as the fuzz target, on stable and without libFuzzer, so a regression
//! shows in a plain `cargo test`.
//!
//! The seed inputs are written by the ignored test `write_seed_corpus`:
//! `cargo test --test fuzz_corpus -- --ignored write_seed_corpus`.

#[path = "../fuzz/src/router_ops.rs"]
#[allow(dead_code)]
mod router_ops;

use std::fs;
use std::path::PathBuf;

use router_ops::{Answer, Op};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/router_ops")
}

#[test]
fn router_ops_corpus_replays() {
    let mut files: Vec<PathBuf> = fs::read_dir(corpus_dir())
        .expect("fuzz/corpus/router_ops exists")
        .map(|e| e.expect("readable corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the committed corpus is empty");
    for path in &files {
        let bytes = fs::read(path).expect("readable corpus file");
        let ops = router_ops::decode(&bytes).expect("decodes");
        eprintln!("{}: {} ops", path.display(), ops.len());
        router_ops::run(&ops);
    }
}

/// Hand-written scenarios, one per seed file.
fn seeds() -> Vec<(&'static str, Vec<Op>)> {
    use Answer::*;
    use Op::*;
    let reg = |actor| Register { actor };
    vec![
        (
            "seed-send-overflow",
            vec![
                reg(0),
                Send { to: 0 },
                Send { to: 0 },
                Send { to: 0 },
                Send { to: 0 },
                Send { to: 0 },
                Send { to: 0 },
                Tell { to: 0 },
                Consume { who: 0, answer: Accept },
                Send { to: 0 },
                Consume { who: 0, answer: Accept },
                Consume { who: 0, answer: Accept },
                Unregister { actor: 0 },
                Consume { who: 0, answer: Accept },
                Consume { who: 0, answer: Accept },
                Consume { who: 0, answer: Accept },
                Tell { to: 1 },
            ],
        ),
        (
            "seed-requests",
            vec![
                reg(1),
                Request { to: 1, short: false },
                Request { to: 1, short: false },
                Request { to: 1, short: false },
                Request { to: 1, short: true },
                Consume { who: 1, answer: Accept },
                Consume { who: 1, answer: Drop },
                Consume { who: 1, answer: Hold },
                Consume { who: 1, answer: Accept },
                Resolve { held: 0, answer: AcceptEmpty },
                Request { to: 1, short: false },
                Consume { who: 1, answer: Hold },
                Unregister { actor: 1 },
                Resolve { held: 0, answer: Accept },
                Request { to: 2, short: false },
            ],
        ),
        (
            "seed-channels",
            vec![
                reg(0),
                reg(1),
                Open { from: 0, to: 1, short: false },
                Consume { who: 1, answer: Accept },
                ChannelSend { channel: 0, from: 0 },
                ChannelSend { channel: 0, from: 1 },
                ChannelSend { channel: 0, from: 2 },
                Consume { who: 1, answer: Accept },
                Consume { who: 0, answer: Accept },
                Open { from: 1, to: 0, short: false },
                Consume { who: 0, answer: Reject },
                Open { from: 0, to: 1, short: true },
                Consume { who: 1, answer: Accept },
                Close { channel: 0, from: 2 },
                Close { channel: 0, from: 1 },
                Consume { who: 0, answer: Accept },
                ChannelSend { channel: 0, from: 0 },
                Close { channel: 3, from: 0 },
            ],
        ),
        (
            "seed-unregister-closes",
            vec![
                reg(0),
                reg(1),
                Open { from: 0, to: 1, short: false },
                Open { from: 0, to: 1, short: false },
                Open { from: 1, to: 0, short: false },
                Consume { who: 1, answer: Accept },
                Consume { who: 1, answer: AcceptEmpty },
                Consume { who: 0, answer: Hold },
                Send { to: 1 },
                Send { to: 1 },
                Unregister { actor: 0 },
                Consume { who: 1, answer: Accept },
                Consume { who: 1, answer: Accept },
                Consume { who: 1, answer: Accept },
                Consume { who: 1, answer: Accept },
                Resolve { held: 0, answer: Accept },
                Consume { who: 0, answer: Accept },
            ],
        ),
        (
            "seed-externals",
            vec![
                reg(0),
                Attach { external: 0 },
                Open { from: 4, to: 0, short: false },
                Consume { who: 0, answer: Accept },
                ChannelSend { channel: 0, from: 0 },
                ChannelSend { channel: 0, from: 0 },
                ChannelSend { channel: 0, from: 0 },
                ChannelSend { channel: 0, from: 4 },
                Consume { who: 4, answer: Accept },
                Open { from: 0, to: 4, short: false },
                Consume { who: 4, answer: Accept },
                Consume { who: 4, answer: Hold },
                Detach { external: 0 },
                Detach { external: 0 },
                Consume { who: 0, answer: Accept },
                Consume { who: 0, answer: Accept },
                Attach { external: 0 },
                Open { from: 5, to: 4, short: false },
            ],
        ),
        (
            "seed-closed-mailbox",
            vec![
                reg(2),
                Send { to: 2 },
                Send { to: 2 },
                Request { to: 2, short: false },
                Send { to: 2 },
                DropMailbox { who: 2 },
                Send { to: 2 },
                Tell { to: 2 },
                Request { to: 2, short: false },
                Unregister { actor: 2 },
                reg(2),
                Send { to: 2 },
            ],
        ),
        (
            "seed-shutdown",
            vec![
                reg(0),
                reg(3),
                Attach { external: 1 },
                Send { to: 3 },
                Send { to: 3 },
                Send { to: 3 },
                Request { to: 3, short: false },
                Open { from: 0, to: 5, short: false },
                Open { from: 5, to: 0, short: false },
                Consume { who: 0, answer: Accept },
                Request { to: 0, short: false },
                Consume { who: 0, answer: Hold },
                Shutdown,
                Send { to: 0 },
                Consume { who: 3, answer: Accept },
                Consume { who: 3, answer: Accept },
                Consume { who: 3, answer: Accept },
                Resolve { held: 0, answer: Accept },
                Register { actor: 1 },
                Attach { external: 0 },
                Open { from: 0, to: 3, short: false },
                Shutdown,
            ],
        ),
    ]
}

#[test]
fn seeds_round_trip_through_the_encoding() {
    for (name, ops) in seeds() {
        let bytes = router_ops::encode(&ops);
        assert_eq!(router_ops::decode(&bytes).expect("decodes"), ops, "{name}");
    }
}

#[test]
#[ignore = "writes the seed corpus; run by hand"]
fn write_seed_corpus() {
    let dir = corpus_dir();
    fs::create_dir_all(&dir).expect("corpus dir");
    for (name, ops) in seeds() {
        fs::write(dir.join(name), router_ops::encode(&ops)).expect("seed written");
    }
}
