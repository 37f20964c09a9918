//! Helpers shared by the benches: polling a future to completion without a
//! runtime's scheduling overhead, so the figures are the layers' own cost.

#![allow(missing_docs)]

use std::{
    future::Future,
    pin::pin,
    task::{Context, Poll, Waker},
};

/// Polls `fut` once with a no-op waker and returns its output; panics if it
/// is not immediately ready (every benched path is synchronous).
#[inline(always)]
pub fn ready_now<F: Future>(fut: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(fut).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("benched future was not immediately ready"),
    }
}

/// Waits for `svc` to be ready (it must be immediately), then calls it and
/// returns the immediately-ready response.
///
/// Always inlined into the timed loop, so that the harness adds no cost of
/// its own: as a call, it returned a `Result<_, BoxError>` through memory,
/// written in two 8-byte stores and read back in one 16-byte load, a
/// store-forwarding stall of several nanoseconds charged to every layer
/// whose error is boxed (ours, tower's `Timeout` and `LoadShed`) and not to
/// one whose error is `Infallible` (tower's `ConcurrencyLimit`): two thirds
/// of the shedder's 12.8 ns (`perf annotate` on the `layers` bench).
#[inline(always)]
pub fn call_now<S, Req>(svc: &mut S, req: Req) -> Result<S::Response, S::Error>
where
    S: tower::Service<Req>,
{
    ready_now(std::future::poll_fn(|cx| svc.poll_ready(cx)))?;
    ready_now(svc.call(req))
}

/// A priority header only our own services would set, absent from the
/// benched requests (every request has the default priority): what the
/// "full" preset rows name to have every layer, the shedder included.
pub fn internal_priority() -> backpressure::http::PriorityHeader {
    backpressure::http::PriorityHeader::new(
        http::HeaderName::from_static("x-internal-priority"),
        backpressure::core::Priority::Critical,
    )
}

/// Whether a probe row named `name` runs: `probe <substring>` runs the rows
/// whose name contains it (for `perf record`), `probe =<name>` only the row
/// of that name (`bare` is in `u64 bare`); no argument runs them all.
pub fn probe_row_selected(name: &str) -> bool {
    std::env::args().nth(1).is_none_or(|only| match only.strip_prefix('=') {
        Some(exact) => name == exact,
        None => name.contains(&only),
    })
}
