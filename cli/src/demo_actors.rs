//! The demo actors `serve` runs behind its gateway: `echo`, `counter` and
//! `channel-echo`, each on its own thread (the `greeter` lives in `greeter.rs`).

use std::io;
use std::thread;

use sharded_router::{ActorId, ActorMessage, Mailbox, Router};

/// The demo actors, by the name they are listed under (before any node prefix).
pub const DEMO_ACTORS: [(&str, DemoActor); 3] =
    [("echo", DemoActor::Echo), ("counter", DemoActor::Counter), ("channel-echo", DemoActor::ChannelEcho)];

#[derive(Clone, Copy, Debug)]
pub enum DemoActor {
    /// Replies to every request with its payload.
    Echo,
    /// Counts one-way messages; replies to a request with the count.
    Counter,
    /// Accepts every channel ("welcome") and sends back what arrives on it.
    ChannelEcho,
}

impl DemoActor {
    /// Registers the actor under a new id and runs it on a thread named after
    /// `name`; returns its id.
    pub fn start(self, router: &Router, name: &str) -> Result<ActorId, Box<dyn std::error::Error>> {
        let (tx, mailbox) = router.mailbox();
        let id = ActorId::new();
        router.register(id, tx)?;
        let r = router.clone();
        thread::Builder::new()
            .name(format!("demo-{name}"))
            .spawn(move || self.run(&r, id, &mailbox))
            .map_err(|e: io::Error| format!("cannot start the {name} actor: {e}"))?;
        Ok(id)
    }

    fn run(self, router: &Router, me: ActorId, mailbox: &Mailbox) {
        let mut count = 0u64;
        while let Ok(msg) = mailbox.recv() {
            match (self, msg) {
                (Self::Echo | Self::ChannelEcho, ActorMessage::Request { data, reply }) => {
                    let _ = reply.reply(data);
                }
                (Self::Counter, ActorMessage::Send { .. }) => {
                    count += 1;
                }
                (Self::Counter, ActorMessage::Request { reply, .. }) => {
                    let _ = reply.reply(count.to_string().into_bytes());
                }
                (Self::ChannelEcho, ActorMessage::ChannelOpen { reply, .. }) => {
                    let _ = reply.accept(Some(b"welcome".to_vec()));
                }
                (Self::ChannelEcho, ActorMessage::ChannelMessage { channel_id, data, .. }) => {
                    let _ = router.channel_send(channel_id, me, data);
                }
                // Everything else is dropped; a dropped channel open is a rejection.
                _ => {}
            }
        }
    }
}
