#!/usr/bin/env bash
# Runs a rumor cluster on N separate "hosts" with loss and faults in the kernel, and collects
# every host's metrics, summary and checkpoint.
#
# Hosts are network namespaces joined by veth pairs to a bridge this script creates (addresses
# 10.77.0.11.. on 10.77.0.0/24, which exists only inside the namespaces), or real machines
# listed in a hosts file and reached over ssh. Every per-host step goes through one function,
# `on HOST CMD`, whose prefix is `ip netns exec NS` locally and `ssh TARGET` remotely: what CI
# runs in namespaces is what runs on a cluster.
#
#   scripts/netns/cluster.sh [options]
#     --hosts N             namespaces to create (default 3)
#     --hosts-file FILE     real machines instead: one "SSH_TARGET LISTEN_IP" per line
#     --loss HOST=P         host HOST (1-based) drops P% of the UDP datagrams it sends (nftables
#                           `numgen random mod 100 < P drop`), so its links lose P%; repeatable
#     --dataset D --epochs E  passed to every peer (defaults synthetic, 1; with --config, only
#                           when given, so the file's values hold)
#     --config FILE         a rumor TOML config copied to every host (like the certificates) and
#                           passed as `--config`; the flags this script sets (name, listen,
#                           certs, data dir, shard, seeds, min peers, sync peer list) override it
#     --mode gossip|sync    passed to every peer as `--mode`; with sync every peer also gets
#                           `--sync-peers` (every host's IP:PORT, host order) so host H is sync
#                           peer H-1 (default: no flag, the config file's up.mode, else gossip)
#     --peer-args "ARGS"    more flags for every `rumor peer` (e.g. "--congestion bbr")
#     --events "STEPS"      shell run once every peer is up, with these helpers:
#                             freeze H | resume H | kill H | restart H | partition H1 H2 | heal
#                             loss H P | sleep S | wait_training H (until host H's peer has
#                             reported training steps in its metrics.jsonl; 120 s at most)
#     --out DIR             where to collect results (default ./netns-results)
#     --timeout S           longest wait for the peers to finish (default 300)
#     --bin PATH            the rumor binary (default target/release/rumor; on ssh hosts
#                           $RUMOR_REMOTE_BIN or `rumor` on PATH)
#
# ssh mode: every host step is `ssh -o BatchMode=yes -o ConnectTimeout=10 $RUMOR_SSH_OPTS TARGET
# sh -c CMD` (RUMOR_SSH_OPTS is split on spaces, e.g. "-F lab/ssh_config" or "-i KEY -p 2222");
# the remote user needs root (nftables), and files move as tar streams through the same path.
# Each host works in its own /tmp/rumor-remote-XXXXXX, removed at the end.
# scripts/netns/ssh-hosts.sh stands up sshd in local namespaces to try this without machines.
#
# Output: DIR/host-I/{metrics.jsonl,summary.json,peer.log,checkpoint.json,base-*.safetensors,
# nft.txt (the host's rules with drop counters)}
# and DIR/compare.json ({"consensus_distance": D}). Exit status 0 when every peer finished.
# Cleanup always runs (trap): peers are resumed and killed, nftables tables deleted, and the
# namespaces, veths and bridge removed. Needs root (namespaces, nftables).
set -euo pipefail

N=3
HOSTS_FILE=""
DATASET=""
EPOCHS=""
CONFIG=""
PEER_MODE=""
PEER_ARGS=""
EVENTS=""
OUT=netns-results
TIMEOUT=300
BIN=target/release/rumor
declare -A LOSS=()
PORT=7000
TABLE=rumor_lab

while [ $# -gt 0 ]; do
    case "$1" in
        --hosts) N=$2; shift 2 ;;
        --hosts-file) HOSTS_FILE=$2; shift 2 ;;
        --loss) LOSS[${2%%=*}]=${2#*=}; shift 2 ;;
        --dataset) DATASET=$2; shift 2 ;;
        --epochs) EPOCHS=$2; shift 2 ;;
        --config) CONFIG=$2; shift 2 ;;
        --mode) PEER_MODE=$2; shift 2 ;;
        --peer-args) PEER_ARGS=$2; shift 2 ;;
        --events) EVENTS=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        --bin) BIN=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

BIN=$(realpath "$BIN")
[ -x "$BIN" ] || { echo "missing rumor binary $BIN" >&2; exit 2; }
if [ -n "$CONFIG" ]; then
    [ -f "$CONFIG" ] || { echo "missing config file $CONFIG" >&2; exit 2; }
else
    DATASET=${DATASET:-synthetic}
    EPOCHS=${EPOCHS:-1}
fi
case "$PEER_MODE" in ''|gossip|sync) ;; *) echo "--mode must be gossip or sync" >&2; exit 2 ;; esac
RUN=$(( $$ % 10000 ))
WORK=$(mktemp -d -t rumor-netns-XXXXXX)
mkdir -p "$OUT"
OUT=$(realpath "$OUT")
BRIDGE="rmrbr$RUN"
TARGETS=()   # ssh target per host (ssh mode)
IPS=()       # listen IP per host
if [ -n "$HOSTS_FILE" ]; then
    MODE=ssh
    while read -r target ip _; do
        case "$target" in ''|'#'*) continue ;; esac
        [ -n "$ip" ] || { echo "$HOSTS_FILE: no LISTEN_IP for $target" >&2; exit 2; }
        TARGETS+=("$target"); IPS+=("$ip")
    done < "$HOSTS_FILE"
    N=${#TARGETS[@]}
    [ "$N" -gt 0 ] || { echo "$HOSTS_FILE lists no hosts" >&2; exit 2; }
    REMOTE_BIN=${RUMOR_REMOTE_BIN:-rumor}
    # Unique per run (a fixed name could collide with another run, or with $WORK when the
    # "remote" hosts share this filesystem).
    REMOTE_DIR="/tmp/rumor-remote-${WORK##*-}"
    read -r -a SSH_OPTS <<< "${RUMOR_SSH_OPTS:-}"
else
    MODE=netns
    for i in $(seq 1 "$N"); do IPS+=("10.77.0.$((10 + i))"); done
    REMOTE_BIN=$BIN
    REMOTE_DIR=$WORK/hosts
fi

ns() { echo "rmr${RUN}h$1"; }
ip_of() { echo "${IPS[$(( $1 - 1 ))]}"; }

# The one per-host code path: run a shell command with `sh` on host $1 (stdin passed through).
on() {
    local h=$1; shift
    if [ "$MODE" = netns ]; then
        ip netns exec "$(ns "$h")" sh -c "$*"
    else
        # ssh hands the remote login shell one string: quote the command so that shell passes
        # it to `sh -c` unchanged, whatever the login shell is.
        ssh -o BatchMode=yes -o ConnectTimeout=10 "${SSH_OPTS[@]}" "${TARGETS[$(( h - 1 ))]}" \
            -- "sh -c $(printf %q "$*")"
    fi
}
# Copy local dir $2 into host $1's dir / host $1's dir (but its certs) into local dir $2, as
# tar streams through `on`.
push() { tar -C "$(dirname "$2")" -cf - "$(basename "$2")" | on "$1" "tar -C $REMOTE_DIR/host-$1 -xf -"; }
fetch() { on "$1" "tar -C $REMOTE_DIR/host-$1 --exclude=./certs -cf - ." | tar -C "$2" -xf -; }

cleanup() {
    set +e
    # ssh hosts remove only their own host-H dir (then the run dir once empty): hosts may share
    # a filesystem, as the namespaces of ssh-hosts.sh do.
    for h in $(seq 1 "$N"); do
        on "$h" "p=\$(cat $REMOTE_DIR/host-$h/pid 2>/dev/null) && [ -n \"\$p\" ] && { kill -CONT \$p; kill \$p; sleep 0.5; kill -9 \$p; }; nft delete table inet $TABLE; [ $MODE = netns ] || { rm -rf $REMOTE_DIR/host-$h; rmdir $REMOTE_DIR; }" >/dev/null 2>&1
    done
    if [ "$MODE" = netns ]; then
        for h in $(seq 1 "$N"); do
            ip netns del "$(ns "$h")" 2>/dev/null
            ip link del "rmr${RUN}v$h" 2>/dev/null
        done
        ip link del "$BRIDGE" 2>/dev/null
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
exec </dev/null   # only the tar streams of push/fetch feed `on` (ssh would read our stdin)

# --- hosts ---------------------------------------------------------------------------------
if [ "$MODE" = netns ]; then
    ip link add "$BRIDGE" type bridge
    ip link set "$BRIDGE" up
    for h in $(seq 1 "$N"); do
        ip netns add "$(ns "$h")"
        ip link add "rmr${RUN}v$h" type veth peer name eth0 netns "$(ns "$h")"
        ip link set "rmr${RUN}v$h" master "$BRIDGE" up
        on "$h" "ip link set lo up && ip addr add $(ip_of "$h")/24 dev eth0 && ip link set eth0 up"
    done
fi
for h in $(seq 1 "$N"); do
    on "$h" "umask 077 && mkdir -p $REMOTE_DIR/host-$h && { nft delete table inet $TABLE 2>/dev/null; nft add table inet $TABLE && nft add chain inet $TABLE out '{ type filter hook output priority 0; }' && nft add chain inet $TABLE in '{ type filter hook input priority 0; }'; }"
done

# --- faults --------------------------------------------------------------------------------
loss() { # loss HOST P: host drops P% of the UDP datagrams it sends (replaces earlier loss)
    on "$1" "nft flush chain inet $TABLE out; [ $2 -gt 0 ] && nft add rule inet $TABLE out meta l4proto udp numgen random mod 100 '<' $2 counter drop || true"
}
partition() { # partition H1 H2: no packets between them, both ways
    on "$1" "nft add rule inet $TABLE in ip saddr $(ip_of "$2") drop"
    on "$2" "nft add rule inet $TABLE in ip saddr $(ip_of "$1") drop"
}
heal() { for h in $(seq 1 "$N"); do on "$h" "nft flush chain inet $TABLE in"; done; }
for h in "${!LOSS[@]}"; do loss "$h" "${LOSS[$h]}"; done

# --- peers ---------------------------------------------------------------------------------
"$BIN" certs init --dir "$WORK/certs" >/dev/null 2>&1
for h in $(seq 1 "$N"); do "$BIN" certs issue --dir "$WORK/certs" --name "host-$h" >/dev/null 2>&1; done
for h in $(seq 1 "$N"); do push "$h" "$WORK/certs"; done
# Flags every peer gets; the per-host ones are added in start().
COMMON=""
[ -n "$DATASET" ] && COMMON="$COMMON --dataset $DATASET"
[ -n "$EPOCHS" ] && COMMON="$COMMON --epochs $EPOCHS"
if [ -n "$CONFIG" ]; then
    cp "$CONFIG" "$WORK/rumor.toml"
    for h in $(seq 1 "$N"); do push "$h" "$WORK/rumor.toml"; done
fi
if [ -n "$PEER_MODE" ]; then
    COMMON="$COMMON --mode $PEER_MODE"
    if [ "$PEER_MODE" = sync ]; then
        SYNC_PEERS=""
        for h in $(seq 1 "$N"); do SYNC_PEERS="$SYNC_PEERS${SYNC_PEERS:+,}$(ip_of "$h"):$PORT"; done
        COMMON="$COMMON --sync-peers $SYNC_PEERS"
    fi
fi

start() { # start HOST [extra flags]: (re)starts the host's peer in the background
    local h=$1; shift
    local seed=""
    [ "$h" != 1 ] && seed="--seed $(ip_of 1):$PORT"
    local d="$REMOTE_DIR/host-$h"
    local config=""
    [ -n "$CONFIG" ] && config="--config $d/rumor.toml"
    # The braces make $! the peer's pid (nohup execs it) rather than a subshell's, whatever
    # shell runs this, so freeze/kill/cleanup signal the peer itself.
    on "$h" "cd $d && rm -f ready summary.json && { nohup $REMOTE_BIN peer $config --name host-$h \
        --listen $(ip_of "$h"):$PORT --certs $d/certs --data-dir $d --shard $h/$N \
        $COMMON --min-peers $N $seed --ready-file $d/ready \
        --summary-json $d/summary.json $PEER_ARGS $* >>$d/peer.log 2>&1 </dev/null & echo \$! > $d/pid; }"
}
pid_of() { on "$1" "cat $REMOTE_DIR/host-$1/pid"; }
freeze() { on "$1" "kill -STOP \$(cat $REMOTE_DIR/host-$1/pid)"; echo "froze host-$1"; }
resume() { on "$1" "kill -CONT \$(cat $REMOTE_DIR/host-$1/pid)"; echo "resumed host-$1"; }
kill_host() { on "$1" "kill -9 \$(cat $REMOTE_DIR/host-$1/pid)" || true; echo "killed host-$1"; }
restart() { start "$1" --resume; echo "restarted host-$1"; }
wait_training() { # wait_training H: until the peer has logged a training step (120 s at most)
    local h=$1
    for _ in $(seq 1 1200); do
        on "$h" "grep -q '\"lifecycle\":\"training\"' $REMOTE_DIR/host-$h/metrics.jsonl 2>/dev/null" \
            && { echo "host-$h is training"; return 0; }
        sleep 0.1
    done
    echo "host-$h did not start training" >&2; return 1
}
wait_ready() {
    local h=$1
    for _ in $(seq 1 300); do on "$h" "[ -s $REMOTE_DIR/host-$h/ready ]" && return 0; sleep 0.1; done
    echo "host-$h did not bind" >&2; return 1
}

start 1
wait_ready 1
for h in $(seq 2 "$N"); do start "$h"; done
for h in $(seq 2 "$N"); do wait_ready "$h"; done
echo "$N peers up ($MODE)"

if [ -n "$EVENTS" ]; then
    # `kill H` in events means killing the host's peer.
    eval "${EVENTS//kill /kill_host }"
fi

# --- wait, collect -------------------------------------------------------------------------
deadline=$(( $(date +%s) + TIMEOUT ))
status=0
for h in $(seq 1 "$N"); do
    until on "$h" "! kill -0 \$(cat $REMOTE_DIR/host-$h/pid) 2>/dev/null"; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "host-$h still running after ${TIMEOUT}s" >&2; status=1; break
        fi
        sleep 0.5
    done
    on "$h" "[ -s $REMOTE_DIR/host-$h/summary.json ]" || { echo "host-$h wrote no summary" >&2; status=1; }
done
DIRS=()
for h in $(seq 1 "$N"); do
    rm -rf "$OUT/host-$h"; mkdir -p "$OUT/host-$h"
    # The host's nftables rules with their drop counters, for the record.
    on "$h" "nft list table inet $TABLE" > "$OUT/host-$h/nft.txt" 2>&1 || true
    fetch "$h" "$OUT/host-$h"
    rm -rf "$OUT/host-$h/certs" "$OUT/host-$h/pid" "$OUT/host-$h/ready"
    DIRS+=("$OUT/host-$h")
done
if [ "$status" = 0 ]; then
    "$BIN" compare --json --checkpoints "${DIRS[@]}" | tee "$OUT/compare.json"
else
    tail -n 5 "$OUT"/host-*/peer.log >&2 || true
fi
exit "$status"
