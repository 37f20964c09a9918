//! The shared vocabulary of the `backpressure` layers.
//!
//! Every layer of the workspace speaks this crate's types, so the layers never
//! depend on one another:
//!
//! - [`Rejected`] and [`RejectKind`]: the one error every layer rejects with,
//!   carrying an exact [`retry_after`](Rejected::retry_after) where known.
//!   [`Rejected::find`] digs it out of a [`BoxError`] chain.
//! - [`Outcome`] and [`Classify`]: what counts as a success, a failure or
//!   neither, for circuit breakers and adaptive limits.
//! - [`Deadline`]: the instant by which a request must be answered, and how it
//!   travels from an outer layer (the timeout) to inner ones (the queue).
//! - [`Priority`]: four criticality levels after Google SRE's.
//! - [`Pressure`]: a load signal (0 idle, 1 at capacity) one layer publishes
//!   and another acts on.
//! - [`Extract`]: how a layer gets a key, a priority or a deadline out of a
//!   request — any closure `Fn(&Req) -> T` is one.
//! - [`ConfigError`]: what a builder returns when a field is invalid.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use backpressure_core::{BoxError, RejectKind, Rejected};
//!
//! // A layer rejects...
//! let err: BoxError = Rejected::new(RejectKind::RateLimited)
//!     .with_retry_after(Duration::from_millis(1500))
//!     .with_layer("rate-limit")
//!     .into();
//!
//! // ...and anyone above it can find out why, however deeply it is wrapped.
//! let rejected = Rejected::find(&err).expect("a rejection");
//! assert_eq!(rejected.kind(), RejectKind::RateLimited);
//! assert_eq!(rejected.retry_after(), Some(Duration::from_millis(1500)));
//! assert_eq!(
//!     rejected.to_string(),
//!     "request rejected by rate-limit: rate limited (retry after 1.5s)"
//! );
//! ```
//!
//! # Features
//!
//! - `http`: [`Extract`] implementations that read a [`Deadline`] or a
//!   [`Priority`] from `http::Request` extensions, and [`HttpClassify`],
//!   which classifies responses by status code; [`pushback`], which reads
//!   `Retry-After` and `grpc-retry-pushback-ms`.

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod classify;
mod config;
mod deadline;
mod draw;
mod extract;
#[doc(hidden)]
pub mod metrics;
mod pressure;
mod priority;
#[cfg(feature = "http")]
mod pushback;
mod reject;
#[doc(hidden)]
pub mod stripe;

#[cfg(feature = "http")]
pub use classify::HttpClassify;
pub use classify::{Classify, ClassifyError, DefaultClassify, Outcome};
pub use config::ConfigError;
pub use deadline::{Deadline, PendingDeadline, instant_after};
pub use draw::Draw;
pub use extract::{CurrentDeadline, DefaultPriority, Extract};
#[cfg(feature = "http")]
pub use extract::{ExtensionDeadline, ExtensionPriority};
pub use pressure::Pressure;
pub use priority::{ParsePriorityError, Priority};
#[cfg(feature = "http")]
pub use pushback::{
    GRPC_RETRY_PUSHBACK_MS, GRPC_STATUS, Pushback, grpc_status, parse_retry_after, pushback,
};
pub use reject::{LayerName, RateLimitInfo, RejectKind, Rejected};

/// The error type tower middleware agrees on: `Box<dyn Error + Send + Sync>`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
