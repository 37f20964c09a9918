//! The metrics as a scraper sees them: every layer driven through its
//! events under a Prometheus exporter, the output rendered, and every
//! series the shipped dashboard and alert rules query checked against it —
//! present, described (HELP and TYPE), and carrying the labels the queries
//! select on.

use std::{
    collections::{BTreeMap, BTreeSet},
    convert::Infallible,
    time::Duration,
};

use backpressure::{
    breaker::{AdaptiveThrottleLayer, CircuitBreakerLayer},
    concurrency::ConcurrencyLimitLayer,
    core::{BoxError, HttpClassify, Priority},
    preset::ServerPreset,
    rate::{Quota, RateLimitLayer},
    redis::RedisStore,
    retry::{FnPolicy, RetryBudget, RetryLayer, Verdict},
    shed::LoadShedLayer,
    timeout::TimeoutLayer,
};
use metrics_exporter_prometheus::PrometheusBuilder;
use tower::{Layer, Service, ServiceExt, service_fn};

/// The rendered exposition: each sample name with the label names seen on
/// it, the names with HELP and with TYPE lines, and each sample's value by
/// its full line key.
struct Exposition {
    samples: BTreeMap<String, BTreeSet<String>>,
    helped: BTreeSet<String>,
    typed: BTreeSet<String>,
    values: BTreeMap<String, f64>,
}

fn parse(text: &str) -> Exposition {
    let mut e = Exposition {
        samples: BTreeMap::new(),
        helped: BTreeSet::new(),
        typed: BTreeSet::new(),
        values: BTreeMap::new(),
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            e.helped.insert(rest.split(' ').next().unwrap().to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            e.typed.insert(rest.split(' ').next().unwrap().to_owned());
        } else if !line.is_empty() && !line.starts_with('#') {
            let (key, value) = line.rsplit_once(' ').unwrap();
            let name = key.split('{').next().unwrap().to_owned();
            let labels = e.samples.entry(name).or_default();
            if let Some((_, inner)) = key.split_once('{') {
                for pair in inner.trim_end_matches('}').split(',') {
                    labels.insert(pair.split('=').next().unwrap().to_owned());
                }
            }
            e.values.insert(key.to_owned(), value.parse().unwrap());
        }
    }
    e
}

/// Every `backpressure_*` selector in `text`: the series name and the label
/// names its `{...}` matchers use.
fn selectors(text: &str) -> Vec<(String, Vec<String>)> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("backpressure_") {
        let tail = &rest[at..];
        let end =
            tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        let name = &tail[..end];
        let mut labels = Vec::new();
        if let Some(matchers) = tail[end..].strip_prefix('{') {
            let close = matchers.find('}').unwrap();
            for m in matchers[..close].split(',') {
                let label: String = m
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                labels.push(label);
            }
        }
        found.push((name.to_owned(), labels));
        rest = &tail[end..];
    }
    found
}

/// The name a HELP/TYPE line uses for a sample name (a summary's or a
/// histogram's `_sum`, `_count` and `_bucket` samples are described under
/// the base name).
fn family(name: &str) -> &str {
    ["_sum", "_count", "_bucket"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name)
}

fn ok_service() -> impl Service<
    http::Request<()>,
    Response = http::Response<String>,
    Error = Infallible,
    Future = impl Send,
> + Clone
+ Send {
    service_fn(|req: http::Request<()>| async move {
        let status = if req.uri().path() == "/fail" { 500 } else { 200 };
        Ok::<_, Infallible>(http::Response::builder().status(status).body(String::new()).unwrap())
    })
}

fn get(path: &str) -> http::Request<()> {
    http::Request::get(path).body(()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_dashboard_and_the_alerts_query_series_the_exporter_shows() {
    // A layer built before the recorder is installed still reports: the
    // library resolves the series when it publishes, not when it builds.
    let limit = ConcurrencyLimitLayer::builder().limit(1).max_queue(1).name("db").build().unwrap();
    let prometheus = PrometheusBuilder::new().install_recorder().expect("the recorder");

    // The server preset: three requests pass the rate limit, the fourth is
    // answered 429; a failing route feeds the breaker's failure outcome.
    let preset = ServerPreset::new()
        .rate_limit(
            RateLimitLayer::builder(Quota::per_minute(4).burst(4)).name("server").build().unwrap(),
        )
        .breaker(
            CircuitBreakerLayer::builder().classify(HttpClassify).name("server").build().unwrap(),
        );
    let mut server = preset.layer(ok_service());
    for path in ["/", "/", "/fail", "/"] {
        let status = server.ready().await.unwrap().call(get(path)).await.unwrap().status();
        assert!(status == 200 || status == 500, "{status}");
    }
    let res = server.ready().await.unwrap().call(get("/")).await.unwrap();
    assert_eq!(res.status(), 429);

    // A limit of one with a queue of one: one holds, one queues (and is
    // served), one is turned away.
    let slow = service_fn(|_: ()| async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok::<_, Infallible>(())
    });
    let svc = limit.layer(slow);
    let (a, b, c) = tokio::join!(svc.clone().oneshot(()), svc.clone().oneshot(()), async {
        tokio::task::yield_now().await;
        svc.clone().oneshot(()).await
    });
    assert!(a.is_ok() && b.is_ok() && c.is_err());

    // A shedder past capacity sheds sheddable work.
    let shed = LoadShedLayer::builder(|| 3.0)
        .priority(|_: &()| Priority::Sheddable)
        .name("db")
        .build()
        .unwrap()
        .layer(service_fn(|_: ()| async { Ok::<_, Infallible>(()) }));
    assert!(shed.oneshot(()).await.is_err());

    // A breaker in front of a dependency that always fails opens.
    let failing = CircuitBreakerLayer::builder().name("payments").build().unwrap();
    let svc = failing.layer(service_fn(|_: ()| async { Err::<(), BoxError>("down".into()) }));
    for _ in 0..200 {
        let _ = svc.clone().oneshot(()).await;
    }

    // Retries, and a timeout that expires.
    let retry = RetryLayer::builder(FnPolicy::new(
        |r: &u32| Some(*r),
        |res: &Result<(), BoxError>| match res {
            Ok(()) => Verdict::Done,
            Err(_) => Verdict::Retry { not_before: None },
        },
    ))
    .budget(RetryBudget::builder().min_per_sec(100.0).build().unwrap())
    .name("client")
    .build()
    .unwrap();
    let flaky = retry.layer(service_fn(|_: u32| async { Err::<(), BoxError>("flaky".into()) }));
    assert!(flaky.oneshot(1).await.is_err());
    let hang = TimeoutLayer::new(Duration::from_millis(5))
        .unwrap()
        .layer(service_fn(|_: ()| std::future::pending::<Result<(), Infallible>>()));
    assert!(hang.oneshot(()).await.is_err());

    // A Redis store whose Redis is down from the start: its failure mode
    // decides, and says so.
    let store = RedisStore::builder("redis://127.0.0.1:1/", Quota::per_second(10))
        .name("global")
        .connect()
        .await
        .expect("connect works with Redis down");
    let global = RateLimitLayer::with_store(store)
        .name("global")
        .build()
        .unwrap()
        .layer(service_fn(|_: ()| async { Ok::<_, Infallible>(()) }));
    let _ = global.oneshot(()).await;

    // A client-side throttle in front of an upstream that refuses everything
    // starts rejecting locally.
    let throttle = AdaptiveThrottleLayer::builder()
        .min_requests(1)
        .seed(7)
        .name("upstream")
        .build()
        .unwrap()
        .layer(service_fn(|_: ()| async { Err::<(), BoxError>("refused".into()) }));
    for _ in 0..50 {
        let _ = throttle.clone().oneshot(()).await;
    }

    // The client preset: its retry, throttle and limit register as "client".
    let _client = backpressure::client::ClientPreset::new();

    backpressure::metrics::flush();
    let text = prometheus.render();
    let exposition = parse(&text);

    // Figures, not only names.
    let value = |key: &str| {
        exposition.values.get(key).copied().unwrap_or_else(|| panic!("no {key} in\n{text}"))
    };
    assert_eq!(value(r#"backpressure_rate_requests_total{name="server"}"#), 5.0);
    assert_eq!(
        value(r#"backpressure_rate_rejected_total{name="server",reason="rate_limited"}"#),
        1.0
    );
    assert_eq!(value(r#"backpressure_http_responses_total{reason="rate_limited"}"#), 1.0);
    assert_eq!(value(r#"backpressure_breaker_calls_total{name="server",outcome="failure"}"#), 1.0);
    assert_eq!(value(r#"backpressure_concurrency_requests_total{name="db"}"#), 3.0);
    assert_eq!(value(r#"backpressure_concurrency_admitted_total{name="db"}"#), 2.0);
    assert_eq!(
        value(r#"backpressure_concurrency_rejected_total{name="db",reason="overloaded"}"#),
        1.0
    );
    assert_eq!(value(r#"backpressure_concurrency_in_flight{name="db"}"#), 0.0);
    assert_eq!(value(r#"backpressure_concurrency_limit{name="db"}"#), 1.0);
    // The one queued request waited the 10 ms its predecessor held the
    // permit; published within a fifth of that.
    assert_eq!(value(r#"backpressure_concurrency_queue_wait_seconds_count{name="db"}"#), 1.0);
    let wait = value(r#"backpressure_concurrency_queue_wait_seconds_sum{name="db"}"#);
    assert!((0.008..0.012).contains(&wait), "{wait}");
    assert_eq!(value(r#"backpressure_shed_rejected_total{name="db",priority="sheddable"}"#), 1.0);
    assert_eq!(value(r#"backpressure_breaker_state{name="payments",state="open"}"#), 1.0);
    assert_eq!(value(r#"backpressure_breaker_opened_total{name="payments"}"#), 1.0);
    assert!(value(r#"backpressure_retry_retries_total{name="client"}"#) >= 1.0);
    assert_eq!(value(r#"backpressure_timeout_expired_total{name="timeout"}"#), 1.0);
    assert_eq!(value(r#"backpressure_redis_up{name="global"}"#), 0.0);
    assert_eq!(value(r#"backpressure_redis_fallback_total{name="global"}"#), 1.0);
    assert_eq!(value(r#"backpressure_throttle_probability{name="client"}"#), 0.0);
    assert_eq!(value(r#"backpressure_pushback_pushbacks_total{name="client"}"#), 0.0);
    assert_eq!(value(r#"backpressure_throttle_requests_total{name="upstream"}"#), 50.0);
    assert!(
        value(r#"backpressure_throttle_rejected_total{name="upstream",reason="throttled"}"#) > 10.0
    );
    assert!(value(r#"backpressure_throttle_probability{name="upstream"}"#) > 0.5);

    // Every sample of ours is described.
    for name in exposition.samples.keys().filter(|n| n.starts_with("backpressure_")) {
        assert!(exposition.helped.contains(family(name)), "no HELP for {name}");
        assert!(exposition.typed.contains(family(name)), "no TYPE for {name}");
    }

    // Every series the dashboard and the alerts query exists, with the
    // labels they select on.
    let root = env!("CARGO_MANIFEST_DIR");
    for file in ["examples/monitoring/grafana-dashboard.json", "examples/monitoring/alerts.yml"] {
        let queries = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        let found = selectors(&queries);
        assert!(found.len() > 5, "{file}: no queries found");
        for (name, labels) in found {
            let seen = exposition
                .samples
                .get(&name)
                .unwrap_or_else(|| panic!("{file} queries {name}, which the exporter never shows"));
            for label in labels {
                assert!(
                    seen.contains(&label),
                    "{file} selects {name} on {label}: not a label of it"
                );
            }
        }
    }

    // Without `flush`, the library's thread publishes within its interval.
    let svc = limit.layer(slow);
    svc.oneshot(()).await.unwrap();
    let admitted = r#"backpressure_concurrency_admitted_total{name="db"} 3"#;
    let waited = std::time::Instant::now();
    while !prometheus.render().contains(admitted) {
        assert!(
            waited.elapsed() < backpressure::metrics::INTERVAL * 3,
            "not published by the library's thread within three intervals"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
