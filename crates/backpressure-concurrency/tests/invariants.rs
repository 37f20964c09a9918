//! Property tests: over any interleaving of arrivals (any priority, any
//! deadline), time advances and futures dropped at any point, the limit and
//! the queue bound hold, and nothing leaks.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use backpressure_concurrency::{ConcurrencyLimitLayer, Discipline};
use backpressure_core::{BoxError, Deadline, Priority};
use proptest::prelude::*;
use tokio_test::task;
use tower::{Layer, Service, service_fn};

#[derive(Debug, Clone)]
enum Op {
    Arrive { priority: usize, work_ms: u64, deadline_ms: Option<u64> },
    Drop(usize),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..4, 1u64..30, proptest::option::of(0u64..40))
            .prop_map(|(priority, work_ms, deadline_ms)| Op::Arrive { priority, work_ms, deadline_ms }),
        1 => any::<usize>().prop_map(Op::Drop),
        3 => (0u64..25).prop_map(Op::Advance),
    ]
}

fn discipline(i: u8) -> Discipline {
    match i % 3 {
        0 => Discipline::Fifo,
        1 => Discipline::Lifo,
        _ => Discipline::Codel {
            target: Duration::from_millis(3),
            interval: Duration::from_millis(10),
            adaptive_lifo: true,
        },
    }
}

struct Running(Arc<AtomicUsize>);
impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_limit_holds_and_nothing_leaks(
        limit in 1usize..5,
        max_queue in 0usize..5,
        disc in any::<u8>(),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async move {
            let layer = ConcurrencyLimitLayer::builder()
                .limit(limit)
                .max_queue(max_queue)
                .max_wait(Duration::from_millis(20))
                .discipline(discipline(disc))
                .priority(|r: &(Priority, u64)| r.0)
                .build()
                .unwrap();
            let handle = layer.handle();
            let running = Arc::new(AtomicUsize::new(0));
            let peak = Arc::new(AtomicUsize::new(0));
            let (r, p) = (Arc::clone(&running), Arc::clone(&peak));
            let inner = service_fn(move |(_, work_ms): (Priority, u64)| {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                let guard = Running(Arc::clone(&r));
                async move {
                    tokio::time::sleep(Duration::from_millis(work_ms)).await;
                    drop(guard);
                    Ok::<_, BoxError>(())
                }
            });
            let mut svc = layer.layer(inner);
            let mut futures = Vec::new();
            for op in ops {
                match op {
                    Op::Arrive { priority, work_ms, deadline_ms } => {
                        let req = (Priority::ALL[priority], work_ms);
                        let fut = match deadline_ms {
                            Some(ms) => Deadline::after(Duration::from_millis(ms)).scope(|| svc.call(req)),
                            None => svc.call(req),
                        };
                        futures.push(Some(task::spawn(fut)));
                    }
                    Op::Drop(i) => {
                        if !futures.is_empty() {
                            let n = futures.len();
                            futures[i % n] = None;
                        }
                    }
                    Op::Advance(ms) => tokio::time::advance(Duration::from_millis(ms)).await,
                }
                for slot in futures.iter_mut() {
                    if let Some(fut) = slot
                        && fut.poll().is_ready()
                    {
                        *slot = None;
                    }
                }
                prop_assert!(peak.load(Ordering::SeqCst) <= limit, "inner concurrency above the limit");
                prop_assert!(handle.in_flight() <= limit);
                prop_assert!(handle.queued() <= max_queue);
                prop_assert!(handle.slots_live() <= max_queue + limit, "waiter slots are bounded");
            }
            drop(futures);
            prop_assert_eq!(handle.in_flight(), 0, "a permit leaked");
            prop_assert_eq!(handle.queued(), 0, "a queue slot leaked");
            prop_assert_eq!(handle.slots_live(), 0, "a waiter slot leaked");
            prop_assert_eq!(running.load(Ordering::SeqCst), 0);
            Ok(())
        })?;
    }
}
