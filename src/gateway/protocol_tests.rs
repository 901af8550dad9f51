//! Unit tests of the wire format (`protocol.rs`): round trips and refusals.

use super::protocol::*;
use crate::ids::{ActorId, ChannelId};

#[test]
fn payloads_round_trip_as_text_or_bytes() {
    let channel_id = ChannelId::random();
    for message in [b"hello".to_vec(), vec![0xff, 0x00, 0x80], Vec::new()] {
        let frame = ServerFrame::Event { event: Event::ChannelMessage { channel_id, message } };
        let json = encode(&frame).unwrap();
        assert_eq!(decode_server_frame(&json).unwrap(), frame);
    }
    let json = encode(&Event::ChannelMessage { channel_id, message: b"hi".to_vec() }).unwrap();
    assert!(String::from_utf8(json).unwrap().contains("\"message\":\"hi\""));
}

#[test]
fn commands_round_trip() {
    let id = ActorId::new();
    let channel_id = ChannelId::random();
    for command in [
        Command::SendActorMessage { id, data: b"x".to_vec() },
        Command::RequestActorMessage { id, data: vec![1, 2], timeout_ms: Some(5) },
        Command::RequestActorMessage { id, data: vec![], timeout_ms: None },
        Command::OpenChannel { actor_id: id, initial_message: b"hi".to_vec() },
        Command::SendOnChannel { channel_id, message: vec![0xfe] },
        Command::CloseChannel { channel_id },
        Command::ListActors,
    ] {
        let json = encode(&ClientFrame { request_id: 9, command: command.clone() }).unwrap();
        let frame = decode_client_frame(&json).unwrap();
        assert_eq!((frame.request_id, frame.command), (9, command));
    }
}

#[test]
fn responses_round_trip() {
    let id = ActorId::new();
    let channel_id = ChannelId::random();
    for response in [
        Response::SentMessage { id },
        Response::RequestedMessage { id, message: b"r".to_vec() },
        Response::ChannelOpened { channel_id, actor_id: id, response: None },
        Response::ChannelOpened { channel_id, actor_id: id, response: Some(vec![0xff]) },
        Response::MessageSent { channel_id },
        Response::ChannelClosed { channel_id },
        Response::ActorList { actors: vec![ActorInfo { id, name: Some("echo".into()), node: None }] },
        Response::Authenticated,
        Response::ActorUpdated { id, version: "v2".into() },
        Response::error(ErrorKind::Timeout, "late"),
        Response::error(ErrorKind::Unauthorized, "no"),
    ] {
        let frame = ServerFrame::Response { request_id: Some(3), response };
        assert_eq!(decode_server_frame(&encode(&frame).unwrap()).unwrap(), frame);
    }
}

#[test]
fn bad_frames_are_classified() {
    let cases: [(&[u8], Option<u64>, ErrorKind); 9] = [
        (b"", None, ErrorKind::MalformedFrame),
        (b"[1,2]", None, ErrorKind::MalformedFrame),
        (br#"{"command":"ListActors"}"#, None, ErrorKind::MalformedFrame),
        (br#"{"request_id":-1,"command":"ListActors"}"#, None, ErrorKind::MalformedFrame),
        (br#"{"request_id":1}"#, Some(1), ErrorKind::MalformedFrame),
        (br#"{"request_id":1,"command":{"Nope":{}}}"#, Some(1), ErrorKind::UnknownCommand),
        (
            br#"{"request_id":1,"command":{"SendActorMessage":{"id":"x","data":""}}}"#,
            Some(1),
            ErrorKind::BadId,
        ),
        (br#"{"request_id":1,"command":{"CloseChannel":{"channel_id":"0123"}}}"#, Some(1), ErrorKind::BadId),
        (
            br#"{"request_id":1,"command":{"SendActorMessage":{"data":[1,999]}}}"#,
            Some(1),
            ErrorKind::BadArguments,
        ),
    ];
    for (bytes, request_id, kind) in cases {
        let err = decode_client_frame(bytes).unwrap_err();
        assert_eq!((err.request_id, err.kind), (request_id, kind), "{}", String::from_utf8_lossy(bytes));
    }
}

#[test]
fn authenticate_frames_are_read_apart_from_commands() {
    let bytes = br#"{"request_id":1,"command":{"Authenticate":{"token":"abc"}}}"#;
    let frame = Authenticate::decode(bytes).unwrap().unwrap();
    assert_eq!(frame, Authenticate { request_id: 1, token: Token::new("abc") });
    assert!(!format!("{frame:?}").contains("abc"), "the token shows in Debug");
    // Not a command: a session would call it unknown.
    assert_eq!(decode_client_frame(bytes).unwrap_err().kind, ErrorKind::UnknownCommand);

    let bad =
        Authenticate::decode(br#"{"request_id":1,"command":{"Authenticate":{"token":7}}}"#).unwrap_err();
    assert_eq!((bad.request_id, bad.kind), (Some(1), ErrorKind::BadArguments));
    let bad = Authenticate::decode(br#"{"command":{"Authenticate":{"token":"t"}}}"#).unwrap_err();
    assert_eq!((bad.request_id, bad.kind), (None, ErrorKind::MalformedFrame));
    for other in [&b""[..], b"[]", b"{not json", br#"{"request_id":1,"command":"ListActors"}"#] {
        assert_eq!(Authenticate::decode(other).unwrap(), None);
    }
}

#[test]
fn string_payloads_are_accepted_in_commands() {
    let id = ActorId::new();
    let json =
        format!(r#"{{"request_id":4,"command":{{"SendActorMessage":{{"id":"{id}","data":"héllo"}}}}}}"#);
    let frame = decode_client_frame(json.as_bytes()).unwrap();
    assert_eq!(frame.command, Command::SendActorMessage { id, data: "héllo".as_bytes().to_vec() });
}

#[test]
fn an_actor_s_node_is_optional_on_the_wire() {
    let id = ActorId::new();
    // Without a node the listing is what it always was: older clients read it.
    let local = ServerFrame::Response {
        request_id: Some(1),
        response: Response::ActorList { actors: vec![ActorInfo { id, name: None, node: None }] },
    };
    let json = String::from_utf8(encode(&local).unwrap()).unwrap();
    assert!(!json.contains("node"), "{json}");
    // A listing from an older server (no node) reads as node-less.
    let old =
        format!(r#"{{"request_id":2,"response":{{"ActorList":{{"actors":[{{"id":"{id}","name":"e"}}]}}}}}}"#);
    let ServerFrame::Response { response: Response::ActorList { actors }, .. } =
        decode_server_frame(old.as_bytes()).unwrap()
    else {
        panic!("an actor list")
    };
    assert_eq!(actors, vec![ActorInfo { id, name: Some("e".into()), node: None }]);
    // With a node it round-trips.
    let remote = ServerFrame::Response {
        request_id: Some(3),
        response: Response::ActorList {
            actors: vec![ActorInfo { id, name: Some("b.echo".into()), node: Some("b".into()) }],
        },
    };
    let json = encode(&remote).unwrap();
    assert!(String::from_utf8_lossy(&json).contains(r#""node":"b""#));
    assert_eq!(decode_server_frame(&json).unwrap(), remote);
}
