# cmake -P check for dho2_train's error handling (CTest: example.dho2_train.bad_input).
#   -DDHO2_TRAIN=<path of dho2_train>  -DDHO2_WORK_DIR=<a writable directory>
#   [-DDHO2_TRAIN_WITH_ASIO=1: dho2_train has the asio transport; its cases run]
#   [-DDHO2_TRAIN_WITH_TORCH=1: dho2_train has --model cnn (LibTorch)]
# Every case must exit with its code (2: bad usage, 1: runtime error such as missing data files)
# and print exactly one line on stderr, starting with "dho2_train: error: " and matching the
# case's pattern. All cases run; the failures are listed together.
cmake_minimum_required(VERSION 3.20)
foreach(_v IN ITEMS DHO2_TRAIN DHO2_WORK_DIR)
  if(NOT DEFINED ${_v})
    message(FATAL_ERROR "check_bad_input.cmake: -D${_v}=... is required")
  endif()
endforeach()

set(_failures "")
set(_cases 0)

# expect(<exit code> <stderr regex> <args>...); with the variable `forbidden` set, stderr must
# also not match that regex.
function(expect code pattern)
  math(EXPR _n "${_cases} + 1")
  set(_cases ${_n} PARENT_SCOPE)
  execute_process(COMMAND "${DHO2_TRAIN}" ${ARGN}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 60)
  string(REGEX MATCHALL "\n" _breaks "${err}")
  list(LENGTH _breaks _lines)
  set(_problem "")
  if(NOT "${rc}" STREQUAL "${code}")
    string(APPEND _problem " exit code ${rc} (expected ${code});")
  endif()
  if(NOT _lines EQUAL 1 OR NOT err MATCHES "\n$")
    string(APPEND _problem " ${_lines} line(s) on stderr (expected 1);")
  endif()
  if(NOT err MATCHES "^dho2_train: error: ")
    string(APPEND _problem " stderr does not start with 'dho2_train: error: ';")
  endif()
  if(NOT err MATCHES "${pattern}")
    string(APPEND _problem " stderr does not match '${pattern}';")
  endif()
  if(DEFINED forbidden AND err MATCHES "${forbidden}")
    string(APPEND _problem " stderr matches '${forbidden}', which it must not;")
  endif()
  string(REPLACE ";" " " _args "${ARGN}")
  if(_problem)
    set(_failures "${_failures}\n  dho2_train ${_args}:${_problem}\n    stderr: ${err}"
        PARENT_SCOPE)
  else()
    message(STATUS "ok (exit ${rc}): dho2_train ${_args}")
  endif()
endfunction()

# Bad usage: exit code 2.
expect(2 "unknown flag '--no-such-flag'" --no-such-flag)
expect(2 "unexpected argument" positional)
expect(2 "--lr: missing value" --dataset synthetic --lr)
expect(2 "--epochs: missing value" --epochs --quiet)
expect(2 "--lr: 'fast' is not a finite number" --lr fast)
expect(2 "--batch: '12x' is not an integer" --batch 12x)
expect(2 "--batch: 0 is out of range" --batch 0)
expect(2 "--model mlp:784-abc-10: layers" --model mlp:784-abc-10)
expect(2 "--model: unknown model 'resnet'" --model resnet)
expect(2 "--model mlp:100-10: has 100 inputs" --model mlp:100-10)
expect(2 "--optimizer: unknown value 'rmsprop'" --optimizer rmsprop)
expect(2 "--activation: unknown value 'gelu'" --activation gelu)
expect(2 "--dataset: unknown value 'cifar'" --dataset cifar)
expect(2 "--alpha: options.alpha = -1. Violated constraint" --alpha -1)
expect(2 "--k: options.k = 0. Violated constraint" --k 0)
expect(2 "--m: options.lanczos_steps = 3. Violated constraint" --m 3)
expect(2 "--lr: adam::learning_rate = 0. Violated constraint" --lr 0)
expect(2 "--momentum: heavy_ball::momentum = 1. Violated constraint"
       --optimizer momentum --momentum 1)
expect(2 "--l2: l2 = -0.5. Violated constraint" --dataset synthetic --l2 -0.5)
expect(2 "--target-accuracy: 2 is out of range" --target-accuracy 2)
expect(2 "--batch: 512 exceeds the 100 training samples"
       --dataset synthetic --train-size 100 --test-size 10 --batch 512)# Distribution and checkpoint flags.
expect(2 "--ranks: only with --transport inproc" --transport mpi --ranks 2)
expect(2 "--schedule split: needs --optimizer dho2" --optimizer sgd --schedule split)
expect(2 "--weight-decay: only with --optimizer adamw or fosi-adamw" --optimizer adam
       --weight-decay 0.1)
expect(2 "--weight-decay: adamw::weight_decay = -1" --optimizer fosi-adamw --weight-decay -1)
expect(2 "--schedule background: transport size = 2. Violated constraint"
       --dataset synthetic --train-size 200 --test-size 10 --optimizer dho2 --ranks 2
       --schedule background)
expect(2 "--curvature-ranks: split_schedule::curvature_group = 2. Violated constraint"
       --dataset synthetic --train-size 200 --test-size 10 --optimizer dho2 --ranks 2
       --schedule split --curvature-ranks 2)
expect(2 "--partitioner: unknown value 'random'" --partitioner random)
expect(2 "--resume: needs --checkpoint-dir" --resume)
expect(2 "--on-late: only with --schedule split or background" --optimizer dho2
       --on-late keep-previous)
expect(2 "--on-late: unknown value 'later'" --optimizer dho2 --schedule split --on-late later)

# Models, K-FAC, targets, budgets and evaluations.
expect(2 "--model autoencoder:784-64-10: the last width \\(10\\) must equal the first \\(784\\)"
       --model autoencoder:784-64-10)
expect(2 "--model autoencoder:100-20-100: has 100 inputs; fashion-mnist has 784"
       --model autoencoder:100-20-100)
expect(2 "--target-accuracy: the autoencoder has no accuracy"
       --model autoencoder:784-64-784 --target-accuracy 0.5)
expect(2 "--optimizer kfac: needs --model mlp:... or autoencoder:..."
       --optimizer kfac --model softmax)
expect(2 "--damping: only with --optimizer kfac" --optimizer adam --damping 0.1)
expect(2 "--kl-clip: only with --optimizer kfac" --kl-clip 0.01)
expect(2 "--damping: kfac_options.damping = 0. Violated constraint" --optimizer kfac --damping 0)
expect(2 "--kl-clip: kfac_options.kl_clip = -1. Violated constraint"
       --optimizer kfac --kl-clip -1)
expect(2 "--kfac-factor-decay: kfac_options.factor_decay = 1. Violated constraint"
       --optimizer kfac --kfac-factor-decay 1)
expect(2 "--kfac-inverse-every: 0 is out of range" --optimizer kfac --kfac-inverse-every 0)
expect(2 "--lr: kfac_options.learning_rate = -0.1. Violated constraint" --optimizer kfac --lr -0.1)
expect(2 "--checkpoint-dir: not with --optimizer kfac"
       --optimizer kfac --checkpoint-dir "${DHO2_WORK_DIR}/ckpt")
expect(2 "--partitioner: not with --optimizer kfac" --optimizer kfac --partitioner block)
expect(2 "--target-loss: not with --target-accuracy" --target-accuracy 0.5 --target-loss 1)
expect(2 "--target-loss: 'low' is not a finite number" --target-loss low)
expect(2 "--continue-after-target needs --target-accuracy or --target-loss"
       --continue-after-target)
expect(2 "--time-budget: must be > 0" --time-budget 0)
expect(2 "--eval-train-size: -1 is out of range" --eval-train-size -1)

# Runtime errors: exit code 1, naming the file and the remedy.
# The advice to install Debian's package only for the default directory: a directory of the
# user's own that lacks the files, or holds a corrupt one, gets a message naming the file.
set(forbidden "apt-get")
expect(1 "--data: Fashion-MNIST file '.*no-such-dir/train-images-idx3-ubyte.gz' not found.*--dataset synthetic"
       --data "${DHO2_WORK_DIR}/no-such-dir")
set(_fm "${DHO2_WORK_DIR}/bad-input-fashion-mnist")
file(REMOVE_RECURSE "${_fm}")
file(MAKE_DIRECTORY "${_fm}")
foreach(_name IN ITEMS train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte
                       t10k-labels-idx1-ubyte)
  file(WRITE "${_fm}/${_name}" "this is not an IDX file\n")
endforeach()
expect(1 "--data: IDX file '.*bad-input-fashion-mnist/train-[a-z]+-idx[13]-ubyte': wrong magic.*the file is corrupt"
       --data "${_fm}")
# A test set whose images differ from the model's input (and from the training set's) is
# refused before training, naming the file: 2 training images of 28x28, 2 test images of 10x10.
# (printf writes the IDX headers' zero bytes, which CMake strings cannot hold.)
function(write_idx file header payload_bytes)
  execute_process(COMMAND sh -c "printf '${header}' > '${file}' && head -c ${payload_bytes} /dev/zero >> '${file}'"
                  RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "check_bad_input.cmake: cannot write ${file}")
  endif()
endfunction()
write_idx("${_fm}/train-images-idx3-ubyte" "\\000\\000\\010\\003\\000\\000\\000\\002\\000\\000\\000\\034\\000\\000\\000\\034" 1568)
write_idx("${_fm}/train-labels-idx1-ubyte" "\\000\\000\\010\\001\\000\\000\\000\\002" 2)
write_idx("${_fm}/t10k-images-idx3-ubyte" "\\000\\000\\010\\003\\000\\000\\000\\002\\000\\000\\000\\012\\000\\000\\000\\012" 200)
write_idx("${_fm}/t10k-labels-idx1-ubyte" "\\000\\000\\010\\001\\000\\000\\000\\002" 2)
expect(2 "--data: IDX file '.*bad-input-fashion-mnist/t10k-images-idx3-ubyte' holds images of 100 pixels; --model mlp:784-256-256-10 expects 784 inputs"
       --data "${_fm}")
# An output that is one of the inputs is refused before anything is read or written.
expect(2 "--save-parameters '.*t10k-labels-idx1-ubyte' is the input file '.*t10k-labels-idx1-ubyte' of --data: an output must not overwrite an input"
       --data "${_fm}" --save-parameters "${_fm}/t10k-labels-idx1-ubyte")
unset(forbidden)

# Output paths: checked at start, naming the flag and the path.
get_filename_component(_work_leaf "${DHO2_WORK_DIR}" NAME)
expect(1 "--summary-json '.*no-such-dir/summary.json': directory '.*no-such-dir' does not exist"
       --dataset synthetic --summary-json "${DHO2_WORK_DIR}/no-such-dir/summary.json")
expect(1 "--eval-log '.*no-such-dir/eval.csv': directory '.*no-such-dir' does not exist"
       --dataset synthetic --eval-log "${DHO2_WORK_DIR}/no-such-dir/eval.csv")
expect(1 "--summary-json '.*': is a directory; expected a regular file"
       --dataset synthetic --summary-json "${DHO2_WORK_DIR}")
expect(1 "--log '.*': is a directory; expected a regular file"
       --dataset synthetic --log "${DHO2_WORK_DIR}")
expect(2 "--log '.*bad-input-same.csv' and --eval-log '.*/./bad-input-same.csv' are the same file"
       --dataset synthetic --log "${DHO2_WORK_DIR}/bad-input-same.csv"
       --eval-log "${DHO2_WORK_DIR}/./bad-input-same.csv")
expect(2 "--summary-json '.*bad-input-same.json' and --save-parameters '.*bad-input-same.json' are the same file"
       --dataset synthetic --summary-json "${DHO2_WORK_DIR}/bad-input-same.json"
       --save-parameters "${DHO2_WORK_DIR}/../${_work_leaf}/bad-input-same.json")

# Sizes that would wrap or overflow, and a model that does not fit in memory.
expect(2 "--timeout: -9223372036854775808 is out of range \\(must be in \\[0.001, 1000000\\] seconds\\)"
       --timeout -9223372036854775808)
expect(2 "--timeout: 1e300 is out of range" --timeout 1e300)
expect(2 "--timeout: 1e-9 is out of range" --timeout 1e-9)
expect(2 "--timeout: 'nan' is not a finite number" --timeout nan)
expect(2 "--timeout: 'inf' is not a finite number" --timeout inf)
expect(2 "--connect-timeout: 0 is out of range \\(must be in \\[0.001, 1000000\\] seconds\\)"
       --connect-timeout 0)
expect(2 "--connect-timeout: only with --transport asio" --connect-timeout 5)
# --model cnn: refused by K-FAC with the reason; without LibTorch, refused saying how to get it.
if(DHO2_TRAIN_WITH_TORCH)
  expect(2 "--optimizer kfac: does not support --model cnn" --model cnn --optimizer kfac)
else()
  expect(2 "--model cnn: this dho2_train was built without LibTorch" --model cnn)
endif()
expect(2 "--model mlp:20-8-2147483648: the last width 2147483648 is out of range \\(must be <= 2147483647\\)"
       --dataset synthetic --model mlp:20-8-2147483648)
expect(2 "--model mlp:2147483648-2147483648-2147483648-10: 9223372062624579584 parameters is out of range"
       --dataset synthetic --model mlp:2147483648-2147483648-2147483648-10)
expect(2 "--curvature-ranks: 4294967297 is out of range \\(must be in \\[1, 2147483647\\]\\)"
       --optimizer dho2 --schedule split --curvature-ranks 4294967297)
expect(2 "--k: options.k = 9223372036854775807. Violated constraint: k \\+ l < n"
       --dataset synthetic --k 9223372036854775807 --l 9223372036854775807)
expect(1 "not enough memory: --model mlp:784-100000-100000-10 \\(10079600010 parameters\\).* needs an estimated [0-9]+ bytes \\(.*\\), more than the [0-9]+ bytes available"
       --dataset synthetic --model mlp:784-100000-100000-10)

# --- asio options (issue 13, item 3): bounded secret-file reads, the world-size cap, and the
# flags/variables named when the rendezvous is not set. Before: /dev/zero was read until memory
# ran out, a directory gave a raw basic_filebuf error, --world-size 999999999999 wrapped around
# in an int, and a missing --rendezvous blamed "DHO2_WORLD_SIZE = <unset>".
set(_asio --dataset synthetic --train-size 200 --test-size 10 --transport asio)
expect(2 "--world-size: 999999999999 is out of range \\(must be in \\[1, 65536\\]\\)"
       ${_asio} --rank 0 --world-size 999999999999 --rendezvous 127.0.0.1:1)
expect(2 "--rank: 70000 is out of range \\(must be in \\[0, 65535\\]\\)"
       ${_asio} --rank 70000 --world-size 2 --rendezvous 127.0.0.1:1)
if(DHO2_TRAIN_WITH_ASIO)
  expect(2 "--transport asio needs --rank, --world-size and --rendezvous \\(or the environment variables DHO2_RANK, DHO2_WORLD_SIZE and DHO2_RENDEZVOUS\\); missing rank 0's address: --rendezvous HOST:PORT or DHO2_RENDEZVOUS\n$"
         ${_asio} --rank 0 --world-size 2)
  expect(2 "missing the number of ranks: --world-size P or DHO2_WORLD_SIZE; this process's rank: --rank R or DHO2_RANK; rank 0's address"
         ${_asio})
  expect(2 "--secret-file = \"/dev/zero\"\\. Violated constraint: a regular file holding the secret \\(this is a character device\\)"
         ${_asio} --rank 0 --world-size 2 --rendezvous 127.0.0.1:1 --secret-file /dev/zero)
  expect(2 "--secret-file = \".*\"\\. Violated constraint: a regular file holding the secret \\(this is a directory\\)"
         ${_asio} --rank 0 --world-size 2 --rendezvous 127.0.0.1:1 --secret-file "${DHO2_WORK_DIR}")
endif()

if(_failures)
  message(FATAL_ERROR "dho2_train bad-input check failed:${_failures}")
endif()
message(STATUS "all ${_cases} bad-input cases passed")
