use std::{
    fmt,
    sync::{Arc, atomic::Ordering::Relaxed},
};

use backpressure_core::{Pressure, Priority};

use crate::layer::Shared;

/// Observes a [`LoadShedLayer`](crate::LoadShedLayer).
pub struct LoadShedHandle<P> {
    shared: Arc<Shared<P>>,
}

/// A point-in-time view of a shedder.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LoadShedSnapshot {
    /// The signal's pressure now (with the in-flight count, if tracked).
    pub pressure: f64,
    /// Requests shed so far, indexed by [`Priority::index`].
    pub shed: [u64; 4],
    /// Requests inside the layer now, if counted.
    pub in_flight: Option<usize>,
}

impl LoadShedSnapshot {
    /// Requests of `priority` shed so far.
    pub fn shed_of(&self, priority: Priority) -> u64 {
        self.shed[priority.index()]
    }
}

impl<P> LoadShedHandle<P> {
    pub(crate) fn new(shared: Arc<Shared<P>>) -> Self {
        LoadShedHandle { shared }
    }
}

impl<P: Pressure> LoadShedHandle<P> {
    /// Everything at once.
    pub fn snapshot(&self) -> LoadShedSnapshot {
        let s = &self.shared;
        let in_flight = s.in_flight.as_ref().map(|c| c.count.load(Relaxed));
        let mut pressure = s.signal.pressure();
        if let Some(c) = &s.in_flight {
            pressure = pressure.max(c.pressure());
        }
        LoadShedSnapshot {
            pressure,
            shed: std::array::from_fn(|i| s.stats.shed[i].load(Relaxed)),
            in_flight,
        }
    }
}

impl<P> Clone for LoadShedHandle<P> {
    fn clone(&self) -> Self {
        LoadShedHandle { shared: Arc::clone(&self.shared) }
    }
}

impl<P> fmt::Debug for LoadShedHandle<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadShedHandle")
            .field("name", &self.shared.stats.name)
            .finish_non_exhaustive()
    }
}
