//! The `serve` demo's `greeter`: an actor with two versions, to show a hot
//! update through the gateway (`sharded-router update greeter`).
//!
//! Version 1 answers a request `x` with `hello x (greeting n)`, version 2 with
//! `hi x (greeting n)`; `n` counts the greetings so far, and the count moves
//! from version 1 to version 2 with the update: the behaviour changes, the
//! state survives, and no message is lost on the way (the router holds them
//! while the instances swap).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use sharded_router::{ActorId, ActorMessage, Mailbox, Router, TryRecvError};

/// The newest version there is.
const LATEST: u32 = 2;

/// A running instance: its version, its stop flag and its thread, which hands
/// back the greeting count and the mailbox when it stops.
struct Instance {
    version: u32,
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<(u64, Mailbox)>,
}

impl Instance {
    fn start(version: u32, mut count: u64, mailbox: Mailbox) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::Builder::new().name(format!("demo-greeter-v{version}")).spawn(move || {
            // Polls the stop flag between messages: an update stops an instance
            // at a message boundary.
            while !flag.load(Ordering::SeqCst) {
                match mailbox.recv_timeout(Duration::from_millis(10)) {
                    Ok(ActorMessage::Request { data, reply }) => {
                        count += 1;
                        let word = if version == 1 { "hello" } else { "hi" };
                        let name = String::from_utf8_lossy(&data);
                        let _ = reply.reply(format!("{word} {name} (greeting {count})").into_bytes());
                    }
                    Ok(_) | Err(TryRecvError::Empty) => {}
                    Err(_) => break,
                }
            }
            (count, mailbox)
        })?;
        Ok(Self { version, stop, thread })
    }

    /// Stops the instance after the message it is on; its count and mailbox.
    fn stop(self) -> Result<(u64, Mailbox), String> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().map_err(|_| "the greeter's instance panicked".to_owned())
    }
}

/// The greeter actor and its current instance.
pub struct Greeter {
    router: Router,
    id: ActorId,
    current: Mutex<Option<Instance>>,
}

impl Greeter {
    /// Registers the greeter, running version 1.
    pub fn start(router: &Router) -> Result<Arc<Self>, Box<dyn std::error::Error>> {
        let (tx, mailbox) = router.mailbox();
        let id = ActorId::new();
        router.register(id, tx)?;
        let instance = Instance::start(1, 0, mailbox)?;
        Ok(Arc::new(Self { router: router.clone(), id, current: Mutex::new(Some(instance)) }))
    }

    pub fn id(&self) -> ActorId {
        self.id
    }

    /// Swaps the running instance for the next version: suspend, stop the old
    /// instance, replace the mailbox, start the new one with the old one's
    /// count, resume. If anything fails, the old version carries on.
    pub fn update(&self) -> Result<String, String> {
        let mut current = self.current.lock().map_err(|_| "the greeter's lock is poisoned".to_owned())?;
        let running = current.take().ok_or("the greeter is not running")?;
        if running.version >= LATEST {
            let version = running.version;
            *current = Some(running);
            return Err(format!("the greeter already runs v{version}, the latest"));
        }
        let next = running.version + 1;
        let old_version = running.version;
        self.router.suspend(self.id).map_err(|e| e.to_string())?;
        let (count, old_mailbox) = running.stop()?;
        // The new instance starts first, on its own (still empty) mailbox, so
        // that nothing has moved if it cannot.
        let (tx, mailbox) = self.router.mailbox();
        let outcome = match Instance::start(next, count, mailbox) {
            Err(e) => Err((format!("could not start v{next}: {e}"), old_mailbox)),
            Ok(instance) => match self.router.replace_mailbox(self.id, tx) {
                Ok(()) => {
                    *current = Some(instance);
                    drop(old_mailbox);
                    Ok(format!("v{next}"))
                }
                Err(e) => {
                    let _ = instance.stop();
                    Err((format!("could not swap the mailbox: {e}"), old_mailbox))
                }
            },
        };
        let outcome = outcome.map_err(|(why, old_mailbox)| {
            // The failure path: nothing moved, the old version carries on.
            match Instance::start(old_version, count, old_mailbox) {
                Ok(instance) => *current = Some(instance),
                Err(e) => eprintln!("greeter: could not restart v{old_version}: {e}"),
            }
            why
        });
        self.router.resume(self.id).map_err(|e| e.to_string())?;
        outcome
    }
}
