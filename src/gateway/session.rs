//! One client's management session, independent of any transport.
//!
//! A [`Session`] attaches one external endpoint to the router and gives the client
//! its own [`ExternalId`]. [`Session::execute`] runs a [`Command`] at once and
//! returns a [`Pending`] answer: ready straight away for sends, closes and lists,
//! or a future for requests and channel opens, driven by the router's own deadline
//! keeping (no async runtime needed). A transport may therefore keep many slow
//! commands of one client in flight while it goes on executing the rest.
//! [`Session::next_event`] yields what the client's actors send on its channels.
//!
//! The client acts as its own [`ExternalId`] in every channel operation, so it can
//! only send on or close channels it takes part in. Dropping the session detaches
//! the endpoint: its channels close and the actors at their other ends are told.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::protocol::{decode_client_frame, ActorInfo, Command, ErrorKind, Event, Response, ServerFrame};
use super::stats::StatsReport;
use crate::channel_api::OpenFuture;
use crate::error::RegisterError;
use crate::ids::{ActorId, ExternalId};
use crate::mailbox::Mailbox;
use crate::message::{reply_channel, ActorMessage, ReplyReceiver, ResponseFuture};
use crate::router::Router;

/// Looks up an actor's display name for [`Command::ListActors`].
pub type NameLookup = Arc<dyn Fn(ActorId) -> Option<String> + Send + Sync>;

/// Lists the actors [`Command::ListActors`] shows beyond the router's own: a
/// cluster's directory, for one, gives every actor of every node with its node.
pub type DirectoryLookup = Arc<dyn Fn() -> Vec<ActorInfo> + Send + Sync>;

/// Replaces the instance behind an actor with its next version, for
/// [`Command::UpdateActor`]: the server's own code (it knows its actors), built
/// on [`Router::suspend`], [`Router::replace_mailbox`] and [`Router::resume`].
/// Returns the version now running, or why not. It may block (it waits for the
/// old instance to stop); the session runs it on a thread of its own.
pub type Updater = Arc<dyn Fn(ActorId) -> Result<String, String> + Send + Sync>;

/// How a session behaves.
#[derive(Clone)]
#[non_exhaustive]
pub struct SessionConfig {
    /// Timeout of a request that does not give `timeout_ms`. Default: 5 s.
    pub request_timeout: Duration,
    /// The longest timeout a request may ask for. Default: 60 s.
    pub max_request_timeout: Duration,
    /// How long a channel open waits for the actor's answer. Default: 5 s.
    pub open_timeout: Duration,
    /// Names shown by [`Command::ListActors`]. Default: none.
    pub names: Option<NameLookup>,
    /// The actors [`Command::ListActors`] shows besides the router's own (a
    /// cluster's directory). Default: none (the router's actors alone).
    pub directory: Option<DirectoryLookup>,
    /// Runs [`Command::UpdateActor`]. Default: none (the command fails with
    /// `UpdateFailed`).
    pub updater: Option<Updater>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(5),
            max_request_timeout: Duration::from_secs(60),
            open_timeout: Duration::from_secs(5),
            names: None,
            directory: None,
            updater: None,
        }
    }
}

impl SessionConfig {
    /// Sets the names shown by [`Command::ListActors`].
    #[must_use]
    pub fn names(mut self, lookup: impl Fn(ActorId) -> Option<String> + Send + Sync + 'static) -> Self {
        self.names = Some(Arc::new(lookup));
        self
    }

    /// Sets where [`Command::ListActors`] finds actors beyond the router's own:
    /// every entry `lookup` returns is listed (a `name` it leaves out is asked of
    /// [`names`](Self::names)), then each of the router's actors it does not name,
    /// without a node.
    ///
    /// ```
    /// use sharded_router::gateway::{ActorInfo, Command, Response, Session, SessionConfig};
    /// use sharded_router::{ActorId, Router};
    ///
    /// let far = ActorId::new();
    /// let config = SessionConfig::default().directory(move || {
    ///     vec![ActorInfo { id: far, name: Some("b.echo".into()), node: Some("b".into()) }]
    /// });
    /// let router = Router::builder().shards(1).build().unwrap();
    /// let session = Session::attach(&router, config).unwrap();
    /// let Response::ActorList { actors } = futures_executor::block_on(session.execute(Command::ListActors))
    /// else {
    ///     panic!("a list")
    /// };
    /// assert_eq!(actors[0].node.as_deref(), Some("b"));
    /// ```
    #[must_use]
    pub fn directory(mut self, lookup: impl Fn() -> Vec<ActorInfo> + Send + Sync + 'static) -> Self {
        self.directory = Some(Arc::new(lookup));
        self
    }

    /// Sets what runs [`Command::UpdateActor`].
    #[must_use]
    pub fn updater(
        mut self,
        update: impl Fn(ActorId) -> Result<String, String> + Send + Sync + 'static,
    ) -> Self {
        self.updater = Some(Arc::new(update));
        self
    }

    /// Sets the default request timeout.
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the longest request timeout a client may ask for.
    #[must_use]
    pub fn max_request_timeout(mut self, timeout: Duration) -> Self {
        self.max_request_timeout = timeout;
        self
    }

    /// Sets how long a channel open waits for the actor.
    #[must_use]
    pub fn open_timeout(mut self, timeout: Duration) -> Self {
        self.open_timeout = timeout;
        self
    }
}

impl fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionConfig")
            .field("request_timeout", &self.request_timeout)
            .field("max_request_timeout", &self.max_request_timeout)
            .field("open_timeout", &self.open_timeout)
            .field("names", &self.names.is_some())
            .field("directory", &self.directory.is_some())
            .field("updater", &self.updater.is_some())
            .finish()
    }
}

/// One client's endpoint on the router.
///
/// ```
/// use sharded_router::gateway::{Command, Response, Session, SessionConfig};
/// use sharded_router::Router;
///
/// let router = Router::builder().shards(1).build().unwrap();
/// let session = Session::attach(&router, SessionConfig::default()).unwrap();
/// let answer = futures_executor::block_on(session.execute(Command::ListActors));
/// assert_eq!(answer, Response::ActorList { actors: vec![] });
/// ```
pub struct Session {
    router: Router,
    id: ExternalId,
    endpoint: Mailbox,
    config: SessionConfig,
}

impl Session {
    /// Attaches a new endpoint for one client.
    ///
    /// # Errors
    /// [`RegisterError::Shutdown`] after the router shut down.
    pub fn attach(router: &Router, config: SessionConfig) -> Result<Self, RegisterError> {
        let (tx, endpoint) = router.mailbox();
        let id = router.attach_external(tx)?;
        tracing::debug!(client = %id, "gateway session attached");
        Ok(Self { router: router.clone(), id, endpoint, config })
    }

    /// The client's identity on the router.
    #[must_use]
    pub fn id(&self) -> ExternalId {
        self.id
    }

    /// Runs `command` now. Sends, channel messages, closes and lists are done when
    /// this returns (their answer is [`Pending::take_ready`]); a request or channel
    /// open has been posted and its answer is the future's output. Never blocks.
    pub fn execute(&self, command: Command) -> Pending {
        let router = &self.router;
        let ready = |response| Pending(State::Ready(Some(response)));
        match command {
            Command::SendActorMessage { id, data } => ready(match router.try_send(id, data) {
                Ok(()) => Response::SentMessage { id },
                Err(e) => Response::error(e.kind().into(), format!("send to {id} failed: {}", e.kind())),
            }),
            Command::RequestActorMessage { id, data, timeout_ms } => {
                let timeout = timeout_ms
                    .map_or(self.config.request_timeout, Duration::from_millis)
                    .min(self.config.max_request_timeout);
                Pending(State::Request { id, future: router.request_async(id, data, timeout) })
            }
            Command::OpenChannel { actor_id, initial_message } => Pending(State::Open {
                actor_id,
                future: router.open_channel_async(
                    self.id,
                    actor_id,
                    initial_message,
                    self.config.open_timeout,
                ),
            }),
            Command::SendOnChannel { channel_id, message } => {
                ready(match router.channel_send(channel_id, self.id, message) {
                    Ok(()) => Response::MessageSent { channel_id },
                    Err(e) => Response::error(
                        e.kind().into(),
                        format!("send on channel {channel_id} failed: {}", e.kind()),
                    ),
                })
            }
            Command::CloseChannel { channel_id } => ready(match router.close_channel(channel_id, self.id) {
                Ok(()) => Response::ChannelClosed { channel_id },
                Err(e) => Response::error(e.into(), format!("close of channel {channel_id} failed: {e}")),
            }),
            Command::ListActors => ready(Response::ActorList { actors: self.list_actors() }),
            Command::UpdateActor { id } => match &self.config.updater {
                Some(update) => Pending(State::Update { id, answer: run_update(Arc::clone(update), id) }),
                None => ready(Response::error(ErrorKind::UpdateFailed, "this server cannot update actors")),
            },
            Command::Stats => ready(Response::Stats(StatsReport::new(&router.metrics()))),
        }
    }

    /// The directory's actors and the router's, named, sorted by name then id.
    fn list_actors(&self) -> Vec<ActorInfo> {
        let mut actors = self.config.directory.as_ref().map_or_else(Vec::new, |directory| directory());
        let listed: HashSet<ActorId> = actors.iter().map(|a| a.id).collect();
        let local = self.router.actor_ids().into_iter().filter(|id| !listed.contains(id));
        actors.extend(local.map(|id| ActorInfo { id, name: None, node: None }));
        if let Some(names) = &self.config.names {
            for actor in actors.iter_mut().filter(|a| a.name.is_none()) {
                actor.name = names(actor.id);
            }
        }
        actors.sort_by(|a, b| (&a.name, a.id).cmp(&(&b.name, b.id)));
        actors
    }

    /// Decodes one client frame (the bytes inside the length prefix) and executes
    /// its command: what a transport does with each frame it reads. A frame that
    /// does not decode is answered at once with an `Error` response carrying the
    /// frame's `request_id` when it could be read; a command is answered as by
    /// [`execute`](Self::execute), under the frame's `request_id`. Never blocks.
    ///
    /// ```
    /// use sharded_router::gateway::{FrameReply, Response, ServerFrame, Session, SessionConfig};
    /// let router = sharded_router::Router::builder().shards(1).build().unwrap();
    /// let session = Session::attach(&router, SessionConfig::default()).unwrap();
    /// let FrameReply::Ready(ServerFrame::Response { request_id, response }) =
    ///     session.execute_frame(br#"{"request_id": 3, "command": "ListActors"}"#)
    /// else {
    ///     panic!("a list is answered at once")
    /// };
    /// assert_eq!((request_id, response), (Some(3), Response::ActorList { actors: vec![] }));
    /// ```
    pub fn execute_frame(&self, bytes: &[u8]) -> FrameReply {
        match decode_client_frame(bytes) {
            Ok(frame) => {
                let span = self.span_for(frame.request_id, &frame.command);
                let mut pending = span.in_scope(|| self.execute(frame.command));
                match pending.take_ready() {
                    Some(response) => FrameReply::Ready(ServerFrame::Response {
                        request_id: Some(frame.request_id),
                        response,
                    }),
                    None => {
                        FrameReply::InFlight { request_id: frame.request_id, pending: pending.traced(span) }
                    }
                }
            }
            Err(e) => {
                tracing::debug!(client = %self.id, error = %e, "gateway bad frame");
                FrameReply::Ready(e.into_frame())
            }
        }
    }

    /// A `debug` span for a request or channel open, carrying the frame's
    /// `request_id` and target; its `outcome` (and an open's `channel_id`) is
    /// recorded when the answer is ready. Disabled for other commands.
    fn span_for(&self, request_id: u64, command: &Command) -> tracing::Span {
        let empty = tracing::field::Empty;
        match command {
            Command::RequestActorMessage { id, .. } => {
                tracing::debug_span!("gateway_request", client = %self.id, request_id, target = %id, outcome = empty)
            }
            Command::OpenChannel { actor_id, .. } => tracing::debug_span!(
                "gateway_open_channel",
                client = %self.id,
                request_id,
                target = %actor_id,
                channel_id = empty,
                outcome = empty
            ),
            _ => tracing::Span::none(),
        }
    }

    /// The next event on this client's channels: a message or a close from the
    /// actor side. `None` once the endpoint is detached (the router shut down).
    /// Channel opens from actors are rejected: a gateway client only initiates.
    ///
    /// # Cancel safety
    /// Cancel safe: no event is lost when the future is dropped before it completes.
    pub async fn next_event(&self) -> Option<Event> {
        loop {
            let msg = self.endpoint.recv_async().await.ok()?;
            if let Some(event) = self.to_event(msg) {
                return Some(event);
            }
        }
    }

    /// An event if one is waiting, without waiting.
    pub fn try_next_event(&self) -> Option<Event> {
        while let Ok(msg) = self.endpoint.try_recv() {
            if let Some(event) = self.to_event(msg) {
                return Some(event);
            }
        }
        None
    }

    fn to_event(&self, msg: ActorMessage) -> Option<Event> {
        match msg {
            ActorMessage::ChannelMessage { channel_id, data } => {
                Some(Event::ChannelMessage { channel_id, message: data })
            }
            ActorMessage::ChannelClose { channel_id } => Some(Event::ChannelClosed { channel_id }),
            ActorMessage::ChannelOpen { reply, initiator, .. } => {
                tracing::debug!(client = %self.id, %initiator, "gateway client rejects an incoming channel");
                reply.reject();
                None
            }
            other => {
                tracing::debug!(client = %self.id, message = ?other, "gateway client ignores a message");
                None
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Closes the client's channels and tells the actors; fails only when the
        // router already shut down, which cleared everything.
        if let Err(e) = self.router.detach_external(self.id) {
            tracing::debug!(client = %self.id, error = %e, "gateway session detach");
        } else {
            tracing::debug!(client = %self.id, "gateway session detached");
        }
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").field("id", &self.id).finish_non_exhaustive()
    }
}

/// What [`Session::execute_frame`] made of one frame.
#[derive(Debug)]
#[must_use = "a frame's answer should be sent to the client"]
pub enum FrameReply {
    /// The answer to send now: the command's response, or the error about a frame
    /// that did not decode.
    Ready(ServerFrame),
    /// A request or channel open in flight; its answer is `pending`'s output, to
    /// be sent under `request_id`.
    InFlight {
        /// The command's correlation id.
        request_id: u64,
        /// The answer, once it arrives.
        pending: Pending,
    },
}

/// The answer to one command: ready at once, or a future (requests and opens).
///
/// Owns everything it needs (`'static`, `Send`, `Unpin`). Dropping it abandons the
/// wait; a request's late reply is refused, and an open is still settled by the
/// actor or its deadline.
#[must_use = "a pending answer does nothing unless polled"]
pub struct Pending(State);

enum State {
    Ready(Option<Response>),
    Request {
        id: ActorId,
        future: ResponseFuture,
    },
    Open {
        actor_id: ActorId,
        future: OpenFuture,
    },
    /// An update running on its own thread; its outcome arrives through a reply
    /// slot (`Ok`: the version, `Err`: why not, both as UTF-8).
    Update {
        id: ActorId,
        answer: ReplyReceiver,
    },
    /// An answer polled inside its span, which records the outcome.
    Traced(Box<Pending>, tracing::Span),
}

/// Runs `update` for `id` on a thread of its own; the receiver resolves with
/// its outcome (`NoReply` if the thread could not start or panicked).
fn run_update(update: Updater, id: ActorId) -> ReplyReceiver {
    let (handle, answer) = reply_channel();
    let spawned = std::thread::Builder::new().name("gateway-update".to_owned()).spawn(move || {
        let outcome = match update(id) {
            Ok(version) => [b"+".as_slice(), version.as_bytes()].concat(),
            Err(why) => [b"-".as_slice(), why.as_bytes()].concat(),
        };
        let _ = handle.reply(outcome);
    });
    if let Err(e) = spawned {
        tracing::warn!(actor = %id, error = %e, "gateway update: no thread to run it");
    }
    answer
}

impl Pending {
    /// The answer, if the command finished when it was executed.
    pub fn take_ready(&mut self) -> Option<Response> {
        match &mut self.0 {
            State::Ready(response) => response.take(),
            State::Request { .. } | State::Open { .. } | State::Update { .. } | State::Traced(..) => None,
        }
    }

    /// This answer, polled inside `span`, which records its outcome (unchanged
    /// when the span is disabled).
    fn traced(self, span: tracing::Span) -> Self {
        if span.is_disabled() {
            self
        } else {
            Self(State::Traced(Box::new(self), span))
        }
    }
}

/// Records `response` in its span (entered) and says so at `debug`.
fn record_outcome(span: &tracing::Span, response: &Response) {
    let outcome = match response {
        Response::Error { kind, .. } => kind.to_string(),
        _ => "ok".to_owned(),
    };
    span.record("outcome", outcome.as_str());
    if let Response::ChannelOpened { channel_id, .. } = response {
        span.record("channel_id", tracing::field::display(channel_id));
    }
    tracing::debug!(outcome, "gateway answer ready");
}

impl Future for Pending {
    type Output = Response;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        match &mut self.get_mut().0 {
            State::Ready(response) => Poll::Ready(
                response
                    .take()
                    .unwrap_or_else(|| Response::error(ErrorKind::Internal, "the answer was already taken")),
            ),
            State::Request { id, future } => Pin::new(future).poll(cx).map(|outcome| match outcome {
                Ok(message) => Response::RequestedMessage { id: *id, message },
                Err(e) => Response::error(e.error().into(), format!("request to {id}: {e}")),
            }),
            State::Open { actor_id, future } => Pin::new(future).poll(cx).map(|outcome| match outcome {
                Ok(opened) => Response::ChannelOpened {
                    channel_id: opened.id,
                    actor_id: *actor_id,
                    response: opened.response,
                },
                Err(e) => Response::error(e.error().into(), format!("channel to {actor_id}: {e}")),
            }),
            State::Update { id, answer } => Pin::new(answer).poll(cx).map(|outcome| match outcome {
                Ok(bytes) => match bytes.split_first() {
                    Some((b'+', version)) => Response::ActorUpdated {
                        id: *id,
                        version: String::from_utf8_lossy(version).into_owned(),
                    },
                    Some((_, why)) => Response::error(
                        ErrorKind::UpdateFailed,
                        format!("update of {id}: {}", String::from_utf8_lossy(why)),
                    ),
                    None => Response::error(ErrorKind::UpdateFailed, format!("update of {id}: no outcome")),
                },
                Err(e) => Response::error(ErrorKind::UpdateFailed, format!("update of {id}: {e}")),
            }),
            State::Traced(inner, span) => {
                let _entered = span.enter();
                let answer = Pin::new(&mut **inner).poll(cx);
                if let Poll::Ready(response) = &answer {
                    record_outcome(span, response);
                }
                answer
            }
        }
    }
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.0 {
            State::Ready(_) => "ready",
            State::Request { .. } => "request",
            State::Open { .. } => "open",
            State::Update { .. } => "update",
            State::Traced(..) => "traced",
        };
        f.debug_tuple("Pending").field(&what).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ChannelId;
    use futures_executor::block_on;

    /// An actor that accepts channels, echoes channel messages and answers requests.
    fn echo_actor(router: &Router) -> ActorId {
        let (tx, mailbox) = router.mailbox();
        let id = ActorId::new();
        router.register(id, tx).unwrap();
        let r = router.clone();
        std::thread::spawn(move || {
            while let Ok(msg) = mailbox.recv() {
                match msg {
                    ActorMessage::Request { data, reply } => drop(reply.reply(data)),
                    ActorMessage::ChannelOpen { reply, .. } => drop(reply.accept(None)),
                    ActorMessage::ChannelMessage { channel_id, data } => {
                        drop(r.channel_send(channel_id, id, data))
                    }
                    _ => {}
                }
            }
        });
        id
    }

    #[test]
    fn commands_and_events_without_a_transport() {
        let router = Router::builder().shards(2).build().unwrap();
        let actor = echo_actor(&router);
        let session = Session::attach(&router, SessionConfig::default()).unwrap();

        let mut pending = session.execute(Command::RequestActorMessage {
            id: actor,
            data: b"q".to_vec(),
            timeout_ms: None,
        });
        assert!(pending.take_ready().is_none(), "a request is answered later");
        assert_eq!(block_on(pending), Response::RequestedMessage { id: actor, message: b"q".to_vec() });

        let opened =
            block_on(session.execute(Command::OpenChannel { actor_id: actor, initial_message: vec![] }));
        let Response::ChannelOpened { channel_id, .. } = opened else {
            panic!("expected an open, got {opened:?}")
        };
        let mut sent = session.execute(Command::SendOnChannel { channel_id, message: b"m".to_vec() });
        assert_eq!(sent.take_ready(), Some(Response::MessageSent { channel_id }));
        assert_eq!(
            block_on(session.next_event()),
            Some(Event::ChannelMessage { channel_id, message: b"m".to_vec() })
        );

        // Another session is not a participant.
        let other = Session::attach(&router, SessionConfig::default()).unwrap();
        let refused = block_on(other.execute(Command::CloseChannel { channel_id }));
        assert!(matches!(refused, Response::Error { kind: ErrorKind::NotParticipant, .. }));
        let unknown = block_on(other.execute(Command::CloseChannel { channel_id: ChannelId::random() }));
        assert!(matches!(unknown, Response::Error { kind: ErrorKind::ChannelNotFound, .. }));

        drop(session);
        router.flush();
        assert_eq!(router.metrics().channels.channels, 0, "dropping the session closed its channel");
    }

    #[test]
    fn a_directory_lists_actors_of_other_nodes_with_the_router_s_own() {
        let router = Router::builder().shards(2).build().unwrap();
        let here = echo_actor(&router);
        let unlisted = echo_actor(&router);
        let far = ActorId::new();
        let config = SessionConfig::default()
            .directory(move || {
                vec![
                    ActorInfo { id: here, name: None, node: Some("a".into()) },
                    ActorInfo { id: far, name: Some("b.echo".into()), node: Some("b".into()) },
                ]
            })
            .names(move |id| (id == here).then(|| "a.echo".to_owned()));
        let session = Session::attach(&router, config).unwrap();
        let listed = block_on(session.execute(Command::ListActors));
        let expected = vec![
            ActorInfo { id: unlisted, name: None, node: None },
            ActorInfo { id: here, name: Some("a.echo".into()), node: Some("a".into()) },
            ActorInfo { id: far, name: Some("b.echo".into()), node: Some("b".into()) },
        ];
        assert_eq!(listed, Response::ActorList { actors: expected });
    }
}
