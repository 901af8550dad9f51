//! The cluster's wire format: every frame round-trips, every malformed input is
//! a typed error (never a panic), and the fuzz target's committed corpus replays
//! through the same check as `fuzz/fuzz_targets/cluster_frames.rs`.

use sharded_router::cluster::wire::{decode, encode, Body, DecodeError, Header, VERSION};
use sharded_router::{ActorId, ExternalId, Participant, RequestError};

fn every_body() -> Vec<Body> {
    let id = ActorId::new();
    vec![
        Body::Heartbeat { version: 42 },
        Body::Leave,
        Body::DirAdd { version: 1, id, name: Some("b.echo".to_owned()) },
        Body::DirAdd { version: 2, id, name: None },
        Body::DirRemove { version: 3, id },
        Body::SnapshotRequest,
        Body::Snapshot {
            version: 9,
            last: false,
            entries: vec![(id, None), (ActorId::new(), Some("x".into()))],
        },
        Body::Snapshot { version: 0, last: true, entries: Vec::new() },
        Body::Send { seq: 1, to: id, data: b"payload \x00\xff".to_vec() },
        Body::Send { seq: u64::MAX, to: id, data: Vec::new() },
        Body::Request { seq: 2, corr: 7, to: id, wait_ms: 30_000, data: b"ping".to_vec() },
        Body::Reply { corr: 7, outcome: Ok(b"pong".to_vec()) },
        Body::Reply { corr: 8, outcome: Err(RequestError::Timeout) },
        Body::Reply { corr: 9, outcome: Err(RequestError::ShardFailed) },
        Body::Open {
            seq: 3,
            corr: 10,
            channel: u128::MAX,
            initiator: Participant::External(ExternalId::new()),
            target: id,
            wait_ms: 5,
            initial: b"hello".to_vec(),
        },
        Body::OpenReply { corr: 10, outcome: Ok(Some((5, Some(b"welcome".to_vec())))) },
        Body::OpenReply { corr: 11, outcome: Ok(Some((6, None))) },
        Body::OpenReply { corr: 12, outcome: Ok(None) },
        Body::OpenReply { corr: 13, outcome: Err(RequestError::ActorNotFound) },
        Body::ChannelData { seq: 4, channel: 77, sender: Participant::Actor(id), data: b"c".to_vec() },
        Body::ChannelClose { seq: 5, channel: 77, closer: Participant::Actor(id) },
        Body::Ack { stream: 1, upto: 100, lost: Some((90, 95)) },
        Body::Ack { stream: 1, upto: 101, lost: None },
        Body::Sync { stream: 1, last: 200 },
    ]
}

fn header() -> Header {
    Header { node: "node-a".to_owned(), incarnation: 0xdead_beef, to: 7 }
}

#[test]
fn every_frame_round_trips() {
    for body in every_body() {
        let bytes = encode(&header(), &body);
        assert_eq!(bytes[0], VERSION);
        let frame = decode(&bytes).unwrap_or_else(|e| panic!("{body:?}: {e:?}"));
        assert_eq!(frame.header, header());
        assert_eq!(frame.body, body);
    }
}

#[test]
fn malformed_frames_are_typed_errors() {
    for body in every_body() {
        let bytes = encode(&header(), &body);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "{body:?} cut at {cut} decoded");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(decode(&long), Err(DecodeError::Trailing));
        let mut other = bytes.clone();
        other[0] = VERSION + 1;
        assert_eq!(decode(&other), Err(DecodeError::Version(VERSION + 1)));
        let mut kind = bytes;
        kind[1] = 0xee;
        assert_eq!(decode(&kind), Err(DecodeError::Tag(0xee)));
    }
    assert_eq!(decode(&[]), Err(DecodeError::Truncated));
    // A node name that is not UTF-8.
    let mut bad = vec![VERSION, 2, 1, 0xff];
    bad.extend_from_slice(&[0; 16]);
    assert_eq!(decode(&bad), Err(DecodeError::Utf8));
    // A snapshot that claims more entries than it carries.
    let mut lying = encode(&header(), &Body::Snapshot { version: 1, last: true, entries: Vec::new() });
    let at = lying.len() - 4;
    lying[at..].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(decode(&lying), Err(DecodeError::Truncated));
    assert_eq!(decode(&vec![VERSION; 2 * 1024 * 1024]), Err(DecodeError::TooLong));
}

/// The fuzz target's property: whatever decodes encodes back to the same bytes.
fn check(data: &[u8]) {
    if let Ok(frame) = decode(data) {
        assert_eq!(encode(&frame.header, &frame.body), data);
    }
}

#[test]
fn random_and_mutated_bytes_never_panic() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let frames: Vec<Vec<u8>> = every_body().iter().map(|b| encode(&header(), b)).collect();
    for round in 0..20_000 {
        let mut data = frames[round % frames.len()].clone();
        for _ in 0..(next() % 4) {
            let i = (next() as usize) % data.len().max(1);
            if let Some(byte) = data.get_mut(i) {
                *byte = next() as u8;
            }
        }
        check(&data);
        let random: Vec<u8> = (0..(next() % 64)).map(|_| next() as u8).collect();
        check(&random);
    }
}

#[test]
fn the_committed_fuzz_corpus_replays() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/cluster_frames");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz/corpus/cluster_frames") {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("seed-")) {
            assert!(decode(&data).is_ok(), "{} does not decode", path.display());
        }
        check(&data);
        seen += 1;
    }
    assert!(seen >= 5, "the corpus went missing");
}
