/// @file
/// `dho2::any_transport`: a transport chosen at run time. It wraps any `dho2::transport` behind
/// virtual calls so that one optimizer type (`policies<..., any_transport, ...>`) serves every
/// transport a program may pick from its command line, instead of one template instantiation
/// per transport. The cost is one indirect call per collective, negligible beside the data moved.
///
/// Example:
/// ```
/// dho2::any_transport t = use_mpi ? dho2::any_transport(dho2::mpi_transport())
///                                 : dho2::any_transport(dho2::single_process());
/// using policies = dho2::default_policies::with_transport<dho2::any_transport>;
/// dho2::optimizer<float, policies> opt(options, policies{.transport = std::move(t)});
/// ```
#pragma once

#include <dho2/concepts/polling_transport.hpp>
#include <dho2/core/errors.hpp>
#include <dho2/core/types.hpp>
#include <dho2/transport/single_process.hpp>
#include <dho2/transport/transport_stats.hpp>

#include <cstddef>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace dho2 {

namespace detail {

class any_transport_base {
 public:
  any_transport_base() = default;
  any_transport_base(const any_transport_base&) = delete;
  any_transport_base& operator=(const any_transport_base&) = delete;
  virtual ~any_transport_base() = default;

  [[nodiscard]] virtual int rank() const = 0;
  [[nodiscard]] virtual int size() const = 0;
  virtual void all_reduce_sum(std::span<float> v) = 0;
  virtual void all_reduce_sum(std::span<double> v) = 0;
  virtual void reduce_scatter_sum(std::span<const float> in, std::span<float> out,
                                  std::span<const index> offsets) = 0;
  virtual void reduce_scatter_sum(std::span<const double> in, std::span<double> out,
                                  std::span<const index> offsets) = 0;
  virtual void all_gather(std::span<const float> in, std::span<float> out,
                          std::span<const index> offsets) = 0;
  virtual void all_gather(std::span<const double> in, std::span<double> out,
                          std::span<const index> offsets) = 0;
  virtual void broadcast(std::span<std::byte> bytes, int root) = 0;
  virtual void barrier() = 0;
  [[nodiscard]] virtual std::shared_ptr<any_transport_base> split(int color, int key) = 0;
  virtual void send(std::span<const std::byte> bytes, int peer, int tag) = 0;
  virtual void recv(std::span<std::byte> bytes, int peer, int tag) = 0;
  [[nodiscard]] virtual bool can_poll() const = 0;
  [[nodiscard]] virtual bool poll(int peer, int tag) = 0;
  [[nodiscard]] virtual transport_stats own_stats() const = 0;

  // Stats of this handle and of every group split from it (recursively).
  [[nodiscard]] transport_stats stats() const {
    transport_stats s = own_stats();
    const std::lock_guard lock(mutex_);
    for (const auto& child : children_) s += child->stats();
    return s;
  }

 protected:
  void adopt(const std::shared_ptr<any_transport_base>& child) {
    const std::lock_guard lock(mutex_);
    children_.push_back(child);
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::shared_ptr<any_transport_base>> children_;
};

template <transport T>
class any_transport_model final : public any_transport_base {
 public:
  explicit any_transport_model(T t) : t_(std::move(t)) {}

  [[nodiscard]] int rank() const override { return static_cast<int>(t_.rank()); }
  [[nodiscard]] int size() const override { return static_cast<int>(t_.size()); }
  void all_reduce_sum(std::span<float> v) override { t_.all_reduce_sum(v); }
  void all_reduce_sum(std::span<double> v) override { t_.all_reduce_sum(v); }
  void reduce_scatter_sum(std::span<const float> in, std::span<float> out,
                          std::span<const index> offsets) override {
    t_.reduce_scatter_sum(in, out, offsets);
  }
  void reduce_scatter_sum(std::span<const double> in, std::span<double> out,
                          std::span<const index> offsets) override {
    t_.reduce_scatter_sum(in, out, offsets);
  }
  void all_gather(std::span<const float> in, std::span<float> out,
                  std::span<const index> offsets) override {
    t_.all_gather(in, out, offsets);
  }
  void all_gather(std::span<const double> in, std::span<double> out,
                  std::span<const index> offsets) override {
    t_.all_gather(in, out, offsets);
  }
  void broadcast(std::span<std::byte> bytes, int root) override { t_.broadcast(bytes, root); }
  void barrier() override { t_.barrier(); }
  [[nodiscard]] std::shared_ptr<any_transport_base> split(int color, int key) override {
    auto child = std::make_shared<any_transport_model>(t_.split(color, key));
    adopt(child);
    return child;
  }
  void send(std::span<const std::byte> bytes, int peer, int tag) override {
    t_.send(bytes, peer, tag);
  }
  void recv(std::span<std::byte> bytes, int peer, int tag) override { t_.recv(bytes, peer, tag); }
  [[nodiscard]] bool can_poll() const override { return dho2::can_poll(t_); }
  [[nodiscard]] bool poll(int peer, int tag) override {
    if constexpr (polling_transport<T>) {
      return t_.poll(peer, tag);
    } else {
      throw transport_error("any_transport poll [rank " + std::to_string(t_.rank()) +
                            "]: the wrapped transport cannot poll (it does not model "
                            "dho2::polling_transport)");
    }
  }
  [[nodiscard]] transport_stats own_stats() const override {
    if constexpr (requires { t_.stats(); }) {
      return t_.stats();
    } else {
      return {};
    }
  }

  T& get() noexcept { return t_; }

 private:
  T t_;
};

}  // namespace detail

/// A `dho2::transport` that forwards every call to a transport chosen at run time (see the file
/// comment). Copies share the wrapped handle (they are the same rank of the same group); `split`
/// wraps the wrapped transport's `split`, so sub-groups stay of the same kind. A
/// default-constructed `any_transport` wraps `dho2::single_process`.
///
/// Everything else — semantics, determinism, errors (`dho2::transport_error`) — is the wrapped
/// transport's.
class any_transport {
 public:
  /// Wraps `dho2::single_process` (one rank).
  any_transport() : any_transport(single_process{}) {}

  // (clang-format 14 would put the requires-clause and the constructor on one line)
  // clang-format off
  /// Wraps `t` (moved in).
  template <transport T>
    requires(!std::is_same_v<std::remove_cvref_t<T>, any_transport>)
  explicit any_transport(T t)
      : impl_(std::make_shared<detail::any_transport_model<T>>(std::move(t))) {}
  // clang-format on

  /// This rank's index in [0, size()).
  [[nodiscard]] int rank() const { return impl_->rank(); }
  /// Number of ranks in the group.
  [[nodiscard]] int size() const { return impl_->size(); }
  /// In-place element-wise sum over the ranks.
  template <class E>
  void all_reduce_sum(std::span<E> values) {
    impl_->all_reduce_sum(values);
  }
  /// This rank's shard (by `offsets`) of the element-wise sum of `in` over the ranks.
  template <class E>
  void reduce_scatter_sum(std::span<const E> in, std::span<E> out, std::span<const index> offsets) {
    impl_->reduce_scatter_sum(in, out, offsets);
  }
  /// Every rank's shard `in`, concatenated in rank order into `out`.
  template <class E>
  void all_gather(std::span<const E> in, std::span<E> out, std::span<const index> offsets) {
    impl_->all_gather(in, out, offsets);
  }
  /// Root's bytes to every rank.
  void broadcast(std::span<std::byte> bytes, int root) { impl_->broadcast(bytes, root); }
  /// Waits until every rank has arrived.
  void barrier() { impl_->barrier(); }
  /// The sub-group of the ranks that passed the same `color`, ordered by (`key`, rank); its
  /// traffic is included in this handle's `stats()`.
  [[nodiscard]] any_transport split(int color, int key) {
    return any_transport(impl_->split(color, key));
  }
  /// Sends `bytes` to `peer` with `tag`.
  void send(std::span<const std::byte> bytes, int peer, int tag) { impl_->send(bytes, peer, tag); }
  /// Receives exactly `bytes.size()` bytes from `peer` with `tag`.
  void recv(std::span<std::byte> bytes, int peer, int tag) { impl_->recv(bytes, peer, tag); }
  /// Whether the wrapped transport models `dho2::polling_transport` (every shipped one with
  /// peers does; `single_process` does not).
  [[nodiscard]] bool can_poll() const { return impl_->can_poll(); }
  /// The wrapped transport's `poll` (see `dho2::polling_transport`); throws
  /// `dho2::transport_error` if it cannot poll (`can_poll()` is false).
  [[nodiscard]] bool poll(int peer, int tag) { return impl_->poll(peer, tag); }

  /// Traffic and time of the wrapped handle plus every group split from it (or from those),
  /// by the wrapped transport's counting rules (`stats()`); all zero for a transport without
  /// `stats()`, such as `single_process`.
  [[nodiscard]] transport_stats stats() const { return impl_->stats(); }

  /// The wrapped transport if it is a `T`, else nullptr.
  template <transport T>
  [[nodiscard]] T* target() noexcept {
    auto* model = dynamic_cast<detail::any_transport_model<T>*>(impl_.get());
    return model != nullptr ? &model->get() : nullptr;
  }

 private:
  explicit any_transport(std::shared_ptr<detail::any_transport_base> impl)
      : impl_(std::move(impl)) {}

  std::shared_ptr<detail::any_transport_base> impl_;
};

static_assert(polling_transport<any_transport>);

}  // namespace dho2
