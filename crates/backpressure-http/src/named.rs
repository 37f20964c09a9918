//! Keeping a tonic service's name through layers.

use std::{
    fmt,
    marker::PhantomData,
    task::{Context, Poll},
};

use tonic::server::NamedService;
use tower_layer::Layer;
use tower_service::Service;

/// A layered service that still answers to its inner gRPC service's name,
/// so tonic's router can route to it: `Server::add_service` needs
/// [`NamedService`], which no layer's service type implements.
///
/// Build one with [`named`]. Wrapping the whole server with
/// `Server::builder().layer(preset)` needs none of this; `named` is for
/// protecting one service of several differently.
pub struct Named<S, N> {
    inner: S,
    _name: PhantomData<fn() -> N>,
}

/// Applies `layer` to the gRPC service `svc`, keeping `svc`'s
/// [`NamedService::NAME`].
///
/// ```
/// use backpressure_http::{Named, RespondLayer, named};
/// use tonic::server::NamedService;
///
/// // What tonic's codegen writes for a service `Greeter` in package `hello`.
/// struct GreeterServer;
/// impl NamedService for GreeterServer {
///     const NAME: &'static str = "hello.Greeter";
/// }
///
/// let svc = named(&RespondLayer::new(), GreeterServer);
/// fn name_of<T: NamedService>(_: &T) -> &'static str { T::NAME }
/// assert_eq!(name_of(&svc), "hello.Greeter");
/// ```
pub fn named<L, N>(layer: &L, svc: N) -> Named<L::Service, N>
where
    L: Layer<N>,
    N: NamedService,
{
    Named { inner: layer.layer(svc), _name: PhantomData }
}

impl<S, N: NamedService> NamedService for Named<S, N> {
    const NAME: &'static str = N::NAME;
}

impl<S: Clone, N> Clone for Named<S, N> {
    fn clone(&self) -> Self {
        Named { inner: self.inner.clone(), _name: PhantomData }
    }
}

impl<S: fmt::Debug, N: NamedService> fmt::Debug for Named<S, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Named").field("name", &N::NAME).field("inner", &self.inner).finish()
    }
}

impl<S, N, Req> Service<Req> for Named<S, N>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.inner.call(req)
    }
}
