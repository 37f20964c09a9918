use crate::{Deadline, Priority};

/// Gets something a layer needs — a rate-limit key, a [`Priority`], a
/// [`Deadline`] — out of a request.
///
/// Any closure `Fn(&Req) -> T` is an extractor; the unit structs of this
/// module cover the defaults:
///
/// ```
/// use backpressure_core::{CurrentDeadline, DefaultPriority, Extract, Priority};
///
/// struct Job { tenant: u32, batch: bool }
///
/// let key = |job: &Job| job.tenant;
/// let priority = |job: &Job| if job.batch { Priority::Sheddable } else { Priority::Critical };
///
/// let job = Job { tenant: 7, batch: true };
/// assert_eq!(key.extract(&job), 7);
/// assert_eq!(priority.extract(&job), Priority::Sheddable);
/// assert_eq!(DefaultPriority.extract(&job), Priority::Critical);
/// assert_eq!(CurrentDeadline.extract(&job), None); // no outer timeout here
/// ```
pub trait Extract<Req> {
    /// What is extracted.
    type Output;

    /// Extracts it from `req`. Must not panic on malformed input: fall back to
    /// a value that grants no more than a well-formed request would get.
    fn extract(&self, req: &Req) -> Self::Output;
}

impl<F, Req, T> Extract<Req> for F
where
    F: Fn(&Req) -> T,
{
    type Output = T;

    fn extract(&self, req: &Req) -> T {
        self(req)
    }
}

/// Extracts the deadline an outer layer put in scope ([`Deadline::current`]),
/// for any request type. The default deadline extractor of every layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct CurrentDeadline;

impl<Req> Extract<Req> for CurrentDeadline {
    type Output = Option<Deadline>;

    fn extract(&self, _req: &Req) -> Option<Deadline> {
        Deadline::current()
    }
}

/// Gives every request the default priority, [`Priority::Critical`].
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultPriority;

impl<Req> Extract<Req> for DefaultPriority {
    type Output = Priority;

    fn extract(&self, _req: &Req) -> Priority {
        Priority::default()
    }
}

/// Extracts the earlier of a [`Deadline`] stored in an `http::Request`'s
/// extensions and the one in scope ([`Deadline::current`]).
#[cfg(feature = "http")]
#[derive(Debug, Clone, Copy, Default)]
pub struct ExtensionDeadline;

#[cfg(feature = "http")]
impl<B> Extract<http::Request<B>> for ExtensionDeadline {
    type Output = Option<Deadline>;

    fn extract(&self, req: &http::Request<B>) -> Option<Deadline> {
        Deadline::earliest(req.extensions().get::<Deadline>().copied(), Deadline::current())
    }
}

/// Extracts a [`Priority`] stored in an `http::Request`'s extensions (by the
/// HTTP priority extractor or the application), or the default.
#[cfg(feature = "http")]
#[derive(Debug, Clone, Copy, Default)]
pub struct ExtensionPriority;

#[cfg(feature = "http")]
impl<B> Extract<http::Request<B>> for ExtensionPriority {
    type Output = Priority;

    fn extract(&self, req: &http::Request<B>) -> Priority {
        req.extensions().get::<Priority>().copied().unwrap_or_default()
    }
}

#[cfg(all(test, feature = "http"))]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn extension_deadline_takes_the_earlier() {
        let mut req = http::Request::new(());
        assert_eq!(ExtensionDeadline.extract(&req), None);
        let ext = Deadline::after(Duration::from_secs(2));
        req.extensions_mut().insert(ext);
        assert_eq!(ExtensionDeadline.extract(&req), Some(ext));
        let scoped = Deadline::after(Duration::from_secs(1));
        scoped.scope(|| assert_eq!(ExtensionDeadline.extract(&req), Some(scoped)));
    }

    #[test]
    fn extension_priority_defaults() {
        let mut req = http::Request::new(());
        assert_eq!(ExtensionPriority.extract(&req), Priority::Critical);
        req.extensions_mut().insert(Priority::Sheddable);
        assert_eq!(ExtensionPriority.extract(&req), Priority::Sheddable);
    }
}
