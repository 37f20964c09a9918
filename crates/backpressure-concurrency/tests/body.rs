//! Body-held permits: a streaming response keeps its slot until the body
//! ends or is dropped.
#![cfg(feature = "http")]

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use backpressure_concurrency::ConcurrencyLimitLayer;
use backpressure_core::{BoxError, RejectKind, Rejected};
use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use tower::{Layer, ServiceExt, service_fn};

/// A streaming body fed by a channel: ends when the sender is dropped.
#[derive(Debug)]
struct Stream(mpsc::Receiver<Bytes>);

impl Body for Stream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

#[tokio::test(start_paused = true)]
async fn the_permit_lives_until_the_stream_ends() {
    let layer = ConcurrencyLimitLayer::builder()
        .limit(1)
        .max_queue(0)
        .build()
        .unwrap()
        .hold_until_body_end();
    let handle = layer.handle();
    let (tx, rx) = mpsc::channel(4);
    let rx = std::sync::Arc::new(std::sync::Mutex::new(Some(rx)));
    let svc =
        layer.layer(service_fn(move |_req: http::Request<()>| {
            let rx = rx.lock().unwrap().take();
            async move {
                match rx {
                    Some(rx) => Ok::<_, BoxError>(http::Response::new(
                        http_body_util::Either::Left(Stream(rx)),
                    )),
                    None => Ok(http::Response::new(http_body_util::Either::Right(
                        http_body_util::Empty::<Bytes>::new(),
                    ))),
                }
            }
        }));

    let res = svc.clone().oneshot(http::Request::new(())).await.unwrap();
    // The headers are out, the stream is not: the slot is still taken.
    assert_eq!(handle.in_flight(), 1);
    let err = svc.clone().oneshot(http::Request::new(())).await.unwrap_err();
    assert_eq!(Rejected::find(&err).unwrap().kind(), RejectKind::Overloaded);

    let mut body = res.into_body();
    tx.send(Bytes::from_static(b"event 1")).await.unwrap();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "event 1");
    assert_eq!(handle.in_flight(), 1, "mid-stream");
    drop(tx);
    assert!(body.frame().await.is_none());
    assert_eq!(handle.in_flight(), 0, "released at the end of the stream");
    // An empty body releases at once.
    let res = svc.clone().oneshot(http::Request::new(())).await.unwrap();
    assert!(!res.body().holds_permit());
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_body_mid_stream_releases_the_permit() {
    let layer = ConcurrencyLimitLayer::builder()
        .limit(1)
        .max_queue(0)
        .build()
        .unwrap()
        .hold_until_body_end();
    let handle = layer.handle();
    let (_tx, rx) = mpsc::channel::<Bytes>(4);
    let rx = std::sync::Arc::new(std::sync::Mutex::new(Some(rx)));
    let svc = layer.layer(service_fn(move |_req: http::Request<()>| {
        let rx = rx.lock().unwrap().take().expect("one stream");
        async move { Ok::<_, BoxError>(http::Response::new(Stream(rx))) }
    }));
    let res = svc.oneshot(http::Request::new(())).await.unwrap();
    assert_eq!(handle.in_flight(), 1);
    drop(res); // the client went away
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn by_default_the_permit_is_released_at_the_headers() {
    let layer = ConcurrencyLimitLayer::builder().limit(1).max_queue(0).build().unwrap();
    let handle = layer.handle();
    let (_tx, rx) = mpsc::channel::<Bytes>(4);
    let rx = std::sync::Arc::new(std::sync::Mutex::new(Some(rx)));
    let svc = layer.layer(service_fn(move |_req: http::Request<()>| {
        let rx = rx.lock().unwrap().take().expect("one stream");
        async move { Ok::<_, BoxError>(http::Response::new(Stream(rx))) }
    }));
    let _res = svc.oneshot(http::Request::new(())).await.unwrap();
    assert_eq!(handle.in_flight(), 0, "tower's behaviour: streams escape the limit");
}
