#!/usr/bin/env bash
# Churn on Slurm: submits rumor.sbatch with RUMOR_RESTARTS=1, kills one peer's job step with
# SIGKILL once it has trained and saved a checkpoint, and lets the batch script start that rank
# again with --resume on the same data dir. The restarted peer rejoins, pulls what it missed
# and finishes its budget; the job ends with every peer drained and compared.
#
#   scripts/slurm/churn.sh [SBATCH_OPTION...] -- [PEER_ARG...]
#   scripts/slurm/churn.sh --nodes 4 --ntasks-per-node 1 -- --dataset fashion-mnist --epochs 3
#
# Options before `--` go to sbatch, those after it to every `rumor peer` (as with rumor.sbatch).
# The environment of rumor.sbatch applies (RUMOR_BIN, RUMOR_CERTS, RUMOR_OUT, RUMOR_PORT, ...);
# certificates must be issued beforehand, as described at the top of rumor.sbatch. Peers
# checkpoint every 30 s by default; a config with a shorter `peer.checkpoint_interval`
# (`--config FILE` after `--`) gets to the kill sooner.
#
#   CHURN_RANK     the rank to kill (default: the last one)
#   CHURN_AFTER    seconds of training after its first checkpoint before the kill (default 5)
#   CHURN_TIMEOUT  longest wait for each phase: job start, checkpoint, restart, job end
#                  (default 600)
#
# Prints the job id, what happened when, then ranks.tsv and compare.json. Exit status: the
# job's (0 when every peer drained consistent), 1 when a phase timed out.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SBATCH_ARGS=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do SBATCH_ARGS+=("$1"); shift; done
[ $# -gt 0 ] && shift
TIMEOUT=${CHURN_TIMEOUT:-600}
AFTER=${CHURN_AFTER:-5}

log() { echo "[$(date -u +%H:%M:%S)] churn.sh: $*"; }

# Polls `$2...` every half second until it succeeds; gives up after TIMEOUT naming $1.
wait_until() {
    local what=$1 end=$((SECONDS + TIMEOUT))
    shift
    until "$@"; do
        if [ "$SECONDS" -ge "$end" ]; then
            log "timed out after ${TIMEOUT}s waiting for $what"
            return 1
        fi
        sleep 0.5
    done
}

JOB=$(RUMOR_RESTARTS=1 timeout 60 sbatch --parsable --export=ALL "${SBATCH_ARGS[@]}" \
    "$HERE/rumor.sbatch" "$@")
JOB=${JOB%%;*}
log "submitted job $JOB"
trap 'log "interrupted: cancelling job $JOB"; scancel "$JOB"' INT TERM

job_field() {
    timeout 30 scontrol show job "$JOB" -o 2>/dev/null | tr ' ' '\n' | sed -n "s/^$1=//p"
}
running() { [ "$(job_field JobState)" = RUNNING ]; }
wait_until "job $JOB to run" running
NTASKS=$(job_field NumTasks)
RANK=${CHURN_RANK:-$((NTASKS - 1))}
OUT=${RUMOR_OUT:-$(job_field WorkDir)/rumor-$JOB}
DIR=$OUT/peer-$RANK
log "job $JOB runs $NTASKS peers; rank $RANK will be killed; output in $OUT"

trained() { grep -q "training starts" "$DIR/peer.log" 2>/dev/null && [ -f "$DIR/checkpoint.json" ]; }
wait_until "rank $RANK to train and checkpoint" trained
sleep "$AFTER"

step_of_rank() {
    timeout 30 squeue -s -j "$JOB" -h -o "%i %j" | awk -v n="peer-$RANK" '$2 == n { print $1 }'
}
STEP=$(step_of_rank)
[ -n "$STEP" ] || { log "no running step for rank $RANK"; exit 1; }
STARTS=$(grep -c "peer started" "$DIR/peer.log")
log "killing rank $RANK's step $STEP"
timeout 30 scancel --signal=KILL "$STEP"

restarted() { [ "$(grep -c "peer started" "$DIR/peer.log")" -gt "$STARTS" ]; }
wait_until "rank $RANK to start again" restarted
log "rank $RANK restarted with --resume as step $(step_of_rank)"

ended() {
    case "$(job_field JobState)" in
        PENDING | CONFIGURING | RUNNING | COMPLETING | SUSPENDED | SIGNALING | STAGE_OUT) return 1 ;;
    esac
}
wait_until "job $JOB to end" ended
log "job $JOB ended"
cat "$OUT/ranks.tsv"
echo "compare.json: $(cat "$OUT/compare.json")"
awk -F'\t' 'NR > 1 && ($4 != 0 || $6 != "yes") { bad = 1 } END { exit bad }' "$OUT/ranks.tsv"
