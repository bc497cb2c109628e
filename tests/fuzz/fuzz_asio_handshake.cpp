// libFuzzer target: the authentication handshake of dho2::asio_transport (asio_mesh::admit /
// connect_peer, include/dho2/transport/detail/asio_mesh.hpp and asio_auth.hpp) and the hello check
// (asio_wire::hello_defect) on arbitrary bytes. The first byte picks a mode:
//
//  0 (accept): a real asio_mesh, rank 1 of 4 with a fixed secret and session token, runs admit()
//    on one end of a socket pair; the fuzzer's peer on the other end plays the connecting rank
//    with the input's bytes: its offer frame (header and payload as they are), then — once the
//    engine's offer arrives — its proof frame, whose 32 proof bytes are a base proof XOR the
//    input's delta. The base is the genuine HMAC (computed here from the message layout of
//    docs/asio_wire_protocol.md, not with asio_auth::proof) or a near miss an attacker could
//    collect: the other role's proof, another session's (token), the nonces swapped. Flags bit 2
//    marks rank 3 as already joined.
//  1 (connect): the engine is rank 2 of 4 and runs connect_peer() towards rank 1; the peer
//    checks the engine's offer, answers with the input's offer frame, checks the engine's proof
//    and answers with the input's proof frame (base XOR delta; base 1 reflects the engine's own
//    proof back).
//  2 (hello): asio_wire::hello_defect on a 32-byte hello from an authenticated rank.
//
// The oracle: the engine accepts (admit returns the claimed rank, connect_peer returns)
// if and only if every frame header, the offer and the proof are the genuine ones — so a forged
// or mutated proof is never accepted — and otherwise refuses (accept: on_refusal once, -1) or
// fails with dho2::transport_error naming the reason. It sends its own offer only after a
// valid offer and reveals its proof only to a peer that proved first, and both are genuine.
//
// Input: mode | flags (bits 0-1 base proof, bit 2 rank 3 joined) | offer header 32 | offer
// payload 44 | proof header 32 | delta 32 (a short input ends the peer's bytes early: the
// engine sees the connection close). Hello mode: mode | world size selector | rank selector |
// hello 32. Built and run by tests/fuzz/run_fuzzers.sh; seeds in tests/fuzz/corpus/
// asio_handshake/ (tests/fuzz/make_asio_seeds.cpp writes them).

// Includes the TCP transport's internal headers directly (see
// include/dho2/detail/internal_header_check.hpp).
#define DHO2_INTERNAL_INCLUDE 1

#include "asio_fuzz_support.hpp"
#include <dho2/core/errors.hpp>
#include <dho2/transport/detail/asio_auth.hpp>
#include <dho2/transport/detail/asio_frame.hpp>
#include <dho2/transport/detail/asio_mesh.hpp>
#include <dho2/transport/detail/asio_rendezvous.hpp>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <span>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace wire = dho2::detail::asio_wire;
using dho2_fuzz::finding;
using dho2_fuzz::le;
using bytes32 = std::array<unsigned char, 32>;

const std::string job_secret = "fuzzing secret of 32 bytes, ok!!";
constexpr std::uint64_t job_token = 0x0123456789ABCDEFULL;
constexpr std::uint32_t world = 4;

void put(std::vector<unsigned char>& m, std::uint64_t v, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i)
    m.push_back(static_cast<unsigned char>((v >> (8 * i)) & 0xFFU));
}

// HMAC-SHA256(secret, "DHO2-auth" | role | verifier's nonce | prover's nonce | version 2 u16 |
// P u32 | connecting rank u32 | accepting rank u32 | token u64).
bytes32 genuine_proof(char role, const bytes32& verifier, const bytes32& prover, std::uint32_t p,
                      std::uint32_t connecting, std::uint32_t accepting, std::uint64_t token) {
  std::vector<unsigned char> m = {'D', 'H', 'O', '2', '-', 'a', 'u', 't', 'h'};
  m.push_back(static_cast<unsigned char>(role));
  m.insert(m.end(), verifier.begin(), verifier.end());
  m.insert(m.end(), prover.begin(), prover.end());
  put(m, 2, 2);
  put(m, p, 4);
  put(m, connecting, 4);
  put(m, accepting, 4);
  put(m, token, 8);
  if (m.size() != 96) finding("proof message is not 96 bytes");
  bytes32 out{};
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), job_secret.data(), static_cast<int>(job_secret.size()), m.data(), m.size(),
           out.data(), &len) == nullptr ||
      len != 32) {
    finding("HMAC failed");
  }
  return out;
}

bool genuine_header(std::span<const unsigned char> b, std::int32_t tag, std::uint64_t length) {
  const dho2_fuzz::wire_header h = dho2_fuzz::read_header(b);
  return h.magic == dho2_fuzz::dho2_magic && h.version == 2 && h.kind == 7 && h.op == 0 &&
         h.tag == tag && h.element == 0 && h.seq == 0 && h.length == length;
}

bytes32 take32(std::span<const unsigned char> b) {
  bytes32 a{};
  std::copy(b.begin(), b.begin() + 32, a.begin());
  return a;
}

// The input, cut into the peer's pieces (each possibly short).
struct script {
  unsigned base = 0;
  bool joined = false;
  std::span<const unsigned char> offer;  // header 32 + payload 44
  std::span<const unsigned char> proof_header;
  std::span<const unsigned char> delta;
  explicit script(std::span<const unsigned char> in) {
    if (in.empty()) return;
    base = in[0] & 3U;
    joined = (in[0] & 4U) != 0;
    auto rest = in.subspan(1);
    const auto cut = [&](std::size_t n) {
      const auto s = rest.first(std::min(n, rest.size()));
      rest = rest.subspan(s.size());
      return s;
    };
    offer = cut(76);
    proof_header = cut(32);
    delta = cut(32);
  }
  bool offer_header_ok() const { return offer.size() == 76 && genuine_header(offer, 0, 44); }
  bool proof_header_ok() const {
    return proof_header.size() == 32 && genuine_header(proof_header, 1, 32);
  }
  bool delta_zero() const {
    return delta.size() == 32 &&
           std::all_of(delta.begin(), delta.end(), [](auto c) { return c == 0; });
  }
  std::uint32_t field(std::size_t at) const { return static_cast<std::uint32_t>(le(offer, at, 4)); }
  // The proof bytes the peer sends: `b` XOR the delta, as many bytes as the delta has.
  std::vector<unsigned char> proof_bytes(const bytes32& b) const {
    std::vector<unsigned char> out(proof_header.begin(), proof_header.end());
    for (std::size_t i = 0; i < delta.size(); ++i) out.push_back(b[i] ^ delta[i]);
    return out;
  }
};

// What the fuzzer's peer saw from the engine.
struct seen {
  std::vector<dho2_fuzz::peer_frame> offers, proofs, aborts;
  std::string unexpected;
  void record(const dho2_fuzz::peer_frame& f) {
    if (f.h.kind == 7 && f.h.tag == 0 && f.h.length == 44 && f.h.op == 0 && f.h.seq == 0) {
      offers.push_back(f);
    } else if (f.h.kind == 7 && f.h.tag == 1 && f.h.length == 32 && f.h.op == 0 && f.h.seq == 0) {
      proofs.push_back(f);
    } else if (f.h.kind == 6) {
      aborts.push_back(f);
    } else {
      unexpected =
          "a frame of kind " + std::to_string(f.h.kind) + " tag " + std::to_string(f.h.tag);
    }
  }
  // Ends the peer's bytes and keeps what the engine still sends until it closes.
  void drain(int fd) {
    ::shutdown(fd, SHUT_WR);
    dho2_fuzz::peer_frame f;
    while (dho2_fuzz::recv_frame(fd, f)) record(f);
  }
};

dho2::detail::asio_settings settings() {
  dho2::detail::asio_settings s;
  s.timeout = std::chrono::milliseconds(5000);
  s.secret = job_secret;
  return s;
}

void fuzz_accept(std::span<const unsigned char> in) {
  const script sc(in);
  std::vector<std::string> refusals;
  auto s = settings();
  s.on_refusal = [&](const std::string&, const std::string& why) { refusals.push_back(why); };
  auto engine = std::make_unique<dho2::detail::asio_mesh>(1, 4, s);
  engine->set_token(job_token);
  if (sc.joined) {
    auto joined = std::make_unique<dho2::detail::asio_link>(engine->io().context());
    joined->set_name("peer 3 (joined)");
    engine->adopt(3, std::move(joined));
  }
  dho2_fuzz::socket_pair sp;
  auto link = dho2_fuzz::make_link(engine->io().context(), sp, "connection from fuzz");
  seen peer;
  std::thread connecting([&] {
    const int fd = sp.peer;
    // Unless the header is genuine the engine answers nothing but may wait for more bytes (a
    // longer frame): end them at once.
    if (!dho2_fuzz::send_all(fd, sc.offer) || !sc.offer_header_ok()) return peer.drain(fd);
    dho2_fuzz::peer_frame f;
    if (!dho2_fuzz::recv_frame(fd, f)) return;
    peer.record(f);
    if (peer.offers.empty()) return peer.drain(fd);
    const bytes32 nc = take32(sc.offer.subspan(32));
    const bytes32 na = take32(f.payload);
    const std::uint32_t c = sc.field(64), a = sc.field(68), p = sc.field(72);
    bytes32 b{};
    switch (sc.base) {
      case 0: b = genuine_proof('C', na, nc, p, c, a, job_token); break;
      case 1: b = genuine_proof('A', na, nc, p, c, a, job_token); break;
      case 2: b = genuine_proof('C', na, nc, p, c, a, job_token ^ 1U); break;
      default: b = genuine_proof('C', nc, na, p, c, a, job_token); break;
    }
    dho2_fuzz::send_all(fd, sc.proof_bytes(b));
    peer.drain(fd);
  });
  const int got =
      engine->admit(std::move(link), dho2::detail::asio_clock::now() + std::chrono::seconds(5));
  engine.reset();  // closes the connection: the peer sees the end
  connecting.join();

  const std::uint32_t claimed = sc.offer.size() == 76 ? sc.field(64) : 0;
  const bool offer_ok = sc.offer_header_ok() && sc.field(72) == world && sc.field(68) == 1 &&
                        (claimed == 2 || claimed == 3);
  const bool proved = offer_ok && sc.proof_header_ok() && sc.base == 0 && sc.delta_zero();
  const bool duplicate = sc.joined && claimed == 3;
  const bool accept = proved && !duplicate;
  dho2_fuzz::trace("accept: returned " + std::to_string(got) +
                   (refusals.empty() ? "" : ", refused: " + refusals.front()));
  if (!peer.unexpected.empty()) finding("admit sent " + peer.unexpected);
  if (got != (accept ? static_cast<int>(claimed) : -1)) {
    finding("admit returned " + std::to_string(got) + ", the oracle expects " +
            (accept ? "rank " + std::to_string(claimed) : "a refusal"));
  }
  if (peer.offers.size() != (offer_ok ? 1U : 0U)) {
    finding("admit sent " + std::to_string(peer.offers.size()) + " offers, expected " +
            (offer_ok ? "1 (the offer is valid)" : "none (the offer is not valid)"));
  }
  if (offer_ok) {
    const auto& o = peer.offers.front().payload;
    if (le(o, 32, 4) != 1 || le(o, 36, 4) != claimed || le(o, 40, 4) != world) {
      finding("admit's offer names the wrong ranks or size");
    }
  }
  if (peer.proofs.size() != (accept ? 1U : 0U)) {
    finding("admit revealed " + std::to_string(peer.proofs.size()) +
            " proofs; expected one only to a peer that proved first");
  }
  if (accept) {
    const bytes32 want =
        genuine_proof('A', take32(sc.offer.subspan(32)), take32(peer.offers.front().payload), world,
                      claimed, 1, job_token);
    if (take32(peer.proofs.front().payload) != want) finding("admit's own proof is wrong");
    if (!refusals.empty()) finding("an accepted connection was also refused: " + refusals.front());
    return;
  }
  if (refusals.size() != 1 || refusals.front().empty()) {
    finding("a refusal must be reported once, got " + std::to_string(refusals.size()));
  }
  const std::string& why = refusals.front();
  if (duplicate && proved && !dho2_fuzz::contains(why, "which already joined")) {
    finding("a duplicate rank was refused with '" + why + "'");
  }
  if (offer_ok && sc.proof_header_ok() && sc.delta.size() == 32 && !proved &&
      !dho2_fuzz::contains(why, "authentication failed: wrong proof")) {
    finding("a wrong proof was refused with '" + why + "'");
  }
  for (const auto& f : peer.aborts) {
    if (!dho2_fuzz::contains(std::string(f.payload.begin(), f.payload.end()),
                             "refused the connection")) {
      finding("the refusal's abort frame does not say so");
    }
  }
}

void fuzz_connect(std::span<const unsigned char> in) {
  const script sc(in);
  auto engine = std::make_unique<dho2::detail::asio_mesh>(2, 4, settings());
  engine->set_token(job_token);
  dho2_fuzz::socket_pair sp;
  engine->adopt(1, dho2_fuzz::make_link(engine->io().context(), sp, "peer 1 (fuzz)"));
  seen peer;
  bytes32 nc{};
  std::string bad_offer;
  std::thread accepting([&] {
    const int fd = sp.peer;
    dho2_fuzz::peer_frame f;
    if (!dho2_fuzz::recv_frame(fd, f)) {
      bad_offer = "no offer";
      return;
    }
    peer.record(f);
    if (peer.offers.size() != 1 || le(f.payload, 32, 4) != 2 || le(f.payload, 36, 4) != 1 ||
        le(f.payload, 40, 4) != world) {
      bad_offer = "a wrong offer";
      return peer.drain(fd);
    }
    nc = take32(f.payload);
    if (!dho2_fuzz::send_all(fd, sc.offer) || !sc.offer_header_ok()) return peer.drain(fd);
    if (!dho2_fuzz::recv_frame(fd, f)) return;
    peer.record(f);
    if (peer.proofs.empty()) return peer.drain(fd);
    const bytes32 na = take32(sc.offer.subspan(32));
    bytes32 b{};
    switch (sc.base) {
      case 0: b = genuine_proof('A', nc, na, world, 2, 1, job_token); break;
      case 1: b = take32(f.payload); break;  // its own proof reflected
      case 2: b = genuine_proof('A', nc, na, world, 2, 1, job_token ^ 1U); break;
      default: b = genuine_proof('A', na, nc, world, 2, 1, job_token); break;
    }
    dho2_fuzz::send_all(fd, sc.proof_bytes(b));
    peer.drain(fd);
  });
  std::string error;
  try {
    try {  // as rendezvous_member and split call it: a defect fails the engine
      engine->connect_peer(1, std::chrono::milliseconds(5000));
    } catch (const dho2::transport_error&) {
      throw;
    } catch (const std::exception& e) {
      engine->fail(engine->prefix("rendezvous") + ": " + e.what());
    }
  } catch (const dho2::transport_error& e) {
    error = e.what();
  }
  engine.reset();
  accepting.join();

  dho2_fuzz::trace("connect: " + (error.empty() ? std::string("authenticated") : error));
  if (!bad_offer.empty()) finding("connect_peer sent " + bad_offer);
  if (!peer.unexpected.empty()) finding("connect_peer sent " + peer.unexpected);
  const bool offer_ok =
      sc.offer_header_ok() && sc.field(64) == 1 && sc.field(68) == 2 && sc.field(72) == world;
  const bool accept = offer_ok && sc.proof_header_ok() && sc.base == 0 && sc.delta_zero();
  if (error.empty() != accept) {
    finding(std::string("connect_peer ") + (error.empty() ? "accepted" : "failed: " + error) +
            ", the oracle expects " + (accept ? "success" : "a failure"));
  }
  if (peer.proofs.size() != (offer_ok ? 1U : 0U)) {
    finding("connect_peer sent " + std::to_string(peer.proofs.size()) + " proofs, expected " +
            (offer_ok ? "1" : "none (the answer is not valid)"));
  }
  if (offer_ok &&
      take32(peer.proofs.front().payload) !=
          genuine_proof('C', take32(sc.offer.subspan(32)), nc, world, 2, 1, job_token)) {
    finding("connect_peer's proof is wrong");
  }
  if (accept) return;
  if (!dho2_fuzz::contains(error, "asio rendezvous [rank 2, world size 4]: peer 1 (fuzz)")) {
    finding("connect_peer's error does not name the call and the peer: " + error);
  }
  if (offer_ok && sc.proof_header_ok() && sc.delta.size() == 32 &&
      !dho2_fuzz::contains(error, "authentication failed: its proof is wrong")) {
    finding("a wrong proof failed with '" + error + "'");
  }
  if (sc.offer_header_ok() && !offer_ok && !dho2_fuzz::contains(error, ": answers as rank ")) {
    finding("a wrong offer failed with '" + error + "'");
  }
}

void fuzz_hello(std::span<const unsigned char> in) {
  if (in.size() < 2 + wire::hello_size) return;
  const auto p = static_cast<std::uint32_t>(2 + in[0] % 15);
  const auto r = static_cast<std::uint32_t>(1 + in[1] % (p - 1));
  const std::uint32_t options = dho2::detail::asio_fingerprint(dho2::detail::asio_settings{});
  const auto b = in.subspan(2, wire::hello_size);
  std::array<unsigned char, wire::hello_size> raw{};
  std::copy(b.begin(), b.end(), raw.begin());
  const wire::hello h = wire::decode_hello(raw);
  if (wire::encode_hello(h) != raw) finding("encode_hello(decode_hello(b)) != b");
  const std::string why = wire::hello_defect(h, r, p, options);
  dho2_fuzz::trace("hello: " + (why.empty() ? std::string("accepted") : why));
  const unsigned little = std::endian::native == std::endian::little ? 1 : 0;
  const std::uint64_t port = le(b, 8, 2), family = b[11];
  const char* expect = nullptr;
  if (le(b, 0, 4) != r || le(b, 4, 4) != p) {
    expect = "after authenticating as rank ";
  } else if (b[10] != little) {
    expect = "byte order differs";
  } else if (le(b, 28, 4) != options) {
    expect = "options differ";
  } else if (port == 0 || (family != 0 && family != 4 && family != 6)) {
    expect = "malformed hello";
  }
  if (expect == nullptr ? !why.empty() : !dho2_fuzz::contains(why, expect)) {
    finding("hello_defect returned '" + why + "', expected " +
            (expect ? "'" + std::string(expect) + "...'" : std::string("acceptance")));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::span<const unsigned char> in(data + 1, size - 1);
  switch (data[0] % 3) {
    case 0: fuzz_accept(in); break;
    case 1: fuzz_connect(in); break;
    default: fuzz_hello(in); break;
  }
  return 0;
}
