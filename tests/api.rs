//! API promises that the compiler checks: every public response future is
//! `Debug` (so a user's own future or service holding one can derive it).
//! The first version had `Debug` on 3 of 14.

use std::{convert::Infallible, fmt::Debug, time::Duration};

use backpressure::{
    breaker::{AdaptiveThrottleLayer, CircuitBreakerLayer},
    client::ClientPreset,
    concurrency::ConcurrencyLimitLayer,
    http::{PushbackLayer, RateLimitHeadersLayer, RespondLayer},
    preset::ServerPreset,
    rate::{Quota, RateLimitLayer},
    retry::{HttpRetry, RetryLayer},
    shed::LoadShedLayer,
    timeout::{HttpDeadline, SendDeadlineLayer, TimeoutLayer},
};
use tower::{Layer, Service, service_fn};

/// The future's `Debug` output; compiles only if it has one.
fn debug<S, R>(mut svc: S, req: R) -> String
where
    S: Service<R>,
    S::Future: Debug,
{
    format!("{:?}", svc.call(req))
}

fn echo() -> impl Service<u64, Response = u64, Error = Infallible, Future: Send> + Clone {
    service_fn(|x: u64| async move { Ok::<_, Infallible>(x) })
}

fn ok() -> impl Service<
    http::Request<String>,
    Response = http::Response<String>,
    Error = Infallible,
    Future: Send,
> + Clone {
    service_fn(|_: http::Request<String>| async {
        Ok::<_, Infallible>(http::Response::new(String::new()))
    })
}

fn req() -> http::Request<String> {
    http::Request::new(String::new())
}

#[tokio::test]
async fn every_response_future_is_debug() {
    let second = Duration::from_secs(1);
    let limit = ConcurrencyLimitLayer::new(10).unwrap();
    let printed = [
        debug(TimeoutLayer::new(second).unwrap().layer(echo()), 1),
        debug(limit.clone().layer(echo()), 1),
        debug(RateLimitLayer::new(Quota::per_second(10)).unwrap().layer(echo()), 1),
        debug(LoadShedLayer::new(limit.handle()).layer(echo()), 1),
        debug(CircuitBreakerLayer::new().layer(echo()), 1),
        debug(AdaptiveThrottleLayer::new().layer(echo()), 1),
        debug(RetryLayer::new(HttpRetry::new()).layer(ok()), req()),
        debug(RespondLayer::new().layer(ok()), req()),
        debug(RateLimitHeadersLayer::new().layer(ok()), req()),
        debug(PushbackLayer::new().layer(ok()), req()),
        debug(SendDeadlineLayer::new(HttpDeadline::client()).layer(ok()), req()),
        debug(ServerPreset::new().layer(ok()), req()),
        debug(ClientPreset::new().layer(ok()), req()),
    ];
    for p in &printed {
        assert!(p.contains("Future"), "{p}");
    }
}

/// What cannot fail does not return `Result`: the defaults are values, and
/// `Default` gives the same. (The first version had `ServerPreset::new()?`
/// and `CircuitBreakerLayer::new()?` next to constructors that `expect`ed
/// inside.)
#[test]
fn constructors_that_cannot_fail_return_the_value() {
    let _: CircuitBreakerLayer = CircuitBreakerLayer::new();
    let _: CircuitBreakerLayer = CircuitBreakerLayer::default();
    let _: AdaptiveThrottleLayer = AdaptiveThrottleLayer::default();
    let _: ServerPreset = ServerPreset::default();
    let _: ClientPreset = ClientPreset::default();
    let _: LoadShedLayer<fn() -> f64> = LoadShedLayer::new(|| 0.5);
}

/// One naming scheme: `XBuilder::build` gives the layer, `XHandle::snapshot`
/// gives an `XSnapshot` (three unrelated types were called `Snapshot`).
#[test]
fn builders_and_snapshots_follow_one_scheme() {
    use backpressure::{
        breaker::{BreakerHandle, BreakerSnapshot, CircuitBreakerBuilder},
        concurrency::{ConcurrencyLimitBuilder, ConcurrencyLimitHandle, ConcurrencyLimitSnapshot},
        http::{PushbackBuilder, PushbackHandle, PushbackSnapshot},
        rate::{RateLimitHandle, RateLimitSnapshot},
        retry::{RetryBudget, RetryBudgetSnapshot, RetryBuilder, RetryHandle, RetrySnapshot},
        shed::{LoadShedHandle, LoadShedSnapshot},
    };
    fn snapshot<H, S>(_: fn(&H) -> S) {}
    snapshot::<BreakerHandle, BreakerSnapshot>(BreakerHandle::snapshot);
    snapshot::<ConcurrencyLimitHandle, ConcurrencyLimitSnapshot>(ConcurrencyLimitHandle::snapshot);
    snapshot::<PushbackHandle, PushbackSnapshot>(PushbackHandle::snapshot);
    snapshot::<RetryHandle, RetrySnapshot>(RetryHandle::snapshot);
    snapshot::<RetryBudget, RetryBudgetSnapshot>(RetryBudget::snapshot);
    snapshot::<LoadShedHandle<fn() -> f64>, LoadShedSnapshot>(LoadShedHandle::snapshot);
    let rate = RateLimitLayer::new(Quota::per_second(1)).unwrap();
    let _: RateLimitSnapshot = rate.handle().snapshot::<()>();
    let _: RateLimitHandle<_> = rate.handle();
    let _: CircuitBreakerBuilder = CircuitBreakerLayer::builder();
    let _: ConcurrencyLimitBuilder = ConcurrencyLimitLayer::builder();
    let _: RetryBuilder<HttpRetry> = RetryLayer::builder(HttpRetry::new());
    let _: PushbackBuilder = PushbackLayer::builder();
}
