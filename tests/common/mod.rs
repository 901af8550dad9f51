//! Helpers shared by the integration test binaries. Each binary uses a subset, so
//! the others would be dead code in it.
#![allow(dead_code)]

use std::future::Future;
use std::thread;
use std::time::Duration;

use sharded_router::{ActorId, ActorMessage, Mailbox, OverflowPolicy, Router};

/// Registers a new actor and runs `f` with its id and mailbox on a thread of its own.
pub fn spawn_actor(router: &Router, f: impl FnOnce(ActorId, Mailbox) + Send + 'static) -> ActorId {
    let (tx, mailbox) = router.mailbox();
    let id = ActorId::new();
    router.register(id, tx).unwrap();
    thread::spawn(move || f(id, mailbox));
    id
}

/// An actor on its own thread that answers requests with their payload and accepts
/// every channel, until its mailbox disconnects.
pub fn spawn_echo(router: &Router) -> ActorId {
    spawn_actor(router, |_, mailbox| {
        while let Ok(msg) = mailbox.recv() {
            match msg {
                ActorMessage::Request { data, reply } => {
                    let _ = reply.reply(data);
                }
                ActorMessage::ChannelOpen { reply, .. } => {
                    let _ = reply.accept(None);
                }
                _ => {}
            }
        }
    })
}

/// Two shards, mailboxes of `capacity`, parking up to `park` messages per actor.
pub fn router(capacity: usize, park: usize) -> Router {
    Router::builder()
        .shards(2)
        .mailbox_capacity(capacity)
        .overflow(OverflowPolicy::Park { max_per_actor: park })
        .build()
        .unwrap()
}

/// How long the tests wait for anything that should happen.
pub const WAIT: Duration = Duration::from_secs(20);

/// Awaits `fut` for at most [`WAIT`]; past that the test fails, naming `what`.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}
