#!/usr/bin/env bash
# Copies each peer's checkpoint out of the running pods and compares them.
#
#   scripts/k8s/collect.sh [--replicas N] [--statefulset NAME] [--namespace NS] [--out DIR]
#                          [--rumor BIN]
#
# For each pod NAME-K (K = 0 .. N-1, default rumor-0 .. rumor-3) it copies /data/checkpoint.json
# and the base-*.safetensors file it names into DIR/NAME-K (default checkpoints-k8s/), through
# `kubectl exec POD -- cat`, so the image needs `cat` (not `tar`, which `kubectl cp` needs). Then
# it runs `rumor compare --checkpoints DIR/NAME-0 ...` when a rumor binary is found: a consensus
# distance near 0 means the peers hold the same model.
set -euo pipefail

replicas=4
statefulset=rumor
namespace=
out=checkpoints-k8s
rumor=

usage() { sed -n '2,11s/^# \{0,1\}//p' "$0"; }
die() {
    echo "collect: $*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case "$1" in
    --replicas) replicas=${2:?--replicas needs a number}; shift 2 ;;
    --statefulset) statefulset=${2:?--statefulset needs a name}; shift 2 ;;
    --namespace) namespace=${2:?--namespace needs a name}; shift 2 ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --rumor) rumor=${2:?--rumor needs a path}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
    esac
done
case "$replicas" in
'' | *[!0-9]*) die "--replicas must be a whole number, not '$replicas'" ;;
esac
command -v kubectl >/dev/null 2>&1 || die "kubectl not found"

kube=(kubectl)
if [ -n "$namespace" ]; then
    kube+=(--namespace "$namespace")
fi

# The tensor file a checkpoint.json names ("tensors_file"; older checkpoints: base.safetensors).
tensors_file() {
    local name
    name=$(sed -n 's/.*"tensors_file"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' "$1" | head -n 1)
    echo "${name:-base.safetensors}"
}

# Copies one pod's checkpoint; the peer may save a new one meanwhile, so it tries a few times.
copy_checkpoint() {
    local pod=$1 dest=$2 file
    for _ in 1 2 3; do
        if "${kube[@]}" exec "$pod" -c peer -- cat /data/checkpoint.json >"$dest/checkpoint.json"; then
            file=$(tensors_file "$dest/checkpoint.json")
            case "$file" in
            */* | '') die "$pod: unexpected tensors_file '$file' in checkpoint.json" ;;
            esac
            if "${kube[@]}" exec "$pod" -c peer -- cat "/data/$file" >"$dest/$file"; then
                return 0
            fi
        fi
        sleep 2
    done
    return 1
}

dirs=()
for ((k = 0; k < replicas; k++)); do
    pod="$statefulset-$k"
    dest="$out/$pod"
    rm -rf "$dest"
    mkdir -p "$dest"
    copy_checkpoint "$pod" "$dest" || die "could not copy the checkpoint of $pod (is it running?)"
    echo "collect: $pod -> $dest" >&2
    dirs+=("$dest")
done

if [ -z "$rumor" ]; then
    root=$(cd "$(dirname "$0")/../.." && pwd)
    for candidate in "$(command -v rumor || true)" "$root/target/release/rumor" "$root/target/debug/rumor"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ]; then
            rumor=$candidate
            break
        fi
    done
fi
if [ -n "$rumor" ]; then
    "$rumor" compare --json --checkpoints "${dirs[@]}"
else
    echo "collect: no rumor binary found; run: rumor compare --checkpoints ${dirs[*]}" >&2
fi
