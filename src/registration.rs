//! One registration's shared state ([`MailboxState`]): what a mailbox's two
//! halves, the actor table, the shard and the channel table know of one actor.
//!
//! It holds the registration itself (`Link`: under its lock answers to the
//! actor's requests are accepted and the registration ends), the actor's part in
//! the overflow protocol (`flow`, see `delivery`), its unresolved requests and
//! the channels it takes part in. The router is reached through [`Registrar`],
//! which the routing core implements, so this module depends on nothing above it.

use std::any::Any;
use std::collections::HashMap;

use crate::delivery::Flow;
use crate::error::RequestError;
use crate::ids::{ChannelId, Participant};
use crate::sync::{random_state, Arc, AtomicBool, AtomicUsize, Mutex, Ordering};

/// What a registration needs from the router it is registered with.
pub(crate) trait Registrar: Send + Sync {
    /// Posts a `Drain` notice for `who` to its shard: the mailbox took a message
    /// while messages were in flight. `false` if the shard takes no commands.
    fn post_drain(&self, who: Participant, state: &Arc<MailboxState>) -> bool;

    /// The last receiving half of `who`'s mailbox was dropped: unregister it if
    /// `state` is still its registration.
    fn mailbox_dropped(&self, who: Participant, state: &Arc<MailboxState>);
}

/// State shared by a mailbox's two halves and the router, one per registration.
pub(crate) struct MailboxState {
    /// The actor's part in the overflow protocol (see `delivery`): messages in
    /// flight through its shard, the pending `Drain` notice, senders waiting for
    /// room.
    pub(crate) flow: Flow,
    /// Requests to this actor that have no outcome yet.
    pub(crate) outstanding: AtomicUsize,
    /// Set on a replacement registration whose predecessors may still have
    /// requests without an outcome (their slots name the old state).
    inherited_requests: AtomicBool,
    /// Receiving halves ([`Mailbox`] clones) alive.
    receivers: AtomicUsize,
    /// The registration, set when it starts and when it ends. Answers to the
    /// actor's requests are accepted under this lock, and the registration ends
    /// under it, so none is accepted once it has ended.
    link: Mutex<Link>,
    /// The channels this participant takes part in (open or opening).
    channels: Mutex<ChannelSet>,
    /// The registration's handle gate (`table::Gate`), made when the first
    /// [`ActorHandle`](crate::ActorHandle) is taken. Kept as `Any`: the gate
    /// holds the table entry, a layer above this one.
    gate: Mutex<Option<Box<dyn Any + Send + Sync>>>,
    capacity: usize,
}

#[derive(Default)]
struct ChannelSet {
    /// Each channel with the order in which it was linked. Allocated with the
    /// first channel: most actors never hold one, and a boxed map costs an actor 8
    /// bytes instead of the 64 of an inline one.
    #[allow(clippy::box_collection)]
    ids: Option<Box<HashMap<ChannelId, u64, ahash::RandomState>>>,
    /// The next link's order number.
    next: u64,
    /// Set when the participant leaves; no channel can be linked after that.
    closed: bool,
}

/// Where a mailbox stands with the router.
enum Link {
    /// Not registered (yet).
    Unlinked,
    /// Registered as `who` with `router`.
    Linked { who: Participant, router: Arc<dyn Registrar> },
    /// The registration ended; requests still unanswered resolve with this.
    Left(RequestError),
    /// The mailbox was replaced (`Router::replace_mailbox`): the registration
    /// goes on in `by`, which answers to the actor's requests follow.
    Replaced { by: Arc<MailboxState> },
}

impl MailboxState {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            flow: Flow::new(),
            outstanding: AtomicUsize::new(0),
            inherited_requests: AtomicBool::new(false),
            receivers: AtomicUsize::new(1),
            link: Mutex::new(Link::Unlinked),
            channels: Mutex::new(ChannelSet::default()),
            gate: Mutex::new(None),
            capacity,
        }
    }

    /// The value kept in the gate slot, made by `make` if there is none yet.
    pub(crate) fn gate_or_insert_with<G: Any + Send + Sync + Clone>(
        &self,
        make: impl FnOnce() -> G,
    ) -> Option<G> {
        let mut slot = self.gate.lock();
        slot.get_or_insert_with(|| Box::new(make())).downcast_ref::<G>().cloned()
    }

    /// The value kept in the gate slot, if one was made.
    pub(crate) fn gate<G: Any + Clone>(&self) -> Option<G> {
        self.gate.lock().as_ref().and_then(|gate| gate.downcast_ref::<G>().cloned())
    }

    /// The mailbox's capacity.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Starts the registration of `who`.
    pub(crate) fn link(&self, who: Participant, router: Arc<dyn Registrar>) {
        *self.link.lock() = Link::Linked { who, router };
    }

    /// Undoes [`link`](Self::link) for a registration that did not take place.
    pub(crate) fn reset_link(&self) {
        let old = std::mem::replace(&mut *self.link.lock(), Link::Unlinked);
        drop(old);
    }

    /// Runs `f(arg)` while the registration lasts; once it has ended, hands `arg`
    /// back with the reason.
    pub(crate) fn while_registered<A, R>(
        &self,
        arg: A,
        f: impl FnOnce(A) -> R,
    ) -> Result<R, (RequestError, A)> {
        let link = self.link.lock();
        match &*link {
            Link::Left(reason) => Err((*reason, arg)),
            Link::Unlinked | Link::Linked { .. } => Ok(f(arg)),
            // Lock order: a replaced state, then its successor (never the
            // other way round).
            Link::Replaced { by } => by.while_registered(arg, f),
        }
    }

    /// Why the registration ended, once it has.
    pub(crate) fn left(&self) -> Option<RequestError> {
        match &*self.link.lock() {
            Link::Left(reason) => Some(*reason),
            Link::Unlinked | Link::Linked { .. } => None,
            Link::Replaced { by } => by.left(),
        }
    }

    /// `true` if `state` is this registration, or one that replaced it (and so
    /// on): requests filed against this state belong to `state`'s actor.
    pub(crate) fn is_or_became(this: &Arc<Self>, state: &Arc<Self>) -> bool {
        let mut current = Arc::clone(this);
        loop {
            if Arc::ptr_eq(&current, state) {
                return true;
            }
            let next = match &*current.link.lock() {
                Link::Replaced { by } => Arc::clone(by),
                Link::Unlinked | Link::Linked { .. } | Link::Left(_) => return false,
            };
            current = next;
        }
    }

    /// `true` once this mailbox was replaced by another.
    pub(crate) fn is_replaced(&self) -> bool {
        matches!(*self.link.lock(), Link::Replaced { .. })
    }

    /// `true` if requests to this actor may lack an outcome: its own, or those of
    /// the registrations it replaced.
    pub(crate) fn may_have_requests(&self) -> bool {
        self.outstanding.load(Ordering::SeqCst) > 0 || self.inherited_requests.load(Ordering::SeqCst)
    }

    /// Hands the registration over to `by`, which replaces this mailbox: the
    /// channels it takes part in move to `by` (in their order), answers to its
    /// requests are accepted while `by` is registered, and its receiving side no
    /// longer speaks for the actor (dropping it unregisters nothing).
    pub(crate) fn hand_over_to(&self, by: &Arc<Self>) {
        let inherited = self.may_have_requests();
        by.inherited_requests.fetch_or(inherited, Ordering::SeqCst);
        {
            let mut from = self.channels.lock();
            let mut to = by.channels.lock();
            let mut linked: Vec<(u64, ChannelId)> = from
                .ids
                .take()
                .map(|ids| ids.into_iter().map(|(id, order)| (order, id)).collect())
                .unwrap_or_default();
            linked.sort_unstable_by_key(|&(order, _)| order);
            from.closed = true;
            for (_, channel) in linked {
                let order = to.next;
                to.next += 1;
                to.ids
                    .get_or_insert_with(|| Box::new(HashMap::with_hasher(random_state())))
                    .insert(channel, order);
            }
        }
        let old = std::mem::replace(&mut *self.link.lock(), Link::Replaced { by: Arc::clone(by) });
        drop(old);
    }

    /// Receiving halves alive.
    pub(crate) fn receivers(&self) -> usize {
        self.receivers.load(Ordering::SeqCst)
    }

    /// A receiving half was cloned.
    pub(crate) fn receiver_added(&self) {
        self.receivers.fetch_add(1, Ordering::SeqCst);
    }

    /// A receiving half was dropped; `true` if it was the last.
    pub(crate) fn receiver_dropped(&self) -> bool {
        self.receivers.fetch_sub(1, Ordering::SeqCst) == 1
    }

    /// Who this is registered as, and with which router, while registered.
    pub(crate) fn registered_as(&self) -> Option<(Participant, Arc<dyn Registrar>)> {
        match &*self.link.lock() {
            Link::Linked { who, router } => Some((*who, Arc::clone(router))),
            Link::Unlinked | Link::Left(_) | Link::Replaced { .. } => None,
        }
    }

    /// Tells the actor's shard that its mailbox took a message (a `Drain`
    /// notice); `false` if it is not registered or the shard takes no commands.
    /// Posted under the registration's lock, so never after it has ended.
    pub(crate) fn post_drain(this: &Arc<Self>) -> bool {
        match &*this.link.lock() {
            Link::Linked { who, router } => router.post_drain(*who, this),
            Link::Unlinked | Link::Left(_) | Link::Replaced { .. } => false,
        }
    }

    /// Records that this participant takes part in `channel`; `false` once it left.
    pub(crate) fn link_channel(&self, channel: ChannelId) -> bool {
        let mut set = self.channels.lock();
        if set.closed {
            return false;
        }
        let order = set.next;
        set.next += 1;
        let ids = set.ids.get_or_insert_with(|| Box::new(HashMap::with_hasher(random_state())));
        ids.insert(channel, order).is_none()
    }

    /// Forgets `channel` (closed or settled), here or in the registration that
    /// replaced this one, where it moved.
    pub(crate) fn unlink_channel(&self, channel: ChannelId) {
        if let Some(ids) = &mut self.channels.lock().ids {
            ids.remove(&channel);
        }
        let successor = match &*self.link.lock() {
            Link::Replaced { by } => Some(Arc::clone(by)),
            Link::Unlinked | Link::Linked { .. } | Link::Left(_) => None,
        };
        if let Some(by) = successor {
            by.unlink_channel(channel);
        }
    }

    /// Marks the participant as gone and returns its channels in the order they
    /// were linked (opened), so peers are told in a deterministic order.
    pub(crate) fn take_channels(&self) -> Vec<ChannelId> {
        let mut set = self.channels.lock();
        set.closed = true;
        let mut linked: Vec<(u64, ChannelId)> = set
            .ids
            .take()
            .map(|ids| ids.into_iter().map(|(id, order)| (order, id)).collect())
            .unwrap_or_default();
        linked.sort_unstable_by_key(|&(order, _)| order);
        linked.into_iter().map(|(_, id)| id).collect()
    }

    /// Ends the registration once the entry has left the table: from here on
    /// answers to the actor's requests are refused and resolve with `reason`.
    /// Also drops the link to the router: a command holding this state that is
    /// still queued when a shard stops would otherwise keep the router alive
    /// through it, a reference cycle.
    pub(crate) fn unlink(&self, reason: RequestError) {
        let old = {
            let mut link = self.link.lock();
            if matches!(*link, Link::Left(_) | Link::Replaced { .. }) {
                return;
            }
            std::mem::replace(&mut *link, Link::Left(reason))
        };
        // Dropped outside the lock: it may hold the last reference to the router.
        drop(old);
    }
}
