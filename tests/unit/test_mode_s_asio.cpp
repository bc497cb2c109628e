// Mode S over the TCP transport (ranks are threads on loopback): ten FOSI training steps, with a
// Lanczos estimate, equal the single-process run on the same global batches at P = 1 2 3 4.
#include "distributed_fixture.hpp"
#include <dho2/asio.hpp>
#include <dho2/data/batcher.hpp>

#include <boost/asio.hpp>
#include <doctest/doctest.h>

#include <string>
#include <thread>
#include <vector>

namespace {

using Eigen::VectorXd;

unsigned short free_loopback_port() {
  boost::asio::io_context ctx;
  boost::asio::ip::tcp::acceptor a(
      ctx, boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0));
  return a.local_endpoint().port();
}

}  // namespace

TEST_CASE("mode S over asio: ten FOSI steps equal P = 1 at P = 1 2 3 4") {
  const dho2_test::mlp_problem p;
  const dho2::options o = dho2_test::fosi_test_options();
  constexpr dho2::index global_batch = 29;
  constexpr int steps = 10;

  dho2::optimizer<double> single(o, {.base = {.learning_rate = 0.01}});
  dho2::shuffling_batcher<double> batches(p.data.train, global_batch, 17);
  VectorXd reference = p.x0;
  dho2_test::train_steps(single, p.model, reference, batches, steps);

  using policies = dho2::default_policies::with_transport<dho2::asio_transport>;
  for (int ranks : {1, 2, 3, 4}) {
    const unsigned short port = free_loopback_port();
    std::vector<VectorXd> finals(static_cast<std::size_t>(ranks));
    std::vector<std::string> errors(static_cast<std::size_t>(ranks));
    std::vector<std::thread> threads;
    for (int r = 0; r < ranks; ++r) {
      threads.emplace_back([&, r] {
        try {
          dho2::asio_options t;
          t.rank = r;
          t.size = ranks;
          t.port = port;
          t.timeout = std::chrono::seconds(30);
          dho2::optimizer<double, policies> opt(
              o, policies{.base = {.learning_rate = 0.01}, .transport = dho2::asio_transport(t)});
          dho2::shuffling_batcher<double> mine(p.data.train, global_batch, 17);
          VectorXd x = p.x0;
          dho2_test::train_steps(opt, p.model, x, mine, steps, r, ranks);
          finals[static_cast<std::size_t>(r)] = x;
        } catch (const std::exception& e) {
          errors[static_cast<std::size_t>(r)] = e.what();
        }
      });
    }
    for (auto& t : threads) t.join();
    for (int r = 0; r < ranks; ++r) {
      const auto i = static_cast<std::size_t>(r);
      INFO("P = ", ranks, ", rank ", r, ": ", errors[i]);
      REQUIRE(errors[i].empty());
      dho2_test::check_close(finals[i], reference, 1e-9, "max |x - x_single|");
    }
  }
}
