#!/usr/bin/env bash
# Fault test: a training job killed with SIGKILL at a random moment after its first checkpoint,
# then restarted with --resume, must end with parameters bit-identical to an uninterrupted run.
#
#   bash tests/faults/kill_resume.sh <dho2_train> <launch> [dho2_train arguments...]
#
# <launch>: `local` (one process; pass --ranks P for P threads) or `mpi2` (mpirun -np 2; a
# random rank is killed, and mpirun takes the other down). The extra arguments select the mode
# (e.g. --admm-rho 1 --admm-every 4, or --schedule background). The run: synthetic data, MLP
# 784-128-10, 4 epochs (372 steps, a few seconds), curvature before steps 9, 49, 89, ...;
# checkpoints every 10 steps. The kill comes as soon as a checkpoint of a random step K in
# [20, 250] is seen (so mid-run, at whatever the job is doing then: a step, an estimate, a
# checkpoint write); the restart resumes from whatever checkpoint was committed last.
# Parameters are compared with cmp.
set -uo pipefail

train=${1:?path to dho2_train}
launch=${2:?local|mpi2}
shift 2
extra=("$@")
fault_name="kill_resume ($launch ${extra[*]})"
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

args=(--dataset synthetic --model mlp:784-128-10 --epochs 4 --optimizer dho2 --W 10 --T 40
      --quiet "${extra[@]}")

# 1. The uninterrupted reference.
start_train "$work/reference.txt" --save-parameters "$work/reference.bin"
wait "$job" || fail "the reference run failed"

# 2. The run that is killed.
ckpt="$work/checkpoints"
start_train "$work/killed.txt" --checkpoint-dir "$ckpt" --checkpoint-every 10 \
  --save-parameters "$work/killed.bin"
victim_job=$job
kill_at=$((20 + 10 * (RANDOM % 24)))
latest_step() {  # the largest step of a checkpoint file in the directory (0 if none)
  ls "$ckpt" 2>/dev/null | grep -o 'step-[0-9]*' | grep -o '[0-9]*' | sort -n | tail -1
}
# No clock: the wait lasts as long as the build and the machine make it (the test's TIMEOUT
# catches a job that stalls).
until (($(latest_step || echo 0) + 0 >= kill_at)); do
  kill -0 "$victim_job" 2>/dev/null || break
  sleep 0.01
done
if [[ $launch == mpi2 ]]; then
  ranks=()
  for p in $(pgrep -f -- "$train" || true); do
    if { tr '\0' '\n' <"/proc/$p/environ"; } 2>/dev/null | grep -q "^OMPI_COMM_WORLD_RANK="; then
      ranks+=("$p")
    fi
  done
  [[ ${#ranks[@]} -gt 0 ]] || fail "could not find the ranks' processes"
  kill -9 "${ranks[$((RANDOM % ${#ranks[@]}))]}" 2>/dev/null
else
  kill -9 "$victim_job" 2>/dev/null
fi
wait "$victim_job" 2>/dev/null
[[ -f $work/killed.bin ]] && fail "the run finished before the kill (at step >= $kill_at)"
[[ -f $ckpt/manifest.dho2ckpt ]] || fail "no checkpoint was committed before the kill"
committed=$(ls "$ckpt" | tr '\n' ' ')

# 3. The restart.
start_train "$work/resumed.txt" --checkpoint-dir "$ckpt" --checkpoint-every 10 --resume \
  --save-parameters "$work/resumed.bin" --summary-json "$work/resumed.json"
wait "$job" || fail "the resumed run failed"
# A restart that ignored the checkpoint would also end bit-identical: check that it resumed.
resumed_from=$(grep -o '"resumed_from_step": [0-9]*' "$work/resumed.json" | grep -o '[0-9]*$')
[[ -n $resumed_from && $resumed_from -ge 10 ]] ||
  fail "the restart did not resume from a checkpoint (resumed_from_step: ${resumed_from:-null})"
cmp -s "$work/reference.bin" "$work/resumed.bin" ||
  fail "the resumed parameters differ from the uninterrupted run's (cmp)"
echo "kill_resume ($launch ${extra[*]}): killed at step >= $kill_at, checkpoints [$committed]," \
  "resumed from step $resumed_from; final parameters bit-identical ($(stat -c %s "$work/resumed.bin") bytes)"
