// Tests of the authentication of dho2::asio_transport (docs/asio_wire_protocol.md,
// include/dho2/transport/detail/asio_auth.hpp): HMAC-SHA256
// against RFC 4231, jobs with a shared secret at P = 2 and 3 (with a split), a rank with a wrong
// secret (refused; the job fails naming authentication, or forms when the right rank comes),
// hostile raw clients of the rendezvous port, a replayed proof, a duplicate rank claim, and the
// options (secret, authentication policy, DHO2_SECRET_FILE). Ranks are threads of this process;
// every multi-threaded test runs under a watchdog that turns a hang into an abort with a message.
#include "raw_tcp_peer.hpp"
#include <dho2/asio.hpp>
#include <dho2/transport/detail/asio_auth.hpp>
#include <dho2/transport/detail/asio_frame.hpp>
#include <dho2/transport/detail/asio_mesh.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace net = boost::asio;
namespace wire = dho2::detail::asio_wire;
namespace au = dho2::detail::asio_auth;
using tcp = boost::asio::ip::tcp;
using namespace std::chrono_literals;

const std::string job_secret = "correct horse battery staple, 32";
const std::string other_secret = "incorrect horse battery staple!!";

// Aborts with `what` if `f` does not return within `limit` (a hang must fail, not block).
template <class F>
auto guarded(std::chrono::seconds limit, const char* what, F f) {
  auto fut = std::async(std::launch::async, std::move(f));
  if (fut.wait_for(limit) != std::future_status::ready) {
    std::fprintf(stderr, "WATCHDOG: %s did not finish within %lld s (a hang); aborting\n", what,
                 static_cast<long long>(limit.count()));
    std::fflush(stderr);
    std::abort();
  }
  return fut.get();
}

unsigned short unused_port() {
  net::io_context ctx;
  tcp::acceptor a(ctx, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  return a.local_endpoint().port();
}

bool has(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// Refusals reported to on_refusal, shared by the threads of a test.
struct refusal_log {
  std::mutex m;
  std::vector<std::string> lines;  // "peer: reason"
  void add(const std::string& peer, const std::string& reason) {
    const std::lock_guard<std::mutex> g(m);
    lines.push_back(peer + ": " + reason);
  }
  std::vector<std::string> all() {
    const std::lock_guard<std::mutex> g(m);
    return lines;
  }
  std::string joined() {
    std::string s;
    for (const auto& l : all()) s += l + "\n";
    return s;
  }
};

dho2::asio_options rank_options(int rank, int size, unsigned short port, const std::string& secret,
                                refusal_log* log = nullptr) {
  dho2::asio_options o;
  o.rank = rank;
  o.size = size;
  o.port = port;
  o.secret = secret;
  o.timeout = 10s;
  o.connect_timeout = 10s;
  if (log) {
    o.on_refusal = [log](const std::string& peer, const std::string& reason) {
      log->add(peer, reason);
    };
  }
  return o;
}

// The outcome of one rank: the transport_error text ("" if none) and what the body recorded.
struct outcome {
  std::string error;
  std::vector<double> values;
  double seconds = 0.0;
};

// Constructs a transport with `o`, then runs `body` on it; catches transport_error.
outcome run_rank(const dho2::asio_options& o,
                 const std::function<void(dho2::asio_transport&, outcome&)>& body) {
  outcome out;
  const auto start = std::chrono::steady_clock::now();
  try {
    dho2::asio_transport t(o);
    body(t, out);
  } catch (const dho2::transport_error& e) {
    out.error = e.what();
  }
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

// all_reduce_sum of (rank + 1)·(1, 2, 3), recorded.
void sum_ranks(dho2::asio_transport& t, outcome& out) {
  std::vector<double> v{1.0 * (t.rank() + 1), 2.0 * (t.rank() + 1), 3.0 * (t.rank() + 1)};
  t.all_reduce_sum(std::span<double>(v));
  out.values = v;
}

// A raw TCP peer of the rendezvous port speaking the handshake by hand.
using raw_peer = dho2_test::raw_tcp_peer;

au::offer offer_of(std::uint32_t rank, std::uint32_t peer, std::uint32_t size, au::nonce n = {}) {
  au::offer o;
  o.n = n;
  o.rank = rank;
  o.peer = peer;
  o.size = size;
  return o;
}

std::string hex(std::span<const unsigned char> b) {
  std::string s;
  char buf[3];
  for (const unsigned char c : b) {
    std::snprintf(buf, sizeof buf, "%02x", static_cast<unsigned>(c));
    s += buf;
  }
  return s;
}

}  // namespace

TEST_CASE("asio auth: HMAC-SHA256 matches RFC 4231 test cases 1 2 and 6") {
  const std::vector<unsigned char> key1(20, 0x0b);
  const std::string data1 = "Hi There";
  CHECK(hex(au::hmac_sha256(key1, au::key_of(data1))) ==
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
  const std::string key2 = "Jefe";
  const std::string data2 = "what do ya want for nothing?";
  CHECK(hex(au::hmac_sha256(au::key_of(key2), au::key_of(data2))) ==
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  const std::vector<unsigned char> key6(131, 0xaa);  // a key longer than the block size
  const std::string data6 = "Test Using Larger Than Block-Size Key - Hash Key First";
  CHECK(hex(au::hmac_sha256(key6, au::key_of(data6))) ==
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");

  // A proof depends on every input: role, nonce order, size, both ranks, token, secret.
  au::nonce a{};
  au::nonce b{};
  a[0] = 1;
  b[0] = 2;
  const auto base = au::proof(job_secret, au::role::connecting, a, b, 3, 2, 1, 7);
  CHECK(au::same(base, au::proof(job_secret, au::role::connecting, a, b, 3, 2, 1, 7)));
  CHECK_FALSE(au::same(base, au::proof(job_secret, au::role::accepting, a, b, 3, 2, 1, 7)));
  CHECK_FALSE(au::same(base, au::proof(job_secret, au::role::connecting, b, a, 3, 2, 1, 7)));
  CHECK_FALSE(au::same(base, au::proof(job_secret, au::role::connecting, a, b, 4, 2, 1, 7)));
  CHECK_FALSE(au::same(base, au::proof(job_secret, au::role::connecting, a, b, 3, 1, 2, 7)));
  CHECK_FALSE(au::same(base, au::proof(job_secret, au::role::connecting, a, b, 3, 2, 1, 8)));
  CHECK_FALSE(au::same(base, au::proof(other_secret, au::role::connecting, a, b, 3, 2, 1, 7)));
  CHECK_FALSE(au::same(au::fresh_nonce(), au::fresh_nonce()));
}

TEST_CASE("asio auth: P = 2 and 3 with the same secret run collectives and split") {
  for (const int p : {2, 3}) {
    CAPTURE(p);
    refusal_log log;
    const unsigned short port = unused_port();
    const auto results = guarded(60s, "authenticated job", [&] {
      std::vector<std::future<outcome>> ranks;
      for (int r = 0; r < p; ++r) {
        ranks.push_back(std::async(std::launch::async, [&, r] {
          return run_rank(rank_options(r, p, port, job_secret, &log),
                          [](dho2::asio_transport& t, outcome& out) {
                            sum_ranks(t, out);
                            std::array<std::byte, 4> b{};
                            if (t.rank() == t.size() - 1) b.fill(std::byte{42});
                            t.broadcast(b, t.size() - 1);
                            out.values.push_back(static_cast<double>(b[3]));
                            t.barrier();
                            // Two groups (even and odd ranks): each builds its own mesh.
                            auto sub = t.split(t.rank() % 2, t.rank());
                            std::vector<float> v(5, static_cast<float>(t.rank()));
                            sub.all_reduce_sum(std::span<float>(v));
                            out.values.push_back(static_cast<double>(v[4]));
                          });
        }));
      }
      std::vector<outcome> out;
      for (auto& f : ranks) out.push_back(f.get());
      return out;
    });
    const double total = p * (p + 1) / 2.0;  // Σ (r + 1)
    for (int r = 0; r < p; ++r) {
      const auto& o = results[static_cast<std::size_t>(r)];
      CAPTURE(r);
      INFO("expected no error, got: " << o.error);
      REQUIRE(o.error == "");
      REQUIRE(o.values.size() == 5);
      CHECK(o.values[0] == total);
      CHECK(o.values[1] == 2 * total);
      CHECK(o.values[2] == 3 * total);
      CHECK(o.values[3] == 42.0);                                  // broadcast from the last rank
      const double group = r % 2 == 0 ? (p == 3 ? 0 + 2 : 0) : 1;  // Σ ranks of the same parity
      CHECK(o.values[4] == group);
    }
    INFO("refusals (expected none):\n" << log.joined());
    CHECK(log.all().empty());
  }
}

TEST_CASE(
    "asio auth: a rank with a wrong secret is refused and the job fails naming authentication") {
  refusal_log log;
  const unsigned short port = unused_port();
  const auto results = guarded(30s, "wrong secret", [&] {
    std::vector<std::future<outcome>> ranks;
    for (int r = 0; r < 3; ++r) {
      ranks.push_back(std::async(std::launch::async, [&, r] {
        auto o = rank_options(r, 3, port, r == 2 ? other_secret : job_secret, &log);
        o.connect_timeout = 1500ms;
        o.timeout = 2s;
        return run_rank(o, sum_ranks);
      }));
    }
    std::vector<outcome> out;
    for (auto& f : ranks) out.push_back(f.get());
    return out;
  });
  for (std::size_t r = 0; r < 3; ++r) {
    CAPTURE(r);
    INFO("rank error: " << results[r].error << " (after " << results[r].seconds << " s)");
    CHECK(has(results[r].error, "authentication failed"));
    CHECK(results[r].seconds < 5.0);  // connect_timeout 1.5 s + timeout 2 s at most
  }
  CHECK(has(results[0].error,
            "only 1 of 2 ranks joined within connect_timeout = 1.5 s "
            "(missing: 2); refused 1 connection: 127.0.0.1:"));
  CHECK(has(results[1].error, "peer 0 (127.0.0.1:"));  // from rank 0's abort frame
  CHECK(has(results[2].error, "asio rendezvous [rank 2, world size 3]: peer 0 (127.0.0.1:"));
  CHECK(has(results[2].error, "refused the connection from 127.0.0.1:"));
  CHECK(results[2].seconds < 1.0);  // the refused rank learns it at once
  const auto lines = log.all();
  INFO("refusals:\n" << log.joined());
  REQUIRE(lines.size() == 1);
  CHECK(has(lines[0], "127.0.0.1:"));
  CHECK(has(lines[0], "authentication failed: wrong proof"));
}

TEST_CASE(
    "asio auth: rank 0 keeps waiting after refusing wrong secrets and the right rank then joins") {
  refusal_log log;
  const unsigned short port = unused_port();
  const auto results = guarded(60s, "refused, then the right rank", [&] {
    auto rank0 = std::async(std::launch::async, [&] {
      return run_rank(rank_options(0, 2, port, job_secret, &log), sum_ranks);
    });
    // Impostors first (one after the other): another secret, and no secret at all.
    auto wrong = rank_options(1, 2, port, other_secret);
    const outcome impostor = run_rank(wrong, sum_ranks);
    wrong.secret.clear();
    const outcome keyless = run_rank(wrong, sum_ranks);
    const outcome rank1 = run_rank(rank_options(1, 2, port, job_secret), sum_ranks);
    return std::vector<outcome>{rank0.get(), rank1, impostor, keyless};
  });
  INFO("rank 0: " << results[0].error);
  INFO("rank 1: " << results[1].error);
  CHECK(results[0].error == "");
  CHECK(results[1].error == "");
  CHECK(results[0].values == std::vector<double>{3.0, 6.0, 9.0});
  CHECK(results[1].values == results[0].values);
  INFO("impostor: " << results[2].error);
  INFO("keyless: " << results[3].error);
  CHECK(has(results[2].error, "authentication failed"));
  CHECK(has(results[3].error, "authentication failed"));
  INFO("refusals:\n" << log.joined());
  CHECK(log.all().size() == 2);
}

TEST_CASE("asio auth: hostile raw clients are refused without harm and the job still forms") {
  constexpr std::uint64_t huge = std::uint64_t{1} << 40;  // 1 TiB: must never be allocated
  refusal_log log;
  const unsigned short port = unused_port();
  std::vector<std::string> answers;
  const auto results = guarded(60s, "hostile raw clients", [&] {
    auto rank0 = std::async(std::launch::async, [&] {
      auto o = rank_options(0, 2, port, job_secret, &log);
      o.timeout = 1s;  // a stalled handshake step is refused after 1 s
      return run_rank(o, sum_ranks);
    });
    {  // garbage
      raw_peer c(port);
      const std::string junk = "GET / HTTP/1.1\r\nHost: dho2\r\n\r\n  ";
      c.send(std::span(reinterpret_cast<const unsigned char*>(junk.data()), junk.size()));
      answers.push_back(c.rest());
    }
    {  // another protocol version
      raw_peer c(port);
      wire::header h;
      h.type = wire::kind::auth;
      h.version = 1;
      h.length = au::offer_size;
      c.send(wire::encode(h));
      answers.push_back(c.rest());
    }
    {  // an offer with a huge length
      raw_peer c(port);
      wire::header h;
      h.type = wire::kind::auth;
      h.length = huge;
      c.send(wire::encode(h));
      answers.push_back(c.rest());
    }
    {  // a valid offer, then silence in the middle of the handshake
      raw_peer c(port);
      c.frame(wire::kind::auth, 0, au::encode_offer(offer_of(1, 0, 2, au::fresh_nonce())));
      (void)c.expect<au::offer_size>(wire::kind::auth);
      answers.push_back(c.rest());
    }
    {  // half a header, then close
      raw_peer c(port);
      const std::array<unsigned char, 7> half{'D', 'H', 'O', '2', 2, 0, 7};
      c.send(half);
      c.socket.shutdown(tcp::socket::shutdown_send);
      answers.push_back(c.rest());
    }
    const outcome rank1 = run_rank(rank_options(1, 2, port, job_secret), sum_ranks);
    return std::vector<outcome>{rank0.get(), rank1};
  });
  INFO("rank 0: " << results[0].error);
  INFO("rank 1: " << results[1].error);
  CHECK(results[0].error == "");
  CHECK(results[1].error == "");
  CHECK(results[0].values == std::vector<double>{3.0, 6.0, 9.0});
  const auto lines = log.all();
  INFO("refusals:\n" << log.joined());
  REQUIRE(lines.size() == 5);
  CHECK(has(lines[0], "bad magic 0x20544547 (not a DHO2 frame)"));
  CHECK(has(lines[1], "protocol version 1, this rank speaks 2"));
  CHECK(has(lines[2], "an auth frame has 1099511627776 bytes, expected 44"));
  CHECK(has(lines[3], "no data for 1.0 s"));
  CHECK(has(lines[4], "connection closed"));
  REQUIRE(answers.size() == 5);
  CHECK(has(answers[0], "refused the connection from 127.0.0.1:"));  // the abort frame
  CHECK(has(answers[0], "bad magic"));
  CHECK(has(answers[3], "no data for 1.0 s"));
}

TEST_CASE("asio auth: without on_refusal a refusal is one std::clog line") {
  std::ostringstream captured;
  std::streambuf* const saved = std::clog.rdbuf(captured.rdbuf());
  const unsigned short port = unused_port();
  const auto results = guarded(30s, "refusal on std::clog", [&] {
    auto rank0 = std::async(std::launch::async, [&] {
      auto o = rank_options(0, 2, port, job_secret);
      o.connect_timeout = 1s;
      return run_rank(o, sum_ranks);
    });
    {
      raw_peer c(port);
      const std::array<unsigned char, 32> zeros{};
      c.send(zeros);
      (void)c.rest();
    }
    return rank0.get();
  });
  std::clog.rdbuf(saved);
  INFO("std::clog: " << captured.str());
  CHECK(has(captured.str(),
            "dho2: asio rendezvous [rank 0, world size 2]: refused the connection from "
            "127.0.0.1:"));
  CHECK(has(captured.str(), ": bad magic 0x00000000 (not a DHO2 frame)\n"));
  INFO("rank 0: " << results.error);
  CHECK(has(results.error, "(missing: 1); refused 1 connection: 127.0.0.1:"));
}

TEST_CASE("asio auth: a proof replayed from another connection is refused") {
  refusal_log log;
  const unsigned short port = unused_port();
  const auto results = guarded(60s, "replayed proof", [&] {
    auto rank0 = std::async(std::launch::async, [&] {
      return run_rank(rank_options(0, 2, port, job_secret, &log), sum_ranks);
    });
    const au::nonce mine = au::fresh_nonce();
    au::mac recorded{};
    {  // a correct handshake (the test holds the secret), then a close instead of the hello
      raw_peer c(port);
      c.frame(wire::kind::auth, 0, au::encode_offer(offer_of(1, 0, 2, mine)));
      const auto a = au::decode_offer(c.expect<au::offer_size>(wire::kind::auth));
      recorded = au::proof(job_secret, au::role::connecting, a.n, mine, 2, 1, 0, 0);
      c.frame(wire::kind::auth, 1, recorded);
      const auto back = c.expect<au::mac_size>(wire::kind::auth);
      if (!au::same(back, au::proof(job_secret, au::role::accepting, mine, a.n, 2, 1, 0, 0))) {
        throw std::runtime_error("rank 0's proof does not verify");
      }
    }
    std::string answer;
    {  // the same offer and the recorded proof on a new connection: rank 0's nonce differs
      raw_peer c(port);
      c.frame(wire::kind::auth, 0, au::encode_offer(offer_of(1, 0, 2, mine)));
      (void)c.expect<au::offer_size>(wire::kind::auth);
      c.frame(wire::kind::auth, 1, recorded);
      answer = c.rest();
    }
    const outcome rank1 = run_rank(rank_options(1, 2, port, job_secret), sum_ranks);
    return std::vector<outcome>{rank0.get(), rank1, outcome{answer, {}, 0.0}};
  });
  INFO("rank 0: " << results[0].error);
  CHECK(results[0].error == "");
  CHECK(results[1].error == "");
  CHECK(has(results[2].error, "authentication failed: wrong proof"));  // the abort frame
  const auto lines = log.all();
  INFO("refusals:\n" << log.joined());
  REQUIRE(lines.size() == 2);
  CHECK(has(lines[0], "connection closed"));  // authenticated, then no hello
  CHECK(has(lines[1], "authentication failed: wrong proof"));
}

TEST_CASE("asio auth: a duplicate rank claim is refused and the job continues") {
  refusal_log log;
  const unsigned short port = unused_port();
  std::atomic<int> finished{0};
  const auto results = guarded(60s, "duplicate rank", [&] {
    const auto rank = [&](int r) {
      return std::async(std::launch::async, [&, r] {
        auto out = run_rank(rank_options(r, 3, port, job_secret, &log), sum_ranks);
        ++finished;
        return out;
      });
    };
    auto rank0 = rank(0);
    auto first = rank(1);
    auto second = rank(1);  // the same claim: whichever authenticates second is refused
    const auto until = std::chrono::steady_clock::now() + 20s;
    while (finished.load() == 0 && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(10ms);
    }
    auto rank2 = rank(2);
    return std::vector<outcome>{rank0.get(), first.get(), second.get(), rank2.get()};
  });
  INFO("rank 0: " << results[0].error);
  INFO("rank 1 (first): " << results[1].error);
  INFO("rank 1 (second): " << results[2].error);
  INFO("rank 2: " << results[3].error);
  CHECK(results[0].error == "");
  CHECK(results[3].error == "");
  const bool first_refused = !results[1].error.empty();
  CHECK(first_refused != !results[2].error.empty());  // exactly one of the two is refused
  const auto& refused = first_refused ? results[1] : results[2];
  const auto& joined = first_refused ? results[2] : results[1];
  CHECK(has(refused.error, "claims rank 1, which already joined"));
  CHECK(joined.error == "");
  CHECK(joined.values == std::vector<double>{6.0, 12.0, 18.0});
  CHECK(results[3].values == joined.values);
  const auto lines = log.all();
  INFO("refusals:\n" << log.joined());
  REQUIRE(lines.size() == 1);
  CHECK(has(lines[0], "claims rank 1, which already joined (peer 1 (127.0.0.1:"));
}

TEST_CASE("asio auth: options validate the secret and the policy and DHO2_SECRET_FILE is a path") {
  const auto message = [](const std::function<void()>& f) -> std::string {
    try {
      f();
    } catch (const dho2::invalid_options& e) {
      return e.what();
    }
    return "";
  };
  dho2::asio_options o;
  o.size = 2;
  o.port = 5000;
  CHECK(message([&] { o.validate(); }) == "");  // loopback without a secret: allowed
  o.secret = "short";
  CHECK(has(message([&] { o.validate(); }),
            "asio_options::secret = <5 bytes>. Violated constraint: empty (no secret) or at "
            "least 16 bytes"));
  CHECK_FALSE(has(message([&] { o.validate(); }), "short"));  // never printed
  o.secret.clear();
  o.authentication = dho2::asio_authentication::required;
  CHECK(has(message([&] { o.validate(); }),
            "asio_options::secret = <empty>. Violated constraint: set (e.g. from "
            "DHO2_SECRET_FILE) when authentication = required"));
  o.authentication = dho2::asio_authentication::automatic;
  o.bind_address = "0.0.0.0";
  CHECK(has(message([&] { o.validate(); }),
            "asio_options::secret = <empty>. Violated constraint: set (e.g. from "
            "DHO2_SECRET_FILE) when bind_address (= \"0.0.0.0\") is not a loopback address; or "
            "set authentication = asio_authentication::insecure"));
  CHECK(has(message([&] { dho2::asio_transport t(o); }), "asio_options::secret"));
  o.authentication = dho2::asio_authentication::insecure;
  CHECK(message([&] { o.validate(); }) == "");
  o.authentication = dho2::asio_authentication::automatic;
  o.secret = job_secret;
  CHECK(message([&] { o.validate(); }) == "");
  o.bind_address = "::1";
  o.secret.clear();
  CHECK(message([&] { o.validate(); }) == "");

  // DHO2_SECRET_FILE: the file's bytes without the trailing newline.
  const auto dir = std::filesystem::temp_directory_path();
  const auto path = (dir / ("dho2_secret_" + std::to_string(unused_port()))).string();
  {
    std::ofstream f(path, std::ios::binary);
    f << job_secret << "\n";
  }
  std::filesystem::permissions(
      path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  std::vector<std::pair<const char*, std::optional<std::string>>> saved;
  for (const char* name : {"DHO2_RANK", "DHO2_WORLD_SIZE", "DHO2_RENDEZVOUS", "DHO2_BIND_ADDRESS",
                           "DHO2_SECRET_FILE"}) {
    const char* v = std::getenv(name);
    saved.emplace_back(name, v ? std::optional<std::string>(v) : std::nullopt);
    unsetenv(name);
  }
  setenv("DHO2_RANK", "0", 1);
  setenv("DHO2_WORLD_SIZE", "2", 1);
  setenv("DHO2_RENDEZVOUS", "127.0.0.1:5000", 1);
  setenv("DHO2_SECRET_FILE", path.c_str(), 1);
  CHECK(dho2::asio_options::from_environment().secret == job_secret);
  setenv("DHO2_BIND_ADDRESS", "0.0.0.0", 1);
  CHECK(message([] { (void)dho2::asio_options::from_environment(); }) == "");
  unsetenv("DHO2_SECRET_FILE");
  CHECK(has(message([] { (void)dho2::asio_options::from_environment(); }),
            "asio_options::secret = <empty>"));
  setenv("DHO2_SECRET_FILE", (path + ".missing").c_str(), 1);
  CHECK(has(message([] { (void)dho2::asio_options::from_environment(); }),
            "DHO2_SECRET_FILE = \"" + path +
                ".missing\". Violated constraint: a readable file "
                "holding the secret"));
  {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f << "\n";
  }
  setenv("DHO2_SECRET_FILE", path.c_str(), 1);
  CHECK(has(message([] { (void)dho2::asio_options::from_environment(); }),
            "a file holding a non-empty secret"));
  std::filesystem::remove(path);
  for (const auto& [name, value] : saved) {
    if (value) {
      setenv(name, value->c_str(), 1);
    } else {
      unsetenv(name);
    }
  }
}

// --- Concurrent handshakes (issue 13, item 3): idle, slow and hostile connections on a listener
// must not delay the real peers, and refusals are reported at a bounded rate.

namespace {

// std::clog into a string until stop() or the end of the scope (also when a check throws).
class clog_capture {
 public:
  clog_capture() : saved_(std::clog.rdbuf(text_.rdbuf())) {}
  clog_capture(const clog_capture&) = delete;
  clog_capture& operator=(const clog_capture&) = delete;
  ~clog_capture() { stop(); }
  // Restores std::clog; what it received meanwhile.
  std::string stop() {
    if (saved_ != nullptr) std::clog.rdbuf(saved_);
    saved_ = nullptr;
    return text_.str();
  }

 private:
  std::ostringstream text_;
  std::streambuf* saved_;
};

// The seconds until every rank of a P-rank job (rank 0 already listening with `o0`) has formed
// and summed, with ranks 1..P-1 started now; every rank must succeed.
struct timed_job {
  std::vector<outcome> results;
  double seconds = 0.0;  // from the start of ranks 1..P-1 until the last rank is done
};

timed_job start_rest(int p, unsigned short port, std::future<outcome>& rank0) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::future<outcome>> rest;
  for (int r = 1; r < p; ++r) {
    rest.push_back(std::async(std::launch::async, [r, p, port] {
      return run_rank(rank_options(r, p, port, job_secret), sum_ranks);
    }));
  }
  timed_job j;
  j.results.push_back(rank0.get());
  for (auto& f : rest) j.results.push_back(f.get());
  j.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return j;
}

void check_formed(const timed_job& j) {
  const double total = static_cast<double>(j.results.size() * (j.results.size() + 1)) / 2.0;
  for (std::size_t r = 0; r < j.results.size(); ++r) {
    CAPTURE(r);
    INFO("expected rank " << r << " to form the job and sum, got error: " << j.results[r].error);
    REQUIRE(j.results[r].error == "");
    CHECK(j.results[r].values == std::vector<double>{total, 2 * total, 3 * total});
  }
}

}  // namespace

TEST_CASE("asio admission: a job starts at once while 0, 1, 5 or 50 idle connections wait") {
  // Before: rank 0 served one connection at a time, so each idle connection held the rendezvous
  // for a whole handshake step (here handshake_timeout = 5 s, timeout 10 s): 5 s or more each.
  for (const int idle : {0, 1, 5, 50}) {
    CAPTURE(idle);
    refusal_log log;
    const unsigned short port = unused_port();
    const timed_job j = guarded(60s, "job behind idle connections", [&] {
      auto rank0 = std::async(std::launch::async, [&] {
        return run_rank(rank_options(0, 3, port, job_secret, &log), sum_ranks);
      });
      std::vector<std::unique_ptr<raw_peer>> silent;
      for (int i = 0; i < idle; ++i) silent.push_back(std::make_unique<raw_peer>(port));
      std::this_thread::sleep_for(100ms);  // rank 0 has accepted them all
      return start_rest(3, port, rank0);
    });
    MESSAGE("P = 3 with " << idle << " idle connection(s) opened first: formed in " << j.seconds
                          << " s");
    check_formed(j);
    INFO("expected the job to form well within handshake_timeout = 5 s, took " << j.seconds
                                                                               << " s");
    CHECK(j.seconds < 2.5);
    // The idle connections are closed once the job has formed: reported, at most 10 one by one.
    const auto lines = log.all();
    INFO("refusals:\n" << log.joined());
    CHECK(lines.size() == static_cast<std::size_t>(std::min(idle, 10) + (idle > 10 ? 1 : 0)));
    for (std::size_t i = 0; i < lines.size() && i < 10; ++i) {
      CHECK(has(lines[i], "closed before its handshake completed: every rank has joined"));
    }
    if (idle > 10) {
      CHECK(has(lines.back(), ": refused " + std::to_string(idle - 10) +
                                  " more connections, not reported one by one (at most 10 "
                                  "reports per 10 s)"));
    }
  }
}

TEST_CASE("asio admission: a connection trickling bytes is refused at handshake_timeout") {
  // Before: each byte restarted the step's timeout, so a trickle held rank 0 until
  // connect_timeout. Now it is refused handshake_timeout (1 s) after its accept, and a second
  // trickle in progress while the real rank joins does not delay it.
  refusal_log log;
  const unsigned short port = unused_port();
  std::atomic<bool> stop{false};
  const auto trickle = [&] {
    try {
      raw_peer c(port);
      wire::header h;
      h.type = wire::kind::auth;
      h.length = au::offer_size;
      const auto hb = wire::encode(h);
      for (const unsigned char b : hb) {  // 32 header bytes, one per 100 ms: 3.2 s in all
        if (stop.load()) break;
        c.send(std::span(&b, 1));
        std::this_thread::sleep_for(100ms);
      }
      (void)c.rest();
    } catch (const std::exception&) {  // the listener closed the connection: expected
    }
  };
  double rank1_seconds = 0.0;
  const auto results = guarded(30s, "trickling connections", [&] {
    auto rank0 = std::async(std::launch::async, [&] {
      auto o = rank_options(0, 2, port, job_secret, &log);
      o.handshake_timeout = 1s;
      return run_rank(o, sum_ranks);
    });
    std::thread first(trickle);
    std::this_thread::sleep_for(1500ms);  // the first trickle is refused at 1 s
    std::thread second(trickle);
    std::this_thread::sleep_for(300ms);  // the second is trickling now
    const outcome rank1 = run_rank(rank_options(1, 2, port, job_secret), sum_ranks);
    rank1_seconds = rank1.seconds;
    std::vector<outcome> out{rank0.get(), rank1};
    stop = true;
    first.join();
    second.join();
    return out;
  });
  INFO("rank 0: " << results[0].error);
  INFO("rank 1: " << results[1].error);
  CHECK(results[0].error == "");
  CHECK(results[1].error == "");
  MESSAGE("rank 1 joined past a trickling connection in " << rank1_seconds << " s");
  INFO("expected rank 1 to join at once (the trickle is concurrent), took " << rank1_seconds);
  CHECK(rank1_seconds < 0.9);
  const auto lines = log.all();
  INFO("refusals:\n" << log.joined());
  REQUIRE(lines.size() == 2);
  CHECK(has(lines[0], "did not complete the handshake within handshake_timeout = 1.0 s"));
  CHECK(has(lines[1], "closed before its handshake completed: every rank has joined"));
}

TEST_CASE("asio admission: refusals are reported at most 10 per 10 s, the rest as one count") {
  clog_capture captured;
  const unsigned short port = unused_port();
  const auto results = guarded(60s, "many refusals", [&] {
    auto rank0 = std::async(std::launch::async, [&] {
      return run_rank(rank_options(0, 2, port, job_secret), sum_ranks);
    });
    for (int i = 0; i < 40; ++i) {  // 40 strangers, one after the other, each refused at once
      raw_peer c(port);
      const std::string junk = "GET / HTTP/1.1\r\nHost: dho2\r\n\r\n  ";  // a whole header
      c.send(std::span(reinterpret_cast<const unsigned char*>(junk.data()), junk.size()));
      (void)c.rest();
    }
    const outcome rank1 = run_rank(rank_options(1, 2, port, job_secret), sum_ranks);
    return std::vector<outcome>{rank0.get(), rank1};
  });
  const std::string text = captured.stop();
  INFO("rank 0: " << results[0].error);
  CHECK(results[0].error == "");
  CHECK(results[1].error == "");
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  INFO("std::clog:\n" << text);
  REQUIRE(lines.size() == 11);
  for (std::size_t i = 0; i < 10; ++i) CHECK(has(lines[i], ": bad magic 0x20544547"));
  CHECK(lines[10] ==
        "dho2: asio rendezvous [rank 0, world size 2]: refused 30 more connections, not reported "
        "one by one (at most 10 reports per 10 s)");
}

TEST_CASE("asio admission: a mesh listener accepts its peer at once past idle connections") {
  // The mesh (rank i accepting the ranks above it) had the same fault as the rendezvous: every
  // idle connection on its port held it for a handshake step. Rank 1 of 3 here, its listener
  // known, K idle connections, then rank 2 connects and authenticates.
  namespace d = dho2::detail;
  for (const int idle : {0, 5, 50}) {
    CAPTURE(idle);
    refusal_log log;
    d::asio_settings s;
    s.timeout = 10s;
    s.connect_timeout = 20s;
    s.secret = job_secret;
    s.on_refusal = [&log](const std::string& peer, const std::string& reason) {
      log.add(peer, reason);
    };
    d::asio_mesh one(1, 3, s);
    one.set_token(77);
    one.open_acceptor(0);
    const unsigned short port = one.listen_endpoint().port();
    std::vector<std::unique_ptr<raw_peer>> silent;
    for (int i = 0; i < idle; ++i) silent.push_back(std::make_unique<raw_peer>(port));
    std::string error;
    const auto start = std::chrono::steady_clock::now();
    const double seconds = guarded(60s, "mesh behind idle connections", [&] {
      std::thread two([&] {
        try {
          d::asio_mesh m(2, 3, s);
          m.set_token(77);
          auto l = m.connect_until({tcp::endpoint(net::ip::make_address("127.0.0.1"), port)},
                                   d::asio_clock::now() + 10s, false);
          l->set_name("peer 1");
          m.adopt(1, std::move(l));
          m.connect_peer(1, 10s);
        } catch (const std::exception& e) {
          error = e.what();
        }
      });
      try {
        one.build_mesh({0, 0, 0}, 1);  // connects to no one, accepts rank 2
      } catch (const std::exception& e) {
        error += std::string(" rank 1: ") + e.what();
      }
      two.join();
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    });
    MESSAGE("mesh accept with " << idle << " idle connection(s) first: " << seconds << " s");
    INFO("expected no error, got: " << error);
    CHECK(error.empty());
    CHECK(one.has_link(2));
    INFO("expected the peer to be accepted well within handshake_timeout = 5 s, took " << seconds
                                                                                       << " s");
    CHECK(seconds < 2.5);
    INFO("refusals:\n" << log.joined());
    CHECK(log.all().size() == static_cast<std::size_t>(std::min(idle, 10) + (idle > 10 ? 1 : 0)));
  }
}

TEST_CASE("asio admission: handshake_timeout is validated") {
  dho2::asio_options o;
  o.handshake_timeout = 0ms;
  std::string message;
  try {
    o.validate();
  } catch (const dho2::invalid_options& e) {
    message = e.what();
  }
  CHECK(message ==
        "asio_options::handshake_timeout (ms) = 0. Violated constraint: > 0 and <= 86400000 (one "
        "day)");
  o.handshake_timeout = 25h;
  CHECK_THROWS_AS(o.validate(), dho2::invalid_options);
  o.handshake_timeout = 2s;
  CHECK_NOTHROW(o.validate());
}

// --- Secret files (issue 13, item 3): bounded reads, clear messages, a warning when not private.

TEST_CASE("asio secret file: devices, directories and large files are refused before reading") {
  namespace fs = std::filesystem;
  const auto message = [](const std::function<void()>& f) -> std::string {
    try {
      f();
    } catch (const dho2::invalid_options& e) {
      return e.what();
    }
    return "";
  };
  const auto read = [](const std::string& path) {
    return [path] { (void)dho2::asio_options::read_secret_file(path, "--secret-file"); };
  };
  // Before: /dev/zero was read until memory ran out (guarded: a hang fails the test).
  const std::string zero =
      guarded(10s, "secret file /dev/zero", [&] { return message(read("/dev/zero")); });
  CHECK(zero ==
        "--secret-file = \"/dev/zero\". Violated constraint: a regular file holding the secret "
        "(this is a character device)");
  const fs::path dir =
      fs::temp_directory_path() / ("dho2_secret_dir_" + std::to_string(unused_port()));
  fs::create_directories(dir);
  // Before: a raw basic_filebuf error.
  CHECK(message(read(dir.string())) ==
        "--secret-file = \"" + dir.string() +
            "\". Violated constraint: a regular file holding the secret (this is a directory)");
  const fs::path big = dir / "big";
  {
    std::ofstream f(big, std::ios::binary);
    const std::string block(5000, 'x');
    f << block;
  }
  CHECK(message(read(big.string())) ==
        "--secret-file = \"" + big.string() +
            "\". Violated constraint: a file of at most 4096 bytes holding the secret (this one "
            "has 5000)");
  CHECK(has(message(read((dir / "none").string())), "(it does not exist)"));
  const std::string long_name = (dir / std::string(250, 'n')).string();
  const std::string long_message = message(read(long_name));
  INFO(long_message);
  CHECK(long_message.size() < 400);  // the path is cut to 200 bytes
  CHECK(has(long_message, "... (" + std::to_string(long_name.size()) + " bytes)"));
  fs::remove_all(dir);
}

TEST_CASE("asio secret file: a file group or others can access is read with one warning") {
  namespace fs = std::filesystem;
  const fs::path path =
      fs::temp_directory_path() / ("dho2_secret_mode_" + std::to_string(unused_port()));
  {
    std::ofstream f(path, std::ios::binary);
    f << job_secret << "\n";
  }
  fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                            fs::perms::others_read);
  std::vector<std::string> warnings;
  const auto warn = [&](const std::string& line) { warnings.push_back(line); };
  CHECK(dho2::asio_options::read_secret_file(path.string(), "--secret-file", warn) == job_secret);
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0] == "--secret-file \"" + path.string() +
                           "\": the secret file is accessible by group or others (mode 0644); "
                           "make it private: chmod 600 " +
                           path.string());
  // Without a callback: one line on std::clog.
  clog_capture captured;
  const std::string read_back = dho2::asio_options::read_secret_file(path.string());
  const std::string text = captured.stop();
  CHECK(read_back == job_secret);
  CHECK(text == "dho2: warning: secret file \"" + path.string() +
                    "\": the secret file is accessible by group or others (mode "
                    "0644); make it private: chmod 600 " +
                    path.string() + "\n");
  // A private file: no warning.
  fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write);
  warnings.clear();
  CHECK(dho2::asio_options::read_secret_file(path.string(), "--secret-file", warn) == job_secret);
  INFO("expected no warning for mode 0600, got: " << (warnings.empty() ? "" : warnings[0]));
  CHECK(warnings.empty());
  fs::remove(path);
}
