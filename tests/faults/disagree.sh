#!/usr/bin/env bash
# Fault test: the two ranks of a dho2_train job are given different settings (one flag differs,
# or only one rank gets a bad flag). The job must end non-zero within a bound — never hang, never
# train — and say which setting differs with each rank's value, once.
#
#   bash tests/faults/disagree.sh mpi|asio <dho2_train> <bound seconds>
#
# mpi:  `mpirun -np 2`, rank r running a wrapper that appends its own value of the flag.
# asio: two processes meeting on a random loopback port; each prints its own error.
# Cases: --epochs, --lr, --batch, --train-size, --activation, two architectures with the same
# parameter count (mlp:20-4-2 and mlp:20-2-10-2, both 94 parameters), a bad flag on rank 1 only.
set -uo pipefail

mode=${1:?mpi|asio}
train=${2:?path to dho2_train}
bound=${3:?bound in seconds}
fault_name="disagree ($mode)"
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

args=(--dataset synthetic --epochs 1 --max-steps 10 --quiet --model mlp:20-4-2 --train-size 200
      --test-size 50 --batch 20)

# The wrapper mpirun starts: `per_rank FLAG VALUE0 VALUE1 ARGS...` runs dho2_train ARGS plus
# FLAG and this rank's value ("-": no flag at all on that rank).
cat >"$work/per_rank" <<EOF
#!/bin/sh
flag=\$1; v0=\$2; v1=\$3; shift 3
if [ "\${OMPI_COMM_WORLD_RANK:-0}" = 0 ]; then v=\$v0; else v=\$v1; fi
if [ "\$v" = - ]; then exec "$train" "\$@"; fi
exec "$train" "\$@" "\$flag" "\$v"
EOF
chmod +x "$work/per_rank"

# run_case FLAG VALUE0 VALUE1 EXPECTED: the job must exit non-zero within the bound with the
# expected text in its output (grep -F), printed once.
run_case() {
  local flag=$1 v0=$2 v1=$3 expected=$4 start=$SECONDS code
  local out="$work/case.txt"
  case "$mode" in
    mpi)
      timeout -k 5 "$bound" mpirun -np 2 --oversubscribe "$work/per_rank" "$flag" "$v0" "$v1" \
        "${args[@]}" --transport mpi >"$out" 2>&1
      code=$?
      ;;
    asio)
      local port=$((20000 + RANDOM % 10000)) r pid1 v
      local common=("${args[@]}" --transport asio --world-size 2 --timeout 10 --connect-timeout 10
                    --rendezvous "127.0.0.1:$port")
      r=(); [[ $v1 != - ]] && r=("$flag" "$v1")
      timeout -k 5 "$bound" "$train" "${common[@]}" --rank 1 "${r[@]}" >"$work/rank1.txt" 2>&1 &
      pid1=$!
      r=(); [[ $v0 != - ]] && r=("$flag" "$v0")
      timeout -k 5 "$bound" "$train" "${common[@]}" --rank 0 "${r[@]}" >"$out" 2>&1
      code=$?
      wait "$pid1"
      local code1=$?
      [[ $code1 -ne 0 ]] || fail "$flag $v0/$v1: rank 1 exited 0"
      [[ $code1 -ne 124 && $code1 -ne 137 ]] || fail "$flag $v0/$v1: rank 1 hung (killed by timeout)"
      cat "$work/rank1.txt" >>"$out"
      ;;
  esac
  local elapsed=$((SECONDS - start))
  [[ $code -ne 124 && $code -ne 137 ]] || fail "$flag $v0/$v1: still running after ${bound} s (a hang)"
  [[ $code -ne 0 ]] || fail "$flag $v0/$v1: the job exited 0 (it trained with different settings)"
  grep -qF -- "$expected" "$out" || fail "$flag $v0/$v1: expected the message '$expected'"
  if [[ $mode == mpi ]]; then
    local count
    count=$(grep -cF -- "$expected" "$out")
    [[ $count -eq 1 ]] || fail "$flag $v0/$v1: the message is printed $count times, expected once"
  fi
  echo "disagree ($mode): $flag $v0 / $v1: exit $code after ${elapsed} s: $(grep -F -- "$expected" "$out" | head -1)"
}

run_case --epochs 1 2 "--epochs = 1 on rank 0, 2 on rank 1"
run_case --lr 0.001 0.002 "--lr = 0.001 on rank 0, 0.002 on rank 1"
run_case --batch 20 10 "--batch = 20 on rank 0, 10 on rank 1"
run_case --train-size 200 100 "--train-size = 200 on rank 0, 100 on rank 1"
run_case --activation relu tanh "--activation = relu on rank 0, tanh on rank 1"
run_case --model mlp:20-4-2 mlp:20-2-10-2 "--model = mlp:20-4-2 on rank 0, mlp:20-2-10-2 on rank 1"
if [[ $mode == mpi ]]; then
  run_case --bogus - x "rank 1 (of 2): unknown flag '--bogus'"
else
  run_case --bogus - x "unknown flag '--bogus'"
fi
echo "disagree ($mode): all cases ended within ${bound} s with the expected message"
