//! `flotilla-shim`: the per-container supervisor of the process runtime (see
//! `agent::shim`). A binary of its own, small and on the system allocator, because one
//! runs beside every container: `flotilla-shim container-shim DIR` supervises, and
//! `flotilla-shim cgroup-exec --state DIR --version v1|v2 --path P -- ARGV` joins the
//! container's cgroup and becomes its program.

use std::path::PathBuf;
use std::process::ExitCode;

use agent::cgroup::Version;

fn usage() -> ExitCode {
    eprintln!(
        "usage: flotilla-shim container-shim DIR\n       flotilla-shim cgroup-exec --state DIR --version v1|v2 --path PATH -- PROGRAM [ARGS...]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("container-shim") if args.len() == 2 => {
            match agent::shim::run(&PathBuf::from(&args[1])) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("flotilla-shim: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("cgroup-exec") => {
            let Some(split) = args.iter().position(|a| a == "--") else {
                return usage();
            };
            let (flags, argv) = (&args[1..split], &args[split + 1..]);
            let flag = |name: &str| {
                flags
                    .iter()
                    .position(|f| f == name)
                    .and_then(|i| flags.get(i + 1))
                    .cloned()
            };
            let (Some(state), Some(version), Some(path)) =
                (flag("--state"), flag("--version"), flag("--path"))
            else {
                return usage();
            };
            let version = match version.as_str() {
                "v1" => Version::V1,
                "v2" => Version::V2,
                _ => return usage(),
            };
            ExitCode::from(agent::shim::exec_in_cgroup(
                &PathBuf::from(state),
                version,
                &path,
                argv,
            ))
        }
        _ => usage(),
    }
}
