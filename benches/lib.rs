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
pub fn ready_now<F: Future>(fut: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(fut).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("benched future was not immediately ready"),
    }
}

/// Waits for `svc` to be ready (it must be immediately), then calls it and
/// returns the immediately-ready response.
pub fn call_now<S, Req>(svc: &mut S, req: Req) -> Result<S::Response, S::Error>
where
    S: tower::Service<Req>,
{
    ready_now(std::future::poll_fn(|cx| svc.poll_ready(cx)))?;
    ready_now(svc.call(req))
}
