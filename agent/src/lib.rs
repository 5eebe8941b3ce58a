//! The Flotilla node agent (being built): the container runtime interface, shaped like
//! Kubernetes' CRI so that the process runtime and containerd plug into the same pod
//! workers, and the process runtime itself.
//!
//! - [`runtime`]: the interface (sandboxes, containers, logs, exec)
//! - [`runtime::process`]: containers as host processes, each watched by a shim
//! - [`shim`]: the per-container supervisor that outlives agent restarts
//! - [`cri_log`]: the CRI log file format (`<time> <stream> <P|F> <line>`)

pub mod cri_log;
pub mod runtime;
pub mod shim;
