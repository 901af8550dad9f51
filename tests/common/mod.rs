//! Helpers shared by the gateway test binaries (`gateway`, `gateway_security`,
//! `soak`).

use std::thread;

use sharded_router::{ActorId, Mailbox, Router};

/// Registers a new actor and runs `f` with its id and mailbox on a thread of its own.
pub fn spawn_actor(router: &Router, f: impl FnOnce(ActorId, Mailbox) + Send + 'static) -> ActorId {
    let (tx, mailbox) = router.mailbox();
    let id = ActorId::new();
    router.register(id, tx).unwrap();
    thread::spawn(move || f(id, mailbox));
    id
}
