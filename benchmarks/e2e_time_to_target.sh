#!/usr/bin/env bash
# End-to-end comparison on Fashion-MNIST (MLP 784-256-256-10): wall time to a target test
# accuracy for
#   dho2-2ranks      --optimizer dho2 (FOSI-Adam, mode S, synchronous schedule) on 2 MPI ranks
#   fosi-adam-1rank  --optimizer fosi-adam on 1 rank (the original, non-distributed design)
#   adam-2ranks      --optimizer adam, data-parallel on 2 MPI ranks (the same mode S code path
#                    with curvature off: reduce-scatter, sharded Adam, all-gather)
# all in one run, interleaved per seed (A B C, A B C, ...) so that a busy machine slows them alike.
# Every configuration uses the same cores: 2 ranks × 1 thread, or 1 rank × THREADS_1RANK threads
# (default 2, Eigen/OpenMP).
#
#   bash benchmarks/e2e_time_to_target.sh [--build DIR] [--target X] [--epochs N] [--seeds "1 2 3"]
#                                         [--eval-every N] [--out FILE.csv]
#
# Writes one CSV row per run (default benchmarks/results/e2e_time_to_target.csv) and prints a
# table of medians. The time is dho2_train's time_to_target_excluding_eval_s: wall seconds of the
# training loop from its start until the evaluation that first met the target, minus the time
# spent evaluating before it (evaluation is the same work for every optimizer). Nothing here is
# tuned per configuration: every run uses dho2_train's defaults except the flags shown.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build="$repo_root/build/ci"
target=0.85
epochs=5
seeds="1 2 3"
eval_every=47   # about a tenth of an epoch (469 steps of 128)
out="$repo_root/benchmarks/results/e2e_time_to_target.csv"
threads_1rank=${THREADS_1RANK:-2}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --target) target=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --eval-every) eval_every=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "e2e_time_to_target.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

train="$build/examples/dho2_train"
[[ -x $train ]] || { echo "e2e_time_to_target.sh: $train not built (bash cmake/quickstart.sh test)" >&2; exit 1; }
command -v mpirun >/dev/null || { echo "e2e_time_to_target.sh: mpirun not found (openmpi-bin)" >&2; exit 1; }
mpirun=(mpirun --oversubscribe -np 2)
if [[ $(id -u) -eq 0 ]]; then mpirun+=(--allow-run-as-root); fi

mkdir -p "$(dirname "$out")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The first value of a top-level number (or null) in dho2_train's summary JSON.
json_number() {
  grep -m1 -o "\"$2\": [^,}]*" "$1" | sed 's/.*: //'
}

common=(--target-accuracy "$target" --eval-every "$eval_every" --epochs "$epochs" --quiet)
echo "config,seed,ranks,threads_per_rank,time_to_target_s,steps_to_target,final_test_accuracy,wall_s,communication_s,git" >"$out"
rev=$(git -C "$repo_root" rev-parse --short HEAD 2>/dev/null || echo unknown)

run() {  # run <config> <seed> <ranks> <threads> <command...>
  local config=$1 seed=$2 ranks=$3 threads=$4
  shift 4
  local json="$work/$config-$seed.json"
  echo "[e2e] $config seed $seed: $*" >&2
  "$@" "${common[@]}" --seed "$seed" --threads "$threads" --summary-json "$json" >/dev/null
  printf '%s,%s,%s,%s,%s,%s,%s,%s,%s,%s\n' "$config" "$seed" "$ranks" "$threads" \
    "$(json_number "$json" time_to_target_excluding_eval_s)" \
    "$(json_number "$json" steps_to_target)" "$(json_number "$json" final_test_accuracy)" \
    "$(json_number "$json" wall_s)" "$(json_number "$json" communication)" "$rev" >>"$out"
}

for seed in $seeds; do
  run dho2-2ranks "$seed" 2 1 "${mpirun[@]}" "$train" --optimizer dho2
  run fosi-adam-1rank "$seed" 1 "$threads_1rank" "$train" --optimizer fosi-adam
  run adam-2ranks "$seed" 2 1 "${mpirun[@]}" "$train" --optimizer adam
done

echo
echo "Time to test accuracy >= $target (seconds, training loop, evaluations excluded), $(nproc) cores:"
cat "$out"
echo
# Median per configuration (runs that never reached the target count as +inf).
awk -F, 'NR > 1 {
  t = ($5 == "null" || $5 == "") ? 1e300 : $5
  v[$1] = v[$1] " " t; n[$1]++
} END {
  for (c in v) {
    m = split(substr(v[c], 2), a, " ")
    for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { x = a[i]; a[i] = a[j]; a[j] = x }
    med = (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
    printf "%-16s median %s over %d run(s): %s\n", c, (med >= 1e300 ? "not reached" : sprintf("%.1f s", med)), m, substr(v[c], 2)
  }
}' "$out" | sed 's/1e+300/not-reached/g'
