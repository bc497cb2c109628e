#!/usr/bin/env bash
# Fault test: what dho2_train does with the paths of its outputs (--summary-json,
# --save-parameters, --log, --eval-log, --checkpoint-dir). An output path is written, never
# replaced by something else:
#  - a character device stays a character device (a private copy of /dev/null first, then, as
#    root, /dev/null itself, which a regression would turn into a regular file: it is restored);
#  - a symbolic link stays a link and its target gets the content (a dangling link's target is
#    created); a symlinked checkpoint directory holds the checkpoint;
#  - a 0600 file keeps its mode (and, as root, its owner);
#  - a FIFO gets the content (read by cat in the background, bounded with timeout);
#  - a directory is refused before training, with one error line naming the flag and the path,
#    and nothing changes;
#  - a write error (/dev/full) ends the run non-zero naming the flag, the file and the cause, for
#    each of the four output flags;
#  - two flags naming one file (./ spelling, symbolic link) are refused at start naming both.
#
#   bash tests/faults/output_paths.sh <dho2_train>
set -uo pipefail

train=${1:?path to dho2_train}
fault_name="output_paths"
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

short=(--dataset synthetic --epochs 1 --max-steps 5 --quiet --train-size 300 --test-size 50
  --model mlp:784-16-10)
root=0
[[ $(id -u) == 0 ]] && root=1

# run NAME ARGS...: runs dho2_train (at most 60 s) with the short arguments and ARGS; its stdout
# and stderr go to $work/NAME.out.txt and $work/NAME.err.txt; sets `code`.
run() {
  local name=$1
  shift
  timeout 60 "$train" "${short[@]}" "$@" >"$work/$name.out.txt" 2>"$work/$name.err.txt"
  code=$?
  ((code != 124)) || fail "$name: dho2_train did not end within 60 s"
}

# expect_ok NAME: exit 0 and nothing on stderr.
expect_ok() {
  ((code == 0)) || fail "$1: exit code $code, expected 0"
  [[ ! -s $work/$1.err.txt ]] || fail "$1: expected an empty stderr"
}

# expect_error NAME CODE TEXT...: exit CODE, exactly one stderr line starting with
# "dho2_train: error: " and containing every TEXT (fixed strings).
expect_error() {
  local name=$1 want=$2
  shift 2
  ((code == want)) || fail "$name: exit code $code, expected $want"
  local lines
  lines=$(wc -l <"$work/$name.err.txt")
  ((lines == 1)) || fail "$name: $lines stderr line(s), expected exactly 1"
  grep -q '^dho2_train: error: ' "$work/$name.err.txt" ||
    fail "$name: stderr does not start with 'dho2_train: error: '"
  local text
  for text in "$@"; do
    grep -qF -- "$text" "$work/$name.err.txt" || fail "$name: stderr does not contain '$text'"
  done
}

# is_char_device PATH MAJOR MINOR
is_char_device() {
  [[ -c $1 && ! -L $1 ]] && [[ $(stat -c '%t:%T' "$1") == "$(printf '%x:%x' "$2" "$3")" ]]
}

no_temp_files() {
  ! find "$@" -maxdepth 1 -name '*.tmp.*' | grep -q . || fail "temporary files left in $*"
}

# --- Character devices ------------------------------------------------------------------------
# A private null device first (root only: mknod), so that a regression fails here without
# touching the system's /dev/null.
if ((root)) && mknod -m 666 "$work/null" c 1 3; then
  run private_null --summary-json "$work/null" --save-parameters "$work/null" --log "$work/null" \
    --eval-log "$work/null"
  expect_ok private_null
  is_char_device "$work/null" 1 3 || fail "private_null: $work/null is no longer a character device"
fi
run dev_null --summary-json /dev/null --save-parameters /dev/null --log /dev/null \
  --eval-log /dev/null
if ! is_char_device /dev/null 1 3; then
  if ((root)); then rm -f /dev/null && mknod -m 666 /dev/null c 1 3; fi
  fail "dev_null: /dev/null was replaced (restored)"
fi
expect_ok dev_null

# --- Symbolic links ---------------------------------------------------------------------------
mkdir "$work/real"
echo old >"$work/real/summary.json"
ln -s real/summary.json "$work/link.json"
ln -s real/params.bin "$work/dangling.bin"
run symlink --summary-json "$work/link.json" --save-parameters "$work/dangling.bin"
expect_ok symlink
[[ -L $work/link.json ]] || fail "symlink: $work/link.json is no longer a symbolic link"
[[ -L $work/dangling.bin ]] || fail "symlink: $work/dangling.bin is no longer a symbolic link"
grep -q '"program": "dho2_train"' "$work/real/summary.json" ||
  fail "symlink: the link's target real/summary.json did not get the summary"
# mlp:784-16-10 has 784*16 + 16 + 16*10 + 10 = 12730 parameters: 50920 bytes of float32.
size=$(stat -c %s "$work/real/params.bin" 2>/dev/null)
[[ $size == 50920 ]] || fail "symlink: real/params.bin has ${size:-no} bytes, expected 50920"
no_temp_files "$work" "$work/real"

mkdir "$work/ckpt_real"
ln -s ckpt_real "$work/ckpt_link"
run checkpoint_link --checkpoint-dir "$work/ckpt_link" --checkpoint-every 2
expect_ok checkpoint_link
[[ -L $work/ckpt_link ]] || fail "checkpoint_link: the directory link was replaced"
[[ -f $work/ckpt_real/manifest.dho2ckpt ]] ||
  fail "checkpoint_link: no manifest in the link's target directory"
no_temp_files "$work/ckpt_real"

# --- Mode and owner ---------------------------------------------------------------------------
echo old >"$work/private.json"
chmod 600 "$work/private.json"
((root)) && chown 4321:4322 "$work/private.json"
run mode --summary-json "$work/private.json"
expect_ok mode
[[ $(stat -c %a "$work/private.json") == 600 ]] ||
  fail "mode: private.json has mode $(stat -c %a "$work/private.json"), expected 600 (kept)"
if ((root)); then
  [[ $(stat -c %u:%g "$work/private.json") == 4321:4322 ]] ||
    fail "mode: private.json is owned by $(stat -c %u:%g "$work/private.json"), expected 4321:4322"
fi
grep -q '"program": "dho2_train"' "$work/private.json" || fail "mode: private.json not written"

# --- FIFOs ------------------------------------------------------------------------------------
mkfifo "$work/summary.fifo" "$work/eval.fifo"
timeout 60 cat "$work/summary.fifo" >"$work/summary_fifo.txt" &
reader1=$!
timeout 60 cat "$work/eval.fifo" >"$work/eval_fifo.txt" &
reader2=$!
pids+=("$reader1" "$reader2")
run fifo --summary-json "$work/summary.fifo" --eval-log "$work/eval.fifo"
wait "$reader1" || fail "fifo: the reader of summary.fifo failed or timed out"
wait "$reader2" || fail "fifo: the reader of eval.fifo failed or timed out"
expect_ok fifo
[[ -p $work/summary.fifo && -p $work/eval.fifo ]] || fail "fifo: a FIFO was replaced"
grep -q '"program": "dho2_train"' "$work/summary_fifo.txt" ||
  fail "fifo: the reader did not get the summary"
grep -q '^step,epoch,train_seconds' "$work/eval_fifo.txt" ||
  fail "fifo: the reader did not get the evaluation log"

# --- Refused: a directory -----------------------------------------------------------------------
mkdir "$work/dir"
echo kept >"$work/dir/inside"
for flag in --summary-json --save-parameters --log --eval-log; do
  name=directory${flag//-/_}
  run "$name" "$flag" "$work/dir"
  expect_error "$name" 1 "$flag '$work/dir': is a directory"
  if grep -q '== dho2_train summary ==' "$work/$name.out.txt"; then
    fail "$name: trained before refusing the directory (expected a refusal at start)"
  fi
  [[ -d $work/dir && $(cat "$work/dir/inside") == kept ]] || fail "$name: the directory changed"
  no_temp_files "$work"
done

# --- Write errors: /dev/full ----------------------------------------------------------------------
if [[ -c /dev/full ]]; then
  for flag in --summary-json --save-parameters --log --eval-log; do
    name=full${flag//-/_}
    run "$name" "$flag" /dev/full
    if ! is_char_device /dev/full 1 7; then
      if ((root)); then rm -f /dev/full && mknod -m 666 /dev/full c 1 7; fi
      fail "$name: /dev/full was replaced (restored)"
    fi
    expect_error "$name" 1 "$flag '/dev/full': write failed: No space left on device"
  done
fi

# --- Refused: two outputs, one file ----------------------------------------------------------------
run same_dot --log "$work/same.csv" --eval-log "$work/./same.csv"
expect_error same_dot 2 "--log '$work/same.csv' and --eval-log '$work/./same.csv' are the same file"
[[ ! -e $work/same.csv ]] || fail "same_dot: same.csv was created (expected a refusal at start)"
echo old >"$work/one.json"
ln -s one.json "$work/one_link.json"
run same_link --summary-json "$work/one.json" --save-parameters "$work/one_link.json"
expect_error same_link 2 "--summary-json '$work/one.json' and --save-parameters" "are the same file"
[[ $(cat "$work/one.json") == old ]] || fail "same_link: one.json changed"

echo "output_paths: all cases passed"
