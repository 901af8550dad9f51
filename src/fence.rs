//! User code the router calls — a dead-letter sink, a future's waker — runs behind
//! a fence: a panic in it is caught, logged and counted, and never unwinds into a
//! shard thread or a caller's routing call.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::task::Waker;

/// Runs `f`, catching a panic. Returns `false` if it panicked (logged at `error`).
///
/// `AssertUnwindSafe` is sound here: `f` only reaches router state through its own
/// captures, which the router treats as consumed whether or not it returned.
pub(crate) fn call(what: &'static str, f: impl FnOnce()) -> bool {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(()) => true,
        Err(panic) => {
            tracing::error!(callback = what, panic = %describe(panic.as_ref()), "user callback panicked; the router carries on");
            false
        }
    }
}

/// Wakes `waker` behind the fence.
pub(crate) fn wake(waker: Option<Waker>) {
    if let Some(w) = waker {
        call("waker", move || w.wake());
    }
}

/// The message of a panic payload, when it has one.
pub(crate) fn describe(panic: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "(a panic without a message)"
    }
}
