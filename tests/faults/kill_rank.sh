#!/usr/bin/env bash
# Fault test: a rank of a 2-rank dho2_train job is killed with SIGKILL while training; the other
# rank (or mpirun) must exit non-zero within a bound, saying which peer was lost — never hang.
#
#   bash tests/faults/kill_rank.sh asio|mpi <dho2_train> <bound seconds>
#
# asio: ranks 0 and 1 are two processes meeting on a random loopback port (--timeout 10). rank 0
#       must exit non-zero within the bound after the kill, its stderr naming "peer 1".
# mpi:  `mpirun -np 2`; mpirun must exit non-zero within the bound after the kill, its output
#       naming rank 1.
# The kill happens once rank 0 has printed its first progress line (training has started).
set -uo pipefail

mode=${1:?asio|mpi}
train=${2:?path to dho2_train}
bound=${3:?bound in seconds}
fault_name="kill_rank ($mode)"
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

args=(--dataset synthetic --epochs 50 --optimizer dho2)

# Waits until rank 0's output shows a progress line. No clock here: how long the start takes
# depends on the build (a sanitizer build is many times slower) and on the load of the machine,
# and the test's TIMEOUT catches a job that never gets there. The bound the test checks is the
# one after the kill.
wait_for_training() {
  until grep -q "epoch 1/" "$work/rank0.txt" 2>/dev/null; do
    kill -0 "$1" 2>/dev/null || fail "the job ended before training started"
    sleep 0.1
  done
}

# Waits for pid $1 to exit within the bound; sets `code` and `elapsed`.
wait_exit() {
  local start=$SECONDS
  while kill -0 "$1" 2>/dev/null; do
    ((SECONDS - start <= bound)) || fail "still running ${bound} s after the kill (a hang)"
    sleep 0.1
  done
  wait "$1"
  code=$?
  elapsed=$((SECONDS - start))
}

case "$mode" in
  asio)
    port=$((20000 + RANDOM % 10000))
    common=("${args[@]}" --transport asio --world-size 2 --rendezvous "127.0.0.1:$port" --timeout 10)
    "$train" "${common[@]}" --rank 1 --quiet >"$work/rank1.txt" 2>&1 &
    rank1=$!
    pids+=("$rank1")
    "$train" "${common[@]}" --rank 0 >"$work/rank0.txt" 2>"$work/rank0_err.txt" &
    rank0=$!
    pids+=("$rank0")
    wait_for_training "$rank0"
    kill -9 "$rank1"
    wait "$rank1" 2>/dev/null
    wait_exit "$rank0"
    [[ $code -ne 0 ]] || fail "rank 0 exited 0 after its peer was killed"
    grep -q "peer 1" "$work/rank0_err.txt" || fail "rank 0's error does not name peer 1"
    echo "kill_rank (asio): rank 0 exited $code ${elapsed} s after rank 1 was killed:"
    cat "$work/rank0_err.txt"
    ;;
  mpi)
    mpirun -np 2 --oversubscribe "$train" "${args[@]}" >"$work/rank0.txt" 2>&1 &
    launcher=$!
    pids+=("$launcher")
    wait_for_training "$launcher"
    victim=""
    for p in $(pgrep -f -- "$train" || true); do
      if { tr '\0' '\n' <"/proc/$p/environ"; } 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1"; then
        victim=$p
      fi
    done
    [[ -n $victim ]] || fail "could not find rank 1's process"
    kill -9 "$victim"
    wait_exit "$launcher"
    [[ $code -ne 0 ]] || fail "mpirun exited 0 after rank 1 was killed"
    grep -q "rank 1" "$work/rank0.txt" || fail "mpirun's output does not name rank 1"
    echo "kill_rank (mpi): mpirun exited $code ${elapsed} s after rank 1 was killed:"
    grep -A1 "rank 1" "$work/rank0.txt" | head -4
    ;;
  *) fail "unknown mode '$mode' (asio|mpi)" ;;
esac
