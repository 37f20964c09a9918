//! The bounded waiter queue: pure data, no atomics, no tokio but `Instant`.
//! The limiter keeps it behind a mutex and calls it from slow paths only.

use std::{collections::VecDeque, task::Waker, time::Duration};

use backpressure_core::{Priority, RejectKind};
use tokio::time::Instant;

/// The order in which queued requests get permits.
///
/// Whatever the discipline, higher [`Priority`] waiters are always served
/// before lower ones; the discipline orders waiters of equal priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Discipline {
    /// Oldest first: fair, and right while the queue is short. The default.
    #[default]
    Fifo,
    /// Newest first: under sustained overload the newest requests are the
    /// ones whose clients are still waiting; the oldest time out in the queue
    /// instead of being served stale.
    Lifo,
    /// Controlled delay, as in Facebook's "Fail at Scale": if the queue has
    /// not been empty at any time in the last `interval`, a newly queued
    /// request may wait only `target`; otherwise up to `max_wait`. A standing
    /// queue is cut short quickly, while bursts still queue. With
    /// `adaptive_lifo`, a congested queue is also served newest first.
    Codel {
        /// How long a request may wait while the queue is congested (5 ms).
        target: Duration,
        /// How long the queue must have been non-empty to count as
        /// congested (100 ms).
        interval: Duration,
        /// Serve newest first while congested.
        adaptive_lifo: bool,
    },
}

impl Discipline {
    /// CoDel with the paper's defaults: `target` 5 ms, `interval` 100 ms,
    /// adaptive LIFO on.
    pub const fn codel() -> Self {
        Discipline::Codel {
            target: Duration::from_millis(5),
            interval: Duration::from_millis(100),
            adaptive_lifo: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotState {
    Free,
    Waiting,
    Granted,
    Rejected(RejectKind),
}

#[derive(Debug)]
struct Slot {
    state: SlotState,
    priority: Priority,
    waker: Option<Waker>,
    enqueued: Instant,
}

/// Waiters in per-priority lanes, over a slab of slots that is reused, so a
/// steady state allocates nothing. Live slots are bounded by queued waiters
/// plus granted permits not yet collected, so by `max_queue + max_limit`.
#[derive(Debug)]
pub(crate) struct WaitQueue {
    slots: Vec<Slot>,
    free: Vec<usize>,
    lanes: [VecDeque<usize>; 4],
    len: usize,
    discipline: Discipline,
    last_empty: Instant,
}

impl WaitQueue {
    pub(crate) fn new(discipline: Discipline, now: Instant) -> Self {
        WaitQueue {
            slots: Vec::new(),
            free: Vec::new(),
            lanes: Default::default(),
            len: 0,
            discipline,
            last_empty: now,
        }
    }

    /// Requests waiting (not counting granted or rejected slots).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Slots allocated (for the leak and bound tests).
    pub(crate) fn slots_live(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Whether the queue has been non-empty for at least CoDel's interval.
    pub(crate) fn congested(&self, now: Instant) -> bool {
        match self.discipline {
            Discipline::Codel { interval, .. } => {
                self.len > 0 && now.saturating_duration_since(self.last_empty) >= interval
            }
            _ => false,
        }
    }

    /// How long a request queued now may wait, before its deadline.
    pub(crate) fn wait_budget(&self, now: Instant, max_wait: Duration) -> Duration {
        match self.discipline {
            Discipline::Codel { target, .. } if self.congested(now) => target.min(max_wait),
            _ => max_wait,
        }
    }

    /// Queues a waiter; returns its slot.
    pub(crate) fn push(&mut self, priority: Priority, now: Instant) -> usize {
        if self.len == 0 {
            // It was empty until this instant.
            self.last_empty = now;
        }
        let slot = Slot { state: SlotState::Waiting, priority, waker: None, enqueued: now };
        let idx = match self.free.pop() {
            Some(idx) => {
                self.slots[idx] = slot;
                idx
            }
            None => {
                self.slots.push(slot);
                self.slots.len() - 1
            }
        };
        self.lanes[priority.index()].push_back(idx);
        self.len += 1;
        idx
    }

    /// The priority of the waiter that would be served next.
    pub(crate) fn next_priority(&self) -> Option<Priority> {
        Priority::ALL.iter().rev().copied().find(|p| !self.lanes[p.index()].is_empty())
    }

    /// Takes the next waiter out of the queue (highest priority first, then
    /// by discipline) and marks it granted. Returns its waker to wake.
    pub(crate) fn grant_next(&mut self, now: Instant) -> Option<Option<Waker>> {
        let priority = self.next_priority()?;
        let newest_first = match self.discipline {
            Discipline::Fifo => false,
            Discipline::Lifo => true,
            Discipline::Codel { adaptive_lifo, .. } => adaptive_lifo && self.congested(now),
        };
        let lane = &mut self.lanes[priority.index()];
        let idx = if newest_first { lane.pop_back() } else { lane.pop_front() }?;
        self.left_queue(now);
        let slot = &mut self.slots[idx];
        slot.state = SlotState::Granted;
        Some(slot.waker.take())
    }

    /// When full: rejects the oldest waiter of the lowest priority strictly
    /// below `priority`, making room. Returns its waker, or `None` if every
    /// waiter is at least as important.
    pub(crate) fn evict_below(
        &mut self,
        priority: Priority,
        now: Instant,
    ) -> Option<Option<Waker>> {
        let victim = Priority::ALL
            .iter()
            .copied()
            .take_while(|p| *p < priority)
            .find(|p| !self.lanes[p.index()].is_empty())?;
        let idx = self.lanes[victim.index()].pop_front()?;
        self.left_queue(now);
        let slot = &mut self.slots[idx];
        slot.state = SlotState::Rejected(RejectKind::Overloaded);
        Some(slot.waker.take())
    }

    pub(crate) fn state(&self, idx: usize) -> SlotState {
        self.slots.get(idx).map_or(SlotState::Free, |s| s.state)
    }

    pub(crate) fn enqueued_at(&self, idx: usize) -> Option<Instant> {
        self.slots.get(idx).map(|s| s.enqueued)
    }

    /// Stores the waker of a waiting slot (cloning only if it changed).
    pub(crate) fn set_waker(&mut self, idx: usize, waker: &Waker) {
        if let Some(slot) = self.slots.get_mut(idx) {
            match &slot.waker {
                Some(w) if w.will_wake(waker) => {}
                _ => slot.waker = Some(waker.clone()),
            }
        }
    }

    /// Frees a slot whatever its state, taking it out of its lane if it was
    /// still waiting. Returns the state it had.
    pub(crate) fn release_slot(&mut self, idx: usize, now: Instant) -> SlotState {
        let Some(slot) = self.slots.get_mut(idx) else { return SlotState::Free };
        let state = slot.state;
        if state == SlotState::Free {
            return state;
        }
        if state == SlotState::Waiting {
            let lane = &mut self.lanes[slot.priority.index()];
            if let Some(pos) = lane.iter().position(|&i| i == idx) {
                lane.remove(pos);
            }
            self.left_queue(now);
        }
        let slot = &mut self.slots[idx];
        slot.state = SlotState::Free;
        slot.waker = None;
        self.free.push(idx);
        state
    }

    fn left_queue(&mut self, now: Instant) {
        self.len -= 1;
        if self.len == 0 {
            self.last_empty = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(discipline: Discipline, now: Instant) -> Vec<usize> {
        let mut q = WaitQueue::new(discipline, now);
        let ids: Vec<usize> = (0..4).map(|_| q.push(Priority::Critical, now)).collect();
        let mut served = Vec::new();
        while q.grant_next(now).is_some() {
            let granted = ids.iter().copied().find(|&i| q.state(i) == SlotState::Granted).unwrap();
            q.release_slot(granted, now);
            served.push(granted);
        }
        served
    }

    #[test]
    fn fifo_and_lifo_orders() {
        let now = Instant::now();
        assert_eq!(order(Discipline::Fifo, now), vec![0, 1, 2, 3]);
        assert_eq!(order(Discipline::Lifo, now), vec![3, 2, 1, 0]);
        // CoDel is FIFO until the queue has been busy for an interval.
        assert_eq!(order(Discipline::codel(), now), vec![0, 1, 2, 3]);
    }

    #[test]
    fn higher_priorities_first_then_discipline() {
        let now = Instant::now();
        let mut q = WaitQueue::new(Discipline::Fifo, now);
        let low = q.push(Priority::Sheddable, now);
        let crit = q.push(Priority::Critical, now);
        let plus = q.push(Priority::CriticalPlus, now);
        q.grant_next(now);
        assert_eq!(q.state(plus), SlotState::Granted);
        q.grant_next(now);
        assert_eq!(q.state(crit), SlotState::Granted);
        q.grant_next(now);
        assert_eq!(q.state(low), SlotState::Granted);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn eviction_takes_the_oldest_of_the_lowest_priority() {
        let now = Instant::now();
        let mut q = WaitQueue::new(Discipline::Fifo, now);
        let a = q.push(Priority::SheddablePlus, now);
        let b = q.push(Priority::Sheddable, now);
        let c = q.push(Priority::Sheddable, now);
        assert!(q.evict_below(Priority::Sheddable, now).is_none(), "nothing below the lowest");
        assert!(q.evict_below(Priority::Critical, now).is_some());
        assert_eq!(q.state(b), SlotState::Rejected(RejectKind::Overloaded));
        assert_eq!(q.state(c), SlotState::Waiting);
        assert_eq!(q.state(a), SlotState::Waiting);
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn codel_shortens_waits_once_congested_and_serves_newest() {
        let t0 = Instant::now();
        let mut q = WaitQueue::new(Discipline::codel(), t0);
        let max_wait = Duration::from_secs(1);
        assert_eq!(q.wait_budget(t0, max_wait), max_wait);
        let first = q.push(Priority::Critical, t0);
        let t1 = t0 + Duration::from_millis(150);
        let second = q.push(Priority::Critical, t1);
        assert!(q.congested(t1));
        assert_eq!(q.wait_budget(t1, max_wait), Duration::from_millis(5));
        q.grant_next(t1);
        assert_eq!(q.state(second), SlotState::Granted, "adaptive LIFO while congested");
        assert_eq!(q.state(first), SlotState::Waiting);
    }

    #[test]
    fn slots_are_reused() {
        let now = Instant::now();
        let mut q = WaitQueue::new(Discipline::Fifo, now);
        for _ in 0..1_000 {
            let a = q.push(Priority::Critical, now);
            let b = q.push(Priority::Critical, now);
            q.release_slot(b, now);
            q.grant_next(now);
            q.release_slot(a, now);
        }
        assert_eq!(q.slots_live(), 0);
        assert!(q.slots.len() <= 2);
    }
}
