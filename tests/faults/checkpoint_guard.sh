#!/usr/bin/env bash
# Fault test: dho2_train never loses or misapplies a checkpoint.
#
#   bash tests/faults/checkpoint_guard.sh <dho2_train> <bound seconds>
#
#  1. A fresh run (no --resume) refuses a directory holding a committed checkpoint, naming
#     --resume and --overwrite-checkpoint, and leaves its files unchanged; with
#     --overwrite-checkpoint it proceeds.
#  2. A second job is kept out of a directory in use (the lock), and gets in once the first job
#     is killed with SIGKILL (the kernel releases the lock).
#  3. --resume refuses a checkpoint of another activation, another architecture with the same
#     parameter count, another batch size or another training-set size, naming the setting and
#     both values, and leaves the files unchanged.
#  4. A checkpoint write that fails (RLIMIT_FSIZE: the rank file exceeds `ulimit -f`, EFBIG, as a
#     full disk gives ENOSPC) keeps the previous checkpoint byte for byte: the run stops non-zero
#     with the message by default, and trains on with a warning under
#     --checkpoint-failure continue; the kept checkpoint then resumes.
# Every run is bounded by `timeout`.
set -uo pipefail

train=${1:?path to dho2_train}
bound=${2:?bound in seconds}
fault_name="checkpoint_guard"
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

dir="$work/ckpt"
args=(--dataset synthetic --epochs 1 --quiet --model mlp:20-4-2 --train-size 200 --test-size 50
      --batch 20 --checkpoint-dir "$dir" --checkpoint-every 5)

# train_expect CODE TEXT ARGS...: runs dho2_train with the common and the given arguments; the
# exit code must be CODE ("nonzero" for any but 0) and the output must contain TEXT (unless "").
train_expect() {
  local want=$1 text=$2 code
  shift 2
  # With `limit_kib` set, under that file size limit; the output goes through a pipe (the
  # limit applies to regular files only) to a file written outside the limit.
  timeout -k 5 "$bound" bash -c 'trap "" XFSZ; [[ -z $1 ]] || ulimit -f "$1"; shift; exec "$@"' \
    _ "${limit_kib:-}" "$train" "${args[@]}" "$@" 2>&1 | cat >"$work/out.txt"
  code=${PIPESTATUS[0]}
  [[ $code -ne 124 && $code -ne 137 ]] || fail "$*: still running after ${bound} s"
  if [[ $want == nonzero ]]; then
    [[ $code -ne 0 ]] || fail "$*: exited 0, expected a refusal"
  else
    [[ $code -eq $want ]] || fail "$*: exited $code, expected $want"
  fi
  [[ -z $text ]] || grep -qF -- "$text" "$work/out.txt" || fail "$*: expected the message '$text'"
  echo "checkpoint_guard: $* -> exit $code${text:+: $(grep -F -- "$text" "$work/out.txt" | head -1)}"
}
sums() { (cd "$dir" && sha256sum manifest.dho2ckpt rank-*.dho2ckpt); }

# 1. A fresh run over a committed checkpoint.
train_expect 0 "" --max-steps 5
[[ -f $dir/rank-0.step-5.dho2ckpt ]] || fail "the first run left no checkpoint of step 5"
sums >"$work/step5.sum"
train_expect nonzero "pass --resume to continue it, or --overwrite-checkpoint to replace it" \
  --max-steps 10
(cd "$dir" && sha256sum -c --quiet "$work/step5.sum") || fail "a refused run changed the checkpoint"
train_expect 0 "" --max-steps 10 --overwrite-checkpoint
[[ -f $dir/rank-0.step-10.dho2ckpt && ! -f $dir/rank-0.step-5.dho2ckpt ]] ||
  fail "--overwrite-checkpoint did not replace the checkpoint"

# 2. The lock: a long first job holds the directory.
"$train" "${args[@]}" --epochs 100000 --resume >"$work/first.txt" 2>&1 &
first=$!
pids+=("$first")
start=$SECONDS
until [[ $(cat "$dir/lock" 2>/dev/null) == "$first" ]]; do
  ((SECONDS - start <= bound)) || fail "the first job did not take the lock within ${bound} s"
  sleep 0.1
done
train_expect nonzero "in use by another job (process $first holds '$dir/lock')" --resume --max-steps 12
kill -9 "$first"
wait "$first" 2>/dev/null
train_expect 0 "" --resume --max-steps 10 --overwrite-checkpoint

# 3. Resuming with other settings: a fresh checkpoint of step 5, then each mismatch.
train_expect 0 "" --max-steps 5 --overwrite-checkpoint
sums >"$work/step5.sum"
train_expect nonzero "model.structure differs: the checkpoint has mlp 20-4-2 relu softmax_cross_entropy, this job has mlp 20-4-2 tanh softmax_cross_entropy" \
  --resume --activation tanh
train_expect nonzero "model.structure differs: the checkpoint has mlp 20-4-2 relu softmax_cross_entropy, this job has mlp 20-2-10-2 relu softmax_cross_entropy" \
  --resume --model mlp:20-2-10-2
train_expect nonzero "data.batch_size differs: the checkpoint has 20, this job has 10" \
  --resume --batch 10
train_expect nonzero "data.train_size differs: the checkpoint has 200, this job has 100" \
  --resume --train-size 100
(cd "$dir" && sha256sum -c --quiet "$work/step5.sum") || fail "a refused resume changed the checkpoint"

# 4. A failed write. The rank file (about 1.5 KB here) exceeds a 1 KiB file size limit; the
# manifest and the lock file do not. SIGXFSZ is ignored so that write() fails with EFBIG.
limit_kib=1 train_expect nonzero "write failed: File too large; checkpoint directory '$dir': the checkpoint of step 10 was not committed (the previous one stays in use); training stopped" \
  --resume --max-steps 15
(cd "$dir" && sha256sum -c --quiet "$work/step5.sum") || fail "a failed write changed the previous checkpoint"
limit_kib=1 train_expect 0 "dho2_train: warning: checkpoint file '$dir/rank-0.step-10.dho2ckpt': write failed" \
  --resume --max-steps 15 --checkpoint-failure continue --epochs 2
grep -q "steps            15" "$work/out.txt" || fail "--checkpoint-failure continue did not train on"
(cd "$dir" && sha256sum -c --quiet "$work/step5.sum") || fail "a failed write changed the previous checkpoint"
train_expect 0 "" --resume --max-steps 10
echo "checkpoint_guard: all cases passed"
