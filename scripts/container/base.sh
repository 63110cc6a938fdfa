#!/usr/bin/env bash
# Makes the local image the Containerfile's first stage starts from (localhost/rumor-base by
# default): a Debian minbase root filesystem made by debootstrap on this machine and imported
# with `podman import`, so that no container registry is ever contacted.
#
#   scripts/container/base.sh [--tag IMAGE] [--suite SUITE] [--cache DIR]
#
# The suite defaults to this host's Debian release (VERSION_CODENAME in /etc/os-release): the
# build stage copies the C libraries the binary links against out of this root filesystem, and
# a binary built on the host needs a glibc at least as new as the host's. The root filesystem is
# made once and kept as DIR/SUITE-minbase.tar (default DIR: target/container-base), so later
# builds only import it; delete the file to make it again. Nothing is done when the image already
# exists. Needs root and debootstrap; the mirror is $DEBIAN_MIRROR (default deb.debian.org, or
# archive.ubuntu.com on Ubuntu).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TAG=localhost/rumor-base
SUITE=""
CACHE="$ROOT/target/container-base"
MIRROR=${DEBIAN_MIRROR:-}

while [ $# -gt 0 ]; do
    case "$1" in
        --tag) TAG=$2; shift 2 ;;
        --suite) SUITE=$2; shift 2 ;;
        --cache) CACHE=$2; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "base.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

if podman image exists "$TAG"; then
    echo "base image $TAG already exists"
    exit 0
fi

if [ -z "$SUITE" ]; then
    # shellcheck disable=SC1091
    SUITE=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    [ -n "$SUITE" ] || { echo "base.sh: cannot tell this host's Debian suite; pass --suite" >&2; exit 1; }
fi

if [ -z "$MIRROR" ]; then
    # shellcheck disable=SC1091
    case "$(. /etc/os-release && echo "${ID:-}")" in
        ubuntu) MIRROR=http://archive.ubuntu.com/ubuntu ;;
        *) MIRROR=http://deb.debian.org/debian ;;
    esac
fi

TARBALL="$CACHE/$SUITE-minbase.tar"
if [ ! -s "$TARBALL" ]; then
    command -v debootstrap >/dev/null || { echo "base.sh: debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
    mkdir -p "$CACHE"
    WORK=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
    echo "debootstrap --variant=minbase $SUITE (about a minute; kept in $TARBALL)"
    debootstrap --variant=minbase "$SUITE" "$WORK/rootfs" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 || {
        tail -20 "$WORK/debootstrap.log" >&2
        echo "base.sh: debootstrap failed" >&2
        exit 1
    }
    # apt's package lists and the downloaded .debs are of no use to the build stage.
    rm -rf "$WORK"/rootfs/var/cache/apt/archives/*.deb "$WORK"/rootfs/var/lib/apt/lists/*
    tar -C "$WORK/rootfs" -cf "$WORK/rootfs.tar" .
    mv "$WORK/rootfs.tar" "$TARBALL"
fi

podman import --quiet "$TARBALL" "$TAG" >/dev/null
echo "base image $TAG imported from $TARBALL"
