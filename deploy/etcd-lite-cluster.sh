#!/usr/bin/env bash
# Starts (or stops) a local three-member etcd-lite cluster on loopback, the same layout as
# etcd's own Procfile: clients on 2379/22379/32379, peers on 2380/22380/32380.
#
#   deploy/etcd-lite-cluster.sh start   # data in ./data/etcd-lite, logs next to it
#   deploy/etcd-lite-cluster.sh stop
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${FLOTILLA:-target/release/flotilla}
DATA=${DATA:-data/etcd-lite}
CLUSTER="infra1=http://127.0.0.1:2380,infra2=http://127.0.0.1:22380,infra3=http://127.0.0.1:32380"

case "${1:-start}" in
start)
    [ -x "$BIN" ] || cargo build --release --bin flotilla
    mkdir -p "$DATA"
    for i in 1 2 3; do
        port=$(( i == 1 ? 2379 : i * 10000 + 2379 ))
        peer=$(( port + 1 ))
        "$BIN" etcd --name "infra$i" --data-dir "$DATA/infra$i" \
            --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
            --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
            --initial-cluster "$CLUSTER" --initial-cluster-token local-cluster ${EXTRA_ARGS:-} \
            >>"$DATA/infra$i.log" 2>&1 &
        echo $! >"$DATA/infra$i.pid"
        echo "infra$i: client http://127.0.0.1:$port, log $DATA/infra$i.log"
    done
    echo "try: ETCDCTL_API=3 etcdctl --endpoints 127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379 endpoint status -w table"
    ;;
stop)
    for i in 1 2 3; do
        if [ -f "$DATA/infra$i.pid" ]; then
            kill -TERM "$(cat "$DATA/infra$i.pid")" 2>/dev/null || true
            rm -f "$DATA/infra$i.pid"
        fi
    done
    ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
