//! `--real`: the plain scenario over real HTTP on loopback, in wall-clock
//! time. The same simulated backend (its 10 ms queries are real sleeps)
//! sits behind an axum server; a hyper client in the same process sends
//! Poisson arrivals and gives up on a request after 1 s.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering::Relaxed},
    },
    time::Duration,
};

use axum::{
    Router, error_handling::HandleErrorLayer, extract::State, http::StatusCode, routing::get,
};
use backpressure::{
    concurrency::{ConcurrencyLimitLayer, Gradient2},
    core::{BoxError, HttpClassify},
    http::PriorityHeader,
    preset::ServerPreset,
};
use backpressure_lab::{
    sim::{Backend, BackendConfig, Job, Rng, quantile},
    stacks::Stack,
};
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::{net::TcpListener, time::Instant};
use tower::{ServiceBuilder, ServiceExt};

/// Requests the load generator keeps open at once; beyond it a request is
/// counted as "too late" without being sent (file descriptors are finite:
/// each open request over HTTP/1.1 is a connection, two descriptors here).
const CLIENT_CAP: usize = 4_000;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(1);

async fn query(State(backend): State<Backend>) -> StatusCode {
    let job =
        Job { client_deadline: Instant::now() + CLIENT_TIMEOUT, critical: false, sheddable: false };
    match backend.oneshot(job).await {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn app(stack: Stack, backend: Backend, pool: usize) -> Router {
    let router = Router::new().route("/", get(query)).with_state(backend);
    let timeout = Duration::from_secs(1);
    match stack {
        Stack::None => router,
        Stack::Tower | Stack::TowerMistuned(_) => {
            let limit = if let Stack::TowerMistuned(n) = stack { n } else { pool };
            router.layer(
                ServiceBuilder::new()
                    .layer(HandleErrorLayer::new(|_: BoxError| async {
                        StatusCode::SERVICE_UNAVAILABLE
                    }))
                    .load_shed()
                    .concurrency_limit(limit)
                    .timeout(timeout),
            )
        }
        Stack::Fixed | Stack::Adaptive | Stack::Breaker | Stack::Queue(_) => {
            let builder = ConcurrencyLimitLayer::builder();
            let builder = match stack {
                Stack::Fixed => builder.limit(pool).max_queue(pool * 5).max_wait(timeout),
                Stack::Queue(q) => q.limit_builder(),
                _ => builder
                    .adaptive(Gradient2::new().probe_seed(7))
                    .max_queue(100)
                    .max_wait(timeout),
            };
            let limit = builder
                .priority(PriorityHeader::default())
                .classify(HttpClassify)
                .build()
                .expect("valid limit");
            let preset = ServerPreset::with_concurrency(limit, timeout).expect("valid preset");
            if stack == Stack::Breaker {
                let breaker = backpressure::breaker::CircuitBreakerLayer::builder()
                    .window(backpressure::breaker::SlidingWindow::Calls(40))
                    .minimum_calls(20)
                    .classify(HttpClassify)
                    .build()
                    .expect("valid breaker");
                return router.layer(preset.breaker(breaker));
            }
            router.layer(preset)
        }
    }
}

#[derive(Default)]
struct Tally {
    ok: u64,
    rejected: u64,
    too_late: u64,
    latencies: Vec<Duration>,
}

async fn run(
    stack: Stack,
    config: &BackendConfig,
    rate: f64,
    duration: Duration,
    seed: u64,
) -> (Tally, usize) {
    let backend = Backend::new(config.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let addr: SocketAddr = listener.local_addr().expect("a local address");
    let app = app(stack, backend, config.pool);
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(5))
        .build_http::<Empty<Bytes>>();
    let uri: http::Uri = format!("http://{addr}/").parse().expect("a valid URI");
    let tally = Arc::new(Mutex::new(Tally::default()));
    let open = Arc::new(AtomicUsize::new(0));
    let mut peak = 0;
    let mut rng = Rng::new(seed);
    let start = Instant::now();
    let mut next = start;
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        next += rng.exp_delay(rate);
        if next >= start + duration {
            break;
        }
        tokio::time::sleep_until(next).await;
        if open.load(Relaxed) >= CLIENT_CAP {
            tally.lock().unwrap_or_else(|e| e.into_inner()).too_late += 1;
            continue;
        }
        peak = peak.max(open.fetch_add(1, Relaxed) + 1);
        let (client, uri, tally, open) =
            (client.clone(), uri.clone(), Arc::clone(&tally), Arc::clone(&open));
        tasks.spawn(async move {
            let sent = Instant::now();
            let req = http::Request::get(uri).body(Empty::new()).expect("a valid request");
            let result = tokio::time::timeout(CLIENT_TIMEOUT, client.request(req)).await;
            let latency = sent.elapsed();
            open.fetch_sub(1, Relaxed);
            let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
            match result {
                Ok(Ok(res)) if res.status() == StatusCode::OK => {
                    t.ok += 1;
                    t.latencies.push(latency);
                }
                Ok(_) => t.rejected += 1,
                Err(_) => t.too_late += 1,
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    server.abort();
    let mut t = std::mem::take(&mut *tally.lock().unwrap_or_else(|e| e.into_inner()));
    t.latencies.sort_unstable();
    (t, peak)
}

/// Closed-loop calibration in real time: `pool` clients querying the
/// backend directly for one second.
async fn calibrate(config: &BackendConfig) -> f64 {
    let backend = Backend::new(config.clone());
    let end = Instant::now() + Duration::from_secs(1);
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..config.pool {
        let backend = backend.clone();
        clients.spawn(async move {
            while Instant::now() < end {
                let job = Job { client_deadline: end, critical: false, sheddable: false };
                let _ = backend.clone().oneshot(job).await;
            }
        });
    }
    while clients.join_next().await.is_some() {}
    backend.served() as f64
}

pub(crate) fn main(duration: Duration, loads: &[f64], stacks: &[Stack]) {
    let rt =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    let config = BackendConfig::database();
    rt.block_on(async {
        let capacity = calibrate(&config).await;
        println!(
            "--real: axum on loopback, hyper client, wall-clock time; backend pool {} at {:?}, measured {capacity:.0}/s (closed loop, 1 s)",
            config.pool, config.service_time
        );
        println!(
            "{:?} of Poisson arrivals per run, clients give up after 1 s, at most {CLIENT_CAP} open requests\n",
            duration
        );
        println!(
            "{:<12} {:>6} {:>9} {:>7} {:>7} {:>7} {:>9} {:>9} {:>9}",
            "stack", "load", "goodput/s", "of cap", "p50", "p99", "rejected", "too late", "peak open"
        );
        for &factor in loads {
            for &stack in stacks {
                let (t, peak) = run(stack, &config, capacity * factor, duration, 7).await;
                let goodput = t.ok as f64 / duration.as_secs_f64();
                println!(
                    "{:<12} {:>5}x {:>9.0} {:>6.1}% {:>7} {:>7} {:>9} {:>9} {:>9}",
                    stack.name(),
                    factor,
                    goodput,
                    100.0 * goodput / capacity,
                    format!("{}ms", quantile(&t.latencies, 0.5).as_millis()),
                    format!("{}ms", quantile(&t.latencies, 0.99).as_millis()),
                    t.rejected,
                    t.too_late,
                    peak
                );
                // Let the previous server's connections close.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
}
