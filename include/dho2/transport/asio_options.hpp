/// @file
/// `dho2::asio_options`: how a rank of `dho2::asio_transport` finds the others, its limits and
/// its secret (from code or from the environment); and `dho2::asio_authentication`, when a secret
/// is required. Included by `<dho2/transport/asio.hpp>`; needs Boost.Asio's headers only.
#pragma once

#define DHO2_INTERNAL_INCLUDE 1

#include <dho2/detail/validate.hpp>

#include <boost/asio/ip/address.hpp>
#include <boost/system/error_code.hpp>

#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <string>
#include <string_view>
#include <system_error>

namespace dho2 {

/// When `asio_transport` requires a shared secret (`asio_options::secret`). Every connection is
/// authenticated in every mode (docs/asio_wire_protocol.md, "Authentication"); without a secret
/// the HMAC key is empty, which keeps strays, other jobs and other protocol versions out but
/// not an attacker, who can compute the same proofs.
enum class asio_authentication {
  /// A secret is used when set; without one, every listener must bind a loopback address
  /// (`bind_address` "127.0.0.1", "::1", ...: only processes of this machine can connect), and
  /// `validate()` refuses any other address when `size > 1`.
  automatic,
  /// A secret must be set (`validate()` fails otherwise), whatever the address.
  required,
  /// No secret needed on any address (explicit opt-in, e.g. on a private cluster network):
  /// any process that can reach the ports can join. A secret, when set, is still used.
  insecure,
};

/// How an `asio_transport` rank finds its peers, and its limits. Every rank of a job must pass
/// the same `size`, `host`, `port`, timeouts, limits and `secret` (the rendezvous checks `size`,
/// `max_frame_bytes` and `direct_all_reduce_bytes`; the authentication proves the secret).
struct asio_options {
  /// This rank, in [0, size).
  int rank = 0;
  /// Number of ranks P ≥ 1. With P = 1 nothing is opened and every collective is a copy.
  int size = 1;
  /// Host name or address of rank 0's rendezvous listener (what ranks > 0 connect to).
  std::string host = "127.0.0.1";
  /// Rank 0's rendezvous port (1–65535; required when size > 1).
  unsigned short port = 0;
  /// Local address every listener binds to (rank 0's rendezvous listener and every rank's mesh
  /// listener). Loopback by default: set it (e.g. "0.0.0.0") to accept other machines (then a
  /// `secret` is needed, see `asio_authentication`).
  std::string bind_address = "127.0.0.1";
  /// Longest wait without progress for one read or write of a collective or message. A peer
  /// that is dead, silent or not reading for this long fails the call; an accepted connection
  /// that is silent this long in one step of its handshake is refused (and one that takes
  /// `handshake_timeout` in all).
  std::chrono::milliseconds timeout{30000};
  /// Longest wait for the rendezvous and for the mesh of a `split` (all ranks to start and
  /// connect).
  std::chrono::milliseconds connect_timeout{60000};
  /// Longest time an accepted connection may take to complete its handshake (the
  /// authentication and, at rank 0's rendezvous, the hello), counted from its accept; a
  /// connection that is idle, slow or trickles bytes is refused when it runs out. Handshakes
  /// run concurrently, so such connections never delay the real peers; a few seconds is plenty
  /// for a peer on any network. Also bounded by what is left of `connect_timeout`.
  std::chrono::milliseconds handshake_timeout{5000};
  /// Largest frame payload accepted or sent, and the most bytes of frames buffered ahead of
  /// their `recv`. A larger length in a header fails the call before anything is allocated.
  std::uint64_t max_frame_bytes = std::uint64_t{1} << 30;
  /// `all_reduce_sum` of at most this many bytes uses the direct algorithm (one round, each rank
  /// sends its vector to every other); larger vectors use the ring.
  std::size_t direct_all_reduce_bytes = 8192;
  /// The job's shared secret: the HMAC-SHA256 key every connection is authenticated with (any
  /// bytes; empty = none, see `authentication`; else at least 16 bytes, e.g. 32 random bytes,
  /// `head -c 32 /dev/urandom > secret`). Never sent, never printed; the transport wipes its copy
  /// when destroyed. Load it with `read_secret_file`.
  std::string secret;
  /// Whether a secret is required (see `asio_authentication`; default: only off loopback).
  asio_authentication authentication = asio_authentication::automatic;
  /// Called with the peer's address ("127.0.0.1:40123") and the reason whenever a listener of
  /// this rank refuses a connection (see "Refusals" in the file comment of
  /// `<dho2/transport/asio.hpp>`); the job keeps waiting. At a bounded rate: at most 10 calls
  /// per 10 s of one listener; the refusals beyond are counted and reported in one call with an
  /// empty `peer` and the reason "refused N more connections, not reported one by one (...)",
  /// once those 10 s are over or the listener closes. Empty (the default): a line on
  /// `std::clog` per call. Called on the thread that constructs the transport (or calls
  /// `split`); an exception it throws fails that call.
  std::function<void(const std::string& peer, const std::string& reason)> on_refusal;

  /// Largest world size `size` (and `DHO2_WORLD_SIZE`) accepted: every rank holds one
  /// connection per other rank, so this is far above what a full mesh can serve.
  static constexpr int max_size = 1 << 16;
  /// Largest secret file `read_secret_file` reads, in bytes (a secret needs 16 to 64).
  static constexpr std::uintmax_t max_secret_file_bytes = 4096;

  /// The secret stored in the file at `path`: its bytes, without trailing "\n" / "\r" bytes (so
  /// `echo ... > file` works; every rank strips them alike). The file must be a regular file (a
  /// symbolic link to one is followed) of at most `max_secret_file_bytes` bytes: a directory, a
  /// device such as /dev/zero, a pipe or a larger file is refused before anything is read.
  /// Throws `dho2::invalid_options` naming `field` and the constraint (and never the contents)
  /// if the file is not such a file, cannot be read or is empty. A file that group or others
  /// may access is read, but `warn` is called with one line naming the file and suggesting
  /// `chmod 600` (empty `warn`: the line goes to `std::clog`, prefixed with "dho2: warning: ").
  [[nodiscard]] static std::string read_secret_file(
      const std::string& path, const std::string& field = "secret file",
      const std::function<void(const std::string&)>& warn = {}) {
    namespace fs = std::filesystem;
    const std::string shown = quoted(path);
    std::error_code ec;
    const fs::file_status st = fs::status(path, ec);
    if (!fs::exists(st)) {
      detail::throw_invalid(
          field, shown,
          "a readable file holding the secret (" +
              (st.type() == fs::file_type::not_found || !ec ? std::string("it does not exist")
                                                            : ec.message()) +
              ")");
    }
    if (!fs::is_regular_file(st)) {
      detail::throw_invalid(field, shown,
                            "a regular file holding the secret (this is " + kind_of(st) + ")");
    }
    const std::uintmax_t bytes = fs::file_size(path, ec);
    if (!ec && bytes > max_secret_file_bytes) {
      detail::throw_invalid(field, shown,
                            "a file of at most " + std::to_string(max_secret_file_bytes) +
                                " bytes holding the secret (this one has " + std::to_string(bytes) +
                                ")");
    }
    std::ifstream in(path, std::ios::binary);
    if (!in) detail::throw_invalid(field, shown, "a readable regular file holding the secret");
    // At most one byte more than the cap: a file that grew since its size was read is refused.
    std::string s(static_cast<std::size_t>(max_secret_file_bytes) + 1, '\0');
    in.read(s.data(), static_cast<std::streamsize>(s.size()));
    if (in.bad()) detail::throw_invalid(field, shown, "a readable regular file holding the secret");
    s.resize(static_cast<std::size_t>(in.gcount()));
    if (s.size() > max_secret_file_bytes) {
      detail::throw_invalid(field, shown,
                            "a file of at most " + std::to_string(max_secret_file_bytes) +
                                " bytes holding the secret");
    }
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
    if (s.empty()) detail::throw_invalid(field, shown, "a file holding a non-empty secret");
    const fs::perms open = fs::perms::group_all | fs::perms::others_all;
    if ((st.permissions() & open) != fs::perms::none) {
      char mode[8];
      std::snprintf(mode, sizeof mode, "%04o",
                    static_cast<unsigned>(st.permissions() & fs::perms::mask));
      const std::string line = field + " " + shown +
                               ": the secret file is accessible by group or "
                               "others (mode " +
                               mode + "); make it private: chmod 600 " + clipped(path);
      if (warn) {
        warn(line);
      } else {
        std::clog << "dho2: warning: " << line << std::endl;
      }
    }
    return s;
  }

  /// Options from the environment: `DHO2_RANK` (this rank), `DHO2_WORLD_SIZE` (P) and
  /// `DHO2_RENDEZVOUS` (`host:port`, or `[ipv6]:port`, of rank 0; optional when P = 1), and
  /// optionally `DHO2_BIND_ADDRESS` and `DHO2_SECRET_FILE` (the *path* of a file holding the
  /// secret, read with `read_secret_file`). The secret itself is never taken from the
  /// environment: a process's environment is readable through /proc by its user's other
  /// processes, inherited by every child, and often printed by launchers and crash or CI logs; a
  /// file can be kept private. The other fields keep their defaults. A missing or malformed
  /// variable throws `dho2::invalid_options` naming it, e.g.
  /// `"DHO2_RANK = <unset>. Violated constraint: set to this process's rank, an integer in
  /// [0, DHO2_WORLD_SIZE)"`.
  [[nodiscard]] static asio_options from_environment() {
    asio_options o;
    o.size = env_int("DHO2_WORLD_SIZE",
                     "the number of ranks, an integer in [1, " + std::to_string(max_size) + "]", 1,
                     max_size);
    o.rank = env_int("DHO2_RANK",
                     "set to this process's rank, an integer in [0, DHO2_WORLD_SIZE = " +
                         std::to_string(o.size) + ")",
                     0, o.size - 1);
    const char* rv = std::getenv("DHO2_RENDEZVOUS");
    if (rv != nullptr || o.size > 1) {
      const std::string rule = "host:port (or [ipv6]:port) of rank 0, port in 1..65535";
      if (rv == nullptr) detail::throw_invalid("DHO2_RENDEZVOUS", "<unset>", "set to " + rule);
      const std::string s = rv;
      const auto bad = [&] { detail::throw_invalid("DHO2_RENDEZVOUS", quoted(s), rule); };
      std::string host;
      std::string port;
      if (!s.empty() && s.front() == '[') {
        const auto close = s.find(']');
        if (close == std::string::npos || close + 1 >= s.size() || s[close + 1] != ':') bad();
        host = s.substr(1, close - 1);
        port = s.substr(close + 2);
      } else {
        const auto colon = s.rfind(':');
        if (colon == std::string::npos || s.find(':') != colon) bad();
        host = s.substr(0, colon);
        port = s.substr(colon + 1);
      }
      int p = 0;
      if (host.empty() || !parse_int(port, p) || p < 1 || p > 65535) bad();
      o.host = host;
      o.port = static_cast<unsigned short>(p);
    }
    if (const char* b = std::getenv("DHO2_BIND_ADDRESS")) {
      boost::system::error_code ec;
      (void)boost::asio::ip::make_address(b, ec);
      if (ec) detail::throw_invalid("DHO2_BIND_ADDRESS", quoted(b), "an IPv4 or IPv6 address");
      o.bind_address = b;
    }
    if (const char* f = std::getenv("DHO2_SECRET_FILE")) {
      o.secret = read_secret_file(f, "DHO2_SECRET_FILE");
    }
    o.validate();
    return o;
  }

  /// Throws `dho2::invalid_options` for the first invalid field, with the message
  /// "asio_options::FIELD = VALUE. Violated constraint: CONSTRAINT".
  void validate() const {
    detail::require(size >= 1 && size <= max_size, "asio_options::size", size,
                    "in [1, " + std::to_string(max_size) + "]");
    detail::require(rank >= 0 && rank < size, "asio_options::rank", rank,
                    "0 <= rank < size (= " + std::to_string(size) + ")");
    detail::require(size == 1 || port != 0, "asio_options::port", port,
                    "in 1..65535 when size > 1");
    detail::require(size == 1 || !host.empty(), "asio_options::host", quoted(host),
                    "not empty when size > 1");
    boost::system::error_code ec;
    (void)boost::asio::ip::make_address(bind_address, ec);
    detail::require(!ec, "asio_options::bind_address", quoted(bind_address),
                    "an IPv4 or IPv6 address");
    const std::string held =
        secret.empty() ? "<empty>" : "<" + std::to_string(secret.size()) + " bytes>";
    detail::require(secret.empty() || secret.size() >= 16, "asio_options::secret", held,
                    "empty (no secret) or at least 16 bytes");
    detail::require(!secret.empty() || authentication != asio_authentication::required,
                    "asio_options::secret", held,
                    "set (e.g. from DHO2_SECRET_FILE) when authentication = required");
    const bool loopback = !ec && boost::asio::ip::make_address(bind_address).is_loopback();
    detail::require(!secret.empty() || authentication != asio_authentication::automatic ||
                        size == 1 || loopback,
                    "asio_options::secret", held,
                    "set (e.g. from DHO2_SECRET_FILE) when bind_address (= \"" + bind_address +
                        "\") is not a loopback address; or set authentication = "
                        "asio_authentication::insecure to accept unauthenticated peers");
    detail::require(timeout.count() > 0, "asio_options::timeout (ms)", timeout.count(), "> 0");
    detail::require(connect_timeout.count() > 0, "asio_options::connect_timeout (ms)",
                    connect_timeout.count(), "> 0");
    detail::require(handshake_timeout.count() > 0 && handshake_timeout <= std::chrono::hours(24),
                    "asio_options::handshake_timeout (ms)", handshake_timeout.count(),
                    "> 0 and <= 86400000 (one day)");
    detail::require(max_frame_bytes >= 65536, "asio_options::max_frame_bytes", max_frame_bytes,
                    ">= 65536");
  }

 private:
  // `s`, cut to its first 200 bytes (with the total) when longer: messages echo user input.
  static std::string clipped(const std::string& s) {
    constexpr std::size_t keep = 200;
    if (s.size() <= keep) return s;
    return s.substr(0, keep) + "... (" + std::to_string(s.size()) + " bytes)";
  }
  static std::string quoted(const std::string& s) { return "\"" + clipped(s) + "\""; }

  static std::string kind_of(const std::filesystem::file_status& st) {
    namespace fs = std::filesystem;
    switch (st.type()) {
      case fs::file_type::directory: return "a directory";
      case fs::file_type::character: return "a character device";
      case fs::file_type::block: return "a block device";
      case fs::file_type::fifo: return "a pipe";
      case fs::file_type::socket: return "a socket";
      default: return "not a regular file";
    }
  }

  static bool parse_int(std::string_view s, int& out) {
    if (s.empty()) return false;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && end == s.data() + s.size();
  }

  static int env_int(const char* name, const std::string& rule, int lo, int hi) {
    const char* v = std::getenv(name);
    if (v == nullptr) detail::throw_invalid(name, "<unset>", rule);
    int out = 0;
    if (!parse_int(v, out) || out < lo || out > hi) detail::throw_invalid(name, quoted(v), rule);
    return out;
  }
};

}  // namespace dho2
