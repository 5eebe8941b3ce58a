//! The Flotilla node agent (being built): it registers its Node, beats a Lease, runs the
//! pods bound to it through a container runtime shaped like Kubernetes' CRI (so the
//! process runtime and containerd plug into the same pod workers), and reports their
//! status truthfully.
//!
//! - [`run`]: registration, the pod informer, one worker per pod, housekeeping
//! - [`node`]: the Node object from the host; [`heartbeat`]: Lease and conditions;
//!   [`fs_usage`]: a filesystem's size and free space
//! - [`pod_worker`]: one pod's reconciliation (sandbox, init and app containers,
//!   restarts with back-off, graceful deletion); [`status`]: the status it reports;
//!   [`backoff`]: the wait before a restart or another pull
//! - [`probe`]: liveness, readiness and startup probes; [`lifecycle_hooks`]: postStart and
//!   preStop
//! - [`image_pull`]: images pulled as imagePullPolicy says, with back-off; credentials
//!   from [`pull_secrets`]; references read by [`image_ref`]
//! - [`image_gc`]: unused images removed when the image filesystem fills
//! - [`env`]: a container's environment; [`resources`]: its cgroup limits (and the pod's)
//! - [`dns`]: a pod's resolv.conf; [`cni`]: the node's pod network for CRI runtimes
//! - [`cgroup`]: confinement and OOM detection
//! - [`runtime`]: the interface (sandboxes, containers, logs, exec)
//! - [`runtime::process`]: containers as host processes, each watched by a shim
//! - [`shim`]: the per-container supervisor that outlives agent restarts
//! - [`cri_log`]: the CRI log file format (`<time> <stream> <P|F> <line>`)
//! - [`log_rotation`]: size caps on container logs for runtimes that keep none
//! - [`metrics`]: `/metrics` on the endpoint, pods and per-container cpu and memory
//! - [`endpoint`]: the endpoint the API server calls, serving [`logs`] and [`exec`];
//!   [`pod_containers`]: a pod's containers as the runtime holds them

pub mod backoff;
pub mod cgroup;
pub mod cni;
pub mod cri_log;
pub mod dns;
pub mod endpoint;
pub mod env;
pub mod exec;
pub mod fs_usage;
pub mod heartbeat;
pub mod image_gc;
pub mod image_pull;
pub mod image_ref;
pub mod lifecycle_hooks;
pub mod log_rotation;
pub mod logs;
pub mod metrics;
pub mod node;
pub mod pod_containers;
pub mod pod_worker;
pub mod probe;
pub mod pull_secrets;
pub mod resources;
pub mod run;
pub mod runtime;
pub mod shim;
pub mod status;
