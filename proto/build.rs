//! Compiles the .proto files with protox (a pure-Rust protobuf compiler), so building needs no
//! system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "etcd/mvccpb/kv.proto",
        "etcd/etcdserverpb/rpc.proto",
        "flotilla/etcdlite/v1/peer.proto",
        "flotilla/api/v1/resources.proto",
        "flotilla/agent/v1/agent.proto",
        "cri/runtime/v1/api.proto",
    ];
    let fds = protox::compile(files, ["."])?;
    tonic_prost_build::configure()
        // Values travel as shared buffers: a read hands out the stored bytes without copying.
        .bytes(".")
        .generate_default_stubs(true)
        .compile_fds(fds)?;
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    Ok(())
}
