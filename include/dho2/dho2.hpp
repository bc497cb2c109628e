/// @file
/// The DHO2 core umbrella header: concepts, the FOSI optimizer and its single-process policies,
/// the built-in models, the in-memory data helpers (classification sets, `shuffling_batcher`,
/// synthetic problems) and the callbacks. Needs Eigen only.
///
/// Opt-in headers not included here: `<dho2/data/idx.hpp>` (needs zlib; link `dho2::data`),
/// `<dho2/mpi.hpp>` and `<dho2/asio.hpp>` (the MPI and TCP transports).
#pragma once

#include <dho2/admm/consensus.hpp>
#include <dho2/admm/diloco.hpp>
#include <dho2/admm/local_sgd.hpp>
#include <dho2/admm/synchronous.hpp>
#include <dho2/base/adam.hpp>
#include <dho2/base/adamw.hpp>
#include <dho2/base/any.hpp>
#include <dho2/base/heavy_ball.hpp>
#include <dho2/base/nesterov.hpp>
#include <dho2/base/sgd.hpp>
#include <dho2/callbacks/callbacks.hpp>
#include <dho2/concepts/admm_solver.hpp>
#include <dho2/concepts/base_optimizer.hpp>
#include <dho2/concepts/batch_source.hpp>
#include <dho2/concepts/curvature_estimator.hpp>
#include <dho2/concepts/differentiable_model.hpp>
#include <dho2/concepts/hvp_model.hpp>
#include <dho2/concepts/partitioner.hpp>
#include <dho2/concepts/schedule.hpp>
#include <dho2/concepts/transport.hpp>
#include <dho2/core/data_position.hpp>
#include <dho2/core/eigen_estimate.hpp>
#include <dho2/core/errors.hpp>
#include <dho2/core/hvp_operator.hpp>
#include <dho2/core/shard_layout.hpp>
#include <dho2/core/step_status.hpp>
#include <dho2/core/summary.hpp>
#include <dho2/core/types.hpp>
#include <dho2/curvature/finite_difference_hvp.hpp>
#include <dho2/curvature/lanczos.hpp>
#include <dho2/data/batcher.hpp>
#include <dho2/data/classification_batch.hpp>
#include <dho2/data/classification_set.hpp>
#include <dho2/data/synthetic.hpp>
#include <dho2/fosi/optimizer.hpp>
#include <dho2/fosi/options.hpp>
#include <dho2/fosi/policies.hpp>
#include <dho2/models/mlp.hpp>
#include <dho2/models/quadratic.hpp>
#include <dho2/models/softmax_regression.hpp>
#include <dho2/partition/even.hpp>
#include <dho2/schedule/synchronous.hpp>
#include <dho2/transport/simulated_link.hpp>
#include <dho2/transport/single_process.hpp>
