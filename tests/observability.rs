//! What a `metrics` recorder sees of a scripted workload (feature `metrics`):
//! every counter, gauge and the request latency histogram, read back through
//! `metrics-util`'s debugging recorder.
//!
//! The recorder is process-wide, so this file holds one test.

use std::collections::HashMap;
use std::thread;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use sharded_router::observe::MetricsPublisher;
use sharded_router::{
    ActorId, ActorMessage, OverflowPolicy, RequestError, RequestOutcome, Router, SendErrorKind,
};

/// The recorder's values, by name and sorted labels (`name{k=v,...}`).
fn values(snapshotter: &Snapshotter) -> HashMap<String, DebugValue> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let (_, key) = key.into_parts();
            let mut labels: Vec<String> =
                key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
            labels.sort();
            (format!("{}{{{}}}", key.name(), labels.join(",")), value)
        })
        .collect()
}

fn counter(values: &HashMap<String, DebugValue>, key: &str) -> u64 {
    match values.get(key) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{key}: expected a counter, found {other:?}"),
    }
}

fn gauge(values: &HashMap<String, DebugValue>, key: &str) -> f64 {
    match values.get(key) {
        Some(DebugValue::Gauge(v)) => v.into_inner(),
        other => panic!("{key}: expected a gauge, found {other:?}"),
    }
}

fn samples(values: &HashMap<String, DebugValue>, key: &str) -> Vec<f64> {
    match values.get(key) {
        Some(DebugValue::Histogram(v)) => v.iter().map(|x| x.into_inner()).collect(),
        None => Vec::new(),
        other => panic!("{key}: expected a histogram, found {other:?}"),
    }
}

#[test]
fn a_scripted_workload_is_counted_exactly() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("the only recorder of this test binary");

    // One shard, so every count is on shard "0"; mailboxes of 2; 3 may park.
    let router = Router::builder()
        .shards(1)
        .mailbox_capacity(2)
        .overflow(OverflowPolicy::Park { max_per_actor: 3 })
        .timer_resolution(Duration::from_millis(5))
        .build()
        .unwrap();

    // A slow actor that reads only when told to: 2 direct, 3 parked, 2 rejected.
    let (tx, slow_mailbox) = router.mailbox();
    let slow = ActorId::new();
    router.register(slow, tx).unwrap();
    for i in 0..7u8 {
        let outcome = router.try_send(slow, vec![i]);
        if i < 5 {
            outcome.unwrap();
        } else {
            assert_eq!(outcome.unwrap_err().kind(), SendErrorKind::MailboxFull);
        }
    }
    router.flush();
    let mut publisher = MetricsPublisher::new();
    publisher.publish(&router);
    let v = values(&snapshotter);
    assert_eq!(counter(&v, "sharded_router_delivered_direct_total{shard=0}"), 2);
    assert_eq!(counter(&v, "sharded_router_delivered_overflow_total{shard=0}"), 0);
    assert_eq!(counter(&v, "sharded_router_rejected_total{shard=0}"), 2);
    assert_eq!(gauge(&v, "sharded_router_overflow_depth{shard=0}"), 3.0);
    assert_eq!(gauge(&v, "sharded_router_registered_actors{shard=0}"), 1.0);

    // Reading the mailbox lets the shard deliver what it parked.
    for _ in 0..5 {
        slow_mailbox.recv_timeout(Duration::from_secs(10)).unwrap();
    }
    router.flush();

    // Dead letters: a tell to nobody; two parked messages of an actor that leaves.
    router.tell(ActorId::new(), b"nobody".to_vec());
    for i in 0..4u8 {
        router.try_send(slow, vec![i]).unwrap();
    }
    router.unregister(slow).unwrap();
    router.flush();
    drop(slow_mailbox);

    // Requests: 4 answered (3 blocking, 1 async), 1 to nobody, 1 timing out.
    let (tx, echo_mailbox) = router.mailbox();
    let echo = ActorId::new();
    router.register(echo, tx).unwrap();
    let echo_thread = thread::spawn(move || {
        while let Ok(msg) = echo_mailbox.recv() {
            if let ActorMessage::Request { data, reply } = msg {
                let _ = reply.reply(data);
            }
        }
    });
    let (tx, silent_mailbox) = router.mailbox();
    let silent = ActorId::new();
    router.register(silent, tx).unwrap();
    for _ in 0..3 {
        assert_eq!(router.request(echo, b"q".to_vec(), Duration::from_secs(10)).unwrap(), b"q");
    }
    let answer =
        futures_executor::block_on(router.request_async(echo, b"a".to_vec(), Duration::from_secs(10)));
    assert_eq!(answer.unwrap(), b"a");
    let nobody = router.request(ActorId::new(), vec![], Duration::from_secs(10));
    assert_eq!(nobody.unwrap_err().error(), RequestError::ActorNotFound);
    let late = router.request(silent, vec![], Duration::from_millis(20));
    assert_eq!(late.unwrap_err().error(), RequestError::Timeout);

    publisher.publish(&router);
    let v = values(&snapshotter);
    assert_eq!(counter(&v, "sharded_router_delivered_direct_total{shard=0}"), 2 + 2 + 4 + 1);
    assert_eq!(counter(&v, "sharded_router_delivered_overflow_total{shard=0}"), 3);
    assert_eq!(counter(&v, "sharded_router_rejected_total{shard=0}"), 2);
    assert_eq!(gauge(&v, "sharded_router_overflow_depth{shard=0}"), 0.0);
    assert_eq!(gauge(&v, "sharded_router_registered_actors{shard=0}"), 2.0);
    assert_eq!(counter(&v, "sharded_router_dead_letters_total{reason=actor_not_found,shard=0}"), 1);
    assert_eq!(counter(&v, "sharded_router_dead_letters_total{reason=unregistered,shard=0}"), 2);
    assert_eq!(counter(&v, "sharded_router_dead_letters_total{reason=shutdown,shard=0}"), 0);
    assert_eq!(counter(&v, "sharded_router_requests_total{outcome=ok,shard=0}"), 4);
    assert_eq!(counter(&v, "sharded_router_requests_total{outcome=actor_not_found,shard=0}"), 1);
    assert_eq!(counter(&v, "sharded_router_requests_total{outcome=timeout,shard=0}"), 1);
    assert_eq!(counter(&v, "sharded_router_requests_total{outcome=no_reply,shard=0}"), 0);
    let latencies = samples(&v, "sharded_router_request_duration_seconds{shard=0}");
    assert_eq!(latencies.len(), 6, "one sample per resolved request: {latencies:?}");
    let slowest = latencies.iter().copied().fold(0.0, f64::max);
    assert!((0.018..1.0).contains(&slowest), "the timed-out request took ~20 ms: {slowest}");
    assert!(counter(&v, "sharded_router_shard_busy_microseconds_total{shard=0}") > 0);
    assert_eq!(gauge(&v, "sharded_router_shard_failed{shard=0}"), 0.0);
    assert_eq!(gauge(&v, "sharded_router_channels_open{}"), 0.0);

    // The same numbers through `Router::metrics`.
    let total = router.metrics().total();
    assert_eq!(total.requests.count(RequestOutcome::Ok), 4);
    assert_eq!(total.requests.latency.count(), 6);
    assert!(total.busy > Duration::ZERO);

    // Publishing again records no request twice.
    publisher.publish(&router);
    let again = samples(&values(&snapshotter), "sharded_router_request_duration_seconds{shard=0}");
    let total_samples = latencies.len() + again.len();
    assert_eq!(total_samples, 6, "each request recorded once across publications (after: {again:?})");

    // Channels, counted table-wide.
    let (tx, acceptor_mailbox) = router.mailbox();
    let acceptor = ActorId::new();
    router.register(acceptor, tx).unwrap();
    let acceptor_thread = thread::spawn(move || {
        while let Ok(msg) = acceptor_mailbox.recv() {
            if let ActorMessage::ChannelOpen { initial_msg, reply, .. } = msg {
                if initial_msg == b"no" {
                    reply.reject();
                } else {
                    let _ = reply.accept(None);
                }
            }
        }
    });
    let opened = router.open_channel(echo, acceptor, b"yes".to_vec(), Duration::from_secs(10)).unwrap();
    assert!(router.open_channel(echo, acceptor, b"no".to_vec(), Duration::from_secs(10)).is_err());
    router.channel_send(opened.id, echo, b"m".to_vec()).unwrap();
    publisher.publish(&router);
    let v = values(&snapshotter);
    assert_eq!(gauge(&v, "sharded_router_channels_open{}"), 1.0);
    assert_eq!(counter(&v, "sharded_router_channels_opened_total{}"), 1);
    assert_eq!(counter(&v, "sharded_router_channels_rejected_total{}"), 1);
    assert_eq!(counter(&v, "sharded_router_channel_messages_total{}"), 1);

    router.shutdown();
    drop(silent_mailbox);
    echo_thread.join().unwrap();
    acceptor_thread.join().unwrap();
}
