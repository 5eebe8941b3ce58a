//! The process-wide tracing subscriber: human-readable lines on stderr, filtered by
//! `RUST_LOG` or the daemon's `--log-level`.

use tracing_subscriber::EnvFilter;

/// Installs the subscriber; `level` is used when `RUST_LOG` is unset.
pub fn init(level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{level},raft=warn,sled=warn,h2=warn,tower=warn,hyper=warn"
        ))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
