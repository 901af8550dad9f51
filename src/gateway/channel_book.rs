//! Which of one client's channels it has been told of, so that no event for a
//! channel reaches the client before the `ChannelOpened` answer that gave it the
//! channel's id.

use std::collections::{HashSet, VecDeque};

use super::protocol::Event;
use crate::ids::ChannelId;

/// The channels of one client, as the server has told it of them: the ones
/// whose `ChannelOpened` it has been sent, and how many opens are pending.
///
/// An event for a channel the client has not been told of, while an open is
/// pending, is held back until that open's answer has been queued: the actor may
/// accept and send at once, and its message must not reach the client before
/// the id it belongs to.
#[derive(Default)]
pub(super) struct ChannelBook {
    pub(super) open: HashSet<ChannelId>,
    pub(super) opening: usize,
    pub(super) held: VecDeque<Event>,
}

impl ChannelBook {
    pub(super) fn in_use(&self) -> usize {
        self.open.len() + self.opening
    }

    /// The event to send now, or `None` if it is held back.
    pub(super) fn event(&mut self, event: Event) -> Option<Event> {
        let (channel_id, closed) = match &event {
            Event::ChannelMessage { channel_id, .. } => (*channel_id, false),
            Event::ChannelClosed { channel_id } => (*channel_id, true),
        };
        if self.opening > 0 && !self.open.contains(&channel_id) {
            self.held.push_back(event);
            return None;
        }
        if closed {
            self.open.remove(&channel_id);
        }
        Some(event)
    }

    /// An open settled (`opened` is the channel if it was accepted, and its
    /// answer is queued): the held events that may follow now, in order.
    pub(super) fn open_settled(&mut self, opened: Option<ChannelId>) -> Vec<Event> {
        self.opening = self.opening.saturating_sub(1);
        if let Some(id) = opened {
            self.open.insert(id);
        }
        let mut release = Vec::new();
        let mut keep = VecDeque::new();
        for event in self.held.drain(..) {
            let (channel_id, closed) = match &event {
                Event::ChannelMessage { channel_id, .. } => (*channel_id, false),
                Event::ChannelClosed { channel_id } => (*channel_id, true),
            };
            if self.opening == 0 || self.open.contains(&channel_id) {
                if closed {
                    self.open.remove(&channel_id);
                }
                release.push(event);
            } else {
                keep.push_back(event);
            }
        }
        self.held = keep;
        release
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(channel_id: ChannelId, text: &str) -> Event {
        Event::ChannelMessage { channel_id, message: text.as_bytes().to_vec() }
    }

    #[test]
    fn events_wait_for_their_channels_open_answer() {
        let (a, b) = (ChannelId::random(), ChannelId::random());
        let mut book = ChannelBook { opening: 2, ..ChannelBook::default() };
        assert!(book.event(message(a, "a1")).is_none());
        assert!(book.event(message(b, "b1")).is_none());
        assert!(book.event(Event::ChannelClosed { channel_id: a }).is_none());
        // `a` opened: its events follow, in order; `b`'s wait for its own answer.
        assert_eq!(
            book.open_settled(Some(a)),
            vec![message(a, "a1"), Event::ChannelClosed { channel_id: a }]
        );
        assert!(!book.open.contains(&a), "the held close was applied");
        assert_eq!(book.held.len(), 1);
        assert_eq!(book.open_settled(Some(b)), vec![message(b, "b1")]);
        // Nothing pending: events pass straight through.
        assert_eq!(book.event(message(b, "b2")), Some(message(b, "b2")));
        assert_eq!(book.in_use(), 1);
    }

    #[test]
    fn a_failed_open_releases_what_no_open_can_claim() {
        let stray = ChannelId::random();
        let mut book = ChannelBook { opening: 1, ..ChannelBook::default() };
        assert!(book.event(message(stray, "late")).is_none());
        assert_eq!(book.open_settled(None), vec![message(stray, "late")]);
        assert_eq!(book.in_use(), 0);
    }
}
