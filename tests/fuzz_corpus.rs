//! Replays the committed fuzz corpora (`router_ops` and `wire_frames`) through the
//! same models and checks as the fuzz targets (the `sharded-router-fuzz-model` crate,
//! `fuzz-model/`), on stable and without libFuzzer, so a regression shows in a plain
//! `cargo test`.
//!
//! The seed inputs are written by the ignored tests `write_seed_corpus` and
//! `write_wire_seed_corpus`:
//! `cargo test --test fuzz_corpus -- --ignored write_`.

use std::fs;
use std::path::PathBuf;

use sharded_router_fuzz_model::router_ops::{self, Answer, Op, Wait};

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target)
}

/// The committed corpus files of `target`, sorted, with their bytes.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<PathBuf> = fs::read_dir(corpus_dir(target))
        .expect("the target's corpus directory exists")
        .map(|e| e.expect("readable corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the committed corpus of {target} is empty");
    files
        .into_iter()
        .map(|path| {
            let bytes = fs::read(&path).expect("readable corpus file");
            (path, bytes)
        })
        .collect()
}

#[test]
fn router_ops_corpus_replays() {
    for (path, bytes) in corpus("router_ops") {
        let ops = router_ops::decode(&bytes).expect("decodes");
        eprintln!("{}: {} ops", path.display(), ops.len());
        router_ops::run(&ops);
    }
}

/// Hand-written scenarios, one per seed file.
fn seeds() -> Vec<(&'static str, Vec<Op>)> {
    use Answer::*;
    use Op::*;
    use Wait::*;
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
                Request { to: 1, wait: Long },
                Request { to: 1, wait: Long },
                Request { to: 1, wait: Long },
                Request { to: 1, wait: Short },
                Consume { who: 1, answer: Accept },
                Consume { who: 1, answer: Drop },
                Consume { who: 1, answer: Hold },
                Consume { who: 1, answer: Accept },
                Resolve { held: 0, answer: AcceptEmpty },
                Request { to: 1, wait: Long },
                Consume { who: 1, answer: Hold },
                Unregister { actor: 1 },
                Resolve { held: 0, answer: Accept },
                Request { to: 2, wait: Long },
            ],
        ),
        (
            "seed-channels",
            vec![
                reg(0),
                reg(1),
                Open { from: 0, to: 1, wait: Long },
                Consume { who: 1, answer: Accept },
                ChannelSend { channel: 0, from: 0 },
                ChannelSend { channel: 0, from: 1 },
                ChannelSend { channel: 0, from: 2 },
                Consume { who: 1, answer: Accept },
                Consume { who: 0, answer: Accept },
                Open { from: 1, to: 0, wait: Long },
                Consume { who: 0, answer: Reject },
                Open { from: 0, to: 1, wait: Short },
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
                Open { from: 0, to: 1, wait: Long },
                Open { from: 0, to: 1, wait: Long },
                Open { from: 1, to: 0, wait: Long },
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
                Open { from: 4, to: 0, wait: Long },
                Consume { who: 0, answer: Accept },
                ChannelSend { channel: 0, from: 0 },
                ChannelSend { channel: 0, from: 0 },
                ChannelSend { channel: 0, from: 0 },
                ChannelSend { channel: 0, from: 4 },
                Consume { who: 4, answer: Accept },
                Open { from: 0, to: 4, wait: Long },
                Consume { who: 4, answer: Accept },
                Consume { who: 4, answer: Hold },
                Detach { external: 0 },
                Detach { external: 0 },
                Consume { who: 0, answer: Accept },
                Consume { who: 0, answer: Accept },
                Attach { external: 0 },
                Open { from: 5, to: 4, wait: Long },
            ],
        ),
        (
            "seed-closed-mailbox",
            vec![
                reg(2),
                Send { to: 2 },
                Send { to: 2 },
                Request { to: 2, wait: Long },
                Send { to: 2 },
                DropMailbox { who: 2 },
                Send { to: 2 },
                Tell { to: 2 },
                Request { to: 2, wait: Long },
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
                Request { to: 3, wait: Long },
                Open { from: 0, to: 5, wait: Long },
                Open { from: 5, to: 0, wait: Long },
                Consume { who: 0, answer: Accept },
                Request { to: 0, wait: Long },
                Consume { who: 0, answer: Hold },
                Shutdown,
                Send { to: 0 },
                Consume { who: 3, answer: Accept },
                Consume { who: 3, answer: Accept },
                Consume { who: 3, answer: Accept },
                Resolve { held: 0, answer: Accept },
                Register { actor: 1 },
                Attach { external: 0 },
                Open { from: 0, to: 3, wait: Long },
                Shutdown,
            ],
        ),
        (
            "seed-abandon-requests",
            vec![
                reg(0),
                Request { to: 0, wait: Long },
                Request { to: 0, wait: Max },
                Request { to: 0, wait: Long },
                Request { to: 0, wait: Max },
                // Pending: 0 and 1 in the mailbox, 2 and 3 parked.
                AbandonRequest { pending: 0 },
                AbandonRequest { pending: 2 },
                Consume { who: 0, answer: Hold },
                Consume { who: 0, answer: Accept },
                Resolve { held: 0, answer: Accept },
                Consume { who: 0, answer: Accept },
                Consume { who: 0, answer: AcceptEmpty },
                Request { to: 0, wait: Max },
                Request { to: 0, wait: Long },
                Consume { who: 0, answer: Hold },
                Consume { who: 0, answer: Hold },
                AbandonRequest { pending: 0 },
                Unregister { actor: 0 },
                Resolve { held: 0, answer: Accept },
                Resolve { held: 0, answer: Accept },
                AbandonRequest { pending: 0 },
            ],
        ),
        (
            "seed-abandon-opens",
            vec![
                reg(0),
                reg(1),
                Open { from: 0, to: 1, wait: Long },
                Open { from: 0, to: 1, wait: Max },
                Open { from: 0, to: 1, wait: Long },
                // Pending: 0 and 1 in the mailbox, 2 parked.
                AbandonOpen { pending: 0 },
                AbandonOpen { pending: 1 },
                Consume { who: 1, answer: Accept },
                Consume { who: 1, answer: Accept },
                Consume { who: 1, answer: Hold },
                Resolve { held: 0, answer: Accept },
                ChannelSend { channel: 0, from: 0 },
                ChannelSend { channel: 1, from: 1 },
                ChannelSend { channel: 2, from: 0 },
                Open { from: 1, to: 0, wait: Max },
                Consume { who: 0, answer: Accept },
                Consume { who: 0, answer: Hold },
                AbandonOpen { pending: 0 },
                Resolve { held: 0, answer: Reject },
                Unregister { actor: 1 },
                Consume { who: 0, answer: Accept },
                Consume { who: 0, answer: Accept },
            ],
        ),
        (
            "seed-drop-mailbox-leaves",
            vec![
                reg(0),
                reg(1),
                Attach { external: 0 },
                Open { from: 0, to: 1, wait: Long },
                Consume { who: 1, answer: Accept },
                Open { from: 4, to: 1, wait: Max },
                Send { to: 1 },
                Request { to: 1, wait: Max },
                Send { to: 1 },
                Open { from: 1, to: 4, wait: Long },
                Request { to: 1, wait: Long },
                Request { to: 1, wait: Long },
                // Actor 1 holds the open from 4 and a send; a request, a send and a
                // request are parked; the fourth request was refused.
                DropMailbox { who: 1 },
                Consume { who: 0, answer: Accept },
                Consume { who: 4, answer: Accept },
                Send { to: 1 },
                Tell { to: 1 },
                Unregister { actor: 1 },
                Register { actor: 1 },
                RegisterClosed { who: 1 },
                RegisterClosed { who: 2 },
                RegisterClosed { who: 5 },
                Request { to: 1, wait: Max },
                Consume { who: 1, answer: Hold },
                DropMailbox { who: 1 },
                Resolve { held: 0, answer: Accept },
                DropMailbox { who: 4 },
                Detach { external: 0 },
                Consume { who: 4, answer: Accept },
                Register { actor: 1 },
                Send { to: 1 },
            ],
        ),
        (
            "seed-shutdown-race",
            vec![
                reg(0),
                reg(3),
                Attach { external: 1 },
                Send { to: 3 },
                Send { to: 3 },
                Send { to: 3 },
                Request { to: 3, wait: Max },
                Open { from: 0, to: 5, wait: Max },
                Open { from: 5, to: 0, wait: Long },
                Consume { who: 0, answer: Hold },
                Request { to: 0, wait: Long },
                Consume { who: 0, answer: Hold },
                Request { to: 0, wait: Max },
                Tell { to: 3 },
                ShutdownRace { threads: 2 },
                ShutdownRace { threads: 0 },
                Resolve { held: 0, answer: Accept },
                Resolve { held: 0, answer: Accept },
                Consume { who: 3, answer: Accept },
                Consume { who: 3, answer: Accept },
                Consume { who: 3, answer: Accept },
                Consume { who: 5, answer: Accept },
                Shutdown,
                Register { actor: 1 },
                RegisterClosed { who: 4 },
            ],
        ),
        (
            "seed-huge-timers",
            vec![
                reg(2),
                reg(1),
                Request { to: 2, wait: Short },
                Request { to: 2, wait: Max },
                Open { from: 1, to: 2, wait: Short },
                Open { from: 1, to: 2, wait: Max },
                Consume { who: 2, answer: Accept },
                Consume { who: 2, answer: Accept },
                Consume { who: 2, answer: Accept },
                Consume { who: 2, answer: Accept },
                Unregister { actor: 2 },
                Consume { who: 1, answer: Accept },
                Request { to: 2, wait: Max },
                Open { from: 2, to: 1, wait: Max },
            ],
        ),
        (
            // Requests and opens that already had an outcome (timed out,
            // abandoned, or an open whose initiator left) while parked: when the
            // shard discards them, their payloads become dead letters.
            "seed-settled-parked-dead-letters",
            vec![
                reg(0),
                reg(1),
                reg(2),
                reg(3),
                Send { to: 0 },
                Send { to: 0 },
                Request { to: 0, wait: Short },
                Request { to: 0, wait: Long },
                AbandonRequest { pending: 0 },
                Open { from: 1, to: 0, wait: Short },
                Unregister { actor: 0 },
                Tell { to: 0 },
                Consume { who: 0, answer: Accept },
                Send { to: 2 },
                Send { to: 2 },
                Open { from: 1, to: 2, wait: Long },
                AbandonOpen { pending: 0 },
                Request { to: 2, wait: Short },
                Send { to: 3 },
                Send { to: 3 },
                Open { from: 1, to: 3, wait: Max },
                Unregister { actor: 1 },
                DropMailbox { who: 3 },
                Send { to: 1 },
                Shutdown,
            ],
        ),
    ]
}

#[test]
fn the_huge_timers_seed_uses_the_largest_timer_resolution() {
    let ops = seeds().into_iter().find(|(name, _)| *name == "seed-huge-timers").expect("seed").1;
    assert_eq!(router_ops::config(&ops).1, std::time::Duration::MAX);
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
    let dir = corpus_dir("router_ops");
    fs::create_dir_all(&dir).expect("corpus dir");
    for (name, ops) in seeds() {
        fs::write(dir.join(name), router_ops::encode(&ops)).expect("seed written");
    }
}

mod wire {
    use std::fs;

    use sharded_router_fuzz_model::wire_frames::{self, frame, Tail, ABSENT, ECHO, MAX_FRAME, REFUSER};

    #[test]
    fn wire_frames_corpus_replays() {
        for (path, bytes) in super::corpus("wire_frames") {
            eprintln!("{}: {} bytes", path.display(), bytes.len());
            wire_frames::run(&bytes);
        }
    }

    fn frames(jsons: &[String]) -> Vec<u8> {
        jsons.iter().flat_map(|j| frame(j.as_bytes())).collect()
    }

    fn cmd(request_id: u64, command: &str) -> String {
        format!(r#"{{"request_id":{request_id},"command":{command}}}"#)
    }

    /// Hand-written streams, one per seed file.
    fn seeds() -> Vec<(&'static str, Vec<u8>)> {
        let list = cmd(1, r#""ListActors""#);
        let send = |id: &str, data: &str| format!(r#"{{"SendActorMessage":{{"id":"{id}","data":{data}}}}}"#);
        let request =
            |id: &str, rest: &str| format!(r#"{{"RequestActorMessage":{{"id":"{id}","data":"q"{rest}}}}}"#);
        let open = |id: &str, initial: &str| format!(r#"{{"OpenChannel":{{"actor_id":"{id}"{initial}}}}}"#);
        let on = |ch: u32, message: &str| {
            format!(r#"{{"SendOnChannel":{{"channel_id":"{ch:032x}","message":{message}}}}}"#)
        };
        let close = |ch: u32| format!(r#"{{"CloseChannel":{{"channel_id":"{ch:032x}"}}}}"#);
        let mut oversize = frames(std::slice::from_ref(&list));
        oversize.extend_from_slice(&u32::try_from(MAX_FRAME + 1).unwrap().to_be_bytes());
        oversize.extend_from_slice(b"{\"request_id\":9");
        let mut truncated = frames(std::slice::from_ref(&list));
        truncated.extend_from_slice(&frame(list.as_bytes())[..10]);
        let mut header_only = frames(std::slice::from_ref(&list));
        header_only.extend_from_slice(&frame(list.as_bytes())[..4]);
        // A frame of exactly the largest length, so inputs start past one read
        // and at the limit.
        let empty = cmd(30, &send(ECHO, r#""""#));
        let filler = "x".repeat(MAX_FRAME - empty.len());
        let largest = cmd(30, &send(ECHO, &format!("\"{filler}\"")));
        assert_eq!(largest.len(), MAX_FRAME);
        vec![
            ("seed-list", frames(std::slice::from_ref(&list))),
            ("seed-largest-frame", frames(&[largest, list.clone()])),
            (
                "seed-send",
                frames(&[
                    cmd(2, &send(ECHO, r#""hello""#)),
                    cmd(3, &send(REFUSER, "[0,255,128]")),
                    cmd(4, &send(ABSENT, r#""""#)),
                ]),
            ),
            (
                "seed-request",
                frames(&[
                    cmd(5, &request(ECHO, "")),
                    cmd(6, &request(ECHO, r#","timeout_ms":50"#)),
                    cmd(7, &request(REFUSER, "")),
                    cmd(8, &request(ABSENT, r#","timeout_ms":0"#)),
                ]),
            ),
            (
                "seed-channels",
                frames(&[
                    cmd(10, &open(ECHO, r#","initial_message":"hi""#)),
                    cmd(11, &open(ECHO, "")),
                    cmd(12, &on(0, r#""ping""#)),
                    cmd(13, &on(1, "[1,2,3]")),
                    cmd(14, &on(1, r#""close""#)),
                    cmd(15, &on(1, r#""late""#)),
                    cmd(16, &close(0)),
                    cmd(17, &close(0)),
                    cmd(18, &open(REFUSER, "")),
                    cmd(19, &open(ABSENT, "")),
                    cmd(20, &open(ECHO, r#","initial_message":[7]"#)),
                ]),
            ),
            ("seed-malformed-json", frames(&["{\"request_id\": 21, \"command\": ".to_owned()])),
            (
                "seed-unknown-command",
                frames(&[cmd(22, r#""Reboot""#), cmd(23, r#"{"Nope":{}}"#), cmd(24, "[1]")]),
            ),
            (
                "seed-bad-id",
                frames(&[
                    cmd(25, &send("not-a-uuid", r#""x""#)),
                    cmd(26, r#"{"CloseChannel":{"channel_id":"0123"}}"#),
                    cmd(27, r#"{"SendActorMessage":{"data":[1,999]}}"#),
                    r#"{"request_id":-1,"command":"ListActors"}"#.to_owned(),
                    r#"{"request_id":28}"#.to_owned(),
                ]),
            ),
            ("seed-oversize-length", oversize),
            ("seed-truncated-frame", truncated),
            ("seed-truncated-after-length", header_only),
        ]
    }

    #[test]
    fn wire_seeds_end_as_named() {
        for (name, bytes) in seeds() {
            let (frames, tail) = wire_frames::split(&bytes);
            let want = if name.contains("oversize") {
                Tail::Oversize(MAX_FRAME as u64 + 1)
            } else if name.contains("truncated-after-length") {
                Tail::Truncated(4)
            } else if name.contains("truncated") {
                Tail::Truncated(10)
            } else {
                Tail::Clean
            };
            assert_eq!(tail, want, "{name}");
            assert!(!frames.is_empty(), "{name}");
        }
    }

    #[test]
    #[ignore = "writes the seed corpus; run by hand"]
    fn write_wire_seed_corpus() {
        let dir = super::corpus_dir("wire_frames");
        fs::create_dir_all(&dir).expect("corpus dir");
        for (name, bytes) in seeds() {
            fs::write(dir.join(name), bytes).expect("seed written");
        }
    }
}
