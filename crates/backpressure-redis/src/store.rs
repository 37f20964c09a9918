use std::{
    collections::HashMap,
    fmt,
    future::Future,
    hash::{BuildHasher, Hash, RandomState},
    pin::Pin,
    sync::{
        Arc, Mutex, OnceLock, PoisonError,
        atomic::{
            AtomicBool, AtomicU32, AtomicU64, Ordering::AcqRel, Ordering::Acquire,
            Ordering::Relaxed, Ordering::Release,
        },
    },
    time::Duration,
};

use backpressure_core::{
    BoxError, ConfigError, LayerName, RateLimitInfo,
    stripe::{CachePadded, stripe_count},
};
use backpressure_rate::{Check, Decision, KeyedStore, Quota, RateStore, Verdict};
use redis::{
    RedisResult, Script,
    aio::{ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
};
use tokio::time::Instant;

use crate::RedisKey;

const LAYER: &str = "redis-rate-store";

/// What a check does when Redis does not answer within the timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureMode {
    /// Admit: availability over the limit.
    Open,
    /// Reject with `Rejected(RateLimited)`: the limit over availability.
    Closed,
    /// Limit locally at `limit / replicas` (the default, with `replicas`
    /// 1): each replica enforces its share of the global quota.
    Local {
        /// How many replicas share the quota.
        replicas: u32,
    },
}

/// Counts of what the store did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RedisStats {
    /// Checks answered by Redis.
    pub round_trips: u64,
    /// Checks that failed or timed out.
    pub errors: u64,
    /// Checks decided by the failure mode.
    pub fallbacks: u64,
    /// Rejections decided locally by the pre-check.
    pub prechecked: u64,
    /// Keys the pre-check remembers now (at most its `max_keys`).
    pub precheck_keys: usize,
    /// Whether Redis is currently considered up.
    pub up: bool,
}

/// A [`RateStore`] keeping GCRA buckets in Redis. Cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Set by `connect`, or by the first probe that reaches Redis when it
    /// was down at startup; the connection reconnects by itself after that.
    conn: OnceLock<Conn>,
    target: Target,
    script: Script,
    quota: Quota,
    t_us: u64,
    tol_us: u64,
    burst: u32,
    prefix: String,
    timeout: Duration,
    mode: FailureMode,
    fallback: Option<KeyedStore>,
    hasher: RandomState,
    precheck: Option<Precheck>,
    breaker: PathBreaker,
    epoch: Instant,
    name: LayerName,
    round_trips: AtomicU64,
    errors: AtomicU64,
    fallbacks: AtomicU64,
    prechecked: AtomicU64,
    #[cfg(feature = "metrics")]
    published: metrics::Published,
}

/// Stops paying the timeout on every request during an outage.
struct PathBreaker {
    threshold: u32,
    cooldown: u64,
    failures: AtomicU32,
    open_until: AtomicU64,
    probing: AtomicBool,
    up: AtomicBool,
}

/// Where the buckets live.
enum Target {
    /// One instance, through a connection manager.
    Single(redis::Client, ConnectionManagerConfig),
    /// A Redis Cluster: each bucket's key is a hash tag, so each check goes
    /// to the one master that owns its slot.
    Cluster(ClusterClient),
}

impl Target {
    async fn connect(&self) -> RedisResult<Conn> {
        match self {
            Target::Single(client, config) => {
                ConnectionManager::new_with_config(client.clone(), config.clone())
                    .await
                    .map(Conn::Single)
            }
            Target::Cluster(client) => client.get_async_connection().await.map(Conn::Cluster),
        }
    }
}

/// A connection to either target (both multiplex and reconnect by
/// themselves; the cluster one also follows slot moves and failovers).
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Whether a check may go to Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Allow {
    /// Redis is up: go.
    Go,
    /// Redis was down and the cooldown is over: this check is the one probe.
    Probe,
    /// Redis is down: apply the failure mode.
    No,
}

impl PathBreaker {
    /// Whether this check may go to Redis.
    fn allow(&self, now: u64) -> Allow {
        if self.failures.load(Acquire) < self.threshold {
            return Allow::Go;
        }
        if now < self.open_until.load(Acquire) {
            return Allow::No;
        }
        // One probe at a time once the cooldown is over.
        match self.probing.compare_exchange(false, true, AcqRel, Acquire) {
            Ok(_) => Allow::Probe,
            Err(_) => Allow::No,
        }
    }

    /// Down from the start: the first check probes.
    fn start_down(&self) {
        self.failures.store(self.threshold, Release);
        self.up.store(false, Release);
    }

    fn success(&self, name: &LayerName) {
        self.failures.store(0, Release);
        self.probing.store(false, Release);
        if !self.up.swap(true, AcqRel) {
            tracing::info!(store = %name, "redis rate store recovered");
        }
    }

    fn failure(&self, now: u64, name: &LayerName, error: &str) {
        let failures = self.failures.fetch_add(1, AcqRel) + 1;
        self.probing.store(false, Release);
        if failures >= self.threshold {
            self.open_until.store(now.saturating_add(self.cooldown), Release);
            if self.up.swap(false, AcqRel) {
                tracing::warn!(store = %name, %error, "redis rate store unreachable; applying the failure mode");
            }
        }
    }
}

/// Builds a [`RedisStore`]; see [`RedisStore::builder`].
#[derive(Debug)]
pub struct RedisStoreBuilder {
    target: Vec<String>,
    cluster: bool,
    quota: Quota,
    prefix: String,
    timeout: Duration,
    mode: FailureMode,
    fallback_max_keys: usize,
    precheck: Option<usize>,
    breaker_threshold: u32,
    breaker_cooldown: Duration,
    name: Option<LayerName>,
}

impl RedisStore {
    /// A builder for a store at `url` (`redis://host:port/db`) enforcing
    /// `quota` per key.
    pub fn builder(url: impl Into<String>, quota: Quota) -> RedisStoreBuilder {
        Self::builder_for(vec![url.into()], false, quota)
    }

    /// A builder for a store on a Redis Cluster, given one or more of its
    /// nodes (`redis://host:port`); the rest are discovered. Each bucket's
    /// key is a hash tag, so a check is one round trip to the master that
    /// owns its slot; slot moves and failovers are followed by the `redis`
    /// crate's cluster client.
    pub fn cluster<I, S>(nodes: I, quota: Quota) -> RedisStoreBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::builder_for(nodes.into_iter().map(Into::into).collect(), true, quota)
    }

    fn builder_for(target: Vec<String>, cluster: bool, quota: Quota) -> RedisStoreBuilder {
        RedisStoreBuilder {
            target,
            cluster,
            quota,
            prefix: "bp".into(),
            timeout: Duration::from_millis(25),
            mode: FailureMode::Local { replicas: 1 },
            fallback_max_keys: 10_000,
            precheck: None,
            breaker_threshold: 3,
            breaker_cooldown: Duration::from_secs(1),
            name: None,
        }
    }

    /// What the store has done so far.
    pub fn stats(&self) -> RedisStats {
        let i = &self.inner;
        RedisStats {
            round_trips: i.round_trips.load(Relaxed),
            errors: i.errors.load(Relaxed),
            fallbacks: i.fallbacks.load(Relaxed),
            prechecked: i.prechecked.load(Relaxed),
            precheck_keys: i.precheck.as_ref().map_or(0, Precheck::len),
            up: i.breaker.up.load(Relaxed),
        }
    }

    /// The Redis key name of `key`'s bucket.
    pub fn key_name<K: RedisKey + ?Sized>(&self, key: &K) -> String {
        let mut name = String::with_capacity(self.inner.prefix.len() + 24);
        name.push_str(&self.inner.prefix);
        name.push_str(":{");
        key.write_key(&mut name);
        name.push('}');
        name
    }

    /// Checks with an explicit time in microseconds instead of Redis's clock:
    /// for conformance tests against the in-memory store. Not for
    /// production: replicas' clocks disagree.
    #[doc(hidden)]
    pub async fn check_at<K: RedisKey + ?Sized>(
        &self,
        key: &K,
        cost: u32,
        max_wait: Duration,
        now_us: u64,
    ) -> Result<Decision, BoxError> {
        let mut conn = self.inner.connection().await?;
        let reply =
            round_trip(&self.inner, &mut conn, self.key_name(key), cost, max_wait, Some(now_us))
                .await?;
        Ok(self.inner.decision(reply))
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("name", &self.inner.name)
            .field("prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .field("mode", &self.inner.mode)
            .finish_non_exhaustive()
    }
}

impl RedisStoreBuilder {
    /// The prefix of every key (default `bp`).
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The bound on each check (default 25 ms).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// What to do when Redis does not answer (default: a local limit at the
    /// full quota; set `Local { replicas }` to your replica count).
    #[must_use]
    pub fn failure_mode(mut self, mode: FailureMode) -> Self {
        self.mode = mode;
        self
    }

    /// Keys the local fallback tracks at most (default 10,000).
    #[must_use]
    pub fn fallback_max_keys(mut self, max_keys: usize) -> Self {
        self.fallback_max_keys = max_keys;
        self
    }

    /// Remember up to `max_keys` keys that Redis rejected, and reject them
    /// locally, without a round trip, until their retry time.
    #[must_use]
    pub fn local_precheck(mut self, max_keys: usize) -> Self {
        self.precheck = Some(max_keys);
        self
    }

    /// Consecutive failures before the store stops asking Redis, and how
    /// often it then probes (defaults 3 and 1 s).
    #[must_use]
    pub fn breaker(mut self, threshold: u32, cooldown: Duration) -> Self {
        self.breaker_threshold = threshold;
        self.breaker_cooldown = cooldown;
        self
    }

    /// The instance name, in logs and metric labels.
    #[must_use]
    pub fn name(mut self, name: impl Into<LayerName>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Validates the configuration and connects (waiting at most the
    /// timeout, and at least 1 s).
    ///
    /// A Redis that does not answer is not an error: a service must be able
    /// to start during a Redis outage, which is when it restarts most. The
    /// store then logs a warning once, reports `up: false`
    /// ([`RedisStore::stats`], the `backpressure_redis_up` gauge), applies
    /// its [`FailureMode`] to every check, and sends one probe every
    /// `breaker_cooldown` (the first at once) that connects and, from then
    /// on, uses Redis.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] (boxed) naming an invalid field, or the `redis`
    /// crate's error for a URL it cannot parse.
    pub async fn connect(self) -> Result<RedisStore, BoxError> {
        self.quota.validate(LAYER)?;
        let t = self
            .quota
            .emission_interval()
            .ok_or_else(|| ConfigError::new(LAYER, "quota", "is invalid"))?;
        let t_us = u64::try_from(t.as_micros()).unwrap_or(u64::MAX);
        if t_us == 0 {
            return Err(ConfigError::new(
                LAYER,
                "quota",
                "must leave at least 1 µs between requests (Redis keeps microseconds)",
            )
            .into());
        }
        let burst = self.quota.burst_size();
        let tol_us = t_us.saturating_mul(u64::from(burst));
        if tol_us > 1 << 50 {
            return Err(ConfigError::new(
                LAYER,
                "quota.burst",
                "burst × interval is too long for Redis's numbers",
            )
            .into());
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new(LAYER, "timeout", "must be greater than zero").into());
        }
        if self.breaker_threshold == 0 {
            return Err(ConfigError::new(LAYER, "breaker", "threshold must be at least 1").into());
        }
        let fallback = match self.mode {
            FailureMode::Local { replicas: 0 } => {
                return Err(
                    ConfigError::new(LAYER, "failure_mode", "replicas must be at least 1").into()
                );
            }
            FailureMode::Local { replicas } => {
                let count = (self.quota.count() / replicas).max(1);
                let burst = (burst / replicas).max(1);
                Some(KeyedStore::new(
                    Quota::per(count, self.quota.period()).burst(burst),
                    self.fallback_max_keys,
                )?)
            }
            _ => None,
        };
        // A URL that does not parse is a configuration error; a Redis that
        // does not answer is an outage, which the failure mode is for.
        let io_timeout = self.timeout.max(Duration::from_millis(100));
        let target = if self.cluster {
            if self.target.is_empty() {
                return Err(
                    ConfigError::new(LAYER, "nodes", "name at least one cluster node").into()
                );
            }
            Target::Cluster(
                ClusterClient::builder(self.target.iter().map(String::as_str))
                    .connection_timeout(io_timeout)
                    .response_timeout(io_timeout)
                    .retries(1)
                    .build()?,
            )
        } else {
            let url = self.target.first().map_or("", String::as_str);
            Target::Single(
                redis::Client::open(url)?,
                ConnectionManagerConfig::new()
                    .set_connection_timeout(io_timeout)
                    .set_response_timeout(io_timeout)
                    .set_number_of_retries(1),
            )
        };
        let name = self.name.unwrap_or(LayerName::from_static(LAYER));
        let conn = OnceLock::new();
        let first =
            tokio::time::timeout(self.timeout.max(Duration::from_secs(1)), target.connect()).await;
        let down = match first {
            Ok(Ok(manager)) => {
                let _ = conn.set(manager);
                None
            }
            Ok(Err(error)) => Some(error.to_string()),
            Err(_) => Some("timed out connecting".to_owned()),
        };
        if let Some(error) = &down {
            tracing::warn!(
                store = %name,
                %error,
                mode = ?self.mode,
                "redis unreachable at startup; applying the failure mode until it answers"
            );
        }
        let store = RedisStore {
            inner: Arc::new(Inner {
                conn,
                target,
                script: Script::new(include_str!("gcra.lua")),
                quota: self.quota,
                t_us,
                tol_us,
                burst,
                prefix: self.prefix,
                timeout: self.timeout,
                mode: self.mode,
                fallback,
                hasher: RandomState::new(),
                precheck: self.precheck.filter(|&cap| cap > 0).map(Precheck::new),
                breaker: PathBreaker {
                    threshold: self.breaker_threshold,
                    cooldown: u64::try_from(self.breaker_cooldown.as_nanos()).unwrap_or(u64::MAX),
                    failures: AtomicU32::new(0),
                    open_until: AtomicU64::new(0),
                    probing: AtomicBool::new(false),
                    up: AtomicBool::new(true),
                },
                epoch: Instant::now(),
                name,
                round_trips: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                fallbacks: AtomicU64::new(0),
                prechecked: AtomicU64::new(0),
                #[cfg(feature = "metrics")]
                published: metrics::Published::default(),
            }),
        };
        if down.is_some() {
            store.inner.breaker.start_down();
        }
        #[cfg(feature = "metrics")]
        backpressure_core::metrics::register(&store.inner);
        Ok(store)
    }
}

/// The script's answer: allowed, wait (µs), ahead (µs), impossible.
type Reply = (u8, u64, u64, u8);

async fn round_trip(
    inner: &Inner,
    conn: &mut Conn,
    key: String,
    cost: u32,
    max_wait: Duration,
    now_us: Option<u64>,
) -> Result<Reply, BoxError> {
    let mut invocation = inner.script.key(key);
    invocation
        .arg(inner.t_us)
        .arg(inner.tol_us)
        .arg(cost)
        .arg(u64::try_from(max_wait.as_micros()).unwrap_or(u64::MAX))
        .arg(now_us.map_or(String::new(), |n| n.to_string()));
    // `invoke_async` sends EVALSHA and, on NOSCRIPT, loads the script and
    // retries: a restarted Redis or a SCRIPT FLUSH costs one extra trip.
    let call = async {
        match conn {
            Conn::Single(conn) => invocation.invoke_async::<Reply>(conn).await,
            Conn::Cluster(conn) => invocation.invoke_async::<Reply>(conn).await,
        }
    };
    match tokio::time::timeout(inner.timeout, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err("redis check timed out".into()),
    }
}

impl Inner {
    /// The connection, made now (within the timeout) if Redis was down when
    /// the store was built: only a probe gets here then.
    async fn connection(&self) -> Result<Conn, BoxError> {
        if let Some(conn) = self.conn.get() {
            return Ok(conn.clone());
        }
        let conn = tokio::time::timeout(self.timeout, self.target.connect())
            .await
            .map_err(|_| "timed out connecting to redis")??;
        // Another probe may have won (after a later cooldown): keep one.
        Ok(self.conn.get_or_init(|| conn).clone())
    }

    fn now(&self) -> u64 {
        u64::try_from(Instant::now().saturating_duration_since(self.epoch).as_nanos())
            .unwrap_or(u64::MAX)
    }

    fn info(&self, ahead_us: u64) -> RateLimitInfo {
        RateLimitInfo::new(
            self.burst,
            self.quota.count(),
            self.quota.period(),
            u32::try_from(self.tol_us.saturating_sub(ahead_us) / self.t_us)
                .unwrap_or(u32::MAX)
                .min(self.burst),
            Duration::from_micros(ahead_us),
        )
    }

    fn decision(&self, (allowed, wait, ahead, impossible): Reply) -> Decision {
        let verdict = match (allowed, wait, impossible) {
            (1, 0, _) => Verdict::Allow,
            (1, wait, _) => Verdict::AllowAfter(Duration::from_micros(wait)),
            (_, _, 1) => Verdict::Reject { retry_after: None },
            (_, wait, _) => Verdict::Reject { retry_after: Some(Duration::from_micros(wait)) },
        };
        Decision::new(verdict, self.info(ahead))
    }

    fn fallback(&self, hash: u64, cost: u32, max_wait: Duration) -> Decision {
        self.fallbacks.fetch_add(1, Relaxed);
        match (self.mode, &self.fallback) {
            (FailureMode::Open, _) => Decision::new(Verdict::Allow, self.info(0)),
            (FailureMode::Closed, _) => {
                Decision::new(Verdict::Reject { retry_after: None }, self.info(self.tol_us))
            }
            (FailureMode::Local { .. }, Some(store)) => {
                match RateStore::<u64>::check(store, &hash, cost, max_wait) {
                    Check::Ready(Ok(decision)) => decision,
                    // In-memory stores always answer at once.
                    _ => {
                        Decision::new(Verdict::Reject { retry_after: None }, self.info(self.tol_us))
                    }
                }
            }
            (FailureMode::Local { .. }, None) => Decision::new(Verdict::Allow, self.info(0)),
        }
    }

    fn prechecked(&self, hash: u64, now: u64) -> Option<Decision> {
        let until = self.precheck.as_ref()?.until(hash, now)?;
        self.prechecked.fetch_add(1, Relaxed);
        let retry_after = Duration::from_nanos(until - now);
        Some(Decision::new(
            Verdict::Reject { retry_after: Some(retry_after) },
            self.info(self.tol_us),
        ))
    }

    fn remember_denial(&self, hash: u64, now: u64, retry_after: Duration) {
        let Some(precheck) = &self.precheck else { return };
        let until = now.saturating_add(u64::try_from(retry_after.as_nanos()).unwrap_or(u64::MAX));
        precheck.remember(hash, until);
    }
}

type CheckFuture = Pin<Box<dyn Future<Output = Result<Decision, BoxError>> + Send>>;

/// One shard of the pre-check: key hash → denied until.
type Shard = CachePadded<Mutex<HashMap<u64, u64>>>;

/// Keys Redis said are over their limit, until when (store nanoseconds).
///
/// Shards, each behind its own lock on its own cache lines, picked by the
/// key's hash: no lock shared by every check. A full shard makes room by
/// dropping one entry (any: live or expired) in O(1), never by sweeping
/// the map; an expired entry is dropped when a check finds it. At most
/// `max_keys` entries in all (rounded up to a whole number per shard).
struct Precheck {
    shards: Box<[Shard]>,
    per_shard: usize,
}

impl Precheck {
    fn new(max_keys: usize) -> Self {
        let count = (stripe_count() * 4).min(max_keys).max(1);
        Precheck {
            shards: (0..count).map(|_| CachePadded(Mutex::new(HashMap::new()))).collect(),
            per_shard: max_keys.div_ceil(count),
        }
    }

    fn shard(&self, hash: u64) -> std::sync::MutexGuard<'_, HashMap<u64, u64>> {
        // The high bits: the map itself hashes the low ones again.
        let index = (hash >> 32) as usize % self.shards.len();
        self.shards[index].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Until when `hash` is denied, if it still is at `now`.
    fn until(&self, hash: u64, now: u64) -> Option<u64> {
        let mut shard = self.shard(hash);
        let until = *shard.get(&hash)?;
        if now < until {
            Some(until)
        } else {
            shard.remove(&hash);
            None
        }
    }

    /// Keys remembered now.
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len()).sum()
    }

    fn remember(&self, hash: u64, until: u64) {
        let mut shard = self.shard(hash);
        if shard.len() >= self.per_shard && !shard.contains_key(&hash) {
            let evicted = shard.keys().next().copied();
            if let Some(evicted) = evicted {
                shard.remove(&evicted);
            }
        }
        shard.insert(hash, until);
    }
}

/// The one probe of a store whose path breaker is open: released when the
/// probing check ends, whichever way.
struct ProbeGuard(Arc<Inner>);

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        self.0.breaker.probing.store(false, Release);
    }
}

impl<K: RedisKey + Hash + ?Sized> RateStore<K> for RedisStore {
    type Future = CheckFuture;

    fn check(&self, key: &K, cost: u32, max_wait: Duration) -> Check<Self::Future> {
        let inner = &*self.inner;
        let hash = inner.hasher.hash_one(key);
        let now = inner.now();
        if let Some(decision) = inner.prechecked(hash, now) {
            return Check::Ready(Ok(decision));
        }
        let allow = inner.breaker.allow(now);
        if allow == Allow::No {
            return Check::Ready(Ok(inner.fallback(hash, cost, max_wait)));
        }
        let key = self.key_name(key);
        let inner = Arc::clone(&self.inner);
        // The probe is given back however this check ends: answered, failed,
        // or dropped unfinished (a flag cleared only on the first two kept
        // the store on its fallback for good).
        let probe = (allow == Allow::Probe).then(|| ProbeGuard(Arc::clone(&inner)));
        Check::Pending(Box::pin(async move {
            let _probe = probe;
            let reply = match inner.connection().await {
                Ok(mut conn) => round_trip(&inner, &mut conn, key, cost, max_wait, None).await,
                Err(error) => Err(error),
            };
            match reply {
                Ok(reply) => {
                    inner.round_trips.fetch_add(1, Relaxed);
                    inner.breaker.success(&inner.name);
                    let decision = inner.decision(reply);
                    if let Verdict::Reject { retry_after: Some(after) } = decision.verdict {
                        inner.remember_denial(hash, inner.now(), after);
                    }
                    Ok(decision)
                }
                Err(error) => {
                    inner.errors.fetch_add(1, Relaxed);
                    inner.breaker.failure(inner.now(), &inner.name, &error.to_string());
                    Ok(inner.fallback(hash, cost, max_wait))
                }
            }
        }))
    }

    fn quota(&self) -> Quota {
        self.inner.quota
    }
}

mod metrics {
    //! | name | kind | labels |
    //! |---|---|---|
    //! | `backpressure_redis_up` | gauge, 1 or 0 | `name` |
    //! | `backpressure_redis_round_trips_total` | counter | `name` |
    //! | `backpressure_redis_errors_total` | counter | `name` |
    //! | `backpressure_redis_fallback_total` | counter | `name` |
    //! | `backpressure_redis_prechecked_total` | counter | `name` |
    //!
    //! Counted in the store and published by the library once a second
    //! (`backpressure_core::metrics`): no check touches the recorder.

    #[cfg(feature = "metrics")]
    #[derive(Default)]
    pub(super) struct Published(pub(super) [backpressure_core::metrics::Published; 4]);

    #[cfg(feature = "metrics")]
    impl backpressure_core::metrics::Publish for super::Inner {
        fn publish(&self) {
            use metrics::{Unit, describe_counter, describe_gauge};
            use std::sync::atomic::Ordering::{Acquire, Relaxed};
            describe_gauge!(
                "backpressure_redis_up",
                Unit::Count,
                "1 while the Redis rate store reaches Redis, 0 while it applies its failure mode."
            );
            describe_counter!(
                "backpressure_redis_round_trips_total",
                Unit::Count,
                "Checks the Redis rate store sent to Redis."
            );
            describe_counter!(
                "backpressure_redis_errors_total",
                Unit::Count,
                "Checks that failed or timed out talking to Redis."
            );
            describe_counter!(
                "backpressure_redis_fallback_total",
                Unit::Count,
                "Checks decided by the failure mode instead of Redis."
            );
            describe_counter!(
                "backpressure_redis_prechecked_total",
                Unit::Count,
                "Checks the local pre-check rejected without a round trip."
            );
            let name = self.name.to_string();
            let p = &self.published.0;
            metrics::gauge!("backpressure_redis_up", "name" => name.clone())
                .set(if self.breaker.up.load(Acquire) { 1.0 } else { 0.0 });
            let counters = [
                ("backpressure_redis_round_trips_total", &self.round_trips),
                ("backpressure_redis_errors_total", &self.errors),
                ("backpressure_redis_fallback_total", &self.fallbacks),
                ("backpressure_redis_prechecked_total", &self.prechecked),
            ];
            for ((metric, total), published) in counters.into_iter().zip(p) {
                metrics::counter!(metric, "name" => name.clone())
                    .increment(published.since(total.load(Relaxed)));
            }
        }
    }

    /// What was counted since the last publication is published as the
    /// store goes.
    #[cfg(feature = "metrics")]
    impl Drop for super::Inner {
        fn drop(&mut self) {
            backpressure_core::metrics::Publish::publish(self);
        }
    }
}
