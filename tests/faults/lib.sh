# Shared by the fault tests (source it): a work directory removed at exit, background processes
# killed at exit (append their PIDs to `pids`), `fail MESSAGE` (prints the message with the
# test's `fault_name`, the tail of every $work/*.txt, and exits 1), `start_train` (a dho2_train
# job in the background), and the Open MPI settings that let root run mpirun.
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "${fault_name:-fault test}: FAILED: $*" >&2
  for f in "$work"/*.txt; do echo "--- $f"; tail -c 2000 "$f"; echo; done >&2
  exit 1
}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# start_train <output file> <dho2_train arguments...>: runs "$train" with the script's `args`
# and these arguments in the background (under `mpirun -np 2` when `launch` is mpi2), stdout to
# the file and stderr to <file>.err.txt; sets `job` and adds it to `pids`.
start_train() {
  local out=$1
  shift
  if [[ $launch == mpi2 ]]; then
    mpirun -np 2 --oversubscribe "$train" "${args[@]}" "$@" >"$out" 2>"$out.err.txt" &
  else
    "$train" "${args[@]}" "$@" >"$out" 2>"$out.err.txt" &
  fi
  job=$!
  pids+=("$job")
}
