#!/usr/bin/env bash
# Makes the certificates of a rumor StatefulSet and the Secret `rumor-certs` that holds them.
#
#   scripts/k8s/make-secrets.sh [--replicas N] [--dir DIR] [--statefulset NAME]
#                               [--namespace NS] [--cluster NAME] [--rumor BIN] [--out FILE|-]
#
# In DIR (default certs-k8s) it creates the cluster CA if there is none (`rumor certs init`) and a
# certificate for each pod NAME-0 .. NAME-(N-1) that has none yet (`rumor certs issue`); existing
# files are kept, so running it again after raising N only issues the new ones. It then writes one
# Secret holding ca.pem, revoked.json (when present) and every peer's NAME-K.pem and NAME-K.key
# (never ca.key, which stays in DIR: keep it offline). The Secret goes to
#   --out FILE   a manifest file (mode 0600), e.g. for `kubectl apply -f FILE` later;
#   --out -      stdout, only when stdout is not a terminal (to pipe it somewhere);
#   otherwise    `kubectl apply -f -` when kubectl is on PATH, else DIR/rumor-certs.secret.yaml.
# Private keys are never printed to the terminal.
set -euo pipefail

replicas=4
dir=certs-k8s
statefulset=rumor
namespace=
cluster=
rumor=
out=

usage() { sed -n '2,16s/^# \{0,1\}//p' "$0"; }
die() {
    echo "make-secrets: $*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case "$1" in
    --replicas) replicas=${2:?--replicas needs a number}; shift 2 ;;
    --dir) dir=${2:?--dir needs a directory}; shift 2 ;;
    --statefulset) statefulset=${2:?--statefulset needs a name}; shift 2 ;;
    --namespace) namespace=${2:?--namespace needs a name}; shift 2 ;;
    --cluster) cluster=${2:?--cluster needs a name}; shift 2 ;;
    --rumor) rumor=${2:?--rumor needs a path}; shift 2 ;;
    --out) out=${2:?--out needs a file or -}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
    esac
done

case "$replicas" in
'' | *[!0-9]*) die "--replicas must be a whole number, not '$replicas'" ;;
esac
[ "$replicas" -ge 1 ] || die "--replicas must be at least 1"

# The rumor binary: --rumor, else on PATH, else this checkout's build.
if [ -z "$rumor" ]; then
    root=$(cd "$(dirname "$0")/../.." && pwd)
    for candidate in "$(command -v rumor || true)" "$root/target/release/rumor" "$root/target/debug/rumor"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ]; then
            rumor=$candidate
            break
        fi
    done
    [ -n "$rumor" ] || die "no rumor binary: put it on PATH, pass --rumor BIN or run cargo build"
fi

umask 077
mkdir -p "$dir"

if [ ! -f "$dir/ca.pem" ]; then
    if [ -n "$cluster" ]; then
        "$rumor" certs init --dir "$dir" --cluster "$cluster" >&2
    else
        "$rumor" certs init --dir "$dir" >&2
    fi
fi

names=()
for ((k = 0; k < replicas; k++)); do
    name="$statefulset-$k"
    names+=("$name")
    if [ ! -f "$dir/$name.pem" ] || [ ! -f "$dir/$name.key" ]; then
        "$rumor" certs issue --dir "$dir" --name "$name" >&2
    fi
done

# One line of base64, whatever the platform's base64 wraps at.
b64() { base64 <"$1" | tr -d '\n'; }

secret_manifest() {
    echo "# Made by scripts/k8s/make-secrets.sh: the cluster CA and the certificates of"
    echo "# ${names[0]} .. ${names[${#names[@]} - 1]}. It holds private keys: do not commit it."
    echo "apiVersion: v1"
    echo "kind: Secret"
    echo "metadata:"
    echo "  name: rumor-certs"
    if [ -n "$namespace" ]; then
        echo "  namespace: $namespace"
    fi
    echo "  labels:"
    echo "    app.kubernetes.io/name: rumor"
    echo "type: Opaque"
    echo "data:"
    echo "  ca.pem: $(b64 "$dir/ca.pem")"
    if [ -f "$dir/revoked.json" ]; then
        echo "  revoked.json: $(b64 "$dir/revoked.json")"
    fi
    for name in "${names[@]}"; do
        echo "  $name.pem: $(b64 "$dir/$name.pem")"
        echo "  $name.key: $(b64 "$dir/$name.key")"
    done
}

if [ "$out" = "-" ]; then
    [ ! -t 1 ] || die "--out - writes private keys to stdout; pipe it, or use --out FILE"
    secret_manifest
elif [ -n "$out" ]; then
    secret_manifest >"$out"
    chmod 600 "$out"
    echo "make-secrets: wrote Secret rumor-certs (${#names[@]} peers) to $out" >&2
elif command -v kubectl >/dev/null 2>&1; then
    secret_manifest | kubectl apply -f - >&2 ||
        die "kubectl apply failed (no cluster reachable?); --out FILE writes the manifest instead"
    echo "make-secrets: applied Secret rumor-certs (${#names[@]} peers)" >&2
else
    secret_manifest >"$dir/rumor-certs.secret.yaml"
    echo "make-secrets: kubectl not found; wrote Secret rumor-certs to $dir/rumor-certs.secret.yaml" >&2
fi
