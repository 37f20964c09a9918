use std::{borrow::Cow, error::Error, fmt};

/// An invalid layer configuration, returned by builders at build time.
///
/// It names the layer, the field and what is wrong with it:
///
/// ```
/// use backpressure_core::ConfigError;
///
/// let err = ConfigError::new("timeout", "timeout", "must be greater than zero");
/// assert_eq!(err.field(), "timeout");
/// assert_eq!(
///     err.to_string(),
///     "invalid timeout configuration: `timeout` must be greater than zero"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    layer: &'static str,
    field: &'static str,
    reason: Cow<'static, str>,
}

impl ConfigError {
    /// An error in `field` of `layer`'s configuration.
    pub fn new(
        layer: &'static str,
        field: &'static str,
        reason: impl Into<Cow<'static, str>>,
    ) -> Self {
        ConfigError { layer, field, reason: reason.into() }
    }

    /// The layer whose configuration is invalid (`"timeout"`, `"rate-limit"`, ...).
    pub fn layer(&self) -> &'static str {
        self.layer
    }

    /// The invalid field, as named by the builder method that sets it.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// Why the value is invalid.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {} configuration: `{}` {}", self.layer, self.field, self.reason)
    }
}

impl Error for ConfigError {}
