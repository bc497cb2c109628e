/// @file
/// The messages of `dho2::split_schedule` between the trainers and the curvature ranks, as
/// typed structs with named tags, sent point to point on the job's communicator (the
/// transport's `send`/`recv`).
///
/// Trainer 0 → every curvature rank, tag `request`: a `split_request`:
///  - `estimate`: the parameters follow to the first curvature rank (tag `parameters`, n
///    scalars); the curvature group estimates on global batch (`epoch`, `batch`);
///  - `checkpoint`: the checkpoint directory follows (tag `checkpoint`, `length` bytes);
///  - `finish`: training is over; the curvature ranks return from `optimize`.
/// First curvature rank → every trainer, tag `result`: a `split_result_header`, then (when
/// k > 0) k eigenvalues and k residuals (tag `values`, 2k doubles). Every curvature rank →
/// every trainer whose shard overlaps its own, tag `vectors`: the k × (overlap) block of V,
/// column-major, so no rank ever holds all of V.
#pragma once

#include <dho2/core/eigen_estimate.hpp>
#include <dho2/core/types.hpp>

#include <cstddef>
#include <cstdint>
#include <span>

namespace dho2::split_protocol {

/// Point-to-point tags of the protocol.
enum class tag : int {
  /// `split_request`, trainer 0 → curvature ranks.
  request = 7101,
  /// The parameters of an estimate request, trainer 0 → first curvature rank.
  parameters = 7102,
  /// `split_result_header`, first curvature rank → trainers.
  result = 7103,
  /// Eigenvalues and residuals, first curvature rank → trainers.
  values = 7104,
  /// Blocks of eigenvectors, curvature ranks → trainers.
  vectors = 7105,
  /// A checkpoint directory, trainer 0 → curvature ranks.
  checkpoint = 7106,
};

/// What trainer 0 asks of the curvature ranks.
enum class request_kind : std::int64_t {
  /// Training is over.
  finish = 0,
  /// Estimate at the parameters that follow.
  estimate = 1,
  /// Join the checkpoint whose directory follows.
  checkpoint = 2,
};

/// A request (tag `request`).
struct split_request {
  /// What is asked.
  request_kind kind = request_kind::finish;
  /// The trainers' step: the snapshot's step, or the checkpoint's.
  std::int64_t step = 0;
  /// `estimate`: the epoch of the curvature batch; `checkpoint`: the directory's length.
  std::int64_t epoch_or_length = 0;
  /// `estimate`: the index of the curvature batch in its epoch.
  std::int64_t batch = 0;
};

/// The facts of an estimate (tag `result`); the eigenpairs follow.
struct split_result_header {
  /// Eigenpairs that follow (0 when the estimate failed).
  std::int64_t pairs = 0;
  /// How many of them are among the largest.
  std::int64_t num_largest = 0;
  /// How many are among the smallest.
  std::int64_t num_smallest = 0;
  /// Estimator iterations.
  std::int64_t iterations = 0;
  /// Hessian-vector products.
  std::int64_t hvps = 0;
  /// Whether the iteration broke down.
  std::int64_t breakdown = 0;
  /// Whether the estimate failed (a non-finite product).
  std::int64_t failed = 0;
  /// Seconds of the estimate.
  double seconds = 0.0;
  /// Seconds of its Hessian-vector products.
  double hvp_seconds = 0.0;
};

/// Sends the trivially copyable `message` to `peer` with tag `t`.
template <class Transport, class Message>
void send(Transport& comm, const Message& message, int peer, tag t) {
  comm.send(std::as_bytes(std::span<const Message>(&message, 1)), peer, static_cast<int>(t));
}

/// Receives a trivially copyable message of type `Message` from `peer` with tag `t`.
template <class Message, class Transport>
Message receive(Transport& comm, int peer, tag t) {
  Message message{};
  comm.recv(std::as_writable_bytes(std::span<Message>(&message, 1)), peer, static_cast<int>(t));
  return message;
}

/// Sends `count` values at `data` to `peer` with tag `t`.
template <class Transport, class T>
void send_values(Transport& comm, const T* data, index count, int peer, tag t) {
  comm.send(std::as_bytes(std::span<const T>(data, static_cast<std::size_t>(count))), peer,
            static_cast<int>(t));
}

/// Receives `count` values into `data` from `peer` with tag `t`.
template <class Transport, class T>
void receive_values(Transport& comm, T* data, index count, int peer, tag t) {
  comm.recv(std::as_writable_bytes(std::span<T>(data, static_cast<std::size_t>(count))), peer,
            static_cast<int>(t));
}

/// The header describing estimate `est` (k pairs sent; 0 when it failed).
[[nodiscard]] inline split_result_header header_of(const eigen_estimate& est, index k) {
  return {k,
          est.num_largest,
          est.num_smallest,
          est.iterations,
          est.hvps,
          est.breakdown ? 1 : 0,
          est.failed ? 1 : 0,
          est.seconds,
          est.hvp_seconds};
}

}  // namespace dho2::split_protocol
