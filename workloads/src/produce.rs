//! The producers and requesters: one task each, sending to a precomputed sequence of
//! targets through the implementation under test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use sharded_router::{ActorHandle, ActorId, ChannelId, ExternalId, Mailbox, Router, SendErrorKind};
use tokio::sync::{mpsc, oneshot};
use tokio::task::yield_now;

use crate::actors::RawMessage;
use crate::anchor::{Anchor, AnchorMessage};
use crate::hand_rolled::HandRolled;
use crate::sink::{histogram, now_ns, Sink};
use crate::{Full, Mode, REQUEST_TIMEOUT, TARGETS_LEN, YIELD_EVERY};

/// Channels opened for [`Mode::Channel`]: the client that opened them, and one
/// channel per actor, by index.
pub(crate) struct Channels<Client, Id> {
    pub(crate) client: Client,
    pub(crate) ids: Vec<Id>,
    /// Our client's endpoint, kept open for the fixture's life (nothing is sent
    /// to it).
    pub(crate) _endpoint: Option<Mailbox>,
}

pub(crate) enum System {
    /// Ours, ours-tokio (the router makes tokio-backed mailboxes) and ours-handle
    /// (`handles` is set: producers send through them).
    Ours {
        router: Router,
        ids: Vec<ActorId>,
        /// One resolved handle per actor, by index (ours-handle only).
        handles: Option<Vec<ActorHandle>>,
        channels: Option<Channels<ExternalId, ChannelId>>,
    },
    HandRolled {
        map: HandRolled,
        ids: Vec<ActorId>,
        channels: Option<Channels<ActorId, u64>>,
    },
    /// The anchor's channel ids are its own counter values.
    Anchor {
        anchor: Anchor,
        ids: Vec<ActorId>,
        channels: Option<Channels<ActorId, u64>>,
    },
    Limit {
        mailboxes: Vec<flume::Sender<RawMessage>>,
    },
    LimitTokio {
        mailboxes: Vec<mpsc::Sender<AnchorMessage>>,
    },
}

/// Spaces a task's messages at a fixed rate (the offered load of a latency run).
/// Timers tick in milliseconds, so messages leave in the bursts of one tick.
#[derive(Clone, Copy)]
struct Pacer {
    start: Instant,
    per_sec: f64,
}

impl Pacer {
    async fn wait(&self, i: u64) {
        let due = self.start + Duration::from_secs_f64(i as f64 / self.per_sec);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
    }
}

/// One producer's share of a run.
pub(crate) struct Share {
    pub(crate) system: Arc<System>,
    pub(crate) sink: Arc<Sink>,
    pub(crate) targets: Arc<[u32]>,
    pub(crate) count: u64,
    pub(crate) mode: Mode,
    pub(crate) full: Full,
    pub(crate) slow: Option<u32>,
    /// Payloads carry their send time (a latency run).
    pub(crate) stamp: bool,
    /// Messages (or round trips) per second for this share; `None`: as fast as it can.
    pub(crate) pace: Option<f64>,
}

impl Share {
    fn target(&self, i: u64) -> u32 {
        self.targets[i as usize & (TARGETS_LEN - 1)]
    }

    pub(crate) fn counted(&self) -> u64 {
        match self.slow {
            None => self.count,
            Some(slow) => (0..self.count).filter(|&i| self.target(i) != slow).count() as u64,
        }
    }

    fn payload(&self, i: u64) -> Vec<u8> {
        if self.stamp { now_ns() } else { i }.to_le_bytes().to_vec()
    }

    fn pacer(&self) -> Option<Pacer> {
        self.pace.map(|per_sec| Pacer { start: Instant::now(), per_sec })
    }

    /// A refused message to a counted actor is settled by its producer.
    fn refused(&self, target: u32) {
        if Some(target) != self.slow {
            self.sink.add(1);
        }
    }

    /// Sends this share; returns how many messages were refused.
    pub(crate) async fn produce(self) -> u64 {
        let mut refused = 0;
        let pacer = self.pacer();
        let wait = self.full != Full::Refuse;
        for i in 0..self.count {
            if let Some(p) = &pacer {
                p.wait(i).await;
            }
            let target = self.target(i);
            let ok = match &*self.system {
                System::Ours { router, ids, handles, channels } => {
                    self.ours(router, ids, handles.as_deref(), channels, target, i).await
                }
                System::HandRolled { map, ids, channels } => {
                    let data = self.payload(i);
                    match (self.mode, channels) {
                        (Mode::Channel, Some(c)) => {
                            map.channel_send(c.ids[target as usize], c.client, data, wait).await.is_ok()
                        }
                        _ => map.send(ids[target as usize], data, wait).await.is_ok(),
                    }
                }
                System::Anchor { anchor, ids, channels } => {
                    let id = ids[target as usize];
                    let data = self.payload(i);
                    match (self.mode, channels) {
                        (Mode::Channel, Some(c)) => {
                            anchor.channel_send(c.ids[target as usize], c.client, data).await.is_ok()
                        }
                        (Mode::Tell, _) => anchor.tell(id, data).await.is_ok(),
                        _ => anchor.send(id, data).await.is_ok(),
                    }
                }
                System::Limit { mailboxes } => {
                    let mailbox = &mailboxes[target as usize];
                    let msg = RawMessage::Send { data: self.payload(i) };
                    if wait {
                        mailbox.send_async(msg).await.is_ok()
                    } else {
                        mailbox.try_send(msg).is_ok()
                    }
                }
                System::LimitTokio { mailboxes } => {
                    let mailbox = &mailboxes[target as usize];
                    match mailbox.try_send(AnchorMessage::Send { data: self.payload(i) }) {
                        Ok(()) => true,
                        Err(mpsc::error::TrySendError::Full(msg)) if wait => mailbox.send(msg).await.is_ok(),
                        Err(_) => false,
                    }
                }
            };
            if !ok {
                refused += 1;
                self.refused(target);
            }
            if (i + 1) % YIELD_EVERY == 0 {
                yield_now().await;
            }
        }
        refused
    }

    /// One message through our router, by id or through the target's handle when
    /// `handles` is given; `false` if it was refused.
    async fn ours(
        &self,
        router: &Router,
        ids: &[ActorId],
        handles: Option<&[ActorHandle]>,
        channels: &Option<Channels<ExternalId, ChannelId>>,
        target: u32,
        i: u64,
    ) -> bool {
        let id = ids[target as usize];
        let handle = handles.map(|h| &h[target as usize]);
        if self.mode == Mode::Tell {
            match handle {
                Some(h) => h.tell(self.payload(i)),
                None => router.tell(id, self.payload(i)),
            }
            return true;
        }
        let mut data = self.payload(i);
        loop {
            let sent = match (channels, handle) {
                (Some(c), _) if self.mode == Mode::Channel => {
                    router.channel_send(c.ids[target as usize], c.client, data)
                }
                (_, Some(h)) if self.full == Full::Await => h.send_async(data).await,
                (_, Some(h)) => h.try_send(data),
                _ if self.full == Full::Await => router.send_async(id, data).await,
                _ => router.try_send(id, data),
            };
            match sent {
                Ok(()) => return true,
                Err(e) if e.kind() == SendErrorKind::MailboxFull && self.full != Full::Refuse => {
                    data = e.into_inner();
                    yield_now().await;
                }
                Err(_) => return false,
            }
        }
    }

    /// Makes this share's round trips one after another; returns the failures and,
    /// in a latency run, the round trips' times.
    pub(crate) async fn request(self) -> (u64, Option<Histogram<u64>>) {
        let mut failed = 0;
        let mut latency = self.stamp.then(histogram);
        let pacer = self.pacer();
        for i in 0..self.count {
            if let Some(p) = &pacer {
                p.wait(i).await;
            }
            let target = self.target(i) as usize;
            let data = self.payload(i);
            let start = latency.as_ref().map(|_| now_ns());
            let answer = match &*self.system {
                System::Ours { handles: Some(handles), .. } => {
                    handles[target].request_async(data, REQUEST_TIMEOUT).await.ok()
                }
                System::Ours { router, ids, .. } => {
                    router.request_async(ids[target], data, REQUEST_TIMEOUT).await.ok()
                }
                System::HandRolled { map, ids, .. } => {
                    map.request(ids[target], data, REQUEST_TIMEOUT).await.ok()
                }
                System::Anchor { anchor, ids, .. } => anchor.request(ids[target], data).await.ok(),
                System::Limit { mailboxes } => {
                    let (reply, answer) = flume::bounded(1);
                    match mailboxes[target].send_async(RawMessage::Request { data, reply }).await {
                        Ok(()) => answer.recv_async().await.ok(),
                        Err(_) => None,
                    }
                }
                System::LimitTokio { mailboxes } => {
                    let (reply, answer) = oneshot::channel();
                    match mailboxes[target].send(AnchorMessage::Request { data, reply }).await {
                        Ok(()) => answer.await.ok(),
                        Err(_) => None,
                    }
                }
            };
            if let (Some(h), Some(start)) = (&mut latency, start) {
                h.saturating_record(now_ns().saturating_sub(start).max(1));
            }
            if answer.map_or(true, |a| a.len() != 8) {
                failed += 1;
            }
        }
        (failed, latency)
    }
}
