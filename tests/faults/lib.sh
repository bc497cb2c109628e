# Shared by the fault tests (source it): a work directory removed at exit, background processes
# killed at exit (append their PIDs to `pids`), `fail MESSAGE` (prints the message with the
# test's `fault_name`, the tail of every $work/*.txt, and exits 1), and the Open MPI settings
# that let root run mpirun.
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
