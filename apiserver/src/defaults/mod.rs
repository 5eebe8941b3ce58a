//! Defaulting as Kubernetes does it for the fields users rely on, and the defaulting
//! admission that needs the server's configuration:
//!
//! - [`toleration_seconds`]: DefaultTolerationSeconds for pods

pub mod toleration_seconds;

/// Fills in the fields Kubernetes defaults when a manifest leaves them out.
pub trait ApplyDefaults {
    /// Sets every unset defaulted field; never changes a field the user set.
    fn apply_defaults(&mut self);
}
