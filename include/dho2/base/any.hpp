/// @file
/// `dho2::any_base`: a base optimizer chosen at run time, so that one optimizer type serves every
/// base optimizer a program may pick from its command line (like `dho2::any_transport` and
/// `dho2::any_partitioner`).
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/base/adam.hpp>
#include <dho2/checkpoint/optimizer_state.hpp>
#include <dho2/concepts/base_optimizer.hpp>
#include <dho2/core/types.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeinfo>
#include <utility>

namespace dho2 {

namespace detail {

// Receives the fields of a type-erased base state (checkpoints): the field types a state may
// have behind dho2::any_base.
template <model_scalar S>
struct state_field_sink {
  virtual void field(std::string_view name, vector<S>& v) = 0;
  virtual void field(std::string_view name, std::int64_t& v) = 0;
  virtual void field(std::string_view name, double& v) = 0;

 protected:
  ~state_field_sink() = default;
};

// A base optimizer's state, the base it runs with this step and that step's kernel.
template <model_scalar S>
struct base_state_box {
  virtual ~base_state_box() = default;
  [[nodiscard]] virtual std::unique_ptr<base_state_box> clone() const = 0;
  [[nodiscard]] virtual std::size_t bytes() const = 0;
  virtual void visit(state_field_sink<S>& sink) = 0;
  virtual void run_kernel(index begin, const_vector_ref<S> g, vector_ref<S> delta) = 0;
};

template <class B, model_scalar S>
struct typed_base_state_box final : base_state_box<S> {
  using kernel_type =
      decltype(std::declval<const B&>().begin_step(std::declval<typename B::template state<S>&>()));
  B base;  // the base of the current step (its learning rate as any_base's)
  typename B::template state<S> state;
  std::optional<kernel_type> kernel;  // valid until the next begin_step; not copied

  typed_base_state_box(B b, typename B::template state<S> st)
      : base(std::move(b)), state(std::move(st)) {}
  [[nodiscard]] std::unique_ptr<base_state_box<S>> clone() const override {
    return std::make_unique<typed_base_state_box>(base, state);
  }
  [[nodiscard]] std::size_t bytes() const override { return state.bytes(); }
  void visit(state_field_sink<S>& sink) override {
    if constexpr (checkpointable_state<typename B::template state<S>>) {
      visit_state_fields(state,
                         [&](std::string_view name, auto& field) { sink.field(name, field); });
    }
  }
  void run_kernel(index begin, const_vector_ref<S> g, vector_ref<S> delta) override {
    (*kernel)(begin, g, delta);
  }
};

}  // namespace detail

/// A `dho2::base_optimizer` (float and double) that forwards to a copy of any base optimizer
/// with a `learning_rate` field and a step kernel (`begin_step`; every shipped base has both),
/// picked at run time; a default-constructed one wraps
/// `dho2::adam{}`. Steps, states, checkpoints, identity and validation are the wrapped base's, bit
/// for bit: only the calls are indirect (one virtual call per step and per block of 2048
/// entries). Its own `learning_rate` is the rate in force — `optimizer::set_learning_rate` and
/// learning-rate schedules set it — and is given to the wrapped base before every step.
/// The wrapped base's FOSI scaling clip is `scaling_clip()`; its decoupled decay, if it has one,
/// is `decay`. Checkpoint fields of the wrapped state must be `dho2::vector<S>`,
/// `std::int64_t` or `double` (those of every shipped base).
class any_base {
 public:
  /// The learning rate in force, given to the wrapped base before each step.
  double learning_rate = 0.0;

  /// Wraps `dho2::adam{}`.
  any_base() : any_base(adam{}) {}

  // clang-format off
  /// Wraps a copy of `b`.
  template <class B>
    requires(!std::is_same_v<std::remove_cvref_t<B>, any_base> && base_optimizer<B, float> &&
             base_optimizer<B, double> && detail::has_learning_rate<B> &&
             detail::has_step_kernel<B, float> && detail::has_step_kernel<B, double>)
  explicit any_base(B b)
      : learning_rate(static_cast<double>(b.learning_rate)),
        impl_(std::make_shared<const typed_impl<B>>(std::move(b))) {}
  // clang-format on

  /// The wrapped base's run state, behind a pointer (copyable: copies deep).
  template <model_scalar S>
  class state {
   public:
    /// An empty state (holds nothing, 0 bytes); `any_base::init` gives a real one.
    state() = default;
    /// Takes a filled box (used by `any_base::init`).
    explicit state(std::unique_ptr<detail::base_state_box<S>> box) : box_(std::move(box)) {}
    /// Deep copy.
    state(const state& other) : box_(other.box_ ? other.box_->clone() : nullptr) {}
    /// Deep copy.
    state& operator=(const state& other) {
      if (this != &other) box_ = other.box_ ? other.box_->clone() : nullptr;
      return *this;
    }
    /// Move.
    state(state&&) noexcept = default;
    /// Move.
    state& operator=(state&&) noexcept = default;
    ~state() = default;

    /// Bytes the wrapped state holds.
    [[nodiscard]] std::size_t bytes() const { return box_ ? box_->bytes() : 0; }

    /// Calls f(name, field) on each field of the wrapped state (what a checkpoint saves).
    template <class F>
    void visit_fields(F&& f) {
      if (!box_) return;
      sink<F> s{f};
      box_->visit(s);
    }

    /// The box (for `any_base`).
    [[nodiscard]] detail::base_state_box<S>& box() { return *box_; }

   private:
    template <class F>
    struct sink final : detail::state_field_sink<S> {
      F& f;
      explicit sink(F& fn) : f(fn) {}
      void field(std::string_view name, vector<S>& v) override { f(name, v); }
      void field(std::string_view name, std::int64_t& v) override { f(name, v); }
      void field(std::string_view name, double& v) override { f(name, v); }
    };
    std::unique_ptr<detail::base_state_box<S>> box_;
  };

  /// The wrapped base's fresh state for `n` parameters.
  template <model_scalar S>
  [[nodiscard]] state<S> init(index n) const {
    return state<S>(impl_->init(n, learning_rate, tag<S>{}));
  }

  /// Starts a step of the wrapped base at `learning_rate` and returns its kernel (the
  /// `base_optimizer` concept's optional `begin_step`).
  template <model_scalar S>
  [[nodiscard]] auto begin_step(state<S>& st) const {
    detail::base_state_box<S>& box = st.box();
    impl_->begin_step(box, learning_rate);
    return [&box](index begin, const_vector_ref<S> g, vector_ref<S> delta) {
      box.run_kernel(begin, g, delta);
    };
  }

  /// One step of the wrapped base at `learning_rate`.
  template <model_scalar S>
  void step(state<S>& st, const_vector_ref<S> g, vector_ref<S> delta) const {
    begin_step(st)(0, g, delta);
  }

  /// The wrapped base's decoupled decay (`base_optimizer`'s optional `decay`); nothing if it has
  /// none.
  template <model_scalar S>
  void decay(const_vector_ref<S> x, vector_ref<S> delta) const {
    impl_->decay(x, delta, learning_rate);
  }

  /// The wrapped base's FOSI scaling clip (its `default_clip`, else 3).
  [[nodiscard]] double scaling_clip() const { return impl_->scaling_clip(); }
  /// The wrapped base's identity at `learning_rate` (its `identity()`, else its type's name).
  [[nodiscard]] std::string identity() const { return impl_->identity(learning_rate); }
  /// The wrapped base's `validate()` at `learning_rate`.
  void validate() const { impl_->validate(learning_rate); }

 private:
  template <class S>
  struct tag {};

  struct impl {
    impl() = default;
    impl(const impl&) = delete;
    impl& operator=(const impl&) = delete;
    virtual ~impl() = default;
    virtual std::unique_ptr<detail::base_state_box<float>> init(index n, double lr,
                                                                tag<float>) const = 0;
    virtual std::unique_ptr<detail::base_state_box<double>> init(index n, double lr,
                                                                 tag<double>) const = 0;
    virtual void begin_step(detail::base_state_box<float>& box, double lr) const = 0;
    virtual void begin_step(detail::base_state_box<double>& box, double lr) const = 0;
    virtual void decay(const_vector_ref<float> x, vector_ref<float> delta, double lr) const = 0;
    virtual void decay(const_vector_ref<double> x, vector_ref<double> delta, double lr) const = 0;
    [[nodiscard]] virtual double scaling_clip() const = 0;
    [[nodiscard]] virtual std::string identity(double lr) const = 0;
    virtual void validate(double lr) const = 0;
  };

  template <class B>
  struct typed_impl final : impl {
    B base;
    explicit typed_impl(B b) : base(std::move(b)) {}

    B at(double lr) const {
      B b = base;
      b.learning_rate = static_cast<decltype(b.learning_rate)>(lr);
      return b;
    }
    template <class S>
    std::unique_ptr<detail::base_state_box<S>> make(index n, double lr) const {
      B b = at(lr);
      auto st = b.template init<S>(n);
      return std::make_unique<detail::typed_base_state_box<B, S>>(std::move(b), std::move(st));
    }
    template <class S>
    static void start(detail::base_state_box<S>& box, B b) {
      auto& typed = static_cast<detail::typed_base_state_box<B, S>&>(box);
      typed.kernel.reset();
      typed.base = std::move(b);
      typed.kernel.emplace(typed.base.begin_step(typed.state));
    }
    std::unique_ptr<detail::base_state_box<float>> init(index n, double lr,
                                                        tag<float>) const override {
      return make<float>(n, lr);
    }
    std::unique_ptr<detail::base_state_box<double>> init(index n, double lr,
                                                         tag<double>) const override {
      return make<double>(n, lr);
    }
    void begin_step(detail::base_state_box<float>& box, double lr) const override {
      start(box, at(lr));
    }
    void begin_step(detail::base_state_box<double>& box, double lr) const override {
      start(box, at(lr));
    }
    void decay(const_vector_ref<float> x, vector_ref<float> delta, double lr) const override {
      detail::apply_decay<float>(at(lr), x, delta);
    }
    void decay(const_vector_ref<double> x, vector_ref<double> delta, double lr) const override {
      detail::apply_decay<double>(at(lr), x, delta);
    }
    [[nodiscard]] double scaling_clip() const override { return default_clip_for<B>(); }
    [[nodiscard]] std::string identity(double lr) const override {
      if constexpr (requires(const B& b) { b.identity(); }) {
        return at(lr).identity();
      } else {
        return typeid(B).name();
      }
    }
    void validate(double lr) const override {
      if constexpr (requires(const B& b) { b.validate(); }) at(lr).validate();
    }
  };

  std::shared_ptr<const impl> impl_;
};

}  // namespace dho2
