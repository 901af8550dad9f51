//! Blocking on a future by parking the thread: how the mailbox queues' blocking
//! receives wait (see `flume_chan` for why they do not use flume's own).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::Instant;

use flume::{RecvError, RecvTimeoutError, TryRecvError};

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

thread_local! {
    /// This thread's unparking waker, made once per thread.
    static UNPARK: Waker = Waker::from(Arc::new(Unpark(thread::current())));
}

/// Polls `fut` until it completes, parking the thread between polls, or until
/// `deadline` has passed (`None`: no limit). A future that is not done at the
/// deadline is dropped (and so cancelled) here.
pub(crate) fn block_until<F: Future + Unpin>(mut fut: F, deadline: Option<Instant>) -> Option<F::Output> {
    UNPARK.with(|waker| {
        let mut cx = Context::from_waker(waker);
        loop {
            if let Poll::Ready(out) = Pin::new(&mut fut).poll(&mut cx) {
                return Some(out);
            }
            match deadline {
                None => thread::park(),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return None;
                    }
                    thread::park_timeout(deadline - now);
                }
            }
        }
    })
}

/// A blocking receive: waits on the receive future `fut` until `deadline` (`None`:
/// no limit). At the deadline the future is dropped and the queue looked at once
/// more with `try_recv`: a message that came at the last moment is still in it.
pub(crate) fn recv_until<T, F>(
    fut: F,
    deadline: Option<Instant>,
    try_recv: impl FnOnce() -> Result<T, TryRecvError>,
) -> Result<T, RecvTimeoutError>
where
    F: Future<Output = Result<T, RecvError>> + Unpin,
{
    match block_until(fut, deadline) {
        Some(Ok(msg)) => Ok(msg),
        Some(Err(RecvError::Disconnected)) => Err(RecvTimeoutError::Disconnected),
        None => try_recv().map_err(|e| match e {
            TryRecvError::Empty => RecvTimeoutError::Timeout,
            TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
        }),
    }
}
