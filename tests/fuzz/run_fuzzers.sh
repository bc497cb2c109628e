#!/usr/bin/env bash
# Builds and runs DHO2's libFuzzer targets for a fixed number of executions each.
#
#   bash tests/fuzz/run_fuzzers.sh [--runs N] [--out DIR] [target...]
#
# Targets: every tests/fuzz/fuzz_<name>.cpp (default: all): idx, checkpoint, asio_frame,
# asio_handshake (the asio ones link OpenSSL's libcrypto; their seeds are written by
# tests/fuzz/make_asio_seeds.cpp). Each is built with clang++
# -fsanitize=fuzzer,address,undefined (-fno-sanitize-recover: any UB report is a crash) into
# DIR/<name> (default build/fuzz), then run for N executions (default 100000) on a working
# corpus DIR/corpus/<name> seeded from tests/fuzz/corpus/<name>/ (the seeds in the repository
# are never modified). A crash, leak, timeout (> 10 s per input) or sanitizer report stops that
# target and leaves the input as DIR/artifacts/<name>-crash-* (turn it into a regression test and
# a seed). Prints one line per target: executions, seconds, corpus size, result; exits 1 if any
# target failed. Needs clang++ with libFuzzer (Debian: clang).
set -uo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
runs=100000
out="$repo_root/build/fuzz"
targets=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) echo "run_fuzzers.sh: unknown flag '$1' (see --help)" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "run_fuzzers.sh: --runs $runs is not a positive integer" >&2; exit 2; }
cxx=${CXX_FUZZ:-clang++}
command -v "$cxx" >/dev/null || { echo "run_fuzzers.sh: $cxx not found (apt-get install clang)" >&2; exit 1; }
if [[ ${#targets[@]} -eq 0 ]]; then
  for f in "$repo_root"/tests/fuzz/fuzz_*.cpp; do
    name=$(basename "$f" .cpp)
    targets+=("${name#fuzz_}")
  done
fi

# Extra link flags per target (the IDX reader needs zlib, the handshake OpenSSL's libcrypto).
libs_for() {
  case "$1" in
    idx) echo "-lz" ;;
    asio_*) echo "-lcrypto -pthread" ;;
    *) echo "" ;;
  esac
}

mkdir -p "$out/artifacts"
status=0
for t in "${targets[@]}"; do
  src="$repo_root/tests/fuzz/fuzz_$t.cpp"
  [[ -f $src ]] || { echo "run_fuzzers.sh: no $src" >&2; status=1; continue; }
  bin="$out/$t"
  # shellcheck disable=SC2046
  if ! "$cxx" -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
      -I"$repo_root/include" -I/usr/include/eigen3 "$src" $(libs_for "$t") -o "$bin"; then
    echo "fuzz $t: BUILD FAILED"
    status=1
    continue
  fi
  corpus="$out/corpus/$t"
  mkdir -p "$corpus"
  seeds="$repo_root/tests/fuzz/corpus/$t"
  [[ -d $seeds ]] || seeds=""
  start=$SECONDS
  log="$out/$t.log"
  "$bin" -runs="$runs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$out/artifacts/$t-" "$corpus" ${seeds:+"$seeds"} >"$log" 2>&1
  rc=$?
  done_runs=$(grep -o "Done [0-9]* runs" "$log" | grep -o "[0-9]*" || true)
  size=$(find "$corpus" -type f | wc -l)
  if [[ $rc -eq 0 ]]; then
    echo "fuzz $t: ${done_runs:-?} executions in $((SECONDS - start)) s, corpus $size inputs, no findings"
  else
    echo "fuzz $t: FAILED (exit $rc) after $((SECONDS - start)) s; see $log and $out/artifacts/$t-*"
    grep -m3 -E "ERROR|SUMMARY|runtime error" "$log" | sed 's/^/    /'
    status=1
  fi
done
exit $status
