#!/usr/bin/env bash
# DHO2 quickstart (Debian 12).
#
#   bash cmake/quickstart.sh demo [dho2_train arguments...]
#       build the Fashion-MNIST training demo with the `ci` preset and run it: DHO2 on 2 MPI
#       ranks (DHO2_DEMO_RANKS to change; threads of one process if mpirun is missing)
#   bash cmake/quickstart.sh test
#       build everything with the `ci` preset and run every test (`ctest --preset ci`)
#
# Both first install the Debian packages DHO2 needs, but only those that are missing (running
# `apt-get update` only then; that needs root). Re-running is cheap: no reinstall, an incremental
# build. Environment: CMAKE_BUILD_PARALLEL_LEVEL (default: number of CPUs).
set -euo pipefail

usage() {
  echo "usage: bash cmake/quickstart.sh demo [dho2_train arguments...]" >&2
  echo "       bash cmake/quickstart.sh test" >&2
  exit 2
}

[[ $# -ge 1 ]] || usage
command=$1
shift
case "$command" in
  demo) ;;
  test) [[ $# -eq 0 ]] || usage ;;
  *) usage ;;
esac

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

log() { printf '[quickstart] %s\n' "$*" >&2; }
die() {
  printf '[quickstart] error: %s\n' "$*" >&2
  exit 1
}

# ---- Debian packages ------------------------------------------------------------------------------
packages=(cmake g++ make libeigen3-dev libboost-dev libboost-mpi-dev openmpi-bin libopenmpi-dev
          doctest-dev libbenchmark-dev zlib1g-dev libssl-dev dataset-fashion-mnist doxygen)

install_missing_packages() {
  if ! command -v dpkg-query >/dev/null 2>&1; then
    log "dpkg-query not found (not Debian?): assuming ${packages[*]} (or equivalents) are installed"
    return 0
  fi
  local missing=() pkg status
  for pkg in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    [[ $status == installed ]] || missing+=("$pkg")
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    log "all required Debian packages are installed"
    return 0
  fi
  if [[ $(id -u) -ne 0 ]]; then
    die "missing Debian packages: ${missing[*]}
    Install them as root, then re-run:
      sudo apt-get update && sudo apt-get install -y ${missing[*]}"
  fi
  log "installing missing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "${missing[@]}"
}

install_missing_packages

# ---- Configure and build with the ci preset -------------------------------------------------------
if [[ -z ${CMAKE_BUILD_PARALLEL_LEVEL:-} ]]; then
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc 2>/dev/null || echo 2)
fi
export CMAKE_BUILD_PARALLEL_LEVEL

log "configuring (cmake --preset ci)"
cmake --preset ci

case "$command" in
  demo)
    demo=build/ci/examples/dho2_train
    if [[ -f examples/dho2_train.cpp || -f examples/dho2_train/main.cpp ]]; then
      log "building dho2_train (cmake --build --preset ci --target dho2_train)"
      cmake --build --preset ci --target dho2_train
    else
      log "the dho2_train sources (examples/dho2_train.cpp) do not exist yet: building everything"
      cmake --build --preset ci
    fi
    if [[ ! -x $demo ]]; then
      die "the training demo $demo has not been built: examples/dho2_train.cpp is not there yet
    (it is the Fashion-MNIST demo; until it lands, try: bash cmake/quickstart.sh test)"
    fi
    # The main job: DHO2 (FOSI-Adam, parameters and curvature sharded) on DHO2_DEMO_RANKS MPI
    # ranks (default 2); later arguments override --optimizer. Without mpirun it runs the same
    # ranks as threads of one process (--transport inproc).
    ranks=${DHO2_DEMO_RANKS:-2}
    [[ $ranks =~ ^[1-9][0-9]*$ ]] || die "DHO2_DEMO_RANKS=$ranks is not a positive integer"
    if command -v mpirun >/dev/null 2>&1; then
      launcher=(mpirun -np "$ranks" --oversubscribe)
      [[ $(id -u) -ne 0 ]] || launcher+=(--allow-run-as-root)
      log "running ${launcher[*]} $demo --optimizer dho2 $*"
      exec "${launcher[@]}" "$demo" --optimizer dho2 "$@"
    fi
    log "mpirun not found: running the $ranks ranks as threads (--transport inproc)"
    log "running $demo --optimizer dho2 --transport inproc --ranks $ranks $*"
    exec "$demo" --optimizer dho2 --transport inproc --ranks "$ranks" "$@"
    ;;
  test)
    log "building everything (cmake --build --preset ci)"
    cmake --build --preset ci
    log "running every test (ctest --preset ci)"
    ctest --preset ci
    ;;
esac
