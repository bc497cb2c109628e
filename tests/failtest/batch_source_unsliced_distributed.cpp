// DHO2_EXPECT: DHO2: batch_source: with a transport that can have several ranks
// A batch source without `fill_batch(i, rank, ranks, batch)`, not declared rank-local, given to
// `optimize` with a transport that can have several ranks: every rank would silently train on
// the whole batch, so it must not compile (wrapping it in dho2::local_batches would).
#include <dho2/fosi/optimizer.hpp>
#include <dho2/fosi/policies.hpp>
#include <dho2/models/quadratic.hpp>
#include <dho2/transport/inproc.hpp>

namespace {

struct whole_batches {
  dho2::index num_batches() const { return 1; }
  void begin_epoch(dho2::index /*epoch*/) {}
  void fill_batch(dho2::index /*i*/, dho2::quadratic<double>::batch& /*b*/) const {}
};

using policies = dho2::default_policies::with_transport<dho2::inproc_transport>;

[[maybe_unused]] void train(dho2::optimizer<double, policies>& opt,
                            const dho2::quadratic<double>& model, dho2::vector<double>& x) {
  whole_batches batches;
  opt.optimize(model, x, batches, 1);
}

}  // namespace
