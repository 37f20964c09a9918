//! The bounded waiter queue: pure data, no atomics, no tokio but `Instant`.
//! The limiter keeps it behind a mutex and calls it from slow paths only.

use std::{collections::VecDeque, task::Waker, time::Duration};

use backpressure_core::{Priority, RejectKind};
use tokio::time::Instant;

/// The order in which queued requests get permits.
///
/// Whatever the discipline, higher [`Priority`] waiters are always served
/// before lower ones; the discipline orders waiters of equal priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Discipline {
    /// Oldest first, each request may wait `max_wait`: fair, and right
    /// while the queue is short, but under sustained overload a full queue
    /// stands and every admitted request waits behind it (in the lab, p99
    /// 70 ms for a 10 ms backend at 2x, 5x and 20x).
    Fifo,
    /// Newest first: under sustained overload the newest requests are the
    /// ones whose clients are still waiting; the oldest time out in the queue
    /// instead of being served stale.
    Lifo,
    /// Controlled delay, after CoDel and Facebook's "Fail at Scale": a queue
    /// that absorbs bursts and refuses to stand ([`Discipline::codel()`]).
    ///
    /// While the queue drains, it is FIFO and a request may wait up to
    /// `max_wait`. Once it *stands* — it filled to nine tenths and was
    /// still that full an `interval` later, or every permit handed out in
    /// an interval went to a request older than `target` while it stayed
    /// that full — no request waits longer than `target`: newcomers get
    /// `target` as their budget, and waiters that queued earlier with a
    /// longer one are cut once they have waited `target` (checked whenever
    /// a permit is handed out or a request queues). With `adaptive_lifo` a
    /// standing queue is also served newest first. It drains again after an
    /// interval in which it served its waiters within `target`.
    ///
    /// A waiter about to be served is never cut, nor given `target` when it
    /// queues: one with fewer waiters ahead of it than the queue handed
    /// permits out to in `target` over the last interval. Its wait is only
    /// for a permit to come free, and cutting it would turn away the work
    /// the service does next — a `Critical` request at the head of its
    /// lane behind a `Sheddable` flood, or the one waiter of a queue of one
    /// behind a slow request.
    ///
    /// In the overload lab (10 ms backend, adaptive limit, queue of 100):
    /// p99 25 / 23 / 24 ms at 2x, 5x and 20x capacity (FIFO: 70 ms) with
    /// 99.5 % goodput, and bursts at 0.9x turned away no more often than by
    /// FIFO (0.75 %). The default.
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

impl Default for Discipline {
    /// [`Discipline::codel()`]: in the overload lab it is the one
    /// discipline that keeps p99 within 2.5x the service time under 2x, 5x
    /// and 20x sustained overload *and* absorbs bursts as FIFO does (the
    /// "queues" table; FIFO was the default before: p99 70 ms). Under a
    /// `Sheddable` flood `Critical` requests still get through (100 % in
    /// `tests/concurrency.rs`): a waiter about to be served is never cut.
    fn default() -> Self {
        Discipline::codel()
    }
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
    /// CoDel's state, for that discipline.
    codel: Option<Codel>,
}

impl WaitQueue {
    pub(crate) fn new(discipline: Discipline, max_queue: usize, now: Instant) -> Self {
        WaitQueue {
            slots: Vec::new(),
            free: Vec::new(),
            lanes: Default::default(),
            len: 0,
            discipline,
            codel: match discipline {
                Discipline::Codel { target, interval, .. } => {
                    Some(Codel::new(target, interval, max_queue, now))
                }
                _ => None,
            },
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

    /// Whether CoDel says the queue stands: newcomers may wait only
    /// `target`, older waiters are cut, and (with adaptive LIFO) the newest
    /// are served first.
    pub(crate) fn congested(&mut self, now: Instant) -> bool {
        let len = self.len;
        self.codel.as_mut().is_some_and(|c| c.dropping(now, len))
    }

    /// Whether the queue stood at its last decision (no clock read).
    pub(crate) fn standing(&self) -> bool {
        self.codel.as_ref().is_some_and(|c| c.mode == Mode::Dropping)
    }

    /// Permits handed out in `target` at the last interval's rate (at
    /// least 1): a waiter with fewer ahead of it is served within `target`.
    fn per_target(&self) -> usize {
        self.codel.as_ref().map_or(1, |c| c.per_target)
    }

    /// How long the oldest waiter has waited.
    fn head_age(&self, now: Instant) -> Duration {
        self.lanes
            .iter()
            .filter_map(|lane| lane.front())
            .map(|&i| now.saturating_duration_since(self.slots[i].enqueued))
            .max()
            .unwrap_or_default()
    }

    /// Waiters at `priority` or above: those served before a newcomer at
    /// `priority`, oldest first.
    fn ahead_of(&self, priority: Priority) -> usize {
        self.lanes[priority.index()..].iter().map(VecDeque::len).sum()
    }

    /// How long a request of `priority` queued now may wait, before its
    /// deadline. A newcomer with fewer waiters ahead of it than the queue
    /// hands permits out to in `target` is served within `target` anyway:
    /// it keeps `max_wait`, whatever CoDel says.
    pub(crate) fn wait_budget(
        &mut self,
        now: Instant,
        max_wait: Duration,
        priority: Priority,
    ) -> Duration {
        match self.discipline {
            Discipline::Codel { target, .. } => {
                if self.congested(now) && self.ahead_of(priority) >= self.per_target() {
                    target.min(max_wait)
                } else {
                    max_wait
                }
            }
            _ => max_wait,
        }
    }

    /// CoDel's cut: while the queue stands, takes out the oldest waiter
    /// that has waited longer than `target`, whatever budget it was given
    /// when it queued, and marks it rejected. Returns its waker; call until
    /// `None`. Always `None` for other disciplines. Lanes are in arrival
    /// order, so only their fronts need looking at, lowest priority first.
    ///
    /// A waiter with fewer waiters served before it than the queue hands
    /// permits out to in `target` (at the last interval's rate) is about to
    /// be served: it is not standing behind a queue, only waiting for a
    /// permit to come free, and is never cut. Cutting it would turn away
    /// the work the service does next: a `Critical` request at the head of
    /// its lane behind a `Sheddable` flood whose permits come free in
    /// batches (48 % of them were cut before this rule), or the one waiter
    /// of a queue of one behind a slow request.
    pub(crate) fn cut_stale(&mut self, now: Instant) -> Option<Option<Waker>> {
        let Discipline::Codel { target, adaptive_lifo, .. } = self.discipline else {
            return None;
        };
        if !self.congested(now) {
            return None;
        }
        let round = self.per_target();
        let mut above = self.len;
        let mut victim = None;
        for (p, lane) in self.lanes.iter().enumerate() {
            above -= lane.len();
            // The oldest waiter of the lane with a round ahead of it. Ahead
            // of a waiter: every higher lane, and in its own lane the older
            // ones (FIFO) or the younger ones (adaptive LIFO, so the oldest).
            let pos = if adaptive_lifo {
                (above + lane.len()).checked_sub(1).filter(|&a| a >= round).map(|_| 0)
            } else {
                Some(round.saturating_sub(above))
            };
            let Some(pos) = pos.filter(|&pos| pos < lane.len()) else { continue };
            if now.saturating_duration_since(self.slots[lane[pos]].enqueued) > target {
                victim = Some((p, pos));
                break;
            }
        }
        let (lane, pos) = victim?;
        let idx = self.lanes[lane].remove(pos)?;
        self.left_queue(now, true);
        let slot = &mut self.slots[idx];
        slot.state = SlotState::Rejected(RejectKind::QueueTimeout);
        Some(slot.waker.take())
    }

    /// Queues a waiter; returns its slot.
    pub(crate) fn push(&mut self, priority: Priority, now: Instant) -> usize {
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
        if let Some(c) = self.codel.as_mut() {
            if self.len == 1 {
                // A newcomer to an empty queue: nothing stood.
                c.on_head(now, 0, Duration::ZERO, false);
            }
            c.on_push(now, self.len);
        }
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
        if self.codel.is_some() {
            let (age, len) = (self.head_age(now), self.len);
            if let Some(c) = self.codel.as_mut() {
                c.on_head(now, len, age, true);
            }
        }
        let lane = &mut self.lanes[priority.index()];
        let idx = if newest_first { lane.pop_back() } else { lane.pop_front() }?;
        self.left_queue(now, false);
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
        self.left_queue(now, true);
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
    /// still waiting (its client left). Returns the state it had.
    pub(crate) fn release_slot(&mut self, idx: usize, now: Instant) -> SlotState {
        self.free_slot(idx, now, false)
    }

    /// [`release_slot`](Self::release_slot) for a waiter whose time ran
    /// out: for CoDel, the queue dropped it.
    pub(crate) fn expire_slot(&mut self, idx: usize, now: Instant) -> SlotState {
        self.free_slot(idx, now, true)
    }

    fn free_slot(&mut self, idx: usize, now: Instant, dropped: bool) -> SlotState {
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
            self.left_queue(now, dropped);
        }
        let slot = &mut self.slots[idx];
        slot.state = SlotState::Free;
        slot.waker = None;
        self.free.push(idx);
        state
    }

    /// A waiter left the queue: granted, or `dropped` by it (cut, timed
    /// out, evicted), or its client left.
    fn left_queue(&mut self, now: Instant, dropped: bool) {
        self.len -= 1;
        if dropped && let Some(c) = self.codel.as_mut() {
            c.on_drop(now, self.len);
        }
    }
}

/// CoDel's controller. Once per `interval` it decides, from the interval
/// just past, whether the queue stands.
///
/// - **Draining** (the normal mode): FIFO, each request may wait
///   `max_wait`. Bursts queue and are served in order.
/// - **Filled**: the queue reached nine tenths of its size (where a default
///   shedder starts turning away default-priority work). Nothing changes
///   for the waiters, but the clock starts: if the queue is still nine
///   tenths full an interval later, it did not drain — it stands.
/// - **Dropping**: the queue stands. Newcomers may wait only `target`, the
///   newest are served first (with adaptive LIFO), and any waiter older
///   than `target` is cut whenever a permit is handed out or a request
///   queues, whatever budget it was given when it queued. It goes on while
///   the queue keeps dropping (cut, timed out, evicted) at least a tenth as
///   many waiters as it serves; a queue that serves its waiters within
///   `target` for an interval drains again.
///
/// A draining queue also starts dropping when, at every permit handed out
/// in an interval, its oldest waiter had waited over `target` (CoDel's
/// minimum sojourn) and it is nine tenths full at the end.
///
/// Measured in the lab (`cargo run --release --example overload`, the
/// "queues" table): at 2x, 5x and 20x sustained overload p99 23-25 ms for a
/// 10 ms backend (FIFO: 70 ms), while bursts at 0.9x are absorbed as by
/// FIFO (0.75 % turned away). Rules tried first and dropped:
/// Facebook's "the queue has not been empty for an interval" (under
/// adaptive LIFO the cuts empty the queue now and then, each emptying
/// restarted a FIFO interval: p99 60 ms at 2x; and 0.9x bursts were cut:
/// 5-6 % turned away, whatever the target); counting arrivals against
/// grants (blind behind a shedder, which turns the excess away before it
/// arrives); serving newest first as soon as the queue fills (p99 of the
/// 0.9x bursts 60 -> 144 ms, the oldest starved).
#[derive(Debug)]
struct Codel {
    target: Duration,
    interval: Duration,
    /// Nine tenths of the queue's size.
    nearly_full: usize,
    mode: Mode,
    window_start: Instant,
    /// The youngest the oldest waiter was at any grant of this window (zero
    /// once a newcomer found the queue empty).
    min_head_age: Option<Duration>,
    grants: u32,
    drops: u32,
    /// Permits handed out in `target` at the last interval's rate, at
    /// least 1: waiters with fewer ahead are about to be served.
    per_target: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Draining,
    Filled,
    Dropping,
}

impl Codel {
    fn new(target: Duration, interval: Duration, max_queue: usize, now: Instant) -> Self {
        Codel {
            target,
            interval,
            nearly_full: (max_queue * 9 / 10).max(1),
            mode: Mode::Draining,
            window_start: now,
            min_head_age: None,
            grants: 0,
            drops: 0,
            per_target: 1,
        }
    }

    fn reset_window(&mut self, now: Instant) {
        self.window_start = now;
        self.min_head_age = None;
        self.grants = 0;
        self.drops = 0;
    }

    /// Closes the window if its interval is over, deciding the next one;
    /// `len`: waiters now.
    fn roll(&mut self, now: Instant, len: usize) {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed < self.interval {
            return;
        }
        // Empty, and nothing at all happened for a whole interval: no queue.
        let idle = len == 0 && elapsed >= self.interval.saturating_mul(2);
        let stood = self.grants > 0 && self.min_head_age.is_some_and(|age| age > self.target);
        let full = len >= self.nearly_full;
        // Still dropping, or nobody served while some wait.
        let dropped = self.drops > 0 || (self.grants == 0 && len > 0);
        let per_target =
            u128::from(self.grants) * self.target.as_nanos() / elapsed.as_nanos().max(1);
        self.per_target = usize::try_from(per_target).unwrap_or(usize::MAX).max(1);
        self.mode = match self.mode {
            _ if idle => Mode::Draining,
            Mode::Dropping if dropped => Mode::Dropping,
            Mode::Filled if full => Mode::Dropping,
            Mode::Draining if stood && full => Mode::Dropping,
            _ => Mode::Draining,
        };
        self.reset_window(now);
    }

    /// Whether the queue stands: newcomers get `target`, waiters older than
    /// `target` are cut, the newest are served first.
    fn dropping(&mut self, now: Instant, len: usize) -> bool {
        self.roll(now, len);
        self.mode == Mode::Dropping
    }

    /// A grant (`head_age`: the oldest waiter's wait), or a newcomer to an
    /// empty queue (zero).
    fn on_head(&mut self, now: Instant, len: usize, head_age: Duration, grant: bool) {
        self.roll(now, len);
        self.grants = self.grants.saturating_add(u32::from(grant));
        self.min_head_age = Some(self.min_head_age.map_or(head_age, |m| m.min(head_age)));
    }

    fn on_drop(&mut self, now: Instant, len: usize) {
        self.roll(now, len);
        self.drops = self.drops.saturating_add(1);
    }

    /// `len` waiters after a newcomer joined.
    fn on_push(&mut self, now: Instant, len: usize) {
        self.roll(now, len);
        if self.mode == Mode::Draining && len >= self.nearly_full {
            self.mode = Mode::Filled;
            // Whether it drains is judged an interval from now.
            self.reset_window(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(discipline: Discipline, now: Instant) -> Vec<usize> {
        let mut q = WaitQueue::new(discipline, 100, now);
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
        let mut q = WaitQueue::new(Discipline::Fifo, 100, now);
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
        let mut q = WaitQueue::new(Discipline::Fifo, 100, now);
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

    const MS: Duration = Duration::from_millis(1);

    /// A CoDel queue of 10 (nine tenths: 9) in which 9 wait from `t0`.
    fn filled(t0: Instant) -> (WaitQueue, Vec<usize>) {
        let mut q = WaitQueue::new(Discipline::codel(), 10, t0);
        let ids = (0..9).map(|_| q.push(Priority::Critical, t0)).collect();
        (q, ids)
    }

    #[test]
    fn codel_drops_once_a_filled_queue_has_not_drained_in_an_interval() {
        let t0 = Instant::now();
        let max_wait = Duration::from_secs(1);
        let (mut q, ids) = filled(t0);
        // Filled, but nothing changes yet: FIFO, full budgets.
        assert!(!q.congested(t0 + 99 * MS));
        assert_eq!(q.wait_budget(t0 + 99 * MS, max_wait, Priority::Critical), max_wait);
        // An interval later it is still full: it stands.
        let t1 = t0 + 100 * MS;
        assert!(q.congested(t1));
        assert_eq!(q.wait_budget(t1, max_wait, Priority::Critical), 5 * MS);
        let fresh = q.push(Priority::Critical, t1);
        // Every waiter older than the target is cut, the fresh one served.
        let mut cut = 0;
        while q.cut_stale(t1).is_some() {
            cut += 1;
        }
        assert_eq!(cut, 9);
        assert!(ids.iter().all(|&i| q.state(i) == SlotState::Rejected(RejectKind::QueueTimeout)));
        q.grant_next(t1);
        assert_eq!(q.state(fresh), SlotState::Granted);
    }

    #[test]
    fn codel_serves_newest_first_while_dropping() {
        let t0 = Instant::now();
        let (mut q, ids) = filled(t0);
        let t1 = t0 + 100 * MS;
        assert!(q.congested(t1));
        let fresh = [q.push(Priority::Critical, t1), q.push(Priority::Critical, t1 + MS)];
        while q.cut_stale(t1 + MS).is_some() {}
        q.grant_next(t1 + MS);
        assert_eq!(q.state(fresh[1]), SlotState::Granted, "adaptive LIFO");
        assert_eq!(q.state(fresh[0]), SlotState::Waiting);
        assert_eq!(q.state(ids[0]), SlotState::Rejected(RejectKind::QueueTimeout));
    }

    #[test]
    fn codel_never_cuts_a_waiter_about_to_be_served() {
        let t0 = Instant::now();
        let mut q = WaitQueue::new(Discipline::codel(), 40, t0);
        let mut sheddable: Vec<usize> = (0..36).map(|_| q.push(Priority::Sheddable, t0)).collect();
        // Filled. In the interval that follows, 80 permits are handed out
        // (FIFO) while as many newcomers keep it full: 4 per 5 ms target.
        for k in 0..80u32 {
            let at = t0 + k * 1_250 * Duration::from_micros(1);
            sheddable.push(q.push(Priority::Sheddable, at));
            q.grant_next(at);
        }
        let t1 = t0 + 100 * MS;
        assert!(q.congested(t1));
        assert_eq!(q.per_target(), 4);
        let critical = q.push(Priority::Critical, t1);
        // The critical waiter heads its lane: nobody is served before it,
        // so however long it waits for a permit, it is not cut; nor are the
        // 3 sheddable waiters served next (newest first) with it.
        let later = t1 + 50 * MS;
        while q.cut_stale(later).is_some() {}
        assert_eq!(q.state(critical), SlotState::Waiting);
        let left = sheddable.iter().filter(|&&i| q.state(i) == SlotState::Waiting).count();
        assert_eq!(left, 3, "1 critical + 3 sheddable are served within the target");
        // A critical newcomer with fewer than 4 ahead keeps max_wait; a
        // sheddable one behind 4 gets the target.
        let max_wait = Duration::from_secs(1);
        assert_eq!(q.wait_budget(later, max_wait, Priority::Critical), max_wait);
        assert_eq!(q.wait_budget(later, max_wait, Priority::Sheddable), 5 * MS);
    }

    #[test]
    fn codel_leaves_a_burst_that_drains_alone() {
        let t0 = Instant::now();
        let (mut q, ids) = filled(t0);
        // The burst is served within the interval...
        for (k, _) in ids.iter().enumerate() {
            q.grant_next(t0 + (k as u32 + 1) * 5 * MS);
        }
        // ...so an interval after it filled up, nothing stands.
        let t1 = t0 + 100 * MS;
        assert!(!q.congested(t1));
        assert_eq!(
            q.wait_budget(t1, Duration::from_secs(1), Priority::Critical),
            Duration::from_secs(1)
        );
        assert!(q.cut_stale(t1).is_none());
    }

    #[test]
    fn codel_drains_again_once_nobody_is_dropped_for_an_interval() {
        let t0 = Instant::now();
        let (mut q, _) = filled(t0);
        let t1 = t0 + 100 * MS;
        assert!(q.congested(t1));
        while q.cut_stale(t1).is_some() {}
        // The interval of the cuts still counts them; in the next one
        // everyone who queues is served within target.
        for k in 0..40u32 {
            let at = t1 + k * 5 * MS;
            q.push(Priority::Critical, at);
            q.grant_next(at + MS);
        }
        assert!(!q.congested(t1 + 201 * MS), "no drops for an interval: draining");
    }

    #[test]
    fn slots_are_reused() {
        let now = Instant::now();
        let mut q = WaitQueue::new(Discipline::Fifo, 100, now);
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
