#!/usr/bin/env bash
# Stands up K throwaway "ssh hosts" on this machine, so the ssh path of cluster.sh
# (`--hosts-file`) can run without real machines, and takes them down again.
#
#   scripts/netns/ssh-hosts.sh up DIR [K]   # K network namespaces (default 3), one sshd each
#   scripts/netns/ssh-hosts.sh down DIR     # kill everything in them, delete them, remove DIR
#
# `up` creates a bridge in the root namespace (address 10.78.X.1/24, X from this script's pid)
# and K namespaces joined to it by veth pairs (10.78.X.11..), generates a throwaway host key and
# client key into DIR, starts `sshd` inside each namespace listening on its address (root login
# by key only, no PAM, pid file in DIR) and waits until `ssh` to each one works. It writes
#   DIR/hosts        one "root@ADDR ADDR" line per namespace, for cluster.sh --hosts-file
#   DIR/ssh_config   client options: the throwaway key, no known_hosts
#   DIR/env          RUMOR_SSH_OPTS=... for cluster.sh (source it, then export)
# Namespaces share the filesystem, so a "remote" binary path is the local one:
#   scripts/netns/ssh-hosts.sh up /tmp/rumor-ssh 3
#   RUMOR_SSH_OPTS="-F /tmp/rumor-ssh/ssh_config" RUMOR_REMOTE_BIN=$PWD/target/release/rumor \
#     scripts/netns/cluster.sh --hosts-file /tmp/rumor-ssh/hosts --loss 3=20
#   scripts/netns/ssh-hosts.sh down /tmp/rumor-ssh
# `down` is idempotent and also cleans up after a failed `up`. Needs root, ip, sshd, ssh.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d'; }

cmd=${1:-}
DIR=${2:-}
if [ -z "$cmd" ] || [ -z "$DIR" ]; then usage >&2; exit 2; fi

SSHD=$(command -v sshd || echo /usr/sbin/sshd)

down() {
    set +e
    # Without the tag `up` writes first, DIR is not ours (or nothing was created): touch nothing.
    [ -f "$DIR/tag" ] || return 0
    local tag k p
    tag=$(cat "$DIR/tag")
    k=$(cat "$DIR/count" 2>/dev/null || echo 0)
    # Our sshds (a pid is only trusted while its command line still names our config).
    for f in "$DIR"/sshd-*.pid; do
        [ -s "$f" ] || continue
        p=$(cat "$f")
        tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | grep -qF "$DIR/sshd-" && kill "$p"
    done
    for i in $(seq 1 "$k"); do
        local ns="${tag}h$i"
        ip netns list 2>/dev/null | grep -qw "^$ns" || continue
        # Whatever still runs in the namespace (sshd sessions, peers of an aborted run).
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null
        ip link del "${tag}v$i" 2>/dev/null
    done
    ip link del "${tag}br" 2>/dev/null
    rm -rf "$DIR"
    return 0
}

case "$cmd" in
    down) down; exit 0 ;;
    up) ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
esac

K=${3:-3}
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 2; }
[ -x "$SSHD" ] || { echo "no sshd (apt-get install -y openssh-server)" >&2; exit 2; }
command -v ssh >/dev/null || { echo "no ssh (apt-get install -y openssh-client)" >&2; exit 2; }
if [ -e "$DIR" ] && [ -n "$(ls -A "$DIR")" ]; then echo "$DIR is not empty" >&2; exit 2; fi
mkdir -p "$DIR"
chmod 700 "$DIR"
DIR=$(realpath "$DIR")

TAG="rms$$"            # names: bridge ${TAG}br, namespaces ${TAG}hI, veths ${TAG}vI
NET="10.78.$(( $$ % 250 + 1 ))"
echo "$TAG" > "$DIR/tag"
echo "$K" > "$DIR/count"
trap 'down' EXIT
trap 'exit 130' INT TERM

ssh-keygen -q -t ed25519 -N '' -C rumor-host -f "$DIR/host_key"
ssh-keygen -q -t ed25519 -N '' -C rumor-client -f "$DIR/client_key"
cp "$DIR/client_key.pub" "$DIR/authorized_keys"
cat > "$DIR/ssh_config" <<EOF
Host *
    User root
    IdentityFile $DIR/client_key
    IdentitiesOnly yes
    UserKnownHostsFile /dev/null
    StrictHostKeyChecking no
    LogLevel ERROR
    ConnectTimeout 5
EOF
echo "RUMOR_SSH_OPTS='-F $DIR/ssh_config'" > "$DIR/env"
# sshd refuses to start without its privilege separation directory (normally made at boot).
mkdir -p /run/sshd

ip link add "${TAG}br" type bridge
ip addr add "$NET.1/24" dev "${TAG}br"
ip link set "${TAG}br" up
: > "$DIR/hosts"
for i in $(seq 1 "$K"); do
    ns="${TAG}h$i"
    addr="$NET.$(( 10 + i ))"
    ip netns add "$ns"
    ip link add "${TAG}v$i" type veth peer name eth0 netns "$ns"
    ip link set "${TAG}v$i" master "${TAG}br" up
    ip -n "$ns" addr add "$addr/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    cat > "$DIR/sshd-$i.conf" <<EOF
ListenAddress $addr:22
HostKey $DIR/host_key
AuthorizedKeysFile $DIR/authorized_keys
PidFile $DIR/sshd-$i.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
X11Forwarding no
AllowTcpForwarding no
PrintMotd no
PrintLastLog no
EOF
    # Without -D sshd binds its socket, then daemonizes and writes its pid file.
    ip netns exec "$ns" "$SSHD" -f "$DIR/sshd-$i.conf" -E "$DIR/sshd-$i.log"
    echo "root@$addr $addr" >> "$DIR/hosts"
done

# Ready when a login on every host works (bounded: 100 tries, ~20 s).
for i in $(seq 1 "$K"); do
    addr="$NET.$(( 10 + i ))"
    ok=""
    for _ in $(seq 1 100); do
        if ssh -F "$DIR/ssh_config" -n "root@$addr" true 2>/dev/null; then ok=1; break; fi
        sleep 0.2
    done
    [ -n "$ok" ] || { echo "ssh to $addr does not work; see $DIR/sshd-$i.log" >&2; exit 1; }
done

trap - EXIT
echo "$K ssh hosts up: $DIR/hosts; client options: -F $DIR/ssh_config"
