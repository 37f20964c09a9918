//! The Redis store against a real redis-server that the test starts on a
//! free loopback port. These tests run in real time: the server's clock is.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use backpressure_core::{BoxError, RejectKind, Rejected};
use backpressure_rate::{Check, Decision, DirectStore, Quota, RateLimitLayer, RateStore, Verdict};
use backpressure_redis::testing::{RedisCluster, RedisServer};
use backpressure_redis::{FailureMode, RedisStore, RedisStoreBuilder};
use tower::{Layer, ServiceExt, service_fn};

async fn check<K>(store: &RedisStore, key: &K, cost: u32) -> Decision
where
    K: backpressure_redis::RedisKey + std::hash::Hash + ?Sized,
{
    match RateStore::<K>::check(store, key, cost, Duration::ZERO) {
        Check::Ready(r) => r.expect("decision"),
        Check::Pending(f) => f.await.expect("decision"),
    }
}

fn allowed(d: &Decision) -> bool {
    !matches!(d.verdict, Verdict::Reject { .. })
}

#[tokio::test]
async fn decisions_match_the_in_memory_store() {
    let server = RedisServer::start();
    let quota = Quota::per_second(10).burst(5);
    let redis = RedisStore::builder(server.url(), quota).connect().await.unwrap();
    let memory = DirectStore::new(quota).unwrap();
    // A deterministic arrival sequence: gaps of 0..60 ms, costs 1..=3, some
    // requests allowed to wait up to 150 ms. Times are explicit, identical
    // for both stores.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let base_us = 1_000_000_000u64;
    let mut t_us = 0u64;
    let mut agree = 0;
    for i in 0..300 {
        t_us += next() % 60_000;
        let cost = 1 + (next() % 3) as u32;
        let max_wait = if i % 4 == 0 { Duration::from_millis(150) } else { Duration::ZERO };
        let mem = memory.decide_at((base_us + t_us) * 1_000, cost, max_wait);
        let red = redis.check_at("conformance", cost, max_wait, base_us + t_us).await.unwrap();
        assert_eq!(red.verdict, mem.verdict, "arrival {i} at {t_us} us, cost {cost}");
        assert_eq!(red.info(), mem.info(), "header info, arrival {i}");
        agree += 1;
    }
    assert_eq!(agree, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_instances_share_one_global_quota() {
    let server = RedisServer::start();
    four_replicas_share_one_quota(|quota| RedisStore::builder(server.url(), quota)).await;
}

/// The same on a Redis Cluster (3 masters, 3 replicas): each bucket lives
/// on the master of its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_instances_share_one_global_quota_on_a_cluster() {
    let cluster = RedisCluster::start();
    four_replicas_share_one_quota(|quota| RedisStore::cluster(cluster.urls(), quota)).await;
}

/// Four stores (separate connections, as separate replicas would have)
/// admit 500/s + a burst of 50 in all, within 2 %.
async fn four_replicas_share_one_quota(builder: impl Fn(Quota) -> RedisStoreBuilder) {
    let quota = Quota::per_second(500).burst(50);
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(builder(quota).timeout(Duration::from_millis(200)).connect().await.unwrap());
    }
    assert!(stores.iter().all(|s| s.stats().up), "connected");
    let admitted = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let run_for = Duration::from_secs(2);
    let mut tasks = Vec::new();
    for store in stores {
        let admitted = Arc::clone(&admitted);
        tasks.push(tokio::spawn(async move {
            while start.elapsed() < run_for {
                if allowed(&check(&store, "shared", 1).await) {
                    admitted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let expected = 50.0 + 500.0 * elapsed;
    let got = admitted.load(Ordering::Relaxed) as f64;
    println!(
        "four replicas admitted {got} in {elapsed:.3} s; the global quota allows {expected:.0}"
    );
    assert!((got - expected).abs() <= 0.02 * expected, "{got} vs {expected}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_is_bounded_and_recovered_from_without_a_restart() {
    let mut server = RedisServer::start();
    let port = server.port;
    let timeout = Duration::from_millis(50);
    let store = RedisStore::builder(server.url(), Quota::per_second(1_000).burst(1_000))
        .timeout(timeout)
        .failure_mode(FailureMode::Local { replicas: 4 })
        .breaker(3, Duration::from_millis(200))
        .connect()
        .await
        .unwrap();
    for _ in 0..20 {
        assert!(allowed(&check(&store, "k", 1).await));
    }
    assert_eq!(store.stats().round_trips, 20);

    server.kill();
    let mut slowest = Duration::ZERO;
    for _ in 0..100 {
        let started = Instant::now();
        let d = check(&store, "k", 1).await;
        slowest = slowest.max(started.elapsed());
        assert!(allowed(&d), "the local fallback (250/s, burst 250) admits this trickle");
    }
    let stats = store.stats();
    println!(
        "killed (connection refused): slowest check {slowest:?} with a {timeout:?} timeout, {stats:?}"
    );
    assert!(slowest <= timeout + Duration::from_millis(150), "a check hung for {slowest:?}");
    assert!(!stats.up);
    assert!(stats.fallbacks >= 100);
    assert!(stats.errors <= 5, "the breaker stops paying the timeout: {} errors", stats.errors);

    // Redis comes back empty: no script cached. Checks succeed again, with
    // no restart of anything on our side.
    let _server = RedisServer::start_on(port);
    let back = Instant::now();
    let deadline = back + Duration::from_secs(10);
    let before = store.stats().round_trips;
    while store.stats().round_trips == before {
        assert!(Instant::now() < deadline, "never recovered: {:?}", store.stats());
        let _ = check(&store, "k", 1).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "killed, then restarted on its port: Redis used again {:?} after it was back",
        back.elapsed()
    );
    assert!(store.stats().up);
    for _ in 0..10 {
        check(&store, "k", 1).await;
    }
    assert!(store.stats().round_trips >= before + 10);
}

#[tokio::test]
async fn the_failure_modes_apply_within_the_timeout() {
    for (mode, expect_allowed) in [(FailureMode::Open, true), (FailureMode::Closed, false)] {
        let mut server = RedisServer::start();
        let store = RedisStore::builder(server.url(), Quota::per_second(1))
            .timeout(Duration::from_millis(30))
            .failure_mode(mode)
            .connect()
            .await
            .unwrap();
        server.kill();
        let started = Instant::now();
        let d = check(&store, "k", 1).await;
        assert!(started.elapsed() <= Duration::from_millis(200));
        assert_eq!(allowed(&d), expect_allowed, "{mode:?}");
    }
}

#[tokio::test]
async fn a_script_flush_is_survived() {
    let server = RedisServer::start();
    let store =
        RedisStore::builder(server.url(), Quota::per_second(10_000)).connect().await.unwrap();
    for _ in 0..5 {
        check(&store, "k", 1).await;
    }
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut conn).await.unwrap();
    for _ in 0..5 {
        assert!(allowed(&check(&store, "k", 1).await));
    }
    let stats = store.stats();
    assert_eq!((stats.round_trips, stats.errors, stats.fallbacks), (10, 0, 0));
}

#[tokio::test]
async fn keys_expire_once_refilled_and_denials_are_prechecked_locally() {
    let server = RedisServer::start();
    let store = RedisStore::builder(server.url(), Quota::per_second(10).burst(1))
        .local_precheck(1_000)
        .connect()
        .await
        .unwrap();
    assert!(allowed(&check(&store, &42u64, 1).await));
    let d = check(&store, &42u64, 1).await;
    assert!(!allowed(&d), "the second within 100 ms is over the limit");
    let trips = store.stats().round_trips;
    let d = check(&store, &42u64, 1).await;
    assert!(matches!(d.verdict, Verdict::Reject { retry_after: Some(_) }));
    assert_eq!(store.stats().round_trips, trips, "decided locally");
    assert_eq!(store.stats().prechecked, 1);

    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = store.key_name(&42u64);
    assert_eq!(key, "bp:{42}");
    let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut conn).await.unwrap();
    assert!((1..=102).contains(&ttl), "expires once refilled: {ttl} ms");
}

#[tokio::test]
async fn behind_the_layer_a_rejection_carries_retry_after() {
    let server = RedisServer::start();
    let store =
        RedisStore::builder(server.url(), Quota::per_second(2).burst(1)).connect().await.unwrap();
    let layer = RateLimitLayer::with_store(store).keyed(|n: &u32| *n).build().unwrap();
    let svc = layer.layer(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
    assert_eq!(svc.clone().oneshot(7).await.unwrap(), 7);
    let err = svc.clone().oneshot(7).await.unwrap_err();
    let rejected = Rejected::find(&err).unwrap();
    assert_eq!(rejected.kind(), RejectKind::RateLimited);
    let after = rejected.retry_after().unwrap();
    assert!(after > Duration::from_millis(400) && after <= Duration::from_millis(500), "{after:?}");
    assert_eq!(svc.oneshot(8).await.unwrap(), 8, "another key, another bucket");
}

/// After an outage opened the store's path breaker, the one probe allowed
/// through is dropped before Redis answers (its client left, an outer
/// timeout fired). On the first version its flag stayed set and Redis was
/// never tried again until a restart; now the probe is released when its
/// check is dropped, and the store recovers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_dropped_mid_check_does_not_keep_the_store_on_its_fallback() {
    let mut server = RedisServer::start();
    let port = server.port;
    let cooldown = Duration::from_millis(100);
    let store = RedisStore::builder(server.url(), Quota::per_second(1_000))
        .timeout(Duration::from_millis(50))
        .failure_mode(FailureMode::Open)
        .breaker(3, cooldown)
        .connect()
        .await
        .unwrap();
    server.kill();
    for _ in 0..5 {
        check(&store, "k", 1).await;
    }
    assert!(!store.stats().up, "the outage opened the path breaker");
    tokio::time::sleep(cooldown * 2).await;
    // The next check is the probe: dropped unfinished.
    match RateStore::<str>::check(&store, "k", 1, Duration::ZERO) {
        Check::Pending(probe) => {
            let _ = tokio::time::timeout(Duration::from_millis(1), probe).await;
        }
        Check::Ready(_) => panic!("after the cooldown a check probes Redis"),
    }
    let _server = RedisServer::start_on(port);
    let started = Instant::now();
    while store.stats().round_trips == 0 || !store.stats().up {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never tried Redis again: {:?}",
            store.stats()
        );
        check(&store, "k", 1).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "probe dropped mid-check, Redis restarted: Redis used again {:?} after it was back",
        started.elapsed()
    );
}

/// A service that starts during a Redis outage boots: `connect` returns a
/// store that applies its failure mode, says so (`up: false`), and starts
/// using Redis by itself once it answers. The first version's `connect`
/// failed, so the service could not start when it restarts most.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_connected_while_redis_is_down_works_and_recovers() {
    let port = backpressure_redis::testing::free_port();
    let url = format!("redis://127.0.0.1:{port}/");
    let cooldown = Duration::from_millis(100);
    let timeout = Duration::from_millis(50);
    let started = Instant::now();
    let store = RedisStore::builder(url, Quota::per_second(10).burst(2))
        .timeout(timeout)
        .failure_mode(FailureMode::Closed)
        .breaker(3, cooldown)
        .connect()
        .await
        .expect("a store, Redis or not");
    assert!(started.elapsed() < Duration::from_secs(2), "connect took {:?}", started.elapsed());
    assert!(!store.stats().up);
    // Closed: every check is rejected, within the timeout.
    for _ in 0..5 {
        let t = Instant::now();
        assert!(!allowed(&check(&store, "k", 1).await));
        assert!(t.elapsed() <= timeout * 2 + Duration::from_millis(100), "{:?}", t.elapsed());
    }
    assert!(store.stats().fallbacks >= 5);
    let _server = RedisServer::start_on(port);
    let back = Instant::now();
    loop {
        let d = check(&store, "k", 1).await;
        if store.stats().round_trips > 0 {
            assert!(allowed(&d), "Redis has a full bucket for k");
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(5), "never used Redis: {:?}", store.stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("started before Redis: Redis used {:?} after it came up", back.elapsed());
    assert!(store.stats().up);
}

/// A Redis that hangs (SIGSTOP: connections open, nothing answers) rather
/// than refuses: every check still returns within its timeout and a small
/// bound, the failure mode applies, and once Redis goes on (SIGCONT) the
/// store uses it again by itself within the breaker's cooldown and a round
/// trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_bounds_every_check_and_is_recovered_from() {
    let server = RedisServer::start();
    let timeout = Duration::from_millis(50);
    let cooldown = Duration::from_millis(200);
    let store = RedisStore::builder(server.url(), Quota::per_second(1_000).burst(1_000))
        .timeout(timeout)
        .failure_mode(FailureMode::Local { replicas: 2 })
        .breaker(3, cooldown)
        .connect()
        .await
        .unwrap();
    for _ in 0..10 {
        assert!(allowed(&check(&store, "k", 1).await));
    }
    server.pause();
    let mut slowest = Duration::ZERO;
    let hang = Instant::now();
    while hang.elapsed() < Duration::from_secs(1) {
        let started = Instant::now();
        let d = check(&store, "k", 1).await;
        slowest = slowest.max(started.elapsed());
        assert!(allowed(&d), "the local fallback admits this trickle");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stats = store.stats();
    println!("hung (SIGSTOP): slowest check {slowest:?} with a {timeout:?} timeout, {stats:?}");
    assert!(slowest <= timeout + Duration::from_millis(25), "a check hung for {slowest:?}");
    assert!(!stats.up && stats.fallbacks > 0);
    server.resume();
    let resumed = Instant::now();
    let before = store.stats().round_trips;
    while store.stats().round_trips == before || !store.stats().up {
        assert!(resumed.elapsed() < Duration::from_secs(5), "never recovered: {:?}", store.stats());
        check(&store, "k", 1).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = resumed.elapsed();
    println!("hung, then SIGCONT: Redis used again {took:?} after (breaker cooldown {cooldown:?})");
    assert!(took <= cooldown + Duration::from_millis(200), "recovery took {took:?}");
}

/// A flood of over-limit keys past the pre-check's size: the newest denial
/// is remembered (an older one makes room, in O(1)), instead of the first
/// version's `retain` over the whole map under one lock on every denial
/// once full, after which a full map of live denials remembered nothing new.
#[tokio::test]
async fn a_full_precheck_remembers_the_newest_denials() {
    let server = RedisServer::start();
    let store = RedisStore::builder(server.url(), Quota::per_minute(1).burst(1))
        .local_precheck(8)
        .connect()
        .await
        .unwrap();
    // 64 keys, each over its limit (denied for a minute): 8 times the map.
    for key in 0..64u64 {
        assert!(allowed(&check(&store, &key, 1).await));
        assert!(!allowed(&check(&store, &key, 1).await));
    }
    let trips = store.stats().round_trips;
    // The last key denied is decided locally.
    assert!(!allowed(&check(&store, &63u64, 1).await));
    assert_eq!(store.stats().round_trips, trips, "the newest denial is remembered");
    // And the map never grew past its size.
    assert_eq!(store.stats().precheck_keys, 8);
}

/// Decisions on a cluster are the in-memory store's too, for keys spread
/// over every master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_store_decides_like_the_in_memory_store_on_every_master() {
    let cluster = RedisCluster::start();
    let quota = Quota::per_second(10).burst(3);
    let redis = RedisStore::cluster(cluster.urls(), quota).connect().await.unwrap();
    let base_us = 1_000_000_000u64;
    for key in ["a", "b", "c", "d", "e", "f", "g", "h"] {
        let memory = DirectStore::new(quota).unwrap();
        for i in 0..8u64 {
            let t_us = i * 40_000;
            let mem = memory.decide_at((base_us + t_us) * 1_000, 1, Duration::ZERO);
            let red = redis.check_at(key, 1, Duration::ZERO, base_us + t_us).await.unwrap();
            assert_eq!(red.verdict, mem.verdict, "key {key}, arrival {i}");
        }
    }
    assert!(redis.stats().errors == 0, "{:?}", redis.stats());
}

/// A cluster master dies mid-run. Checks on its slots get the failure mode
/// for a bounded window — no panic, no check past its timeout — until its
/// replica takes over; then Redis decides again. Keys on other masters are
/// never affected for longer than the store's breaker needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_cluster_master_gives_a_bounded_window_of_fallbacks() {
    let mut cluster = RedisCluster::start();
    let timeout = Duration::from_millis(100);
    let store = RedisStore::cluster(cluster.urls(), Quota::per_second(100_000))
        .timeout(timeout)
        .failure_mode(FailureMode::Open)
        .breaker(3, Duration::from_millis(200))
        .connect()
        .await
        .unwrap();
    for _ in 0..20 {
        assert!(allowed(&check(&store, "victim", 1).await));
    }
    let trips = store.stats().round_trips;
    let killed = cluster.kill_master_of("victim");
    let killed_at = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut recovered = None;
    while killed_at.elapsed() < Duration::from_secs(15) {
        let before = store.stats().round_trips;
        let started = Instant::now();
        let d = check(&store, "victim", 1).await;
        slowest = slowest.max(started.elapsed());
        assert!(allowed(&d), "Open: admitted, by Redis or the failure mode");
        if store.stats().round_trips > before && killed_at.elapsed() > Duration::from_millis(50) {
            recovered = Some(killed_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = store.stats();
    println!(
        "cluster master {killed} killed: failure mode until Redis decided again after {recovered:?}; slowest check {slowest:?}; {stats:?}"
    );
    let recovered = recovered.expect("the replica took over and the store used it");
    assert!(recovered <= Duration::from_secs(10), "fallback window {recovered:?}");
    assert!(slowest <= timeout * 2 + Duration::from_millis(100), "a check took {slowest:?}");
    assert!(stats.round_trips > trips);
    // From then on, Redis decides.
    let before = store.stats().round_trips;
    for _ in 0..20 {
        check(&store, "victim", 1).await;
    }
    assert!(store.stats().round_trips >= before + 15, "{:?}", store.stats());
}

#[tokio::test]
async fn a_cluster_with_no_nodes_is_a_config_error_naming_them() {
    let err = RedisStore::cluster(Vec::<String>::new(), Quota::per_second(1))
        .connect()
        .await
        .expect_err("no nodes");
    let config = err.downcast_ref::<backpressure_core::ConfigError>().expect("a ConfigError");
    assert!(config.to_string().contains("nodes"), "{config}");
}
