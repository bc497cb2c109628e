#!/usr/bin/env bash
# Behaviour check for refactors: trains 14 small dho2_train configurations (FOSI-Adam, FOSI-HB and
# Adam on one rank; mode S synchronous over inproc and MPI, with the block partitioner, the
# background and the split schedules; mode A with and without residual balancing; K-FAC; the
# autoencoder) with a fixed seed and prints the sha256 of each --save-parameters file. Run it on a
# build before and after a change and compare: a refactor must leave every hash unchanged.
#
#   bash tests/regression/parameter_hashes.sh BUILD_DIR OUT_DIR     (e.g. build/ci /tmp/hashes)
#
# Needs Fashion-MNIST (the quickstart installs it) and mpirun; takes about 2 minutes on 2 cores.
set -u
B=$1
O=$2
mkdir -p "$O"
T=$B/examples/dho2_train
C="--train-size 3000 --test-size 500 --epochs 1 --W 5 --T 8 --k 4 --quiet --seed 3"
M="mpirun --allow-run-as-root --oversubscribe"
run() {
  local name=$1
  shift
  "$@" --save-parameters "$O/$name.bin" >"$O/$name.log" 2>&1 || echo "FAIL $name (see $O/$name.log)"
}
run fosi_adam_1       "$T" $C --optimizer fosi-adam
run fosi_hb_1         "$T" $C --optimizer fosi-momentum
run adam_1            "$T" $C --optimizer adam
run dho2_S_sync_inproc2 "$T" $C --optimizer dho2 --ranks 2
run dho2_S_sync_mpi2  $M -np 2 "$T" $C --optimizer dho2
run dho2_S_sync_mpi3_block $M -np 3 "$T" $C --optimizer dho2 --partitioner block
run dho2_S_background "$T" $C --optimizer dho2 --schedule background --max-staleness 2 --on-late wait
run dho2_S_split_mpi3 $M -np 3 "$T" $C --optimizer dho2 --schedule split --max-staleness 3 --on-late wait
run dho2_S_split_inproc3 "$T" $C --optimizer dho2 --ranks 3 --schedule split --max-staleness 3 --on-late wait
run dho2_A_mpi2       $M -np 2 "$T" $C --optimizer dho2 --admm-rho 0.5 --admm-every 4
run dho2_A_inproc3_bal "$T" $C --optimizer dho2 --ranks 3 --admm-rho 0.5 --admm-every 4 --admm-balance
run kfac_1            "$T" $C --optimizer kfac
run kfac_mpi2         $M -np 2 "$T" $C --optimizer kfac
run dho2_ae_mpi2      $M -np 2 "$T" --train-size 2000 --test-size 300 --epochs 1 --W 5 --T 8 --k 4 --quiet --seed 3 --optimizer dho2 --model autoencoder:784-32-784
(cd "$O" && sha256sum ./*.bin)
