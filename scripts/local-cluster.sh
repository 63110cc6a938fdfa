#!/usr/bin/env bash
# Start N `rumor peer` processes by hand on loopback, the way one would on N hosts, wait for them
# to train and drain, then print their consensus distance.
#
#   scripts/local-cluster.sh [N] [DATASET] [EPOCHS]      (defaults: 3 synthetic 1)
#
# Uses target/release/rumor (build it with `cargo build --release`); everything goes into a temp
# dir that is removed at exit, and every peer is killed if the script is interrupted.
set -euo pipefail

N=${1:-3}
DATASET=${2:-synthetic}
EPOCHS=${3:-1}
BIN=${RUMOR_BIN:-target/release/rumor}
[ -x "$BIN" ] || { echo "missing $BIN: run cargo build --release first" >&2; exit 1; }

WORK=$(mktemp -d -t rumor-cluster-XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

"$BIN" certs init --dir "$WORK/certs" >/dev/null
for i in $(seq 1 "$N"); do
    "$BIN" certs issue --dir "$WORK/certs" --name "peer-$i" >/dev/null
done

start_peer() {
    local i=$1; shift
    "$BIN" peer --name "peer-$i" --listen 127.0.0.1:0 --certs "$WORK/certs" \
        --data-dir "$WORK/peer-$i" --shard "$i/$N" --dataset "$DATASET" --epochs "$EPOCHS" \
        --min-peers "$N" --ready-file "$WORK/peer-$i.addr" \
        --summary-json "$WORK/peer-$i.json" "$@" 2>"$WORK/peer-$i.log" &
    PIDS+=($!)
}

start_peer 1
for _ in $(seq 1 300); do [ -s "$WORK/peer-1.addr" ] && break; sleep 0.1; done
SEED=$(cat "$WORK/peer-1.addr")
echo "seed peer-1 listens on $SEED"
for i in $(seq 2 "$N"); do start_peer "$i" --seed "$SEED"; done

status=0
for pid in "${PIDS[@]}"; do wait "$pid" || status=$?; done
PIDS=()
[ "$status" = 0 ] || { echo "a peer failed; logs:" >&2; tail -n 5 "$WORK"/peer-*.log >&2; exit "$status"; }

for i in $(seq 1 "$N"); do
    python3 -c 'import json,sys; p=json.load(open(sys.argv[1]))["peers"][0]; print(f"{p[\"name\"]}: accuracy {100*p[\"test_accuracy\"]:.2f}%  published {p[\"version\"]}  sent {p[\"bytes_sent\"]} B")' "$WORK/peer-$i.json" 2>/dev/null || cat "$WORK/peer-$i.json"
done
DIRS=()
for i in $(seq 1 "$N"); do DIRS+=("$WORK/peer-$i"); done
"$BIN" compare --json --checkpoints "${DIRS[@]}"
