#!/usr/bin/env bash
# Builds the rumor image with podman from a binary built on this host:
#
#   scripts/container/build.sh [--bin PATH] [--tag IMAGE] [--base IMAGE]
#
# --bin defaults to target/release/rumor (`cargo build --release` first), --tag to
# localhost/rumor:latest, --base to localhost/rumor-base (made by base.sh when missing). A
# stripped copy of the binary is staged under target/container/context/ (the only part of
# target/ that .containerignore lets into the build context) and removed afterwards. No
# registry is contacted (--pull=never) and the build's RUN step has no network.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN="$ROOT/target/release/rumor"
TAG=localhost/rumor:latest
BASE=localhost/rumor-base

while [ $# -gt 0 ]; do
    case "$1" in
        --bin) BIN=$2; shift 2 ;;
        --tag) TAG=$2; shift 2 ;;
        --base) BASE=$2; shift 2 ;;
        -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -x "$BIN" ] || { echo "build.sh: no binary at $BIN (cargo build --release first)" >&2; exit 1; }

"$ROOT/scripts/container/base.sh" --tag "$BASE"

mkdir -p "$ROOT/target/container/context"
STAGE=$(mktemp -d "$ROOT/target/container/context/XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
if command -v strip >/dev/null; then
    strip -o "$STAGE/rumor" "$BIN"
else
    echo "build.sh: no strip (binutils); the image gets the binary with its debug info" >&2
    cp "$BIN" "$STAGE/rumor"
fi

cd "$ROOT"
podman build --pull=never --network=none -f Containerfile \
    --build-arg "BASE=$BASE" \
    --build-arg "RUMOR_BIN=${STAGE#"$ROOT"/}/rumor" \
    -t "$TAG" .
podman image inspect --format "image $TAG: {{.Size}} bytes" "$TAG"
