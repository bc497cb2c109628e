/// @file
/// `dho2::torch_module_model<S, Module, Loss, Batch>`: any LibTorch module and loss as a
/// `dho2::hvp_model` — the gradient by autograd and the exact Hessian-vector product by double
/// backward (Pearlmutter's trick through autograd). Part of the optional component `dho2::torch`
/// (CMake target `dho2::torch`, umbrella header `dho2/torch.hpp`; needs LibTorch).
///
/// What the adapter sees of the user's code:
///  - a module type `Module`: a `torch::nn::ModuleHolder` (`torch::nn::Sequential`, a type
///    declared with `TORCH_MODULE`, `dho2::torch_lenet`) or a `std::shared_ptr` to a
///    `torch::nn::Module`;
///  - a loss callable, invoked as `loss(module, batch)` with `Module&` and `const Batch&`, that
///    returns the *mean* loss over the batch as a one-element tensor computed from the module's
///    parameters by autograd (for example `module->forward(inputs)` and
///    `torch::nn::functional::cross_entropy`). It is called concurrently from several threads
///    (each with its own module), so it must not mutate shared state;
///  - where modules come from: a factory (any callable returning a new `Module`), or a
///    prototype module derived from `torch::nn::Cloneable` (cloned).
///
/// The parameter vector x (length n) is the concatenation of the module's parameters in the
/// order of `named_parameters()`, each flattened in its own (row-major, contiguous) order;
/// `parameter_blocks()` gives one length per parameter tensor, and `structure()` names them
/// with their shapes. Every parameter must have the scalar type `S` (`torch::kFloat32` for float,
/// `torch::kFloat64` for double), live on the CPU and require grad: otherwise the constructor
/// throws `dho2::invalid_options` naming the parameter (convert a module with
/// `module->to(torch::kFloat64)`). Buffers (e.g. batch-norm running statistics) are not
/// parameters: they keep the values the factory gave them, and the loss must not update them
/// (evaluate such modules in `eval()` mode). Dropout makes the loss random: DHO2 expects a pure
/// function of (x, batch).
///
/// How x reaches the module, without allocating per call: each module replica owns one
/// contiguous tensor of n scalars, and at the replica's creation every parameter is re-pointed
/// (`Tensor::set_data`) at its slice of that tensor. A call copies x into it (one `memcpy` of n
/// scalars), runs the loss, and copies the gradients autograd returns into `g` (one pass over n);
/// a product also copies v into a second flat tensor whose slices are shaped like the
/// parameters. (The alternative, `torch::from_blob` views of x copied into each parameter, needs
/// a tensor header per parameter per call; making the parameters views of the caller's x would
/// need one per call too, and x changes between calls.) The copies are O(n), against the O(n·B)
/// of the forward and backward passes.
///
/// The gradient is `torch::autograd::grad(loss, parameters)`. The product is exact:
/// g(x) = ∇f(x) with `create_graph = true`, then H(x)·v = ∇ₓ(g(x)·v), a second backward pass
/// through the graph of the first (no finite differences). For ReLU networks this is the
/// Hessian off the kinks, as for `dho2::mlp` (the second derivative of ReLU is 0). A parameter
/// that the loss does not use gets a zero gradient and a zero product.
///
/// Concurrency (the concepts' rule: const member functions may run on several threads at once —
/// ranks as threads, the background schedule's curvature thread): every call leases a module
/// replica from a pool owned by the model and returns it when done. A replica is used by one
/// call at a time; the pool makes a new one (with the factory, or by cloning the prototype)
/// when all are busy, so there are as many replicas as calls were ever concurrent (one per rank
/// thread plus one per curvature thread), never one per call. The pool's mutex is held only to
/// take or return a replica. Copies of a `torch_module_model` share the pool.
///
/// Threads inside torch: LibTorch's intra-op thread pool is per process
/// (`torch::set_num_threads`, default: the number of cores). When DHO2 calls the model from
/// several threads (P in-process ranks, a background curvature thread), set it so that the
/// callers times torch's threads do not exceed the cores, e.g. `torch::set_num_threads(1)` for
/// P ranks on P cores; the adapter does not change it (it is the program's choice).
///
/// An empty batch (when `Batch` has `size()`, e.g. `dho2::classification_batch`, as a rank's
/// slice of a small global batch can be) contributes 0: loss 0, zero gradient and product,
/// without calling the loss.
#pragma once

#include <dho2/core/errors.hpp>
#include <dho2/core/types.hpp>
#include <dho2/data/classification_batch.hpp>

#include <Eigen/Core>
#include <torch/torch.h>

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace dho2 {

/// The LibTorch scalar type of `S`: `torch::kFloat32` for float, `torch::kFloat64` for double.
template <model_scalar S>
inline constexpr torch::ScalarType torch_scalar_type =
    std::is_same_v<S, float> ? torch::kFloat32 : torch::kFloat64;

/// Settings of a `dho2::torch_module_model`.
struct torch_model_options {
  /// The first word after "torch" in `structure()`: a name for the architecture, which tells
  /// apart two modules whose parameters have the same names and shapes but whose forward passes
  /// differ (e.g. another activation). Must not be empty.
  std::string name = "module";
};

/// A LibTorch module and loss as a `dho2::hvp_model` (see the file comment): `S` is the scalar
/// (float or double, matching the module's parameters), `Module` the module type (a
/// `torch::nn::ModuleHolder` or a `std::shared_ptr` to a module), `Loss` the loss callable
/// `loss(Module&, const Batch&)` returning the mean loss as a one-element tensor, and `Batch`
/// the batch type DHO2 passes through (by default `dho2::classification_batch<S>`, which
/// `dho2::torch_inputs` and `dho2::torch_labels` turn into tensors).
template <model_scalar S, class Module, class Loss, class Batch = classification_batch<S>>
class torch_module_model {
 public:
  /// Parameter scalar (`float` or `double`).
  using scalar_type = S;
  /// The batch type passed to the loss.
  using batch_type = Batch;
  /// The module type.
  using module_type = Module;

  /// A model whose module replicas come from `make_module()` (called once here, and again for
  /// each further concurrent caller, possibly from two threads at once; each call must return a
  /// new module of the same architecture). The parameters of the first module are
  /// `initial_point()`.
  /// @throws dho2::invalid_options if `options.name` is empty, the module has no parameters, or
  ///   a parameter is not of scalar type `S`, not on the CPU or does not require grad (the
  ///   message names the parameter).
  template <class Factory>
  requires(!std::same_as<std::remove_cvref_t<Factory>, Module>) &&
      std::invocable<const Factory&>&& std::
          convertible_to<std::invoke_result_t<const Factory&>, Module> torch_module_model(
              Factory make_module, Loss loss, torch_model_options options = {})
      : state_(std::make_shared<state>(std::function<Module()>(std::move(make_module)),
                                       std::move(loss), std::move(options))) {}

  /// A model whose module replicas are clones of `prototype` (`clone()`, so its type must derive
  /// from `torch::nn::Cloneable`); `initial_point()` is the prototype's parameters. The
  /// prototype itself is never used by the model (train it with DHO2 through x, then
  /// `write_parameters` into it).
  /// @throws dho2::invalid_options as the factory constructor, and if the module cannot be
  ///   cloned.
  torch_module_model(Module prototype, Loss loss, torch_model_options options = {})
      : state_(std::make_shared<state>(clone_factory(std::move(prototype)), std::move(loss),
                                       std::move(options))) {}

  /// Number of parameters n (the sum of the parameter tensors' sizes).
  [[nodiscard]] index num_parameters() const noexcept { return state_->n; }

  /// One block length per parameter tensor, in parameter order (for `block_aligned_partitioner`).
  [[nodiscard]] const std::vector<index>& parameter_blocks() const noexcept {
    return state_->blocks;
  }

  /// The parameters' names in parameter order (as `named_parameters()` gives them).
  [[nodiscard]] const std::vector<std::string>& parameter_names() const noexcept {
    return state_->names;
  }

  /// The architecture as text: "torch NAME" then every parameter as `name[d0,d1,...]`, and the
  /// scalar, e.g. "torch lenet conv1.weight[16,1,5,5] conv1.bias[16] ... double" (the model's
  /// fingerprint, see `dho2::model_structure`).
  [[nodiscard]] const std::string& structure() const noexcept { return state_->structure; }

  /// Number of samples of a batch, when `Batch` has `size()`.
  [[nodiscard]] index batch_size(const batch_type& batch) const requires requires(const Batch& b) {
    { b.size() } -> std::convertible_to<index>;
  }
  { return static_cast<index>(batch.size()); }

  /// The parameters of the first module the factory made (or of the prototype), flattened:
  /// LibTorch's own initialisation, as a starting point.
  [[nodiscard]] const vector<S>& initial_point() const noexcept { return state_->initial; }

  /// A new module from the factory (or a clone of the prototype), with the parameters `x`: for
  /// inference or evaluation outside DHO2.
  [[nodiscard]] Module make_module(const_vector_ref<S> x) const {
    Module module = state_->new_module();
    write_parameters(x, module);
    return module;
  }

  /// Copies `x` into the parameters of `module` (a module of this architecture, e.g. the
  /// prototype, to save it with `torch::save`).
  /// @throws dho2::invalid_options if x has the wrong length or the module another layout.
  void write_parameters(const_vector_ref<S> x, Module& module) const {
    check_length("x", x.size());
    const std::vector<torch::Tensor> params = state_->checked_parameters(module, "module");
    torch::NoGradGuard no_grad;
    for (std::size_t i = 0; i < params.size(); ++i) {
      torch::Tensor p = params[i];
      const torch::Tensor source = torch::from_blob(const_cast<S*>(x.data()) + state_->offsets[i],
                                                    p.sizes(), torch_scalar_type<S>);
      p.copy_(source);
    }
  }

  /// Reads the parameters of `module` (of this architecture) into a flat vector.
  /// @throws dho2::invalid_options if the module has another layout.
  [[nodiscard]] vector<S> read_parameters(const Module& module) const {
    return state_->flatten(state_->checked_parameters(module, "module"));
  }

  /// The mean loss over the batch (forward pass only, under `torch::NoGradGuard`).
  [[nodiscard]] S loss(const_vector_ref<S> x, const batch_type& batch) const {
    check_length("x", x.size());
    if (empty(batch)) return S(0);
    lease r(*state_);
    r->load(x);
    torch::NoGradGuard no_grad;
    return state_->scalar_of(state_->call_loss(*r, batch, false));
  }

  /// Writes the gradient of the mean loss into `g` (autograd) and returns the loss.
  S loss_and_gradient(const_vector_ref<S> x, const batch_type& batch, vector_ref<S> g) const {
    check_length("x", x.size());
    check_length("g", g.size());
    if (empty(batch)) {
      g.setZero();
      return S(0);
    }
    lease r(*state_);
    r->load(x);
    torch::AutoGradMode grad_mode(true);
    const torch::Tensor value = state_->call_loss(*r, batch, true);
    const std::vector<torch::Tensor> grads =
        torch::autograd::grad({value}, r->params, {}, false, false, true);
    state_->unflatten_into(grads, g);
    return state_->scalar_of(value);
  }

  /// Writes the exact Hessian-vector product H(x)·v of the mean loss into `hv` (double backward:
  /// the gradient with `create_graph`, then the gradient of its inner product with v).
  void hessian_vector_product(const_vector_ref<S> x, const batch_type& batch, const_vector_ref<S> v,
                              vector_ref<S> hv) const {
    check_length("x", x.size());
    check_length("v", v.size());
    check_length("hv", hv.size());
    if (empty(batch)) {
      hv.setZero();
      return;
    }
    lease r(*state_);
    r->load(x);
    r->load_direction(v);
    torch::AutoGradMode grad_mode(true);
    const torch::Tensor value = state_->call_loss(*r, batch, true);
    const std::vector<torch::Tensor> grads =
        torch::autograd::grad({value}, r->params, {}, true, true, true);
    torch::Tensor dot;
    for (std::size_t i = 0; i < grads.size(); ++i) {
      // A gradient that does not require grad is constant in x: it adds nothing to H·v.
      if (!grads[i].defined() || !grads[i].requires_grad()) continue;
      torch::Tensor term = (grads[i] * r->directions[i]).sum();
      dot = dot.defined() ? dot + term : term;
    }
    if (!dot.defined()) {
      hv.setZero();
      return;
    }
    const std::vector<torch::Tensor> products =
        torch::autograd::grad({dot}, r->params, {}, false, false, true);
    state_->unflatten_into(products, hv);
  }

 private:
  // One module and its flat parameter and direction tensors (see the file comment).
  struct replica {
    Module module;
    std::vector<torch::Tensor> params;      // the module's parameters, views of flat_x
    std::vector<torch::Tensor> directions;  // views of flat_v shaped like params
    torch::Tensor flat_x;
    torch::Tensor flat_v;

    void load(const_vector_ref<S> x) { Eigen::Map<vector<S>>(flat_x.data_ptr<S>(), x.size()) = x; }
    void load_direction(const_vector_ref<S> v) {
      Eigen::Map<vector<S>>(flat_v.data_ptr<S>(), v.size()) = v;
    }
  };

  struct state {
    std::function<Module()> make;
    Loss loss_fn;
    torch_model_options options;
    std::vector<std::string> names;
    std::vector<std::vector<std::int64_t>> shapes;
    std::vector<index> offsets;
    std::vector<index> blocks;
    index n = 0;
    std::string structure;
    vector<S> initial;
    std::mutex mutex;
    std::vector<std::unique_ptr<replica>> idle;

    state(std::function<Module()> factory, Loss loss, torch_model_options opts)
        : make(std::move(factory)), loss_fn(std::move(loss)), options(std::move(opts)) {
      if (options.name.empty()) {
        throw invalid_options("torch_model_options::name", "\"\"", "not empty");
      }
      Module first = make();
      torch::NoGradGuard no_grad;
      for (const auto& item : first->named_parameters(true)) {
        const torch::Tensor& p = item.value();
        const std::string field = "parameter `" + item.key() + "`";
        if (p.scalar_type() != torch_scalar_type<S>) {
          throw invalid_options(field + " dtype", std::string(c10::toString(p.scalar_type())),
                                std::string("== ") + c10::toString(torch_scalar_type<S>) +
                                    ", the scalar_type of the torch_module_model (convert the "
                                    "module with module->to(...) or choose the other scalar)");
        }
        if (!p.device().is_cpu()) {
          throw invalid_options(field + " device", p.device().str(), "the CPU");
        }
        if (!p.requires_grad()) {
          throw invalid_options(field + " requires_grad()", "false",
                                "true: every parameter is trained (register a frozen tensor as "
                                "a buffer instead)");
        }
        names.push_back(item.key());
        shapes.push_back(p.sizes().vec());
        offsets.push_back(n);
        blocks.push_back(static_cast<index>(p.numel()));
        n += static_cast<index>(p.numel());
      }
      if (n == 0) {
        throw invalid_options("module parameters", "none", "at least one parameter");
      }
      structure = "torch " + options.name;
      for (std::size_t i = 0; i < names.size(); ++i) {
        structure += ' ' + names[i] + '[';
        for (std::size_t d = 0; d < shapes[i].size(); ++d) {
          if (d > 0) structure += ',';
          structure += std::to_string(static_cast<long long>(shapes[i][d]));
        }
        structure += ']';
      }
      structure += std::is_same_v<S, float> ? " float" : " double";
      initial = flatten(checked_parameters(first, "factory()"));
      idle.push_back(adopt(std::move(first)));
    }

    // The parameters of `module` in order, after checking names, shapes and scalar types.
    std::vector<torch::Tensor> checked_parameters(const Module& module,
                                                  const std::string& what) const {
      std::vector<torch::Tensor> out;
      out.reserve(names.size());
      for (const auto& item : module->named_parameters(true)) {
        const std::size_t i = out.size();
        const torch::Tensor& p = item.value();
        if (i >= names.size() || item.key() != names[i] || p.sizes().vec() != shapes[i] ||
            p.scalar_type() != torch_scalar_type<S> || !p.device().is_cpu()) {
          throw invalid_options(what + " parameter " + std::to_string(i), item.key(),
                                "the layout of the model: " + structure);
        }
        out.push_back(p);
      }
      if (out.size() != names.size()) {
        throw invalid_options(what + " parameters", std::to_string(out.size()) + " tensors",
                              std::to_string(names.size()) + " tensors: " + structure);
      }
      return out;
    }

    [[nodiscard]] vector<S> flatten(const std::vector<torch::Tensor>& params) const {
      vector<S> x(n);
      for (std::size_t i = 0; i < params.size(); ++i) {
        const torch::Tensor p = params[i].detach().contiguous();
        x.segment(offsets[i], blocks[i]) = Eigen::Map<const vector<S>>(p.data_ptr<S>(), blocks[i]);
      }
      return x;
    }

    // Copies per-parameter tensors into `out` (undefined ones as zeros).
    void unflatten_into(const std::vector<torch::Tensor>& tensors, vector_ref<S> out) const {
      for (std::size_t i = 0; i < tensors.size(); ++i) {
        auto segment = out.segment(offsets[i], blocks[i]);
        if (!tensors[i].defined()) {
          segment.setZero();
          continue;
        }
        const torch::Tensor t = tensors[i].contiguous();
        segment = Eigen::Map<const vector<S>>(t.data_ptr<S>(), blocks[i]);
      }
    }

    // A replica of `module`: its parameters re-pointed at slices of one flat tensor.
    std::unique_ptr<replica> adopt(Module module) const {
      auto r = std::make_unique<replica>(replica{std::move(module), {}, {}, {}, {}});
      const auto tensor_options = torch::TensorOptions().dtype(torch_scalar_type<S>);
      r->flat_x = torch::zeros({static_cast<std::int64_t>(n)}, tensor_options);
      r->flat_v = torch::zeros({static_cast<std::int64_t>(n)}, tensor_options);
      r->params = checked_parameters(r->module, "factory()");
      torch::NoGradGuard no_grad;
      for (std::size_t i = 0; i < r->params.size(); ++i) {
        const auto start = static_cast<std::int64_t>(offsets[i]);
        const auto length = static_cast<std::int64_t>(blocks[i]);
        r->params[i].set_data(r->flat_x.narrow(0, start, length).view(shapes[i]));
        r->directions.push_back(r->flat_v.narrow(0, start, length).view(shapes[i]));
      }
      return r;
    }

    Module new_module() const { return make(); }

    // Calls the loss on the replica's module and checks what it returned.
    torch::Tensor call_loss(replica& r, const Batch& batch, bool differentiable) const {
      torch::Tensor value = std::invoke(loss_fn, r.module, batch);
      if (!value.defined() || value.numel() != 1) {
        throw invalid_options("loss(module, batch)",
                              value.defined()
                                  ? "a tensor of " + std::to_string(value.numel()) + " elements"
                                  : std::string("an undefined tensor"),
                              "one element: the mean loss over the batch");
      }
      if (differentiable && !value.requires_grad()) {
        throw invalid_options("loss(module, batch)", "a tensor that does not require grad",
                              "computed from the module's parameters with autograd on (not "
                              "under torch::NoGradGuard, not detached)");
      }
      return value.reshape({});
    }

    static S scalar_of(const torch::Tensor& value) {
      return static_cast<S>(value.detach().to(torch::kFloat64).template item<double>());
    }
  };

  // A replica taken from the pool for one call, returned on destruction.
  class lease {
   public:
    explicit lease(state& s) : state_(s) {
      {
        const std::lock_guard<std::mutex> lock(s.mutex);
        if (!s.idle.empty()) {
          replica_ = std::move(s.idle.back());
          s.idle.pop_back();
          return;
        }
      }
      replica_ = s.adopt(s.make());  // outside the lock: the factory may be slow
    }
    lease(const lease&) = delete;
    lease& operator=(const lease&) = delete;
    ~lease() {
      const std::lock_guard<std::mutex> lock(state_.mutex);
      state_.idle.push_back(std::move(replica_));
    }
    replica* operator->() const noexcept { return replica_.get(); }
    replica& operator*() const noexcept { return *replica_; }

   private:
    state& state_;
    std::unique_ptr<replica> replica_;
  };

  static std::function<Module()> clone_factory(Module prototype) {
    using impl = std::remove_reference_t<decltype(*prototype)>;
    return [prototype = std::move(prototype)]() -> Module {
      std::shared_ptr<torch::nn::Module> copy;
      try {
        copy = prototype->clone();
      } catch (const std::exception& e) {
        throw invalid_options("prototype module", prototype->name(),
                              "derives from torch::nn::Cloneable (or pass a factory that makes "
                              "the module instead): " +
                                  std::string(e.what()).substr(0, 200));
      }
      return Module(std::dynamic_pointer_cast<impl>(copy));
    };
  }

  void check_length(const char* what, index size) const {
    if (size != state_->n) {
      throw invalid_options(std::string(what) + ".size()", std::to_string(size),
                            "== num_parameters() = " + std::to_string(state_->n));
    }
  }

  bool empty(const Batch& batch) const {
    if constexpr (requires {
                    { batch.size() } -> std::convertible_to<index>;
                  }) {
      return static_cast<index>(batch.size()) == 0;
    } else {
      return false;
    }
  }

  std::shared_ptr<state> state_;
};

}  // namespace dho2
