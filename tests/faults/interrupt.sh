#!/usr/bin/env bash
# Fault test: how dho2_train ends when told to stop, or when it cannot go on.
#
#   bash tests/faults/interrupt.sh <dho2_train> <launch> [dho2_train arguments...]
#
# <launch> `local` (one process; pass --ranks P for P threads) or `mpi2` (mpirun -np 2): a
# training job gets SIGTERM as soon as its first checkpoint is committed (as a batch scheduler
# sends it before a kill). It must finish its step, save a checkpoint there, write its summary
# with termination "interrupted", print one error line naming the signal and the checkpoint, and
# exit non-zero; restarted with --resume it must end bit-identical to an uninterrupted run.
# The extra arguments select the mode (e.g. --schedule split, where the stop waits for a step
# without an estimate in flight).
#
# <launch> `basics` (one process): a second signal ends the job at once, without a summary; a
# SIGINT with --checkpoint-dir but no --checkpoint-every still saves a checkpoint (exit 130); a
# closed stdout (`| head -1`) does not end the run before its summary (exit 1, "stdout" named);
# a diverged run (--lr 1e308) ends with termination numerical_failure and exit 1.
set -uo pipefail

train=${1:?path to dho2_train}
launch=${2:?local|mpi2|basics}
shift 2
extra=("$@")
fault_name="interrupt ($launch ${extra[*]})"
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

args=(--dataset synthetic --model mlp:784-128-10 --epochs 4 --optimizer dho2 --W 10 --T 40
      --quiet "${extra[@]}")
# wait_for <seconds> <pid>: waits for the job; fails when it outlives the bound.
wait_for() {
  local bound=$1 pid=$2 t=0
  while kill -0 "$pid" 2>/dev/null; do
    ((t >= bound * 10)) && fail "the job did not end within ${bound} s of the signal"
    sleep 0.1
    t=$((t + 1))
  done
  wait "$pid"
}
json_field() {  # json_field <file> <name>: a string or number member of the summary
  grep -o "\"$2\": *\"\\{0,1\\}[^\",]*" "$1" | head -1 | sed 's/.*: *"\{0,1\}//'
}
one_error_line() {  # one_error_line <stderr file> <regex>
  local lines
  lines=$(grep -c '' "$1")
  [[ $lines -eq 1 ]] || fail "expected one line on stderr, got $lines: $(cat "$1")"
  grep -Eq "^dho2_train: error: $2" "$1" || fail "stderr does not match '$2': $(cat "$1")"
}
latest_step() {  # the largest step of a checkpoint file in directory $1 (0 if none)
  ls "$1" 2>/dev/null | grep -o 'step-[0-9]*' | grep -o '[0-9]*' | sort -n | tail -1
}

if [[ $launch == basics ]]; then
  short=(--dataset synthetic --model mlp:784-64-10 --epochs 1 --max-steps 40 --optimizer adam)
  # 1. Two signals: the second ends the process at once (no summary is written). The steps of
  # this model take about a second, so both signals arrive within one step.
  "$train" --dataset synthetic --train-size 1024 --test-size 100 --eval-train-size 0 \
    --model mlp:784-4096-4096-10 --batch 256 --epochs 100 --optimizer adam --quiet \
    --eval-every 1 --eval-log "$work/twice.csv" --summary-json "$work/twice.json" \
    >"$work/twice.txt" 2>&1 &
  job=$!
  pids+=("$job")
  until [[ $(grep -c '' "$work/twice.csv" 2>/dev/null || echo 0) -ge 2 ]]; do
    kill -0 "$job" 2>/dev/null || fail "the two-signal run ended before the signals"
    sleep 0.05
  done
  # (two signals sent back to back may merge into one pending signal: a person is slower)
  kill -TERM "$job" && sleep 0.05 && kill -TERM "$job"
  wait_for 10 "$job"
  rc=$?
  [[ $rc -eq 143 ]] || fail "two SIGTERMs: exit status $rc, expected 143 (killed by SIGTERM)"
  [[ -e $work/twice.json ]] && fail "two SIGTERMs: a summary was written (expected an immediate end)"

  # 2. SIGINT with --checkpoint-dir alone: a checkpoint of the step it stopped at.
  ckpt="$work/sigint"
  "$train" --dataset synthetic --model mlp:784-64-10 --epochs 200 --optimizer adam --quiet \
    --eval-every 5 --eval-log "$work/sigint.csv" --checkpoint-dir "$ckpt" \
    --summary-json "$work/sigint.json" >"$work/sigint.txt" 2>"$work/sigint.err" &
  job=$!
  pids+=("$job")
  until [[ $(grep -c '' "$work/sigint.csv" 2>/dev/null || echo 0) -ge 3 ]]; do
    kill -0 "$job" 2>/dev/null || fail "the SIGINT run ended before the signal"
    sleep 0.05
  done
  kill -INT "$job"
  wait_for 30 "$job"
  rc=$?
  [[ $rc -eq 130 ]] || fail "SIGINT: exit status $rc, expected 130"
  one_error_line "$work/sigint.err" "interrupted by SIGINT after step [0-9]+; the checkpoint of step [0-9]+ is in "
  [[ $(json_field "$work/sigint.json" termination) == interrupted ]] ||
    fail "SIGINT: the summary's termination is not 'interrupted'"
  steps=$(json_field "$work/sigint.json" iterations)
  [[ $(latest_step "$ckpt") == "$steps" ]] ||
    fail "SIGINT: checkpoint of step $(latest_step "$ckpt"), the run stopped after $steps"

  # 3. A closed stdout: the run goes on to its summary and says so.
  "$train" "${short[@]}" --summary-json "$work/pipe.json" 2>"$work/pipe.err" | head -1 >/dev/null
  rc=${PIPESTATUS[0]}
  [[ $rc -eq 1 ]] || fail "closed stdout: exit status $rc, expected 1"
  one_error_line "$work/pipe.err" "stdout: writing failed"
  [[ $(json_field "$work/pipe.json" termination) == stopped_by_callback ]] ||
    fail "closed stdout: the summary was not written at the end of the run"

  # 4. A diverged run.
  "$train" "${short[@]}" --lr 1e308 --quiet --max-skipped-steps 7 \
    --summary-json "$work/diverged.json" >"$work/diverged.txt" 2>"$work/diverged.err"
  rc=$?
  [[ $rc -eq 1 ]] || fail "--lr 1e308: exit status $rc, expected 1"
  one_error_line "$work/diverged.err" "numerical failure: .*7 steps skipped in a row .*--max-skipped-steps"
  [[ $(json_field "$work/diverged.json" termination) == numerical_failure ]] ||
    fail "--lr 1e308: the summary's termination is not numerical_failure"
  [[ $(json_field "$work/diverged.json" iterations) == 8 ]] ||
    fail "--lr 1e308: expected 8 step calls (1 taken, 7 skipped)"
  echo "interrupt (basics): two signals end at once; SIGINT checkpoints step $steps (exit 130);" \
    "closed stdout exits 1 after the summary; --lr 1e308 ends numerical_failure after 8 calls"
  exit 0
fi

# 1. The uninterrupted reference.
start_train "$work/reference.txt" --save-parameters "$work/reference.bin"
wait "$job" || fail "the reference run failed"

# 2. The run that gets SIGTERM once its first checkpoint is committed.
ckpt="$work/checkpoints"
start_train "$work/stopped.txt" --checkpoint-dir "$ckpt" --checkpoint-every 10 \
  --summary-json "$work/stopped.json" --save-parameters "$work/stopped.bin"
victim=$job
until [[ -f $ckpt/manifest.dho2ckpt ]]; do
  kill -0 "$victim" 2>/dev/null || fail "the run ended before its first checkpoint"
  sleep 0.01
done
kill -TERM "$victim"  # under mpi2, mpirun forwards it to the ranks
wait_for 60 "$victim"
rc=$?
[[ $rc -ne 0 ]] || fail "the interrupted run exited 0"
[[ $launch == local && $rc -ne 143 ]] && fail "exit status $rc, expected 143 (128 + SIGTERM)"
one_error_line "$work/stopped.txt.err.txt" \
  "interrupted by SIGTERM after step [0-9]+; the checkpoint of step [0-9]+ is in .*--resume"
[[ $(json_field "$work/stopped.json" termination) == interrupted ]] ||
  fail "the summary's termination is not 'interrupted'"
steps=$(json_field "$work/stopped.json" iterations)
saved=$(latest_step "$ckpt")
[[ $saved == "$steps" ]] || fail "checkpoint of step $saved, the run stopped after $steps"
[[ -f $work/stopped.bin ]] || fail "the interrupted run did not write --save-parameters"

# 3. The restart.
start_train "$work/resumed.txt" --checkpoint-dir "$ckpt" --checkpoint-every 10 --resume \
  --save-parameters "$work/resumed.bin" --summary-json "$work/resumed.json"
wait "$job" || fail "the resumed run failed"
resumed_from=$(json_field "$work/resumed.json" resumed_from_step)
[[ $resumed_from == "$steps" ]] ||
  fail "the restart resumed from step ${resumed_from:-null}, expected $steps"
cmp -s "$work/reference.bin" "$work/resumed.bin" ||
  fail "the resumed parameters differ from the uninterrupted run's (cmp)"
echo "interrupt ($launch ${extra[*]}): SIGTERM after step $steps (exit $rc), checkpoint there," \
  "resumed bit-identical ($(stat -c %s "$work/resumed.bin") bytes)"
